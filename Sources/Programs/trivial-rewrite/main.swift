// trivial-rewrite(8): address rewriting and resolving; the logic is in TrivialRewriteCore.
import TrivialRewriteCore

TrivialRewrite.main(CommandLine.arguments)
