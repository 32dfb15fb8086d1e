// tlsmgr(8): TLS session ticket keys, session caches and random seed for smtpd, smtp and
// lmtp; the logic is in TlsmgrCore.
import TlsmgrCore

Tlsmgr.main(CommandLine.arguments)
