// Session: one SMTP client from the greeting to the disconnect: the state of the session
// and of its transaction, the command loop with its table of commands, error limits,
// pipelining detection, timeouts, replies and the log lines.
// Mirrors Postfix smtpd/smtpd.c (smtpd_proto, smtpd_service) with smtpd_chat.c and
// smtpd_state.c. Trusts nothing the client sends.
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailTLS
import MailSASL

final class Session {
    let s: Settings
    let stream: FDStream
    var config: MailConfig { s.config }

    // Peer (smtpd_peer.c).
    var name = "unknown"
    var reverseName = "unknown"
    var nameStatus = PeerStatus.ok
    var reverseNameStatus = PeerStatus.ok
    var addr = "127.0.0.1"
    var port = "0"
    var family: Int32 = AF_INET
    var peerBytes: [UInt8] = []
    var serverAddr = ""
    var serverPort = ""
    var namaddr: String { s.clientPortLogging ? "\(name)[\(addr)]:\(port)" : "\(name)[\(addr)]" }

    // Session state.
    var helo: String?
    var protocolName = "SMTP"
    /// What the session was doing, for the log: a command name, CONNECT, or a phase.
    var whereText = Where.connect
    var errorCount = 0
    var junkCount = 0
    var counts: [String: (ok: Int, total: Int)] = [:]
    var illegalPipelining = false
    /// With smtpd_delay_reject=no, the client was refused at connect: every command but
    /// QUIT gets this.
    var accessDenied: String?
    /// Why the session ended early ("timeout", "lost connection", "too many errors").
    var reason: String?
    var done = false
    /// A HANGUP action dropped the connection: nothing more is said or logged about it.
    var hungUp = false
    /// smtpd_discard_ehlo_keywords, as a mask of EHLO keywords.
    var ehloDiscard: EHLOMask = []
    /// The TLS session, after STARTTLS or in wrapper mode.
    var tls: TLSSession?
    /// The last reply line written was not the last of its reply.
    var replyContinues = false
    /// SASL: the session's server side, the mechanisms offered, and the login.
    var sasl: SASLServer?
    var saslMechanisms: String?
    var saslUsername: String?
    var saslMethod: String?
    /// MAIL FROM's AUTH= address, for this transaction.
    var saslSender: String?

    // Transaction.
    var sender: String?
    /// The recipient being checked, or the first accepted one (for the log lines).
    var recipient: String?
    var rcptCount = 0
    var rcptOvershoot = 0
    var declaredSize = 0
    var encoding = ""
    var retFlags = 0
    var envid = ""
    var smtputf8Requested = false
    /// XVERP delimiters of the transaction (empty: no VERP).
    var verpDelimiters = ""
    /// Transactions started in this session (for the policy "instance").
    var transactionCount = 0
    var cleanup: AttrClient?
    /// postdrop, in stand-alone mode: the process behind `cleanup`.
    var postdrop: PostdropPipe?
    var queueID: String?
    var arrival = timeval()
    var savedFlags: CleanupFlags = []
    var savedFilter: String?
    var savedRedirect: String?
    var savedBcc: [String] = []
    var prependHeaders: [String] = []
    var bdat = BDATState.none
    var bdatTotal = 0
    var bdatPartial: [UInt8] = []
    var bytesReceived = 0
    var sizeExceeded = false
    var cleanupFailed = false

    /// The transcript for postmaster notices, and the kinds of error it recorded.
    var history: [String] = []
    var errorMask: Set<ErrorClass> = []

    // Restriction state (smtpd_check.c).
    var check = CheckState()

    init(settings: Settings, stream: FDStream, fd: Int32) {
        s = settings
        self.stream = stream
        stream.timeout = settings.timeout
        ehloDiscard = settings.ehloDiscard
        if let peer = InetSocket.peerAddress(fd) {
            addr = peer.host
            port = String(peer.port)
            family = peer.family
            peerBytes = peer.address
            // An IPv4-mapped IPv6 address is shown as IPv4, as Postfix does.
            if family == AF_INET6, addr.lowercased().hasPrefix("::ffff:"), addr.contains(".") {
                addr = String(addr.dropFirst(7))
                family = AF_INET
                peerBytes = Array(peerBytes.suffix(4))
            }
            if settings.peernameLookup { lookupPeerName() }
        } else if fd == 0 {
            // Stand-alone mode (-S): the client is the local user.
            name = "localhost"
            reverseName = "localhost"
        }
        if let local = InetSocket.localAddress(fd) {
            serverAddr = local.host
            serverPort = String(local.port)
        }
    }

