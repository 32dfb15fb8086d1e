// sendmail(1), also mailq and newaliases; the logic is in SubmitCore.
import SubmitCore

Sendmail.main(CommandLine.arguments)
