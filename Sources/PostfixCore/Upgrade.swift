// Upgrade: "postfix upgrade-configuration": services a master.cf from an older release
// lacks are added, in the form the stock file has them.
// Mirrors the master.cf part of Postfix conf/post-install (upgrade_conf): a service is
// missing when no line starts with its name and type; optional services are added as
// comments; each addition is reported on standard output.
import Glibc
import MailUtil
import MailGlobal

enum Upgrade {
    struct Service {
        let name: String
        let type: String
        /// Matches only an entry running this command (postscreen on "smtp inet").
        var command: String?
        /// Added commented out (optional); a commented-out entry counts as present.
        var optional = false
        /// How the message calls it.
        let label: String
        let lines: [String]
    }

    static let services: [Service] = [
        Service(name: "flush", type: "unix", label: "flush service",
                lines: ["flush     unix  n       -       n       1000?   0       flush"]),
        Service(name: "trace", type: "unix", label: "trace service",
                lines: ["trace     unix  -       -       n       -       0       bounce"]),
        Service(name: "verify", type: "unix", label: "verify service",
                lines: ["verify    unix  -       -       n       -       1       verify"]),
        Service(name: "proxymap", type: "unix", label: "proxymap service",
                lines: ["proxymap  unix  -       -       n       -       -       proxymap"]),
        Service(name: "anvil", type: "unix", label: "anvil service",
                lines: ["anvil     unix  -       -       n       -       1       anvil"]),
        Service(name: "scache", type: "unix", label: "scache service",
                lines: ["scache    unix  -       -       n       -       1       scache"]),
        Service(name: "discard", type: "unix", label: "discard service",
                lines: ["discard   unix  -       -       n       -       -       discard"]),
        Service(name: "tlsmgr", type: "unix", label: "tlsmgr service",
                lines: ["tlsmgr    unix  -       -       n       1000?   1       tlsmgr"]),
        Service(name: "retry", type: "unix", label: "retry service",
                lines: ["retry     unix  -       -       n       -       -       error"]),
        Service(name: "proxywrite", type: "unix", label: "proxywrite service",
                lines: ["proxywrite unix -       -       n       -       1       proxymap"]),
        Service(name: "relay", type: "unix", label: "relay service",
                lines: ["relay     unix  -       -       n       -       -       smtp",
                        "#       -o smtp_helo_timeout=5 -o smtp_connect_timeout=5"]),
        Service(name: "smtp", type: "inet", command: "postscreen", optional: true, label: "postscreen TCP service",
                lines: ["#smtp      inet  n       -       n       -       1       postscreen"]),
        Service(name: "smtpd", type: "pass", optional: true, label: "smtpd unix-domain service",
                lines: ["#smtpd     pass  -       -       n       -       -       smtpd"]),
        Service(name: "dnsblog", type: "unix", optional: true, label: "dnsblog unix-domain service",
                lines: ["#dnsblog   unix  -       -       n       -       0       dnsblog"]),
        Service(name: "tlsproxy", type: "unix", optional: true, label: "tlsproxy unix-domain service",
                lines: ["#tlsproxy  unix  -       -       n       -       0       tlsproxy"]),
        Service(name: "postlog", type: "unix-dgram", label: "postlog unix-domain datagram service",
                lines: ["postlog   unix-dgram n  -       n       -       1       postlogd"]),
    ]

    /// Appends what is missing; false when master.cf cannot be read or written.
    static func masterCF(_ config: MailConfig) -> Bool {
        let path = config.configDirectory + "/master.cf"
        guard let bytes = try? SafeFile.read(path) else {
            writeAll(2, Array("cannot read \(path)\n".utf8))
            return false
        }
        var text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func present(_ s: Service) -> Bool {
            lines.contains { line in
                var l = Substring(line)
                if s.optional && l.hasPrefix("#") { l = l.dropFirst() }
                let words = l.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard words.count >= 2, words[0] == s.name, words[1] == s.type else { return false }
                return s.command.map { words.count >= 8 && words[7] == $0 } ?? true
            }
        }
        var changed = false
        for s in services where !present(s) {
            writeAll(1, Array("Editing \(path), adding missing entry for \(s.label)\n".utf8))
            if !text.hasSuffix("\n") && !text.isEmpty { text += "\n" }
            text += s.lines.joined(separator: "\n") + "\n"
            changed = true
        }
        if changed {
            do {
                try SafeFile.atomicWrite(path, Array(text.utf8))
            } catch {
                writeAll(2, Array("\(error)\n".utf8))
                return false
            }
        }
        return true
    }
}
