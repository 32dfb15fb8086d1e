// Session: one SMTP client from the greeting to the disconnect: the command loop, each
// command's syntax and replies, the transaction (sender, recipients, DATA or BDAT), the
// cleanup connection the message goes through, error limits, timeouts and the log lines.
// Mirrors Postfix smtpd/smtpd.c (with smtpd_chat.c, smtpd_state.c, smtpd_peer.c).
import Glibc
import MailUtil
import MailGlobal
import MailDict

final class Session {
    let s: Settings
    let stream: FDStream
    var config: MailConfig { s.config }

    // Peer.
    var name = "unknown"
    var reverseName = "unknown"
    var addr = "127.0.0.1"
    var port = "0"
    var family: Int32 = AF_INET
    var peerBytes: [UInt8] = []
    var serverAddr = ""
    var serverPort = ""
    var namaddr: String { clientPortLoggingText }
    var clientPortLoggingText: String { s.clientPortLogging ? "\(name)[\(addr)]:\(port)" : "\(name)[\(addr)]" }

    // Session state.
    var helo: String?
    var protocolName = "SMTP"
    var lastCommand = "CONNECT"
    var errorCount = 0
    var junkCount = 0
    var counts: [String: (ok: Int, total: Int)] = [:]
    var bareLFSeen = false
    var illegalPipelining = false
    var done = false

    // Transaction.
    var inMail = false
    var sender: String?
    var recipients: [String] = []
    var rcptCount = 0
    var declaredSize = 0
    var bodyType = ""
    var retFlags = ""
    var envid = ""
    var smtputf8Requested = false
    var cleanup: AttrClient?
    var queueID: String?
    var arrival = timeval()
    var savedFlags: CleanupFlags = []
    var savedFilter: String?
    var savedRedirect: String?
    var savedBcc: [String] = []
    var prependHeaders: [String] = []
    var bdatActive = false
    var bdatError: String?
    var bdatTotal = 0
    var bdatPartial: [UInt8] = []
    var bdatLastEnding: LineEnding = .crlf
    var bytesReceived = 0
    var sizeExceeded = false
    var cleanupFailed = false

    // Cached restriction results per transaction.
    var clientVerdict: String??
    var heloVerdict: String??
    var senderVerdict: String??
    /// warn_if_reject: the next rejection is only logged.
    var warnOnly = false

    static let commandOrder = ["helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data",
                               "bdat", "rset", "noop", "vrfy", "etrn", "quit", "help", "unknown"]

    init(settings: Settings, stream: FDStream, fd: Int32) {
        s = settings
        self.stream = stream
        stream.timeout = settings.timeout
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
            if settings.peernameLookup { lookupName() }
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

    /// Reverse lookup, confirmed by a forward lookup (smtpd_peer.c).
    func lookupName() {
        guard let sa = SocketAddress(numeric: addr, port: 0) else { return }
        var host = [CChar](repeating: 0, count: 1025)
        let rc = sa.withSockaddr { p, len in
            getnameinfo(p, len, &host, socklen_t(host.count), nil, 0, NI_NAMEREQD)
        }
        guard rc == 0 else { return }
        let ptr = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard ValidHostname.isValid(ptr), !ValidHostname.isAddress(ptr) else { return }
        reverseName = ptr
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(ptr, nil, &hints, &res) == 0, let first = res else { return }
        defer { freeaddrinfo(first) }
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if let a = ai.pointee.ai_addr, let found = SocketAddress.from(a), found.host == addr {
                name = ptr
                return
            }
            p = ai.pointee.ai_next
        }
    }

    // MARK: Replies and logging

    func reply(_ text: String) {
        // A 4xx/5xx reply costs a delay once the client made enough errors.
        if let c = text.first, c == "4" || c == "5" {
            if errorCount >= s.softErrorLimit && s.errorSleep > 0 { sleep(UInt32(s.errorSleep)) }
        }
        do {
            try stream.write(text + "\r\n")
            // Replies are flushed when no more pipelined input waits (PIPELINING).
            if stream.bufferedInputCount == 0 { try stream.flush() }
        } catch {
            done = true
        }
    }

    func flush() {
        try? stream.flush()
    }

    func logReject(_ action: String, _ replyText: String, recipient: String? = nil) {
        var line = "\(queueID ?? "NOQUEUE"): \(action): \(lastCommand) from \(namaddr): \(replyText);"
        if let sender { line += " from=<\(sender)>" }
        if let r = recipient { line += " to=<\(r)>" }
        line += " proto=\(protocolName)"
        if let helo { line += " helo=<\(helo)>" }
        Msg.info(line)
    }

    // MARK: The session