    // MARK: Replies and logging

    /// smtpd_chat_reply: a client past the soft error limit waits before every reply;
    /// soft_bounce turns 5xx into 4xx; a 421 reply ends the session. `more`: another line
    /// of the same reply follows, so nothing is flushed yet (one segment for the whole
    /// reply: a line per segment would wait for the client's delayed ACK).
    func reply(_ text: String, more: Bool = false) {
        if hungUp { return }
        // The tar pit delays a reply once, not each of its lines.
        if !replyContinues && errorCount >= s.softErrorLimit && s.errorSleep > 0 { sleep(UInt32(s.errorSleep)) }
        replyContinues = more
        var t = text
        if s.softBounce && t.hasPrefix("5") {
            var b = Array(t.utf8)
            b[0] = UInt8(ascii: "4")
            if b.count > 4 && b[4] == UInt8(ascii: "5") { b[4] = UInt8(ascii: "4") }
            t = String(decoding: b, as: UTF8.self)
        }
        remember("Out: ", t)
        do {
            try stream.write(t + "\r\n")
            // Replies are flushed when no more pipelined input waits (PIPELINING).
            if !more && stream.bufferedInputCount == 0 { try stream.flush() }
        } catch {
            reason = reason ?? "lost connection"
            done = true
        }
        if t.hasPrefix("421") {
            flush()
            done = true
        }
    }

    func flush() {
        try? stream.flush()
    }

    /// log_whatsup: "ID: action: STATE from client: text; from=<> to=<> proto= helo=<>".
    func logWhatsup(_ action: String, _ text: String) {
        var line = "\(queueID ?? "NOQUEUE"): \(action): \(whereText) from \(namaddr): \(text);"
        if let sender { line += " from=<\(s.logAddress(sender))>" }
        if let r = recipient { line += " to=<\(s.logAddress(r))>" }
        line += " proto=\(protocolName)"
        if let helo { line += " helo=<\(helo)>" }
        Msg.info(line)
    }

    // MARK: The session

    func run() {
        Msg.info("connect from \(namaddr)")
        // smtpd_tls_wrappermode: TLS from the first byte (port 465, "submissions").
        if s.tlsWrapper && !s.standalone {
            guard let ctx = s.tlsContext else {
                Msg.warn("Wrapper-mode request dropped from \(namaddr) for service \(config.serviceName). TLS context initialization failed. For details see earlier warnings in your logs.")
                Msg.info("disconnect from \(namaddr)\(countsText())")
                return
            }
            guard startTLS(ctx) else {
                Msg.info("disconnect from \(namaddr)\(countsText())")
                return
            }
        }
        // With smtpd_tls_auth_only, SASL starts with TLS.
        if s.saslEnabled && !s.standalone && (!s.tlsAuthOnly || tls != nil) { saslActivate() }
        // A client that talks before the greeting does not wait for replies.
        if !s.standalone { detectPipelining(after: Where.connect) }
        if done {
            // smtpd_forbid_unauth_pipelining: the session is over.
        } else if !s.standalone && !s.delayReject, let r = checkClient() {
            accessDenied = r
            reply(r)
        } else {
            reply("220 \(config.expand(s.banner))")
        }
        while !done {
            if errorCount >= s.hardErrorLimit {
                reason = "too many errors"
                errorMask.insert(.proto)
                reply("421 4.7.0 \(s.myhostname) Error: too many errors")
                break
            }
            guard let line = readClientLine(limit: s.lineLimit, overflow: .truncate) else { break }
            remember("In:  ", String(decoding: line.bytes, as: UTF8.self))
            if line.ending == .bareLF && refuseBareLF() { break }
            command(line.bytes)
        }
        flush()
        tls?.shutdown()
        logEarlyEnd()
        chatReset(0)
        abortTransaction()
        Msg.info("disconnect from \(namaddr)\(countsText())")
    }

