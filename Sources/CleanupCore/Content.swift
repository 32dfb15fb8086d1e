// Content: the message content segment: primary headers assembled into logical
// headers, checked (header_checks), rewritten (address headers), the missing ones added,
// and the body copied (body_checks when configured).
// Mirrors Postfix cleanup/cleanup_message.c with the header parts of global/mime_state.c,
// header_opts.c and is_header.c, and the actions of cleanup_act().
import Glibc
import MailUtil
import MailGlobal

final class ContentProcessor {
    unowned let state: CleanupState
    var settings: Settings { state.settings }
    var inHeaders = true
    var hops = 0
    var utf8Seen = 0
    var seen = Set<String>()
    var resent = false
    var messageIDLogged = false
    /// A Content-Transfer-Encoding header said 8bit or binary.
    var eightBitDeclared = false
    lazy var mime = MimeState(options: settings.mimeOptions, headerLimit: settings.headerSizeLimit,
                              nestingLimit: settings.mimeNestingLimit, boundaryLimit: settings.mimeBoundaryLimit,
                              headOut: { [unowned self] in self.header($0, $1, $2, $3) },
                              headEnd: { [unowned self] in self.endOfHeaders() },
                              bodyOut: { [unowned self] in self.body($0, $1, $2) },
                              bodyEnd: {},
                              errorOut: { [unowned self] in self.mimeError($0, $1) })

    init(_ state: CleanupState) { self.state = state }

    /// CLEANUP_OUT_OK: nothing more is written or checked once the message is refused or
    /// to be discarded.
    var outputOK: Bool { state.status.isEmpty && !state.flags.contains(.discard) }

    // MARK: Records

    func record(_ r: Record) {
        switch r.type {
        case .continuedText, .normalText:
            var data = r.data
            if settings.replaceStrayCRLF {
                for i in data.indices where data[i] == 0x0D || data[i] == 0x0A { data[i] = 0x20 }
            }
            mime.update(r.type, data)
        case .padding:
            break
        case .extractedStart:
            mime.update(nil, [])
            if inHeaders { endOfHeaders() }
            state.startExtracted()
        default:
            state.protocolError("message rejected: unexpected record type \(r.type.rawValue) in message content")
        }
    }

    /// One logical line of output, split into records as long lines are.
    func put(_ line: some Collection<UInt8>) {
        var bytes = Array(line)[...]
        while bytes.count > settings.lineLimit {
            state.out.put(.continuedText, bytes.prefix(settings.lineLimit))
            bytes = bytes.dropFirst(settings.lineLimit)
        }
        state.out.put(.normalText, bytes)
    }

    func mimeError(_ error: MimeError, _ text: String) {
        // An overlong header is cut, not refused.
        guard error != .truncatedHeader else { return }
        let origin = state.attributes[MailAttr.logMessageOrigin] ?? "none"
        Msg.info("\(state.queueID): reject: mime-error \(error.text): \(String(text.prefix(100))) from \(origin); from=<\(state.sender)> to=<\(state.firstRecipient ?? "unknown")>")
        if state.reason.isEmpty { state.reason = "5.6.0 \(error.text)" }
        state.errors.insert(.content)
    }

    func body(_ type: RecordType, _ line: ArraySlice<UInt8>, _ offset: Int) {
        if inHeaders { endOfHeaders() }
        guard outputOK else { return }
        if state.flags.contains(.filter), let checks = settings.bodyChecks,
           settings.bodyChecksSizeLimit == 0 || offset < settings.bodyChecksSizeLimit {
            let text = String(decoding: line, as: UTF8.self)
            if let action = checks.find(text) {
                switch apply(action, what: "body", text: text, map: "body_checks") {
                case .keep: break
                case .drop: return
                case .replace(let new):
                    state.out.put(type, Array(new.utf8))
                    return
                }
                guard outputOK else { return }
            } else if checks.error != nil {
                state.lookupFailed("body_checks", "body line")
                return
            }
        }
        state.out.put(type, line)
    }

    // MARK: Headers

    /// The header name when `line` starts a header ("Name:"), as is_header() decides.
    static func headerName(_ line: [UInt8]) -> String? {
        var i = 0
        while i < line.count, line[i] > 32, line[i] < 127, line[i] != UInt8(ascii: ":") { i += 1 }
        if i == 0 { return nil }
        let end = i
        while i < line.count, line[i] == 0x20 || line[i] == 0x09 { i += 1 }
        guard i < line.count, line[i] == UInt8(ascii: ":") else { return nil }
        return String(decoding: line[0..<end], as: UTF8.self)
    }

