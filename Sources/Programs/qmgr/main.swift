// qmgr(8): the queue manager; the logic is in QmgrCore.
import QmgrCore

Qmgr.main(CommandLine.arguments)
