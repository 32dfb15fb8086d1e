// cleanup(8): canonicalizes and writes incoming mail to the queue; the logic is in CleanupCore.
import CleanupCore

Cleanup.main(CommandLine.arguments)
