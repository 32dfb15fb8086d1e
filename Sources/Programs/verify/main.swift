// verify(8): the address verification server; the logic is in VerifyCore.
import VerifyCore

Verify.main(CommandLine.arguments)
