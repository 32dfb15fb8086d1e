// virtual(8): virtual mailbox delivery; the logic is in DeliverCore.
import DeliverCore

VirtualAgent.main(CommandLine.arguments)
