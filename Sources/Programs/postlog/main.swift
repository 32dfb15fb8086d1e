// postlog(1): log from the command line or standard input; the logic is in PostlogCore.
import PostlogCore

PostlogCommand.main(CommandLine.arguments)
