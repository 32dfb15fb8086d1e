// Message: DATA and BDAT (RFC 5321 section 4.1.1.4, RFC 3030 CHUNKING), the cleanup
// connection a transaction writes through, and the reply to the end of the message.
// Durability: the 250 reply is sent only after cleanup answered that the queue file is
// complete and fsynced; any failure before that leaves nothing in the queue.
// Mirrors Postfix smtpd/smtpd.c (data_cmd, bdat_cmd, common_post_message_handling,
// mail_open_stream, mail_reset).
import Glibc
import MailUtil
import MailGlobal

extension Session {
    // MARK: The cleanup connection

    /// local_header_rewrite_clients: whose addresses cleanup rewrites as local mail.
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

    /// mail_open_stream: a new queue file, and the envelope records before the recipients.
    /// In stand-alone mode (sendmail -bs) the message goes through the set-gid postdrop
    /// instead, with only the records postdrop accepts from a user.
    func openCleanup(sender: String) {
        if s.standalone { return openPostdrop(sender: sender) }
        do {
            let c = try AttrClient(serviceClass: MailClass.public, name: s.cleanupService)
            let hello = try c.expectProtocol(MailProtocol.cleanup)
            var sc = hello.scanner()
            let id = try sc.string(MailAttr.queueID)
            var flags = s.cleanupFlags
            if smtputf8Requested { flags.insert(.smtputf8) }
            var f = AttrList()
            f.append(MailAttr.flags, int: flags.rawValue)
            try c.send(f)
            var out: [UInt8] = []
            func rec(_ t: RecordType, _ v: String) { RecordCodec.append(&out, t, Array(v.utf8)) }
            func attr(_ n: String, _ v: String) { rec(.attribute, n + "=" + v) }
            rec(.time, "\(arrival.tv_sec) \(arrival.tv_usec)")
            if !s.contentFilter.isEmpty { rec(.filter, s.contentFilter) }
            attr(MailAttr.logIdent, id)
            attr(MailAttr.rewriteContext, rewriteContext())
            if let m = saslMethod { attr(MailAttr.saslMethod, m) }
            if let u = saslUsername { attr(MailAttr.saslUsername, u) }
            if let snd = saslSender { attr(MailAttr.saslSender, snd) }
            if !envid.isEmpty { attr(MailAttr.dsnEnvelopeID, envid) }
            if retFlags != 0 { attr(MailAttr.dsnRetFlags, String(retFlags)) }
            rec(.sender, sender)
            if !encoding.isEmpty { attr(MailAttr.encoding, encoding) }
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
            if !verpDelimiters.isEmpty && !sender.isEmpty { rec(.verp, verpDelimiters) }
            try c.stream.write(out)
            cleanup = c
            queueID = id
            Msg.info(clientLogLine(id))
        } catch {
            Msg.warn("connect to \(MailClass.public)/\(s.cleanupService): \(error)")
            cleanupFailed = true
        }
    }

    func openPostdrop(sender: String) {
        let command = s.commandDirectory + "/postdrop"
        do {
            let drop = try PostdropPipe(path: command, argv: [command] + (Msg.verbose > 0 ? ["-v"] : []),
                                        environment: s.exportEnvironment)
            postdrop = drop
            let c = AttrClient(stream: FDStream(fd: drop.output.fd, writeFD: drop.input.fd), path: command)
            let hello = try c.expectProtocol(MailProtocol.postdrop)
            var sc = hello.scanner()
            let id = try sc.string(MailAttr.queueID)
            var out: [UInt8] = []
            func attr(_ n: String, _ v: String) { RecordCodec.append(&out, .attribute, Array((n + "=" + v).utf8)) }
            if !envid.isEmpty { attr(MailAttr.dsnEnvelopeID, envid) }
            if retFlags != 0 { attr(MailAttr.dsnRetFlags, String(retFlags)) }
            RecordCodec.append(&out, .sender, Array(sender.utf8))
            if !encoding.isEmpty { attr(MailAttr.encoding, encoding) }
            if !verpDelimiters.isEmpty && !sender.isEmpty { RecordCodec.append(&out, .verp, Array(verpDelimiters.utf8)) }
            try c.stream.write(out)
            cleanup = c
            queueID = id
        } catch {
            Msg.warn("could not execute command \(command): \(error)")
            closePostdrop()
            cleanupFailed = true
        }
    }

