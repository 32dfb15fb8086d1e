// master(8): the Postfix-compatible resident supervisor; the logic is in MasterCore.
import MasterCore

MasterMain.main(CommandLine.arguments)
