// Postqueue: postqueue(1), the set-gid queue control command behind mailq and sendmail -q.
// Mirrors Postfix postqueue/postqueue.c, showq_compat.c and showq_json.c (3.7): -p lists the
// queue in mailq's layout and -j as JSON Lines, both from the showq service (the superuser
// runs showq directly when the mail system is down); -f wakes the queue manager and pickup;
// -s and -i ask the flush service to deliver a site's or a message's deferred mail.
import Glibc
import MailUtil
import MailGlobal

public enum Postqueue {
    enum Mode { case none, list, json, flushQueue, flushSite, flushFile }

    static let usageText = "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"

    /// Postfix 3.7's postqueue exits with EX_UNAVAILABLE (69) from every fatal error,
    /// whatever the status its code names; scripts see that, so we do the same.
    static func fail(_ text: String) -> Never { Msg.fatal(status: EX.unavailable, text) }

    static func usage() -> Never { fail(usageText) }

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        if !openStandardDescriptors() { fail("open /dev/null: \(errnoText(errno))") }
        let program = "postqueue"
        MailLog.dropCallerLoggingEnvironment()
        MailLog.setupEarly(program: program, stderrTag: basename(of: arguments.first ?? program))
        Msg.sleepBeforeFatalExit = false
        var mode = Mode.none
        var site: String?
        var queueID: String?
        func set(_ m: Mode) {
            if mode != .none { usage() }
            mode = m
        }
        let (rest, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:fi:jps:v") { c, v in
            switch c {
            case "c": setenv(MailConfig.configEnvironment, v ?? "", 1)
            case "f": set(.flushQueue)
            case "i": set(.flushFile); queueID = v
            case "j": set(.json)
            case "p": set(.list)
            case "s": set(.flushSite); site = v
            case "v": if geteuid() == 0 { Msg.verbose += 1 }
            default: usage()
            }
        }
        if let problem {
            let name = basename(of: arguments.first ?? program)
            _ = writeAll(2, Array((GetOpt.message(problem, program: name) + "\n").utf8))
            usage()
        }
        if !rest.isEmpty { usage() }
        let config = MailConfig.load(processName: program)
        let accounts = MailParams.check(config)
        MailLog.setup(config, program: program, stderrTag: program)
        // Set-gid: trust only the environment that import_environment names. The superuser
        // keeps it, so that a stand-alone showq sees a non-default configuration.
        if geteuid() != 0 { ImportEnvironment.apply(config) }
        let queueDirectory = config.string("queue_directory")
        if chdir(queueDirectory) < 0 {
            fail("chdir \(queueDirectory): \(errnoText(errno))")
        }
        signal(SIGPIPE, SIG_IGN)