    /// One logical header from the MIME parser (its physical lines joined by newlines).
    func header(_ cls: MimeHeaderClass, _ info: HeaderInfo?, _ buffer: [UInt8], _ offset: Int) {
        guard outputOK else { return }
        var lines = buffer.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        guard let name = info?.name ?? Self.headerName(lines[0]) else { return }
        if state.flags.contains(.autoUTF8) && buffer.contains(where: { $0 >= 0x80 }) { utf8Seen |= 2 }
        if info?.kind == .contentTransferEncoding {
            let v = headerValue(lines).lowercased()
            if v.hasPrefix("8bit") || v.hasPrefix("binary") { eightBitDeclared = true }
        }
        // MIME headers go to mime_header_checks wherever they are; other headers of body
        // parts to mime_header_checks, of attached messages to nested_header_checks.
        let isMIME = info?.isMIME ?? false
        let (checks, mapName): (Maps?, String) = switch (cls, isMIME) {
        case (.primary, false): (settings.headerChecks, "header_checks")
        case (.nested, false): (settings.nestedHeaderChecks, "nested_header_checks")
        default: (settings.mimeHeaderChecks, "mime_header_checks")
        }
        if state.flags.contains(.filter), let checks {
            let text = String(decoding: buffer, as: UTF8.self)
            if let action = checks.find(text) {
                switch apply(action, what: "header", text: text, map: mapName) {
                case .keep: break
                case .drop: return
                case .replace(let new):
                    lines = [Array(new.utf8)]
                }
                guard outputOK else { return }
            } else if checks.error != nil {
                state.lookupFailed(mapName, name)
                return
            }
        }
        guard cls == .primary, let cname = Self.headerName(lines[0]) else {
            for l in lines { put(l) }
            return
        }
        let cl = cname.lowercased()
        if cl.hasPrefix("resent-") { resent = true }
        seen.insert(cl)
        if cl == "received" {
            hops += 1
            if settings.hopLimit > 0 && hops >= settings.hopLimit && !state.errors.contains(.hops) {
                Msg.warn("\(state.queueID): message rejected: hopcount exceeded")
                state.errors.insert(.hops)
            }
        }
        if cl == "message-id" || cl == "resent-message-id" {
            let value = headerValue(lines)
            Msg.info("\(state.queueID): \(cl == "message-id" ? "" : "resent-")message-id=\(value)")
            if cl == "message-id" { messageIDLogged = true }
        }
        if settings.dropHeaders.contains(cl) { return }
        let isSender = HeaderText.senderHeaders.contains(cl), isRecipient = HeaderText.recipientHeaders.contains(cl)
        if (isSender || isRecipient), let rewritten = rewriteAddresses(lines, name: cname, sender: isSender) {
            lines = rewritten
        }
        for l in lines { put(l) }
    }

    /// The value of a logical header, unfolded, leading white space removed.
    func headerValue(_ lines: [[UInt8]]) -> String {
        var v = lines.joined(separator: [0x0A]).map { $0 }
        if let colon = v.firstIndex(of: UInt8(ascii: ":")) { v.removeSubrange(0...colon) }
        let s = String(decoding: v, as: UTF8.self)
        return String(s.drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" }))
    }

    /// Address headers in the local (or remote with remote_header_rewrite_domain) context
    /// are canonicalized; canonical tables apply for the header classes.
    func rewriteAddresses(_ lines: [[UInt8]], name: String, sender: Bool) -> [[UInt8]]? {
        let value = headerValue(lines)
        guard let tree = Address822.parse(value, limit: settings.headerTokenLimit) else { return nil }
        var changed = false
        for addr in Tok822.addresses(tree) {
            let old = Address822.internalize(addr.head)
            var new = old
            if let ctx = state.headerRewriteContext, !old.isEmpty {
                new = state.rewrite(old, rule: ctx)
            }
            if !new.isEmpty {
                new = state.canonicalize(new, sender: sender, sender ? .headerSender : .headerRecipient)
            }
            if new != old {
                addr.replaceChildren(with: Quote822.quote822(new))
                changed = true
            }
        }
        guard changed else { return nil }
        let text = Address822.externalize(tree, lineBreaks: true)
        return HeaderText.fold(name, text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init))
            .map { Array($0.utf8) }
    }

