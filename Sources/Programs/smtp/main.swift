// smtp(8) and lmtp(8): delivery to other servers; the logic is in SmtpCore.
import SmtpCore

Smtp.main(CommandLine.arguments)