        if let site {
            let ok = site.hasPrefix("[") ? ValidHostname.isMailhostLiteral(site) : ValidHostname.isValid(site)
            if !ok {
                fail("Cannot flush mail queue - invalid destination: \"\(site.prefix(100))\(site.utf8.count > 100 ? "..." : "")\"")
            }
        }
        if let queueID, !QueueID.isValid(queueID) {
            fail("Cannot flush queue ID - invalid name: \"\(queueID.prefix(100))\(queueID.utf8.count > 100 ? "..." : "")\"")
        }
        let uid = getuid()
        func check(_ parameter: String, _ what: String) {
            guard uid != 0 && uid != accounts.ownerUID,
                  let who = UserACL.denied(config, parameter: parameter, uid: uid) else { return }
            fail("User \(who)(\(uid)) is not allowed to \(what)")
        }
        switch mode {
        case .none:
            usage()
        case .list, .json:
            check("authorized_mailq_users", "view the mail queue")
            showQueue(config, json: mode == .json)
        case .flushQueue:
            check("authorized_flush_users", "flush the mail queue")
            let qmgr = MailTrigger.send(serviceClass: MailClass.public, service: config.string("queue_service_name"),
                                        Array("FADI".utf8))
            if !qmgr || !MailTrigger.send(serviceClass: MailClass.public, service: config.string("pickup_service_name")) {
                fail("Cannot flush mail queue - mail system is down")
            }
        case .flushSite:
            check("authorized_flush_users", "flush the mail queue")
            switch FlushClient.sendSite(site!, config: config) {
            case .ok: break
            case .bad: fail("Invalid request: \"\(site!)\"")
            case .failed: fail("Cannot flush mail queue - mail system is down")
            case .denied: fail("Flush service is not configured for destination \"\(site!)\"")
            }
        case .flushFile:
            check("authorized_flush_users", "flush the mail queue")
            switch FlushClient.sendFile(queueID!, config: config) {
            case .ok: break
            case .bad: fail("Invalid request: \"\(queueID!)\"")
            case .failed, .denied: fail("Cannot flush mail queue - mail system is down")
            }
        }
        exit(0)
    }

    /// Lists the queue from the showq service, or from showq run directly when the
    /// superuser finds the mail system down.
    static func showQueue(_ config: MailConfig, json: Bool) {
        let service = config.string("showq_service_name")
        let mailName = config.string("mail_name")
        do {
            let fd = try UnixSocket.connect("\(MailClass.public)/\(service)", timeout: config.time("ipc_timeout"))
            list(FDStream(fd: fd, closeOnDeinit: true), json: json, longIDs: config.bool("enable_long_queue_ids"))
            return
        } catch {
            let e = (error as? SystemError)?.errno ?? ECONNREFUSED
            let why = "Connect to the \(mailName) \(service) service: \(errnoText(e))"
            if e == EACCES || e == EPERM { fail(why) }
            if geteuid() != 0 { fail("Queue report unavailable - mail system is down (\(why))") }
            Msg.warn("Mail system is down -- accessing queue directly (\(why))")
        }
        var pair: [Int32] = [-1, -1]
        if socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) < 0 {
            fail("socketpair: \(errnoText(errno))")
        }
        let path = config.string("daemon_directory") + "/showq"
        var argv = [service, "-u", "-S"]
        argv += Array(repeating: "-v", count: Msg.verbose)
        let pid: pid_t
        do {
            pid = try Spawn.run(path, argv: argv, environment: Spawn.currentEnvironment, descriptors: [0: pair[1], 1: pair[1], 2: 2])
        } catch {
            fail("\(error)")
        }
        close(pair[1])
        list(FDStream(fd: pair[0], closeOnDeinit: true), json: json, longIDs: config.bool("enable_long_queue_ids"))
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status != 0 { Msg.warn("command \(path) exited with status \(status >> 8)") }
    }

    static func malformed() -> Never { fail("malformed showq server response") }

    /// Reads the listing and prints it; a closed standard output ends it quietly.
    static func list(_ stream: FDStream, json: Bool, longIDs: Bool) {
        let reader = AttrReader(stream, encoding: .attr0)
        do {
            guard let hello = try reader.readList() else { malformed() }
            var sc = hello.scanner()
            try sc.expect(MailAttr.proto, equals: MailProtocol.showq)
        } catch {
            malformed()
        }
        let out = FDStream(fd: 1)
        var printer = QueuePrinter(json: json, longIDs: longIDs)
        do {
            while true {
                guard let more = try reader.more() else { malformed() }
                if !more { break }
                let v = try reader.scanMore([MailAttr.queueName, MailAttr.queueID, MailAttr.time, MailAttr.size,
                                             MailAttr.forcedExpire, MailAttr.sender])
                guard let time = Int(String(decoding: v[2], as: UTF8.self)),
                      let size = Int(String(decoding: v[3], as: UTF8.self)),
                      let expired = Int(String(decoding: v[4], as: UTF8.self)) else { malformed() }
                var message = QueuePrinter.Message(queue: String(decoding: v[0], as: UTF8.self),
                                                   id: String(decoding: v[1], as: UTF8.self),
                                                   arrival: time, size: size, forcedExpire: expired != 0,
                                                   sender: String(decoding: v[5], as: UTF8.self))
                while true {
                    guard let more = try reader.more() else { malformed() }
                    if !more { break }
                    let r = try reader.scanMore([MailAttr.recipient, MailAttr.reason])
                    message.recipients.append((String(decoding: r[0], as: UTF8.self), String(decoding: r[1], as: UTF8.self)))
                }
                try out.write(printer.format(message))
                try out.flush()
            }
            try out.write(printer.summary())
            try out.flush()
        } catch let e as StreamError {
            if case .system(let se) = e, se.errno == EPIPE { return }
            fail("output write error: \(e)")
        } catch {
            malformed()
        }
    }
}

