// discard(8): report every recipient of a request delivered; the logic is in DeliverCore.
import DeliverCore

DiscardAgent.main(CommandLine.arguments)
