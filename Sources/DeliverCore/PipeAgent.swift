// pipe(8): delivery to an external command named in master.cf (argv=...), run as the
// user= of the entry, with $sender, $recipient, $nexthop... expanded into its arguments
// and the message on its standard input.
// Mirrors Postfix pipe/pipe.c: attribute parsing (flags, user, argv, size, eol,
// null_sender, directory), macro expansion with one argument per recipient, and the
// exit status mapping of pipe_command.
import Glibc
import MailUtil
import MailGlobal
import MailServer

public enum PipeAgent {
    struct Attributes {
        var flags = Set<Character>()
        var uid: uid_t = 0
        var gid: gid_t = 0
        var argv: [String] = []
        var sizeLimit = 0
        var eol = "\n"
        var nullSender = "MAILER-DAEMON"
        var directory = ""
        var delimiter = ""
    }

    static func unescape(_ s: String) -> String {
        var out = ""
        var it = s.makeIterator()
        while let c = it.next() {
            guard c == "\\" else {
                out.append(c)
                continue
            }
            switch it.next() {
            case "n": out += "\n"
            case "r": out += "\r"
            case "t": out += "\t"
            case "\\": out += "\\"
            case let x?: out += "\\" + String(x)
            case nil: out += "\\"
            }
        }
        return out
    }

    static func parse(_ args: [String], config: MailConfig) -> Attributes {
        var a = Attributes()
        var i = 0
        var sawUser = false
        while i < args.count {
            let arg = args[i]
            if arg.hasPrefix("flags=") {
                for c in arg.dropFirst(6) {
                    guard "BDFORXhqu.>".contains(c) else { Msg.fatal("unknown flag: \(c) (ignored)") }
                    a.flags.insert(c)
                }
            } else if arg.hasPrefix("user=") {
                var spec = String(arg.dropFirst(5))
                var group: String?
                if let c = spec.firstIndex(of: ":") {
                    group = String(spec[spec.index(after: c)...])
                    spec = String(spec[..<c])
                }
                guard let pw = getpwnam(spec) else { Msg.fatal("\(spec): unknown username") }
                a.uid = pw.pointee.pw_uid
                a.gid = pw.pointee.pw_gid
                if let g = group {
                    guard let gr = getgrnam(g) else { Msg.fatal("\(g): unknown group") }
                    a.gid = gr.pointee.gr_gid
                }
                if a.uid == 0 { Msg.fatal("user= command-line attribute specifies root privileges") }
                if let owner = getpwnam(config.string("mail_owner")), owner.pointee.pw_uid == a.uid {
                    Msg.fatal("user= command-line attribute specifies mail system owner \(config.string("mail_owner"))")
                }
                if a.gid == 0 { Msg.fatal("user= command-line attribute specifies privileged group id 0") }
                sawUser = true
            } else if arg.hasPrefix("size=") {
                a.sizeLimit = Int(arg.dropFirst(5)) ?? 0
            } else if arg.hasPrefix("eol=") {
                a.eol = unescape(String(arg.dropFirst(4)))
            } else if arg.hasPrefix("null_sender=") {
                a.nullSender = String(arg.dropFirst(12))
            } else if arg.hasPrefix("directory=") {
                a.directory = String(arg.dropFirst(10))
            } else if arg.hasPrefix("argv=") {
                a.argv = [String(arg.dropFirst(5))] + args[(i + 1)...]
                break
            } else {
                Msg.fatal("unknown attribute name: \(arg)")
            }
            i += 1
        }
        a.delimiter = config.string("recipient_delimiter")
        if !sawUser { Msg.fatal("missing user= command-line attribute") }
        if a.argv.isEmpty || a.argv[0].isEmpty { Msg.fatal("missing argv= command-line attribute") }
        return a
    }

    public static func main(_ arguments: [String]) -> Never {
        ExecHelper.runIfRequested(arguments)
        var desc = ServerDescription()
        desc.program = "pipe"
        desc.privileged = true
        var attrs: Attributes?
        SingleServer.run(arguments, desc) { client, ctx in
            if attrs == nil { attrs = parse(ctx.options.operands, config: ctx.config) }
            guard let a = attrs else { return }
            DeliveryAgent.serve(client, ctx) { job in deliver(job, a) }
        }
    }