    func endOfHeaders() {
        guard inHeaders else { return }
        inHeaders = false
        guard outputOK else { return }
        // Every legitimate client (smtpd, pickup, qmqpd, local, post_mail) adds one; a
        // stream without one is not from such a client (as the reference 3.7.11 does).
        if !seen.contains("received") {
            state.protocolError("message rejected: no Received: header")
            return
        }
        let prefix = resent ? "Resent-" : ""
        let add = state.headerRewriteContext != nil || settings.alwaysAddHeaders
        let midName = resent ? "resent-message-id" : "message-id"
        if !seen.contains(midName) && add {
            let id: String
            if settings.longQueueIDs {
                id = "\(state.queueID)@\(settings.myhostname)"
            } else {
                var t = time(nil)
                var lt = tm()
                localtime_r(&t, &lt)
                var buf = [CChar](repeating: 0, count: 32)
                let n = strftime(&buf, buf.count, "%Y%m%d%H%M%S", &lt)
                id = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    + ".\(state.queueID)@\(settings.myhostname)"
            }
            state.out.put(.normalText, "\(prefix)Message-Id: <\(id)>")
            Msg.info("\(state.queueID): \(resent ? "resent-" : "")message-id=<\(id)>")
            seen.insert(midName)
            if !resent { messageIDLogged = true }
        }
        if !messageIDLogged && !seen.contains("message-id") {
            Msg.info("\(state.queueID): message-id=<>")
        }
        if !seen.contains(resent ? "resent-date" : "date") && add {
            state.out.put(.normalText, "\(prefix)Date: \(MailDate.format(time_t(state.arrivalSeconds)))")
        }
        if !seen.contains(resent ? "resent-from" : "from") && add {
            let addr = Quote822.quote822(state.sender.isEmpty ? "MAILER-DAEMON" : state.sender)
            var line = "\(prefix)From: \(addr)"
            if !state.sender.isEmpty, let full = state.fullName, !full.isEmpty {
                if settings.headerFromObsolete {
                    line = "\(prefix)From: \(addr) (\(full))"
                } else {
                    line = "\(prefix)From: \(Self.quotePhrase(full)) <\(addr)>"
                }
            }
            state.out.put(.normalText, line)
        }
        let visible: Set<String> = ["to", "resent-to", "cc", "resent-cc"]
        if seen.isDisjoint(with: visible) && !settings.undisclosedHeader.isEmpty {
            if Self.headerName(Array(settings.undisclosedHeader.utf8)) == nil {
                Msg.warn("bad undisclosed_recipients_header value: \(settings.undisclosedHeader)")
            } else {
                state.out.put(.normalText, settings.undisclosedHeader)
            }
        }
    }

    /// A display name, quoted when it has characters an atom cannot hold.
    static func quotePhrase(_ s: String) -> String {
        let specials = Set("()<>@,;:\\\".[]".utf8)
        if !s.utf8.contains(where: { specials.contains($0) || $0 < 0x20 }) { return s }
        var out = "\""
        for c in s {
            if c == "\"" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out + "\""
    }

    // MARK: Actions (cleanup_act)

    enum Outcome { case keep, drop, replace(String) }

    func apply(_ value: String, what: String, text: String, map: String) -> Outcome {
        let trimmed = value.trimmingCharacters()
        let cmdEnd = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? trimmed.endIndex
        let command = trimmed[..<cmdEnd].uppercased()
        let optional = String(trimmed[cmdEnd...]).trimmingCharacters()
        func log(_ action: String, _ extra: String) {
            let attrs = state.attributes
            var s = "\(state.queueID): \(action): \(what) \(String(text.prefix(200))) from \(attrs[MailAttr.logMessageOrigin] ?? "local");"
            s += " from=<\(state.sender)>"
            if let r = state.firstRecipient { s += " to=<\(r)>" }
            if let p = attrs[MailAttr.logProtocolName] { s += " proto=\(p)" }
            if let h = attrs[MailAttr.logHeloName] { s += " helo=<\(h)>" }
            if !extra.isEmpty { s += ": \(extra)" }
            Msg.info(s)
        }
        switch command {
        case "REJECT":
            let why = optional.isEmpty ? "5.7.1 message content rejected" : Self.withDSN(optional, "5.7.1")
            log("reject", why)
            if state.reason.isEmpty { state.reason = why }
            state.errors.insert(.content)
            return .keep
        case "WARN":
            log("warning", optional)
        case "INFO":
            log("info", optional)
        case "IGNORE":
            return .drop
        case "DISCARD":
            log("discard", optional)
            state.flags.insert(.discard)
        case "HOLD":
            log("hold", optional)
            state.flags.insert(.hold)
        case "REDIRECT":
            guard !optional.isEmpty else { return warnBad(value, map) }
            log("redirect", optional)
            state.redirect = optional
        case "FILTER":
            guard optional.contains(":") else { return warnBad(value, map) }
            log("filter", optional)
            state.filter = optional
        case "BCC":
            guard !optional.isEmpty else { return warnBad(value, map) }
            log("bcc", optional)
            if !state.hiddenRecipients.contains(optional) { state.hiddenRecipients.append(optional) }
        case "PREPEND":
            guard Self.headerName(Array(optional.utf8)) != nil || what == "body" else { return warnBad(value, map) }
            log("prepend", optional)
            put(Array(optional.utf8))
        case "REPLACE":
            guard Self.headerName(Array(optional.utf8)) != nil || what == "body" else { return warnBad(value, map) }
            log("replace", optional)
            return .replace(optional)
        case "DUNNO", "OK":
            break
        default:
            return warnBad(value, map)
        }
        return .keep
    }

    func warnBad(_ value: String, _ map: String) -> Outcome {
        Msg.warn("unknown command in \(map) map: \(value)")
        return .keep
    }

    /// Puts a default enhanced status code in front of text that has none.
    static func withDSN(_ text: String, _ dsn: String) -> String {
        let parts = text.split(separator: " ", maxSplits: 1)
        if let f = parts.first, f.split(separator: ".").count == 3, f.first == "4" || f.first == "5" { return text }
        return dsn + " " + text
    }
}