    func run() {
        Msg.info("connect from \(namaddr)")
        reply("220 \(config.expand(s.banner))")
        while !done {
            if s.hardErrorLimit > 0 && errorCount >= s.hardErrorLimit {
                reply("421 4.7.0 \(s.myhostname) Error: too many errors")
                Msg.info("too many errors after \(lastCommand) from \(namaddr)")
                break
            }
            let line: Line?
            do {
                if stream.bufferedInputCount == 0 { try stream.flush() }
                line = try stream.readLine(limit: s.lineLimit, overflow: .truncate)
            } catch StreamError.timeout {
                reply("421 4.4.2 \(s.myhostname) Error: timeout exceeded")
                flush()
                Msg.info("timeout after \(lastCommand) from \(namaddr)")
                break
            } catch {
                Msg.info("lost connection after \(lastCommand) from \(namaddr)")
                break
            }
            guard let line else {
                Msg.info("lost connection after \(lastCommand) from \(namaddr)")
                break
            }
            if line.overflow {
                Msg.warn("\(namaddr): request longer than \(s.lineLimit): \(String(decoding: line.bytes.prefix(30), as: UTF8.self))...")
            }
            if line.ending == .bareLF && !bareLFAllowedInCommand() { break }
            command(line.bytes)
        }
        flush()
        abortTransaction()
        Msg.info("disconnect from \(namaddr)\(countsText())")
    }

    /// smtpd_forbid_bare_newline=yes refuses a command line ending in a bare LF.
    func bareLFAllowedInCommand() -> Bool {
        bareLFSeen = true
        if s.bareNewline != "reject" || s.bareNewlineExclusions.matches(name, address: addr) { return true }
        reply("\(s.bareNewlineCode) 5.5.2 \(s.myhostname) Error: bare <LF> received")
        Msg.info("disconnect: bare <LF> received from \(namaddr) after \(lastCommand)")
        count("unknown", ok: false)
        return false
    }

    func countsText() -> String {
        var out = ""
        var ok = 0, total = 0
        for c in Self.commandOrder {
            guard let v = counts[c] else { continue }
            ok += v.ok
            total += v.total
            out += " \(c)=\(v.ok)" + (v.ok == v.total ? "" : "/\(v.total)")
        }
        out += " commands=\(ok)" + (ok == total ? "" : "/\(total)")
        return out
    }

    func count(_ cmd: String, ok: Bool) {
        var v = counts[cmd] ?? (0, 0)
        v.total += 1
        if ok { v.ok += 1 }
        counts[cmd] = v
    }

    func command(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        var parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        if parts.isEmpty {
            // An empty line is an error but not a command.
            errorCount += 1
            reply("500 5.5.2 Error: bad syntax")
            return
        }
        let verb = parts.removeFirst().uppercased()
        let arg = parts.first.map(String.init) ?? ""
        if s.forbiddenCommands.matches(verb) {
            Msg.warn("non-SMTP command from \(namaddr): \(Msg.printable(text))")
            reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
            count("unknown", ok: false)
            done = true
            return
        }
        if bytes.contains(0) {
            errorCount += 1
            count("unknown", ok: false)
            reply("500 5.5.2 Error: bad syntax")
            return
        }
        if !illegalPipelining && Self.lastInGroup.contains(verb) { checkPipelining(verb) }
        let ok: Bool
        let name: String
        switch verb {
        case "HELO": name = "helo"; lastCommand = "HELO"; ok = heloCommand(arg, extended: false)
        case "EHLO": name = "ehlo"; lastCommand = "EHLO"; ok = heloCommand(arg, extended: true)
        case "MAIL": name = "mail"; lastCommand = "MAIL"; ok = mailCommand(arg)
        case "RCPT": name = "rcpt"; lastCommand = "RCPT"; ok = rcptCommand(arg)
        case "DATA": name = "data"; lastCommand = "DATA"; ok = dataCommand(arg)
        case "BDAT": name = "bdat"; lastCommand = "BDAT"; ok = bdatCommand(arg)
        case "RSET": name = "rset"; lastCommand = "RSET"; ok = rsetCommand(arg)
        case "NOOP": name = "noop"; lastCommand = "NOOP"; ok = junk() && { reply("250 2.0.0 Ok"); return true }()
        case "VRFY": name = "vrfy"; lastCommand = "VRFY"; ok = junk() && vrfyCommand(arg)
        case "ETRN": name = "etrn"; lastCommand = "ETRN"; ok = junk() && etrnCommand(arg)
        case "STARTTLS": name = "starttls"; lastCommand = "STARTTLS"
            ok = fail("502 5.5.1 Error: command not implemented")
        case "AUTH": name = "auth"; lastCommand = "AUTH"
            ok = fail("503 5.5.1 Error: authentication not enabled")
        case "XCLIENT", "XFORWARD":
            name = verb.lowercased(); lastCommand = verb
            ok = fail(inMail ? "503 5.5.1 Error: MAIL transaction in progress" : "550 5.7.0 Error: insufficient authorization")
        case "QUIT": name = "quit"; lastCommand = "QUIT"; reply("221 2.0.0 Bye"); done = true; ok = true
        default:
            name = "unknown"
            lastCommand = "UNKNOWN"
            errorCount += 1
            reply("500 5.5.2 Error: command not recognized")
            ok = false
        }
        count(name, ok: ok)
    }

