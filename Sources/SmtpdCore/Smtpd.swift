// Smtpd: the smtpd(8) program: one SMTP session per connection under the single-server
// skeleton.
// Mirrors Postfix smtpd/smtpd.c main() and smtpd_service().
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailServer
import MailTLS

public enum Smtpd {
    nonisolated(unsafe) static var settings: Settings!
    /// The server TLS context (keys are read as root, before the privilege drop).
    nonisolated(unsafe) static var tlsContext: TLSServerContext?

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "smtpd"
        desc.preInit = { ctx in
            let level = TLSLevel.server(ctx.config)
            if (level > .none || ctx.config.bool("smtpd_tls_wrappermode")) && !ctx.options.standalone {
                tlsContext = TLSServerContext(config: ctx.config, prefix: "smtpd", level: level)
            }
        }
        desc.postInit = { ctx in
            settings = Settings(config: ctx.config, standalone: ctx.options.standalone)
            settings.tlsContext = tlsContext
        }
        desc.preAccept = { _ in DictCache.exitIfChanged() }
        SingleServer.run(arguments, desc) { client, _ in
            let session = Session(settings: settings, stream: client.stream, fd: client.fd)
            session.run()
        }
    }
}