    /// smtpd_chat_query: the client's next line, after flushing what waits for it; a line
    /// over the limit is reported and cut (.truncate) or split (.split, DATA). nil
    /// ends the session: a timeout (answered with 421) or a lost connection, with the
    /// reason for the log.
    func readClientLine(limit: Int, overflow: LineOverflow) -> Line? {
        // Message lines are split at the limit; commands and AUTH responses are cut.
        startRequestDeadline(content: overflow == .split)
        defer { stream.deadline = nil }
        do {
            if stream.bufferedInputCount == 0 { try stream.flush() }
            if let line = try stream.readLine(limit: limit, overflow: overflow) {
                // A command or response cut at the limit (message lines are split instead).
                if overflow == .truncate && line.overflow {
                    Msg.warn("\(namaddr): request longer than \(limit): \(String(decoding: line.bytes.prefix(30), as: UTF8.self))...")
                }
                return line
            }
        } catch StreamError.timeout {
            reason = "timeout"
            reply("421 4.4.2 \(s.myhostname) Error: timeout exceeded")
            done = true
            return nil
        } catch {}
        reason = "lost connection"
        done = true
        return nil
    }

    /// smtpd_per_request_deadline (on by default under stress): the reply before a
    /// request and the whole request must take no more than smtpd_timeout, so that a
    /// client trickling a byte at a time is cut off as Postfix does. Message content
    /// earns more time at smtpd_min_data_rate. The caller clears the deadline.
    func startRequestDeadline(content: Bool) {
        guard s.perRequestDeadline else { return }
        stream.startDeadline(seconds: s.timeout)
        stream.minDataRate = content ? s.minDataRate : 0
    }

    /// smtpd_start_tls: the handshake; what the client sent before it is dropped (no
    /// command injection into the TLS session). False when it failed.
    func startTLS(_ ctx: TLSServerContext) -> Bool {
        stream.purgeInput()
        guard let t = ctx.accept(fd: stream.fd, timeout: s.starttlsTimeout, peer: namaddr) else {
            return false
        }
        tls = t
        stream.transport = t
        // smtpd_tls_req_ccert: without a trusted client certificate the session ends.
        if ctx.requireCcert && !t.trusted {
            let why = t.certPresent ? "Client certificate not trusted" : "No client certificate presented"
            Msg.info("NOQUEUE: abort: TLS from \(namaddr): \(why)")
            errorMask.insert(.policy)
            reply("421 4.7.1 \(s.myhostname) Error: \(why)")
            flush()
            // What the client sent meanwhile is read before the close, so that its
            // kernel does not drop our reply on a reset.
            if FileDescriptor.waitReadable(stream.fd, milliseconds: 200) { _ = try? stream.fill() }
            done = true
        }
        return true
    }

    /// STARTTLS (RFC 3207).
    func starttlsCommand(_ argv: [SMTPToken]) -> Bool {
        if argv.count != 1 { return fail("501 5.5.4 Syntax: STARTTLS") }
        if tls != nil { return fail("554 5.5.1 Error: TLS already active") }
        if s.tlsLevel == .none || ehloDiscard.contains(.starttls) || s.standalone {
            return fail("502 5.5.1 Error: command not implemented")
        }
        guard let ctx = s.tlsContext else {
            return fail("454 4.7.0 TLS not available due to local problem", .software)
        }
        reply("220 2.0.0 Ready to start TLS")
        flush()
        // The session starts over: a new EHLO, a new transaction.
        helo = nil
        abortTransaction()
        if !startTLS(ctx) {
            reason = "lost connection"
            done = true
            return false
        }
        // A new SASL server, with the security options for TLS sessions.
        if s.saslEnabled && !done {
            saslDeactivate()
            saslActivate()
        }
        return true
    }

