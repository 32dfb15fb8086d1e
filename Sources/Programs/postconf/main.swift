// postconf(1): Postfix-compatible configuration utility; the logic is in PostconfCore.
import PostconfCore
import Glibc

exit(Postconf.main(CommandLine.arguments))
