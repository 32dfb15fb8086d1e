// scache(8): the shared connection cache of the smtp and lmtp clients; the logic is in
// ScacheCore.
import ScacheCore

Scache.main(CommandLine.arguments)
