// smtpd(8): the SMTP server; the logic is in SmtpdCore.
import SmtpdCore

Smtpd.main(CommandLine.arguments)
