// Smtpd: the smtpd(8) program: one SMTP session per connection under the single-server
// skeleton.
// Mirrors Postfix smtpd/smtpd.c main() and smtpd_service().
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailServer
import MailTLS
import MailSASL

public enum Smtpd {
    nonisolated(unsafe) static var settings: Settings!
    /// The server TLS context (keys are read as root, before the privilege drop).
    nonisolated(unsafe) static var tlsContext: TLSServerContext?
    /// The SASL implementation (set up as root, before the privilege drop, as Postfix does).
    nonisolated(unsafe) static var saslImpl: SASLServerImpl?

    /// cyrus_sasl_config_path; when empty, $config_directory/sasl (where Debian's Postfix
    /// keeps smtpd.conf) before the library's own directories.
    static func cyrusConfigPath(_ config: MailConfig) -> String {
        let v = config.string("cyrus_sasl_config_path")
        if !v.isEmpty { return v }
        return config.string("config_directory") + "/sasl:/etc/sasl2:/etc/sasl:/usr/lib/x86_64-linux-gnu/sasl2:/usr/lib/sasl2"
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "smtpd"
        desc.preInit = { ctx in
            let level = TLSLevel.server(ctx.config)
            if (level > .none || ctx.config.bool("smtpd_tls_wrappermode")) && !ctx.options.standalone {
                tlsContext = TLSServerContext(config: ctx.config, prefix: "smtpd", level: level)
            }
            if ctx.config.bool("smtpd_sasl_auth_enable") && !ctx.options.standalone {
                guard let impl = SASL.serverImpl(type: ctx.config.string("smtpd_sasl_type"),
                                                 path: ctx.config.string("smtpd_sasl_path"),
                                                 myhostname: ctx.config.string("myhostname"),
                                                 configPath: Self.cyrusConfigPath(ctx.config)) else {
                    Msg.fatal("SASL per-process initialization failed")
                }
                saslImpl = impl
            }
        }
        desc.postInit = { ctx in
            settings = Settings(config: ctx.config, standalone: ctx.options.standalone)
            settings.tlsContext = tlsContext
            settings.saslImpl = saslImpl
        }
        desc.preAccept = { _ in DictCache.exitIfChanged() }
        SingleServer.run(arguments, desc) { client, _ in
            let session = Session(settings: settings, stream: client.stream, fd: client.fd)
            session.run()
        }
    }
}
