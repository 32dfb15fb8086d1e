// Smtpd: the smtpd(8) program: one SMTP session per connection under the single-server
// skeleton.
// Mirrors Postfix smtpd/smtpd.c main() and smtpd_service().
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailServer

public enum Smtpd {
    nonisolated(unsafe) static var settings: Settings!

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "smtpd"
        desc.postInit = { ctx in
            settings = Settings(config: ctx.config, standalone: ctx.options.standalone)
        }
        desc.preAccept = { _ in DictCache.exitIfChanged() }
        SingleServer.run(arguments, desc) { client, _ in
            let session = Session(settings: settings, stream: client.stream, fd: client.fd)
            session.run()
        }
    }
}
