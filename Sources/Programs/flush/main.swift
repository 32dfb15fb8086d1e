// flush(8): the fast flush service; the logic is in FlushCore.
import FlushCore

Flush.main(CommandLine.arguments)