    /// "timeout after DATA (123 bytes) from ...", unless the client simply left after
    /// the message it sent.
    func logEarlyEnd() {
        guard let reason else { return }
        switch whereText {
        case Where.data:
            Msg.info("\(reason) after DATA (\(bytesReceived) bytes) from \(namaddr)")
        case Where.bdatContent:
            Msg.info("\(reason) after BDAT (\(bytesReceived) bytes) from \(namaddr)")
        case Where.endOfMessage where reason == "lost connection":
            break
        default:
            Msg.info("\(reason) after \(whereText) from \(namaddr)")
        }
    }

    /// smtpd_forbid_bare_newline=reject refuses a command line that ends in a bare LF.
    func refuseBareLF() -> Bool {
        guard s.bareNewline == .reject, !s.bareNewlineExclusions.matches(name, address: addr) else { return false }
        reply("\(s.bareNewlineCode) 5.5.2 \(s.myhostname) Error: bare <LF> received")
        logWhatsup("reject", "bare <LF> received")
        return true
    }

    func countsText() -> String {
        var out = ""
        var ok = 0, total = 0
        for c in Self.commandTable.map({ $0.log }) + ["unknown"] {
            guard let v = counts[c] else { continue }
            ok += v.ok
            total += v.total
            out += " \(c)=\(v.ok)" + (v.ok == v.total ? "" : "/\(v.total)")
        }
        return out + " commands=\(ok)" + (ok == total && total > 0 ? "" : "/\(total)")
    }

    func count(_ cmd: String, ok: Bool) {
        var v = counts[cmd] ?? (0, 0)
        v.total += 1
        if ok { v.ok += 1 }
        counts[cmd] = v
    }

    // MARK: The command table

    struct Command {
        let name: String
        /// Its name in the disconnect statistics.
        var log: String { name.lowercased() }
        /// Counts against smtpd_junk_command_limit.
        let junk: Bool
        /// A client must wait for its reply (RFC 2920): pipelining past it is improper.
        let last: Bool
        let action: (Session, [SMTPToken]) -> Bool
    }

    nonisolated(unsafe) static let commandTable: [Command] = [
        Command(name: "HELO", junk: true, last: true) { $0.heloCommand($1, extended: false) },
        Command(name: "EHLO", junk: true, last: true) { $0.heloCommand($1, extended: true) },
        Command(name: "XCLIENT", junk: true, last: false) { s, _ in s.xclientCommand() },
        Command(name: "XFORWARD", junk: true, last: false) { s, _ in s.xclientCommand() },
        // Not "last": what is pipelined after it is dropped unseen, as in Postfix.
        Command(name: "STARTTLS", junk: false, last: false) { $0.starttlsCommand($1) },
        Command(name: "AUTH", junk: false, last: true) { $0.authCommand($1) },
        Command(name: "MAIL", junk: false, last: false) { $0.mailCommand($1) },
        Command(name: "RCPT", junk: false, last: false) { $0.rcptCommand($1) },
        Command(name: "DATA", junk: false, last: true) { $0.dataCommand($1) },
        Command(name: "BDAT", junk: false, last: false) { $0.bdatCommand($1) },
        Command(name: "RSET", junk: true, last: false) { $0.rsetCommand($1) },
        Command(name: "NOOP", junk: true, last: true) { s, _ in
            s.reply("250 2.0.0 Ok")
            return true
        },
        Command(name: "VRFY", junk: true, last: true) { $0.vrfyCommand($1) },
        Command(name: "ETRN", junk: true, last: true) { $0.etrnCommand($1) },
        Command(name: "QUIT", junk: false, last: true) { s, _ in
            s.reply("221 2.0.0 Bye")
            s.done = true
            return true
        },
    ]

    nonisolated(unsafe) static let commandsByName: [String: Command] = Dictionary(uniqueKeysWithValues: commandTable.map { ($0.name, $0) })