    /// Ends postdrop: it drops an unfinished file when its input ends early.
    func closePostdrop() {
        guard let drop = postdrop else { return }
        let status = drop.wait()
        if status != 0 { Msg.warn("command \(s.commandDirectory)/postdrop exit status \(status)") }
        postdrop = nil
    }

    func cleanupLost(_ error: Error) {
        Msg.warn("\(queueID ?? "NOQUEUE"): cleanup service: \(error)")
        cleanup = nil
        cleanupFailed = true
    }

    /// mail_reset and rcpt_reset: the transaction ends; an unfinished queue file is
    /// dropped by closing the cleanup connection before its end record.
    func abortTransaction() {
        // What was sent so far reaches cleanup (which drops it at the missing end record).
        try? cleanup?.stream.flush()
        cleanup = nil
        closePostdrop()
        queueID = nil
        sender = nil
        recipient = nil
        rcptCount = 0
        rcptOvershoot = 0
        savedFlags = []
        savedFilter = nil
        savedRedirect = nil
        savedBcc = []
        prependHeaders = []
        bdat = .none
        bdatTotal = 0
        bdatPartial = []
        bytesReceived = 0
        declaredSize = 0
        sizeExceeded = false
        cleanupFailed = false
        verpDelimiters = ""
        saslSender = nil
        encoding = ""
        retFlags = 0
        envid = ""
        smtputf8Requested = false
        check.discard = false
        check.deferIfPermitSender = false
    }

    // MARK: Content

    /// comment_sanitize: text that is safe inside a header comment: printable, with
    /// parentheses balanced (a stray ")" is dropped, an open "(" closed at the end).
    static func commentSanitize(_ text: String) -> String {
        var out: [UInt8] = []
        var depth = 0
        var escaped = false
        for b in text.utf8 {
            let c = b < 0x20 || b == 0x7f ? UInt8(ascii: "?") : b
            if escaped {
                out.append(c)
                escaped = false
                continue
            }
            switch c {
            case UInt8(ascii: "\\"): escaped = true; out.append(c)
            case UInt8(ascii: "("): depth += 1; out.append(c)
            case UInt8(ascii: ")"): if depth > 0 { depth -= 1; out.append(c) }
            default: out.append(c)
            }
        }
        if escaped { out.append(UInt8(ascii: "\\")) }
        out += Array(repeating: UInt8(ascii: ")"), count: depth)
        return String(decoding: out, as: UTF8.self)
    }

    /// The Received: header smtpd puts first.
    func receivedHeader() -> [String] {
        let rfcAddr = family == AF_INET6 ? "IPv6:" + addr : addr
        var lines = ["Received: from \(helo ?? name) (\(name) [\(rfcAddr)])"]
        var proto = smtputf8Requested && protocolName == "ESMTP" ? "UTF8SMTP" : protocolName
        let extended = proto.uppercased() == "ESMTP" || proto == "UTF8SMTP"
        if let t = tls {
            if extended { proto += "S" }
            if s.tlsReceivedHeader {
                lines += t.receivedText.map { "\t" + $0 }
                if t.certPresent {
                    lines.append("\t(Client CN \"\(Self.commentSanitize(t.peerCN))\", Issuer \"\(Self.commentSanitize(t.issuerCN))\" (\(t.trusted ? "verified OK" : "not verified")))")
                } else if s.tlsContext?.askCcert == true {
                    lines.append("\t(Client did not present a certificate)")
                } else {
                    lines.append("\t(No client certificate requested)")
                }
            }
        }
        if let u = saslUsername {
            // RFC 3848: ESMTPA, ESMTPSA.
            if extended { proto += "A" }
            if s.saslAuthenticatedHeader { lines.append("\t(Authenticated sender: \(Self.commentSanitize(u)))") }
        }
        let date = MailDate.format(arrival.tv_sec)
        if rcptCount == 1, let r = recipient {
            lines.append("\tby \(s.myhostname) (\(s.mailName)) with \(proto) id \(queueID ?? "")")
            lines.append("\tfor <\(Quote822.quote822(r))>; \(date)")
        } else {
            lines.append("\tby \(s.myhostname) (\(s.mailName)) with \(proto) id \(queueID ?? "");")
            lines.append("\t\(date)")
        }
        return lines
    }