/// The two output layouts of postqueue: mailq's columns, and one JSON object per message.
public struct QueuePrinter {
    public struct Message {
        var queue: String
        var id: String
        var arrival: Int
        var size: Int
        var forcedExpire: Bool
        var sender: String
        var recipients: [(address: String, reason: String)] = []
    }

    let json: Bool
    let longIDs: Bool
    var count = 0
    var totalSize = 0

    init(json: Bool, longIDs: Bool) {
        self.json = json
        self.longIDs = longIDs
    }

    static func pad(_ s: String, _ width: Int, left: Bool) -> String {
        let n = s.utf8.count
        if n >= width { return s }
        let fill = String(repeating: " ", count: width - n)
        return left ? s + fill : fill + s
    }

    /// One line in the "%-11s %7s %-20s %s" layout (long IDs: "%-17s %8s %-19s %s").
    func columns(_ id: String, _ size: String, _ time: String, _ address: String) -> String {
        let w = longIDs ? (17, 8, 19) : (11, 7, 20)
        return QueuePrinter.pad(id, w.0, left: true) + " " + QueuePrinter.pad(size, w.1, left: false) + " "
            + QueuePrinter.pad(time, w.2, left: true) + " " + address + "\n"
    }

    /// asctime(localtime(t)) cut to the column width.
    func arrivalText(_ t: Int) -> String {
        String((MailDate.asctime(time_t(t)) + " ").prefix(longIDs ? 19 : 20))
    }

    mutating func format(_ m: Message) -> String {
        count += 1
        totalSize += m.size
        return json ? jsonLine(m) : listing(m)
    }

    func listing(_ m: Message) -> String {
        var out = ""
        if count > 1 {
            out += "\n"
        } else if longIDs {
            out += columns("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
        } else {
            out += columns("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
        }
        var id = m.id
        if m.queue == QueueName.active { id += "*" } else if m.queue == QueueName.hold { id += "!" }
        if m.forcedExpire { id += "#" }
        out += columns(id, String(m.size), arrivalText(m.arrival), m.sender)
        var saved = ""
        for r in m.recipients {
            if r.reason != saved {
                saved = r.reason
                let shown = saved.isEmpty ? "reason unavailable" : saved
                out += String(repeating: " ", count: max(0, 76 - shown.utf8.count)) + "(\(shown))\n"
            }
            out += columns("", "", "", r.address)
        }
        return out
    }

    func summary() -> String {
        if json { return "" }
        if count == 0 { return "Mail queue is empty\n" }
        return "\n-- \(totalSize / 1024) Kbytes in \(count) Request\(count == 1 ? "" : "s").\n"
    }

    /// JSON string contents: backslash escapes, control characters as \uXXXX.
    static func quote(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\u{8}": out += "\\b"
            case "\u{C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    func jsonLine(_ m: Message) -> String {
        var out = "{\"queue_name\": \"\(Self.quote(m.queue))\", \"queue_id\": \"\(Self.quote(m.id))\", "
        out += "\"arrival_time\": \(m.arrival), \"message_size\": \(m.size), "
        out += "\"forced_expire\": \(m.forcedExpire), \"sender\": \"\(Self.quote(m.sender))\", \"recipients\": ["
        out += m.recipients.map { r in
            "{\"address\": \"\(Self.quote(r.address))\""
                + (r.reason.isEmpty ? "" : ", \"delay_reason\": \"\(Self.quote(r.reason))\"") + "}"
        }.joined(separator: ", ")
        return out + "]}\n"
    }
}
