// pipe(8): delivery to external commands; the logic is in DeliverCore.
import DeliverCore

PipeAgent.main(CommandLine.arguments)
