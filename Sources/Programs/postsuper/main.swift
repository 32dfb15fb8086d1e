// postsuper(1): queue maintenance for the superuser; the logic is in QueueAdminCore.
import QueueAdminCore

Postsuper.main(CommandLine.arguments)
