// postqueue(1): queue listing and flushing; the logic is in QueueAdminCore.
import QueueAdminCore

Postqueue.main(CommandLine.arguments)
