// Other: postconf -m, -l, -a, -A, -T, -b and -t.
// Mirrors Postfix postconf/postconf_other.c and the -b/-t and -T parts of postconf.c.
import Glibc
import COpenSSL
import MailUtil
import MailGlobal

extension PostconfState {
    /// The full configuration load that -m, -b and -t perform first: main.cf read and
    /// every global parameter checked.
    func loadAndCheckConfiguration() -> MailConfig {
        let config = MailConfig.load(configDirectory: configDirectory, processName: processName)
        MailParams.check(config)
        return config
    }

    func showMaps() {
        let config = loadAndCheckConfiguration()
        for t in MailDictSetup.workingTypes(config) { out.write(t + "\n") }
    }

    func showLocks() {
        for m in FileLock.supportedMethods { out.write(m + "\n") }
    }

    func showSASL(server: Bool) {
        for t in server ? Capabilities.saslServerTypes : Capabilities.saslClientTypes { out.write(t + "\n") }
    }

    /// -T compile-version, run-version, public-key-algorithms.
    func showTLS(_ what: String) -> Int32 {
        switch what {
        case "compile-version":
            out.write(OPENSSL_VERSION_TEXT + "\n")
        case "run-version":
            out.write(String(cString: OpenSSL_version(Int32(OPENSSL_VERSION))) + "\n")
        case "public-key-algorithms":
            for a in ["dsa", "ecdsa", "rsa"] { out.write(a + "\n") }
        default:
            Msg.warn("unknown 'postconf -T' mode: \(what)")
            return 1
        }
        return 0
    }

    /// -b and -t: the bounce program prints the templates.
    func runBounceTemplates(expand: Bool, templateFile: String?) -> Never {
        let config = loadAndCheckConfiguration()
        let path = config.string("daemon_directory") + "/bounce"
        var args = ["bounce", expand ? "-SVnexpand_templates" : "-SVndump_templates"]
        if let f = templateFile { args += ["-o", "bounce_template_file=\(f)"] }
        args += ["-o", "queue_directory=."]
        out.flush()
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        execv(path, &argv)
        Msg.fatal("execv \(path): \(errnoText(errno))")
    }
}
