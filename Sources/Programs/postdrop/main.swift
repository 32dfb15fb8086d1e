// postdrop(1): the set-gid maildrop gate; the logic is in SubmitCore.
import SubmitCore

Postdrop.main(CommandLine.arguments)
