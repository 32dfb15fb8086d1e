// error(8) and retry: bounce or defer every recipient of a request; the logic is in DeliverCore.
import DeliverCore

ErrorAgent.main(CommandLine.arguments)
