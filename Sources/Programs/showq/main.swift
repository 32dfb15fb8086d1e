// showq(8): the mail queue listing service; the logic is in ShowqCore.
import ShowqCore

Showq.main(CommandLine.arguments)