    /// Commands a client must wait after (RFC 2920): input already waiting means the
    /// client did not.
    static let lastInGroup: Set<String> = ["HELO", "EHLO", "STARTTLS", "AUTH", "DATA", "VRFY", "ETRN", "NOOP", "QUIT"]

    func checkPipelining(_ verb: String) {
        var pending = stream.peekBuffered(max: 100)
        if pending.isEmpty && FileDescriptor.waitReadable(stream.fd, milliseconds: 0) {
            _ = try? stream.fill()
            pending = stream.peekBuffered(max: 100)
        }
        guard !pending.isEmpty else { return }
        illegalPipelining = true
        var text = ""
        for b in pending {
            switch b {
            case 0x0D: text += "\\r"
            case 0x0A: text += "\\n"
            case 0x09: text += "\\t"
            case 0x5C: text += "\\\\"
            case 0x20..<0x7F: text.append(Character(UnicodeScalar(b)))
            default: text += "\\" + String(b, radix: 8)
            }
        }
        Msg.info("improper command pipelining after \(verb) from \(namaddr): \(text)")
    }

    /// NOOP, VRFY, ETRN and RSET count as junk; too many of them count as errors.
    func junk() -> Bool {
        junkCount += 1
        if s.junkLimit > 0 && junkCount > s.junkLimit { errorCount += 1 }
        return true
    }

    func fail(_ text: String) -> Bool {
        errorCount += 1
        reply(text)
        return false
    }

    // MARK: HELO / EHLO

    func heloCommand(_ arg: String, extended: Bool) -> Bool {
        let words = arg.split(separator: " ")
        guard !words.isEmpty else {
            return fail(extended ? "501 Syntax: EHLO hostname" : "501 Syntax: HELO hostname")
        }
        // A second HELO/EHLO ends the transaction in progress (as RSET does).
        if inMail || cleanup != nil { abortTransaction() }
        // Spaces and unprintable characters in the name are neutered, as Postfix does.
        var h = String(words.joined(separator: " ").map { c -> Character in
            guard let a = c.asciiValue else { return c }
            return a > 32 && a < 127 ? c : "?"
        })
        if h.count > 255 { h = String(h.prefix(255)) }
        helo = h
        protocolName = extended ? "ESMTP" : "SMTP"
        heloVerdict = nil
        if !s.delayReject, let r = restrictions("smtpd_helo_restrictions", stage: .helo) {
            helo = nil
            return fail(r)
        }
        if !extended {
            reply("250 \(s.myhostname)")
            return true
        }
        var lines = [s.myhostname]
        func offer(_ kw: String, _ text: String? = nil) {
            if !s.discardEhlo.contains(kw.lowercased()) { lines.append(text ?? kw) }
        }
        offer("PIPELINING")
        offer("SIZE", s.messageSizeLimit > 0 ? "SIZE \(s.messageSizeLimit)" : "SIZE")
        if !s.disableVRFY { offer("VRFY") }
        offer("ETRN")
        offer("ENHANCEDSTATUSCODES")
        offer("8BITMIME")
        offer("DSN")
        if s.smtputf8 { offer("SMTPUTF8") }
        offer("CHUNKING")
        for (i, l) in lines.enumerated() {
            reply("250\(i == lines.count - 1 ? " " : "-")\(l)")
        }
        return true
    }

    // MARK: MAIL

    /// Splits "FROM:<addr> PARAM..." into the address and parameters; nil on bad syntax.
    func envelopeArgument(_ arg: String, keyword: String) -> (address: String, params: [String])? {
        guard arg.uppercased().hasPrefix(keyword + ":") else { return nil }
        var rest = Substring(arg.dropFirst(keyword.count + 1))
        if !s.strictRFC821 { rest = rest.drop(while: { $0 == " " }) }
        var address: String
        if rest.first == "<" {
            var inQuote = false, escaped = false
            var end: Substring.Index?
            var i = rest.index(after: rest.startIndex)
            while i < rest.endIndex {
                let c = rest[i]
                if escaped { escaped = false }
                else if c == "\\" { escaped = true }
                else if c == "\"" { inQuote.toggle() }
                else if c == ">" && !inQuote { end = i; break }
                i = rest.index(after: i)
            }
            guard let e = end else { return nil }
            address = String(rest[rest.index(after: rest.startIndex)..<e])
            rest = rest[rest.index(after: e)...]
            if let f = rest.first, f != " " { return nil }
        } else {
            if s.strictRFC821 { return nil }
            let word = rest.prefix(while: { $0 != " " })
            if word.isEmpty { return nil }
            address = String(word)
            rest = rest.dropFirst(word.count)
        }
        // A source route (@a,@b:user@domain) is dropped.
        if address.hasPrefix("@"), let colon = address.firstIndex(of: ":") {
            address = String(address[address.index(after: colon)...])
        }
        let params = rest.split(separator: " ").map(String.init)
        return (address, params)
    }