    /// smtpd_proto's loop body: one command line.
    func command(_ bytes: [UInt8]) {
        let argv = SMTPTokenizer.split(bytes)
        guard let first = argv.first else {
            errorCount += 1
            errorMask.insert(.proto)
            reply("500 5.5.2 Error: bad syntax")
            return
        }
        if s.noopCommands.matches(first.text) {
            reply("250 2.0.0 Ok")
            junkCount += 1
            if junkCount > s.junkLimit { errorCount += 1 }
            return
        }
        let cmd = Self.commandsByName[first.text.uppercased()]
        if cmd == nil {
            whereText = Where.unknown
            if HeaderText.isHeader(first.text) || s.forbiddenCommands.matches(first.text) {
                Msg.warn("non-SMTP command from \(namaddr): \(Msg.printable(String(decoding: bytes.prefix(100), as: UTF8.self)))")
                reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
                count("unknown", ok: false)
                done = true
                return
            }
        }
        if let denied = accessDenied, cmd?.name != "QUIT" {
            _ = denied
            reply("503 5.7.0 Error: access denied for \(namaddr)")
            errorCount += 1
            count(cmd?.log ?? "unknown", ok: false)
            return
        }
        guard let cmd else {
            reply("500 5.5.2 Error: command not recognized")
            errorMask.insert(.proto)
            errorCount += 1
            count("unknown", ok: false)
            return
        }
        // Commands a client sent without waiting for a reply it had to wait for.
        if !s.standalone && !illegalPipelining && (cmd.last || !pipeliningAnnounced) {
            detectPipelining(after: cmd.name)
            if done {
                count(cmd.log, ok: false)
                return
            }
        }
        whereText = cmd.name
        let ok = cmd.action(self, argv)
        if !ok { errorCount += 1 }
        count(cmd.log, ok: ok)
        if cmd.junk {
            junkCount += 1
            if junkCount > s.junkLimit { errorCount += 1 }
        }
    }

    /// PIPELINING is in effect: EHLO was sent and the keyword was not discarded.
    var pipeliningAnnounced: Bool {
        protocolName.uppercased() == "ESMTP" && !ehloDiscard.contains(.pipelining)
    }

    /// Input that is already waiting means the client did not wait for our reply; with
    /// smtpd_forbid_unauth_pipelining that ends the session.
    func detectPipelining(after what: String) {
        var pending = stream.peekBuffered(max: 100)
        if pending.isEmpty && FileDescriptor.waitReadable(stream.fd, milliseconds: 0) {
            _ = try? stream.fill()
            pending = stream.peekBuffered(max: 100)
        }
        guard !pending.isEmpty else { return }
        illegalPipelining = true
        Msg.info("improper command pipelining after \(what) from \(namaddr): \(Self.escape(pending))")
        if s.forbidUnauthPipelining {
            reply("554 5.5.0 Error: SMTP protocol synchronization")
            done = true
        }
    }

    /// The C-style escaped form Postfix logs pipelined input in.
    static func escape(_ bytes: [UInt8]) -> String {
        var text = ""
        for b in bytes {
            switch b {
            case 0x07: text += "\\a"
            case 0x08: text += "\\b"
            case 0x0C: text += "\\f"
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x09: text += "\\t"
            case 0x0B: text += "\\v"
            case 0x5C: text += "\\\\"
            case 0x20..<0x7F: text.append(Character(UnicodeScalar(b)))
            default: text += "\\" + String(repeating: "0", count: 3 - String(b, radix: 8).count) + String(b, radix: 8)
            }
        }
        return text
    }

    /// A failed command: its reply, and the kind of error for notify_classes (nil: none).
    func fail(_ text: String, _ kind: ErrorClass? = .proto) -> Bool {
        if let kind { errorMask.insert(kind) }
        reply(text)
        return false
    }

    func xclientCommand() -> Bool {
        fail("550 5.7.0 Error: insufficient authorization")
    }
}

/// The phases a session's log lines name.
enum Where {
    static let connect = "CONNECT"
    static let unknown = "UNKNOWN"
    static let data = "DATA content"
    static let bdatContent = "BDAT content"
    static let endOfMessage = "END-OF-MESSAGE"
}

/// A BDAT transaction: none, chunks arriving, or refusing chunks after an error.
enum BDATState {
    case none, active, error
}