    /// What goes before the content: saved flags, the start of the content, headers.
    func beginContent() {
        guard let c = cleanup else { return }
        var out: [UInt8] = []
        if !savedFlags.isEmpty {
            RecordCodec.append(&out, .extraFlags, Array(String(savedFlags.rawValue).utf8))
        }
        RecordCodec.append(&out, .messageStart, [])
        for h in prependHeaders { RecordCodec.appendText(&out, Array(h.utf8), limit: s.lineLimit) }
        for h in receivedHeader() { RecordCodec.appendText(&out, Array(h.utf8), limit: s.lineLimit) }
        do { try c.stream.write(out) } catch { cleanupLost(error) }
    }

    /// One content line to cleanup, counted against message_size_limit.
    func contentLine(_ bytes: ArraySlice<UInt8>, type: RecordType) {
        bytesReceived += bytes.count + (type == .normalText ? 2 : 0)
        guard let c = cleanup, !sizeExceeded else { return }
        if s.messageSizeLimit > 0 && bytesReceived > s.messageSizeLimit {
            sizeExceeded = true
            return
        }
        var out: [UInt8] = []
        RecordCodec.append(&out, type, bytes)
        do { try c.stream.write(out) } catch { cleanupLost(error) }
    }

    /// Ends the content: the end-of-data restrictions, the extracted segment, cleanup's
    /// verdict and the reply.
    func finishMessage(bareLF: Bool) -> Bool {
        whereText = Where.endOfMessage
        let bdatText = bdat == .active ? "\(bdatTotal) bytes " : ""
        defer { abortTransaction() }
        if bareLF {
            logWhatsup("reject", "bare <LF> received")
            return fail("\(s.bareNewlineCode) 5.5.2 \(s.myhostname) Error: bare <LF> received")
        }
        if sizeExceeded {
            let d = CleanupStatus.size.detail
            return fail("\(d.smtp) \(d.dsn) Error: \(d.text)", .bounce)
        }
        if !s.standalone, let err = checkEndOfData() { return fail(err, nil) }
        guard let c = cleanup, let id = queueID else {
            let d = CleanupStatus.write.detail
            return fail("\(d.smtp) \(d.dsn) Error: \(d.text)", .resource)
        }
        var out: [UInt8] = []
        RecordCodec.append(&out, .extractedStart, [])
        if let f = savedFilter { RecordCodec.append(&out, .filter, Array(f.utf8)) }
        if let r = savedRedirect { RecordCodec.append(&out, .redirect, Array(r.utf8)) }
        for b in savedBcc {
            RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnNotifyFlags)=\(DSNNotify.never)".utf8))
            RecordCodec.append(&out, .recipient, Array(b.utf8))
        }
        if !savedFlags.isEmpty {
            RecordCodec.append(&out, .extraFlags, Array(String(savedFlags.rawValue).utf8))
        }
        RecordCodec.append(&out, .end, [])
        var status = 0
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
            status = CleanupStatus.write.rawValue
        }
        if status == 0 {
            reply("250 2.0.0 Ok: \(bdatText)queued as \(id)")
            // Errors before a message that went through are not worth a notice.
            errorMask = []
            chatReset(s.historyThreshold)
            return true
        }
        let st = CleanupStatus(rawValue: status)
        return fail(Self.cleanupReply(st, why), Self.errorKind(st))
    }

    /// The kind of error a cleanup status is, for notify_classes.
    static func errorKind(_ st: CleanupStatus) -> ErrorClass {
        if st.contains(.deferred) || st.contains(.content) { return .policy }
        if st.contains(.size) || st.contains(.hops) { return .bounce }
        if st.contains(.write) { return .resource }
        return .software
    }

    /// The reply for a message cleanup did not accept: its own SMTP reply when it gave
    /// one, else the text of the most severe status.
    static func cleanupReply(_ st: CleanupStatus, _ why: String) -> String {
        let b = Array(why.utf8)
        if b.count >= 4, b[0] == UInt8(ascii: "4") || b[0] == UInt8(ascii: "5"),
           b[1] >= 0x30 && b[1] <= 0x39, b[2] >= 0x30 && b[2] <= 0x39, b[3] == 0x20 || b[3] == UInt8(ascii: "-") {
            return why
        }
        for bit in [CleanupStatus.deferred, .bad, .size, .hops, .content, .write, .bareLF] where st.contains(bit) {
            let d = bit.detail
            switch bit {
            case .deferred, .content:
                return why.isEmpty ? "\(d.smtp) \(d.dsn) Error: \(d.text)" : "\(d.smtp) \(why)"
            case .bad:
                return "\(d.smtp) \(d.dsn) Error: internal error \(st.rawValue)"
            default:
                return "\(d.smtp) \(d.dsn) Error: \(d.text)"
            }
        }
        let d = CleanupStatus.bad.detail
        return "\(d.smtp) \(d.dsn) Error: internal error \(st.rawValue)"
    }

    // MARK: DATA

    func dataCommand(_ argv: [SMTPToken]) -> Bool {
        if bdat != .none { return fail("503 5.5.1 Error: DATA after BDAT") }
        if rcptCount == 0 {
            return fail(sender == nil ? "503 5.5.1 Error: need RCPT command" : "554 5.5.1 Error: no valid recipients")
        }
        if argv.count != 1 { return fail("501 5.5.4 Syntax: DATA") }
        if !s.standalone, let err = checkData() { return fail(err, nil) }
        beginContent()
        reply("354 End data with <CR><LF>.<CR><LF>")
        flush()
        whereText = Where.data
        // Lines until <CR><LF>.<CR><LF>. With smtpd_forbid_bare_newline (and a client not
        // excluded from it) a bare LF ends a line but never the message.
        let strict = s.bareNewline != .no && !s.bareNewlineExclusions.matches(name, address: addr)
        var bareLF = false
        var prevType: RecordType = .normalText
        var prevCRLF = true
        while true {
            guard let line = readClientLine(limit: s.lineLimit, overflow: .split) else { return false }
            if line.ending == .bareLF && strict { bareLF = true }
            var bytes = line.bytes[...]
            let type: RecordType = line.ending == .none && line.overflow ? .continuedText : .normalText
            if prevType != .continuedText, bytes.first == UInt8(ascii: ".") {
                if bytes.count == 1 && type == .normalText {
                    if !strict || (line.ending == .crlf && prevCRLF) { break }
                    // A lone dot next to a bare LF ends nothing and is dropped.
                    prevCRLF = line.ending == .crlf
                    continue
                }
                bytes = bytes.dropFirst()
            }
            contentLine(bytes, type: type)
            prevType = type
            if type == .normalText { prevCRLF = line.ending == .crlf }
        }
        return finishMessage(bareLF: bareLF && s.bareNewline == .reject)
    }

    // MARK: BDAT

    func bdatCommand(_ argv: [SMTPToken]) -> Bool {
        if ehloDiscard.contains(.chunking) {
            reply("521 5.5.1 Error: command not implemented")
            done = true
            return false
        }
        let last = argv.count == 3 && argv[2].text.uppercased() == "LAST"
        guard argv.count == 2 || last, argv[1].text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let size = Int(argv[1].text) else {
            // The chunk cannot be skipped without its size: the session ends.
            Msg.warn("\(queueID ?? "NOQUEUE"): malformed BDAT command syntax from \(namaddr): \(Msg.printable(argv.map(\.text).joined(separator: " ")))")
            reply("521 5.5.4 Syntax: BDAT count [LAST]")
            done = true
            return false
        }
        // A refused BDAT transaction refuses its chunks until LAST or RSET.
        if bdat == .error {
            guard skipChunk(size) else { return false }
            if last { abortTransaction() }
            return fail("551 5.0.0 Discarded \(size) bytes after earlier error")
        }
        if bdat == .none {
            var err: String?
            if rcptCount == 0 {
                err = sender == nil ? "503 5.5.1 Error: need RCPT command" : "554 5.5.1 Error: no valid recipients"
            } else if !s.standalone {
                err = checkData()
            }
            if err != nil && rcptCount == 0 { errorMask.insert(.proto) }
            if let err {
                guard skipChunk(size) else { return false }
                bdat = last ? .none : .error
                return fail(err, nil)
            }
        }
        if size == 0 && !last {
            Msg.warn("\(queueID ?? "NOQUEUE"): null BDAT request from \(namaddr)")
            bdat = .error
            return fail("551 5.7.1 Null BDAT request")
        }
        if bdat == .none {
            bdat = .active
            bdatPartial = []
            beginContent()
        }
        whereText = Where.bdatContent
        // The chunk is read in pieces; lines are cut at LF (a line may span chunks).
        // With smtpd_per_request_deadline each piece of up to 64 KB must arrive within
        // the deadline (Postfix reads a chunk in buffer-sized smtp_fread() calls).
        var left = size
        var pieceLeft = 0
        defer { stream.deadline = nil }
        while left > 0 {
            if pieceLeft == 0 {
                pieceLeft = min(left, 65536)
                startRequestDeadline(content: true)
            }
            let piece: [UInt8]
            do {
                piece = try stream.read(upTo: pieceLeft)
            } catch StreamError.timeout {
                reason = "timeout"
                cleanup = nil
                reply("421 4.4.2 \(s.myhostname) Error: timeout exceeded")
                return false
            } catch {
                piece = []
            }
            if piece.isEmpty {
                reason = "lost connection"
                done = true
                // An unfinished chunk never reaches cleanup.
                cleanup = nil
                return false
            }
            left -= piece.count
            pieceLeft -= piece.count
            addBdatBytes(piece)
        }
        stream.deadline = nil
        bdatTotal += size
        whereText = "BDAT"
        if !last {
            reply("250 2.0.0 Ok: \(size) bytes")
            return true
        }
        if !bdatPartial.isEmpty {
            let rest = bdatPartial
            bdatPartial = []
            emitBdatLine(rest[...])
        }
        return finishMessage(bareLF: false)
    }

    /// Reads and drops a chunk that will not be used; false when the client is gone.
    func skipChunk(_ size: Int) -> Bool {
        var left = size
        while left > 0 {
            guard let piece = try? stream.read(upTo: min(left, 65536)), !piece.isEmpty else {
                reason = "lost connection"
                done = true
                return false
            }
            left -= piece.count
        }
        return true
    }

    func addBdatBytes(_ chunk: [UInt8]) {
        var start = 0
        for i in 0..<chunk.count where chunk[i] == 0x0A {
            var line = bdatPartial + chunk[start..<i]
            bdatPartial = []
            if line.last == 0x0D { line.removeLast() }
            emitBdatLine(line[...])
            start = i + 1
        }
        bdatPartial += chunk[start...]
        while bdatPartial.count > s.lineLimit {
            contentLine(bdatPartial.prefix(s.lineLimit), type: .continuedText)
            bdatPartial.removeFirst(s.lineLimit)
        }
    }

    func emitBdatLine(_ line: ArraySlice<UInt8>) {
        var rest = line
        while rest.count > s.lineLimit {
            contentLine(rest.prefix(s.lineLimit), type: .continuedText)
            rest = rest.dropFirst(s.lineLimit)
        }
        contentLine(rest, type: .normalText)
    }
}