    /// The internal form of an SMTP address; nil when it is not a valid address.
    func internalAddress(_ external: String) -> String? {
        if external.isEmpty { return "" }
        if external.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return nil }
        if s.strictRFC821 || true {
            // Unbalanced quotes or brackets, or white space outside quotes, are errors.
            var inQuote = false, escaped = false
            for c in external {
                if escaped { escaped = false; continue }
                if c == "\\" { escaped = true; continue }
                if c == "\"" { inQuote.toggle(); continue }
                if !inQuote && (c == " " || c == "<" || c == ">" || c == "(" || c == ")" || c == "," || c == ";") {
                    return nil
                }
            }
            if inQuote { return nil }
        }
        let a = Quote822.unquote822(external)
        if !s.smtputf8 && a.utf8.contains(where: { $0 >= 0x80 }) && !smtputf8Requested { return nil }
        return a
    }

    func mailCommand(_ arg: String) -> Bool {
        if s.heloRequired && helo == nil { return fail("503 5.5.1 Error: send HELO/EHLO first") }
        if bdatActive { return fail("503 5.5.1 Error: MAIL after BDAT") }
        if inMail { return fail("503 5.5.1 Error: nested MAIL command") }
        guard let (external, params) = envelopeArgument(arg, keyword: "FROM") else {
            return fail("501 5.5.4 Syntax: MAIL FROM:<address>")
        }
        bodyType = ""
        retFlags = ""
        envid = ""
        smtputf8Requested = false
        for p in params {
            let kv = p.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0].uppercased()
            let value = kv.count > 1 ? String(kv[1]) : nil
            switch key {
            case "SIZE":
                guard let v = value, let n = Int(v), n >= 0 else { return fail("501 5.5.4 Bad message size syntax") }
                declaredSize = n
            case "BODY":
                guard let v = value?.uppercased(), v == "7BIT" || v == "8BITMIME" else {
                    return fail("555 5.5.4 Unsupported option: \(p)")
                }
                bodyType = v
            case "RET":
                guard let v = value?.uppercased(), v == "FULL" || v == "HDRS" else {
                    return fail("501 5.5.4 Bad RET parameter syntax")
                }
                if !retFlags.isEmpty { return fail("501 5.5.4 Duplicate RET parameter") }
                retFlags = v == "FULL" ? "1" : "2"
            case "ENVID":
                guard let v = value, !v.isEmpty, v.count <= 100, let d = Xtext.decode(v), Xtext.isPrintable(d) else {
                    return fail("501 5.5.4 Bad ENVID parameter syntax")
                }
                if !envid.isEmpty { return fail("501 5.5.4 Duplicate ENVID parameter") }
                envid = d
            case "SMTPUTF8" where s.smtputf8 && value == nil:
                smtputf8Requested = true
            case "AUTH" where value != nil:
                break
            default:
                return fail("555 5.5.4 Unsupported option: \(p)")
            }
        }
        guard let address = internalAddress(external) else {
            Msg.warn("Illegal address syntax from \(namaddr) in MAIL command: \(arg.dropFirst(5).drop(while: { $0 == " " }).prefix(while: { $0 != " " }))")
            return fail("501 5.1.7 Bad sender address syntax")
        }
        let size = declaredSize
        if s.messageSizeLimit > 0 && size > s.messageSizeLimit {
            return fail("552 5.3.4 Message size exceeds fixed limit")
        }
        if !enoughSpace(declared: size) {
            Msg.warn("not enough free space in mail queue: \(freeBytes()) bytes < 1.5*message size limit")
            return fail("452 4.3.1 Insufficient system storage")
        }
        sender = address
        senderVerdict = nil
        if !s.delayReject, let r = restrictionsBeforeRecipient() {
            sender = nil
            logReject("reject", r)
            return fail(r)
        }
        inMail = true
        gettimeofday(&arrival, nil)
        reply("250 2.1.0 Ok")
        return true
    }

    func freeBytes() -> Int {
        var st = statvfs()
        if statvfs(".", &st) < 0 { return Int.max }
        return Int(st.f_bavail) * Int(st.f_frsize)
    }

    /// queue_minfree and 1.5 times message_size_limit (smtpd_check_queue).
    func enoughSpace(declared: Int) -> Bool {
        let free = freeBytes()
        let need = max(s.queueMinFree, s.messageSizeLimit + s.messageSizeLimit / 2, declared)
        return free >= need
    }

    // MARK: RCPT

    func rcptCommand(_ arg: String) -> Bool {
        guard inMail, let sender else { return fail("503 5.5.1 Error: need MAIL command") }
        guard let (external, params) = envelopeArgument(arg, keyword: "TO") else {
            return fail("501 5.5.4 Syntax: RCPT TO:<address>")
        }
        var notify = 0
        var orcpt = ""
        for p in params {
            let kv = p.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0].uppercased()
            let value = kv.count > 1 ? String(kv[1]) : nil
            switch key {
            case "NOTIFY":
                guard notify == 0, let v = value, let n = Self.notifyMask(v) else {
                    return fail("501 5.5.4 Error: Bad NOTIFY parameter syntax")
                }
                notify = n
            case "ORCPT":
                guard orcpt.isEmpty, let v = value, let semi = v.firstIndex(of: ";"),
                      let d = Xtext.decode(String(v[v.index(after: semi)...])), !d.isEmpty, Xtext.isPrintable(d) else {
                    return fail("501 5.5.4 Error: Bad ORCPT parameter syntax")
                }
                orcpt = String(v[..<semi]) + ";" + d
            default:
                return fail("555 5.5.4 Unsupported option: \(p)")
            }
        }
        guard let address = internalAddress(external), !address.isEmpty else {
            Msg.warn("Illegal address syntax from \(namaddr) in RCPT command: \(arg.dropFirst(3).drop(while: { $0 == " " }).prefix(while: { $0 != " " }))")
            return fail("501 5.1.3 Bad recipient address syntax")
        }
        if rcptCount >= s.recipientLimit {
            return fail("452 4.5.3 Error: too many recipients")
        }
        if let r = restrictionsForRecipient(address) {
            logReject(r.hasPrefix("4") ? "reject" : "reject", r, recipient: address)
            return fail(r)
        }
        // The queue file is opened with the first accepted recipient.
        if cleanup == nil && !cleanupFailed {
            openCleanup(sender: sender)
        }
        guard let c = cleanup else {
            return fail("451 4.3.0 Error: queue file write error")
        }
        var out: [UInt8] = []
        if notify != 0 { RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnNotifyFlags)=\(notify)".utf8)) }
        let dsnOrcpt = orcpt.isEmpty ? "rfc822;" + address : orcpt
        RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnOriginalRecipient)=\(dsnOrcpt)".utf8))
        RecordCodec.append(&out, .recipient, Array(address.utf8))
        do {
            try c.stream.write(out)
        } catch {
            cleanupLost(error)
            return fail("451 4.3.0 Error: queue file write error")
        }
        recipients.append(address)
        rcptCount += 1
        reply("250 2.1.5 Ok")
        return true
    }

    static func notifyMask(_ v: String) -> Int? {
        var mask = 0
        for word in v.uppercased().split(separator: ",", omittingEmptySubsequences: false) {
            switch word {
            case "NEVER": mask |= 1
            case "SUCCESS": mask |= 2
            case "FAILURE": mask |= 4
            case "DELAY": mask |= 8
            default: return nil
            }
        }
        if mask & 1 != 0 && mask != 1 { return nil }
        return mask
    }

    // MARK: The cleanup connection

    func rewriteContext() -> String {
        for item in s.localHeaderClients {
            switch item.lowercased() {
            case "permit_inet_interfaces":
                if s.ownAddresses.contains(peerBytes) { return MailAttr.rewriteLocal }
            case "permit_mynetworks":
                if s.mynetworks.matches(addr) { return MailAttr.rewriteLocal }
            case "static:all", "permit":
                return MailAttr.rewriteLocal
            default:
                break
            }
        }
        return MailAttr.rewriteRemote
    }

    func openCleanup(sender: String) {
        do {
            let c = try AttrClient(serviceClass: MailClass.public, name: s.cleanupService)
            let hello = try c.expectProtocol(MailProtocol.cleanup)
            var sc = hello.scanner()
            let id = try sc.string(MailAttr.queueID)
            var flags: CleanupFlags = [.external, .smtpReply]
            if smtputf8Requested { flags.insert(.smtputf8) }
            var f = AttrList()
            f.append(MailAttr.flags, int: flags.rawValue)
            try c.send(f)
            var out: [UInt8] = []
            func rec(_ t: RecordType, _ v: String) { RecordCodec.append(&out, t, Array(v.utf8)) }
            func attr(_ n: String, _ v: String) { rec(.attribute, n + "=" + v) }
            rec(.time, "\(arrival.tv_sec) \(arrival.tv_usec)")
            attr(MailAttr.logIdent, id)
            attr(MailAttr.rewriteContext, rewriteContext())
            if !envid.isEmpty { attr(MailAttr.dsnEnvelopeID, envid) }
            if !retFlags.isEmpty { attr(MailAttr.dsnRetFlags, retFlags) }
            rec(.sender, sender)
            if bodyType == "8BITMIME" { attr(MailAttr.encoding, MailAttr.encoding8bit) }
            else if bodyType == "7BIT" { attr(MailAttr.encoding, MailAttr.encoding7bit) }
            attr(MailAttr.logClientName, name)
            attr(MailAttr.logClientAddress, addr)
            attr(MailAttr.logClientPort, port)
            attr(MailAttr.logMessageOrigin, "\(name)[\(addr)]")
            if let helo { attr(MailAttr.logHeloName, helo) }
            attr(MailAttr.logProtocolName, protocolName)
            attr(MailAttr.clientName, name)
            attr(MailAttr.reverseClientName, reverseName)
            attr(MailAttr.clientAddress, addr)
            attr(MailAttr.clientPort, port)
            if !serverAddr.isEmpty { attr(MailAttr.serverAddress, serverAddr) }
            if !serverPort.isEmpty { attr(MailAttr.serverPort, serverPort) }
            if let helo { attr(MailAttr.heloName, helo) }
            attr(MailAttr.protocolName, protocolName)
            attr(MailAttr.clientAddressType, String(family))
            try c.stream.write(out)
            cleanup = c
            queueID = id
            Msg.info("\(id): client=\(namaddr)")
        } catch {
            Msg.warn("connect to \(MailClass.public)/\(s.cleanupService): \(error)")
            cleanupFailed = true
        }
    }

    func cleanupLost(_ error: Error) {
        Msg.warn("\(queueID ?? "NOQUEUE"): cleanup service: \(error)")
        cleanup = nil
        cleanupFailed = true
    }

    /// Ends the transaction; an unfinished queue file is dropped by closing the connection.
    func abortTransaction() {
        cleanup = nil
        queueID = nil
        inMail = false
        sender = nil
        recipients = []
        rcptCount = 0
        savedFlags = []
        savedFilter = nil
        savedRedirect = nil
        savedBcc = []
        prependHeaders = []
        bdatActive = false
        bdatError = nil
        bdatTotal = 0
        bdatPartial = []
        bytesReceived = 0
        declaredSize = 0
        sizeExceeded = false
        cleanupFailed = false
        senderVerdict = nil
        clientVerdict = nil
    }

    func rsetCommand(_ arg: String) -> Bool {
        _ = junk()
        if !arg.isEmpty { return fail("501 5.5.4 Syntax: RSET") }
        abortTransaction()
        reply("250 2.0.0 Ok")
        return true
    }

    // MARK: DATA and BDAT

    /// The Received: header smtpd puts first.
    func receivedHeader() -> [String] {
        let rfcAddr = family == AF_INET6 ? "IPv6:" + addr : addr
        var lines = ["Received: from \(helo ?? name) (\(name) [\(rfcAddr)])"]
        let proto = smtputf8Requested && protocolName == "ESMTP" ? "UTF8SMTP" : protocolName
        let date = MailDate.format(arrival.tv_sec)
        if rcptCount == 1, let r = recipients.first {
            lines.append("\tby \(s.myhostname) (\(s.mailName)) with \(proto) id \(queueID ?? "")")
            lines.append("\tfor <\(Quote822.quote822(r))>; \(date)")
        } else {
            lines.append("\tby \(s.myhostname) (\(s.mailName)) with \(proto) id \(queueID ?? "");")
            lines.append("\t\(date)")
        }
        return lines
    }

    /// What goes before the content: saved flags, the start of the content, Received:.
    func beginContent() throws {
        guard let c = cleanup else { return }
        var out: [UInt8] = []
        if !savedFlags.isEmpty {
            RecordCodec.append(&out, .extraFlags, Array(String(savedFlags.rawValue).utf8))
        }
        RecordCodec.append(&out, .messageStart, [])
        for h in prependHeaders { RecordCodec.appendText(&out, Array(h.utf8), limit: s.lineLimit) }
        for h in receivedHeader() { RecordCodec.appendText(&out, Array(h.utf8), limit: s.lineLimit) }
        try c.stream.write(out)
    }

    /// One content line to cleanup, counted against message_size_limit.
    func contentLine(_ bytes: ArraySlice<UInt8>, type: RecordType) {
        guard let c = cleanup, !sizeExceeded else { return }
        if s.messageSizeLimit > 0 && bytesReceived + bytes.count + 2 > s.messageSizeLimit {
            sizeExceeded = true
            Msg.warn("\(queueID ?? "NOQUEUE"): queue file size limit exceeded")
            return
        }
        bytesReceived += bytes.count + 2
        var out: [UInt8] = []
        RecordCodec.append(&out, type, bytes)
        do { try c.stream.write(out) } catch { cleanupLost(error) }
    }

    /// Ends the content, waits for cleanup's verdict and answers the client.
    func finishMessage() -> Bool {
        let bdatText = bdatActive ? "\(bdatTotal) bytes " : ""
        defer { abortTransaction() }
        guard let c = cleanup, let id = queueID else {
            return fail("451 4.3.0 Error: queue file write error")
        }
        if sizeExceeded {
            Msg.info("\(id): reject: \(lastCommand) from \(namaddr): 552 5.3.4 Error: message file too big; from=<\(sender ?? "")> proto=\(protocolName)\(helo.map { " helo=<\($0)>" } ?? "")")
            return fail("552 5.3.4 Error: message file too big")
        }
        var out: [UInt8] = []
        RecordCodec.append(&out, .extractedStart, [])
        if let f = savedFilter { RecordCodec.append(&out, .filter, Array(f.utf8)) }
        if let r = savedRedirect { RecordCodec.append(&out, .redirect, Array(r.utf8)) }
        for b in savedBcc {
            RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnNotifyFlags)=1".utf8))
            RecordCodec.append(&out, .recipient, Array(b.utf8))
        }
        RecordCodec.append(&out, .end, [])
        let status: Int
        var why = ""
        do {
            try c.stream.write(out)
            try c.stream.flush()
            let r = try c.receive()
            var sc = r.scanner()
            status = try sc.int(MailAttr.status)
            why = try sc.string(MailAttr.reason)
        } catch {
            cleanupLost(error)
            return fail("451 4.3.0 Error: queue file write error")
        }
        if status == 0 {
            reply("250 2.0.0 Ok: \(bdatText)queued as \(id)")
            return true
        }
        let st = CleanupStatus(rawValue: status)
        let d = st.detail
        var text: String
        if st.contains(.content) && !why.isEmpty {
            text = why.first?.isNumber == true && why.split(separator: " ").first?.count == 3 ? why : "\(d.smtp) \(why)"
        } else {
            text = "\(d.smtp) \(d.dsn) Error: \(d.text)"
        }
        if st.contains(.bareLF) { text = "\(d.smtp) \(d.dsn) Error: \(d.text)" }
        Msg.info("\(id): reject: \(lastCommand) from \(namaddr): \(text); from=<\(sender ?? "")> proto=\(protocolName)\(helo.map { " helo=<\($0)>" } ?? "")")
        return fail(text)
    }

    /// DATA or BDAT without an accepted recipient.
    func noRecipients() -> String? {
        if rcptCount > 0 { return nil }
        return inMail ? "554 5.5.1 Error: no valid recipients" : "503 5.5.1 Error: need RCPT command"
    }

    func dataCommand(_ arg: String) -> Bool {
        if !arg.isEmpty { return fail("501 5.5.4 Syntax: DATA") }
        if bdatActive { return fail("503 5.5.1 Error: DATA after BDAT") }
        if let e = noRecipients() { return fail(e) }
        if let r = restrictions("smtpd_data_restrictions", stage: .data) {
            logReject("reject", r)
            abortTransaction()
            return fail(r)
        }
        do { try beginContent() } catch { cleanupLost(error) }
        reply("354 End data with <CR><LF>.<CR><LF>")
        flush()
        // Lines until <CR><LF>.<CR><LF>; with smtpd_forbid_bare_newline=normal, a bare LF
        // ends a line but never the message.
        var prevType: RecordType = .normalText
        var prevCRLF = true
        let excluded = s.bareNewline != "no" && s.bareNewlineExclusions.matches(name, address: addr)
        let strict = s.bareNewline != "no" && !excluded
        let refuse = s.bareNewline == "reject" && !excluded
        while true {
            let line: Line?
            do {
                line = try stream.readLine(limit: s.lineLimit, overflow: .split)
            } catch StreamError.timeout {
                reply("421 4.4.2 \(s.myhostname) Error: timeout exceeded")
                Msg.info("timeout after DATA (\(bytesReceived) bytes) from \(namaddr)")
                done = true
                return false
            } catch {
                Msg.info("lost connection after DATA (\(bytesReceived) bytes) from \(namaddr)")
                done = true
                return false
            }
            guard let line else {
                Msg.info("lost connection after DATA (\(bytesReceived) bytes) from \(namaddr)")
                done = true
                return false
            }
            if line.ending == .bareLF {
                bareLFSeen = true
                if refuse {
                    reply("\(s.bareNewlineCode) 5.5.2 \(s.myhostname) Error: bare <LF> received")
                    Msg.info("disconnect: bare <LF> received from \(namaddr) after DATA")
                    done = true
                    return false
                }
            }
            var bytes = line.bytes[...]
            let type: RecordType = line.ending == .none && line.overflow ? .continuedText : .normalText
            if prevType != .continuedText, bytes.first == UInt8(ascii: ".") {
                if bytes.count == 1 && type == .normalText
                    && (!strict || (line.ending == .crlf && prevCRLF)) {
                    break
                }
                bytes = bytes.dropFirst()
            }
            contentLine(bytes, type: type)
            prevType = type
            if type == .normalText { prevCRLF = line.ending == .crlf }
        }
        return finishMessage()
    }

    func bdatCommand(_ arg: String) -> Bool {
        let words = arg.split(separator: " ")
        guard words.count == 1 || (words.count == 2 && words[1].uppercased() == "LAST"),
              let size = Int(words[0]), size >= 0 else {
            // The chunk cannot be skipped without its size: the session ends.
            Msg.warn("\(queueID ?? "NOQUEUE"): malformed BDAT command syntax from \(namaddr): BDAT \(arg)")
            reply("521 5.5.4 Syntax: BDAT count [LAST]")
            errorCount += 1
            done = true
            return false
        }
        let last = words.count == 2
        // The chunk is read in any case, so the client and server stay in step.
        var chunk: [UInt8] = []
        do {
            chunk = try stream.read(exactly: size)
        } catch StreamError.timeout {
            reply("421 4.4.2 \(s.myhostname) Error: timeout exceeded")
            Msg.info("timeout after BDAT from \(namaddr)")
            done = true
            return false
        } catch {
            Msg.info("lost connection after BDAT from \(namaddr)")
            done = true
            return false
        }
        if let e = bdatError {
            // A refused BDAT transaction refuses its other chunks until LAST or RSET.
            if last { abortTransaction() }
            return fail(e)
        }
        if !bdatActive {
            if let e = noRecipients() {
                if !last {
                    bdatActive = true
                    bdatError = e
                }
                return fail(e)
            }
            if let r = restrictions("smtpd_data_restrictions", stage: .data) {
                logReject("reject", r)
                abortTransaction()
                return fail(r)
            }
            bdatActive = true
            bdatPartial = []
            do { try beginContent() } catch { cleanupLost(error) }
        }
        // Lines are cut at LF (CR LF or bare LF); a line may span chunks.
        var start = 0
        for i in 0..<chunk.count where chunk[i] == 0x0A {
            var piece = bdatPartial + chunk[start..<i]
            bdatPartial = []
            if piece.last == 0x0D { piece.removeLast() } else { bareLFSeen = true }
            emitBdatLine(piece[...])
            start = i + 1
        }
        bdatPartial += chunk[start...]
        while bdatPartial.count > s.lineLimit {
            contentLine(bdatPartial.prefix(s.lineLimit), type: .continuedText)
            bdatPartial.removeFirst(s.lineLimit)
        }
        bdatTotal += size
        if !last {
            reply("250 2.0.0 Ok: \(size) bytes")
            return true
        }
        if !bdatPartial.isEmpty {
            let rest = bdatPartial
            bdatPartial = []
            emitBdatLine(rest[...])
        }
        return finishMessage()
    }

    func emitBdatLine(_ line: ArraySlice<UInt8>) {
        var rest = line
        while rest.count > s.lineLimit {
            contentLine(rest.prefix(s.lineLimit), type: .continuedText)
            rest = rest.dropFirst(s.lineLimit)
        }
        contentLine(rest, type: .normalText)
    }

    // MARK: VRFY and ETRN

    func vrfyCommand(_ arg: String) -> Bool {
        if s.disableVRFY { return fail("502 5.5.1 VRFY command is disabled") }
        if arg.isEmpty { return fail(s.smtputf8 ? "501 5.5.4 Syntax: VRFY address [SMTPUTF8]" : "501 5.5.4 Syntax: VRFY address") }
        var a = arg
        if a.hasPrefix("<") && a.hasSuffix(">") { a = String(a.dropFirst().dropLast()) }
        guard let address = internalAddress(a), !address.isEmpty else {
            return fail("501 5.1.3 Bad recipient address syntax")
        }
        if let r = restrictionsForRecipient(address, vrfy: true) {
            logReject("reject", r, recipient: address)
            return fail(r)
        }
        reply("252 2.0.0 \(arg)")
        return true
    }

    func etrnCommand(_ arg: String) -> Bool {
        if s.heloRequired && helo == nil { return fail("503 Error: send HELO/EHLO first") }
        if inMail { return fail("503 Error: MAIL transaction in progress") }
        if arg.isEmpty { return fail("500 Syntax: ETRN domain") }
        var domain = arg
        if domain.hasPrefix("@") || domain.hasPrefix("#") { domain = String(domain.dropFirst()) }
        guard ValidHostname.isValid(domain) || ValidHostname.isMailhostLiteral(domain) else {
            return fail("501 Error: invalid parameter syntax")
        }
        if let r = restrictions("smtpd_etrn_restrictions", stage: .etrn, etrnDomain: domain) {
            logReject("reject", r)
            return fail(r)
        }
        guard s.fastFlushDomains.matches(domain) else {
            return fail("459 <\(domain)>: service unavailable")
        }
        // Fast flush needs the flush service; without it the request cannot be queued.
        var req = AttrList()
        req.append(MailAttr.request, "send_site")
        req.append(MailAttr.site, domain)
        if let c = try? AttrClient(serviceClass: MailClass.public, name: "flush", timeout: 100),
           (try? c.expectProtocol(MailProtocol.flush)) != nil,
           let r = try? c.request(req), let st = try? { var sc = r.scanner(); return try sc.int(MailAttr.status) }(),
           st == 0 {
            reply("250 Queuing started")
            return true
        }
        return fail("458 Unable to queue messages")
    }
}

/// RFC 3461 xtext (ENVID, ORCPT).
enum Xtext {
    static func decode(_ s: String) -> String? {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "+") {
                guard i + 2 < b.count, let h = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16),
                      b[(i + 1)...(i + 2)].allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x46) }) else {
                    return nil
                }
                out.append(h)
                i += 3
            } else if c < 33 || c > 126 || c == UInt8(ascii: "=") {
                return nil
            } else {
                out.append(c)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isPrintable(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
    }
}
