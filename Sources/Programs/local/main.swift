// local(8): local delivery; the logic is in LocalCore.
import LocalCore

Local.main(CommandLine.arguments)
