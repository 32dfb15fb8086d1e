// postfix(1): start, stop and check the mail system; the logic is in PostfixCore.
import PostfixCore

PostfixCommand.main(CommandLine.arguments)