    static func deliver(_ job: DeliveryJob, _ a: Attributes) -> Int {
        let r = job.request
        let service = job.service
        func all(_ dsn: DeliveryStatus) -> Int {
            var result = 0
            for rcpt in r.recipients { result |= job.outcome(rcpt, relay: service, dsn: dsn) }
            return result
        }
        if a.sizeLimit > 0 && r.dataSize > a.sizeLimit {
            return all(DeliveryStatus(status: "5.2.3", reason: "message too large"))
        }
        if r.flags.traceOnly {
            return all(DeliveryStatus(status: "2.0.0", reason: "delivers to command: \(a.argv[0])"))
        }
        let argv = expand(a, r)
        let limit = job.config.transportTime(service, "_time_limit", fallback: "command_time_limit")
        var flags: CopyFlags = []
        if a.flags.contains("F") { flags.insert(.from) }
        if a.flags.contains("R") { flags.insert(.returnPath) }
        if a.flags.contains("D") { flags.insert(.delivered) }
        if a.flags.contains("O") { flags.insert(.originalRecipient) }
        if a.flags.contains("B") { flags.insert(.blank) }
        if a.flags.contains(">") { flags.insert(.quote) }
        if a.flags.contains(".") { flags.insert(.dot) }
        var env: [String] = []
        for name in job.config.list("export_environment") {
            if name.contains("=") {
                env.append(name)
            } else if let v = getenv(name) {
                env.append("\(name)=\(String(cString: v))")
            }
        }
        let first = r.recipients.first
        var pc = PipeCommand(argv: argv, display: a.argv[0], uid: a.uid, gid: a.gid, directory: a.directory.isEmpty ? "/" : a.directory,
                             environment: env, timeLimit: limit, copyFlags: flags)
        pc.eol = a.eol
        let (st, dsn) = pc.run(queueFD: job.fd, offset: r.dataOffset, sender: r.sender,
                               originalRecipient: first?.originalRecipient ?? "", delivered: first?.address ?? "")
        switch st {
        case .ok:
            return all(DeliveryStatus(status: "2.0.0", action: a.flags.contains("X") ? "delivered" : "relayed",
                                      reason: "delivered via \(service) service"))
        case .bounce, .defer:
            return all(dsn)
        case .corrupt:
            return -1
        }
    }

    /// The command's arguments with macros expanded; an argument with a per-recipient
    /// macro is repeated for every recipient.
    static func expand(_ a: Attributes, _ r: DeliverRequest) -> [String] {
        let perRecipient = ["recipient", "user", "extension", "mailbox", "domain", "original_recipient"]
        func quote(_ s: String) -> String { a.flags.contains("q") ? Quote822.quote822(s) : s }
        var nexthop = r.nexthop
        if a.flags.contains("h") { nexthop = nexthop.lowercased() }
        let common: [String: String] = [
            "sender": r.sender.isEmpty ? a.nullSender : quote(r.sender),
            "nexthop": nexthop, "queue_id": r.queueID, "size": String(r.dataSize),
            "client_address": r.clientAddress, "client_helo": r.clientHelo, "client_hostname": r.clientName,
            "client_port": r.clientPort, "client_protocol": r.clientProtocol,
            "sasl_method": r.saslMethod, "sasl_sender": r.saslSender, "sasl_username": r.saslUsername,
        ]
        func vars(_ rcpt: QueueRecipient) -> [String: String] {
            var v = common
            var local = rcpt.address
            var domain = ""
            if let at = local.lastIndex(of: "@") {
                domain = String(local[local.index(after: at)...])
                local = String(local[..<at])
            }
            if a.flags.contains("u") { local = local.lowercased() }
            if a.flags.contains("h") { domain = domain.lowercased() }
            var user = local, ext = ""
            if !a.delimiter.isEmpty, let i = local.firstIndex(where: { a.delimiter.contains($0) }), i != local.startIndex {
                user = String(local[..<i])
                ext = String(local[local.index(after: i)...])
            }
            v["recipient"] = quote(a.flags.contains("u") || a.flags.contains("h") ? local + (domain.isEmpty ? "" : "@" + domain) : rcpt.address)
            v["user"] = quote(user)
            v["extension"] = ext
            v["mailbox"] = quote(local)
            v["domain"] = domain
            v["original_recipient"] = quote(rcpt.originalRecipient)
            return v
        }
        func subst(_ arg: String, _ v: [String: String]) -> String {
            let ex = MacroExpander(recurse: false) { name, _ in v[name] ?? "" }
            return ex.expand(arg).0
        }
        var out: [String] = []
        for arg in a.argv {
            if perRecipient.contains(where: { arg.contains("$" + $0) || arg.contains("${" + $0) || arg.contains("$(" + $0) }) {
                for rcpt in r.recipients { out.append(subst(arg, vars(rcpt))) }
            } else {
                out.append(subst(arg, common))
            }
        }
        return out
    }
}
