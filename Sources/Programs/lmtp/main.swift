// lmtp(8): the smtp client speaking LMTP (chosen by its name); the logic is in SmtpCore.
import SmtpCore

Smtp.main(CommandLine.arguments)
