// postcat(1): shows queue files; the logic is in QueueAdminCore.
import QueueAdminCore

Postcat.main(CommandLine.arguments)
