// Commands: HELO/EHLO, MAIL, RCPT, RSET, VRFY and ETRN: their syntax, parameters (RFC 1652
// BODY, RFC 1870 SIZE, RFC 3461 DSN, RFC 6531 SMTPUTF8, XVERP), replies and the
// restrictions each one runs. Every reply text is Postfix's.
// Mirrors the *_cmd functions of Postfix smtpd/smtpd.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict

/// EHLO keywords that smtpd_discard_ehlo_keywords can hide, in Postfix's order.
struct EHLOMask: OptionSet {
    let rawValue: Int
    static let eightBitMIME = EHLOMask(rawValue: 1 << 0)
    static let auth = EHLOMask(rawValue: 1 << 1)
    static let etrn = EHLOMask(rawValue: 1 << 2)
    static let pipelining = EHLOMask(rawValue: 1 << 3)
    static let size = EHLOMask(rawValue: 1 << 4)
    static let verp = EHLOMask(rawValue: 1 << 5)
    static let vrfy = EHLOMask(rawValue: 1 << 6)
    static let xclient = EHLOMask(rawValue: 1 << 7)
    static let xforward = EHLOMask(rawValue: 1 << 8)
    static let starttls = EHLOMask(rawValue: 1 << 9)
    static let enhancedStatusCodes = EHLOMask(rawValue: 1 << 10)
    static let dsn = EHLOMask(rawValue: 1 << 11)
    static let smtputf8 = EHLOMask(rawValue: 1 << 12)
    static let chunking = EHLOMask(rawValue: 1 << 13)
    static let silent = EHLOMask(rawValue: 1 << 14)

    static let names: [(String, EHLOMask)] = [
        ("8BITMIME", .eightBitMIME), ("AUTH", .auth), ("ETRN", .etrn), ("PIPELINING", .pipelining),
        ("SIZE", .size), ("VERP", .verp), ("VRFY", .vrfy), ("XCLIENT", .xclient), ("XFORWARD", .xforward),
        ("STARTTLS", .starttls), ("ENHANCEDSTATUSCODES", .enhancedStatusCodes), ("DSN", .dsn),
        ("SMTPUTF8", .smtputf8), ("CHUNKING", .chunking), ("SILENT-DISCARD", .silent),
    ]

    /// ehlo_mask(): the words of a keyword list; unknown words are reported and ignored.
    static func parse(_ text: String, parameter: String) -> EHLOMask {
        var mask: EHLOMask = []
        for w in Tokens.split(text) {
            if let m = names.first(where: { $0.0 == w.uppercased() }) {
                mask.insert(m.1)
            } else {
                Msg.warn("unknown \(parameter) value \"\(w)\" ignored")
            }
        }
        return mask
    }

    /// str_ehlo_mask(): the names of the bits, space separated.
    var text: String {
        Self.names.filter { contains($0.1) }.map { $0.0 }.joined(separator: " ")
    }
}

extension Session {
    // MARK: HELO and EHLO

    func heloCommand(_ argv: [SMTPToken], extended: Bool) -> Bool {
        guard argv.count >= 2 else {
            return fail(extended ? "501 Syntax: EHLO hostname" : "501 Syntax: HELO hostname")
        }
        let arg = argv.dropFirst().map(\.text).joined(separator: " ")
        if !s.standalone && !s.delayReject, let err = checkHelo(arg) { return fail(err, nil) }
        // A greeting in the middle of a transaction ends it, as RSET does.
        abortTransaction()
        chatReset(s.historyThreshold)
        helo = Self.neuter(Msg.printable(arg))
        if extended {
            protocolName = "ESMTP"
        } else if protocolName.uppercased() != "ESMTP" && protocolName.uppercased() != "SMTP" {
            protocolName = "SMTP"
        }
        guard extended else {
            reply("250 \(s.myhostname)")
            return true
        }
        ehloDiscard = discardMask()
        if !ehloDiscard.contains(.silent) && !ehloDiscard.subtracting(.silent).isEmpty {
            Msg.info("discarding EHLO keywords: \(ehloDiscard.text)")
        }
        var lines = [s.myhostname]
        func offer(_ bit: EHLOMask, _ text: String) {
            if !ehloDiscard.contains(bit) { lines.append(text) }
        }
        offer(.pipelining, "PIPELINING")
        offer(.size, s.messageSizeLimit > 0 ? "SIZE \(s.messageSizeLimit)" : "SIZE")
        if !s.disableVRFY { offer(.vrfy, "VRFY") }
        offer(.etrn, "ETRN")
        if tls == nil && s.tlsLevel > .none && !s.standalone { offer(.starttls, "STARTTLS") }
        for l in ehloAuthLines() { offer(.auth, l) }
        offer(.enhancedStatusCodes, "ENHANCEDSTATUSCODES")
        offer(.eightBitMIME, "8BITMIME")
        offer(.dsn, "DSN")
        if s.smtputf8 { offer(.smtputf8, "SMTPUTF8") }
        offer(.chunking, "CHUNKING")
        for (i, l) in lines.enumerated() {
            reply("250\(i == lines.count - 1 ? " " : "-")\(l)", more: i < lines.count - 1)
        }
        return true
    }

    /// The EHLO keywords hidden from this client: smtpd_discard_ehlo_keyword_address_maps
    /// for its address, else smtpd_discard_ehlo_keywords.
    func discardMask() -> EHLOMask {
        if let maps = s.ehloDiscardMaps {
            if case .found(let v) = maps.lookup(addr) {
                return EHLOMask.parse(v, parameter: "smtpd_discard_ehlo_keyword_address_maps")
            }
        }
        return s.ehloDiscard
    }

    /// Characters that could confuse log parsers or mail headers become "?".
    static func neuter(_ text: String) -> String {
        String(text.map { " <>()\\\";@".contains($0) ? "?" : $0 })
    }

    // MARK: MAIL

    func mailCommand(_ argv: [SMTPToken]) -> Bool {
        if s.heloRequired && helo == nil { return fail("503 5.5.1 Error: send HELO/EHLO first", .policy) }
        if sender != nil { return fail("503 5.5.1 Error: nested MAIL command") }
        if bdat != .none { return fail("503 5.5.1 Error: MAIL after BDAT") }
        if s.tlsLevel == .encrypt && tls == nil && !s.standalone {
            return fail("530 5.7.0 Must issue a STARTTLS command first", .policy)
        }
        guard argv.count >= 3, argv[1].text.lowercased() == "from:" else {
            return fail("501 5.5.4 Syntax: MAIL FROM:<address>")
        }
        if argv[2].malformed { return fail("501 5.1.7 Bad sender address syntax") }
        // The parameters take effect when the command succeeds; a SIZE stays until RSET.
        var size = declaredSize
        var body = ""
        var ret = 0
        var envelopeID: String?
        var verp: String?
        var utf8 = false
        for token in argv.dropFirst(3) {
            let arg = token.text
            let upper = arg.uppercased()
            if upper == "BODY=8BITMIME" {
                body = MailAttr.encoding8bit
            } else if upper == "BODY=7BIT" {
                body = MailAttr.encoding7bit
            } else if upper.hasPrefix("SIZE=") {
                let v = arg.dropFirst(5)
                guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    return fail("501 5.5.4 Bad message size syntax")
                }
                guard let n = Int(v) else { return fail("552 5.3.4 Message size exceeds file system imposed limit", .policy) }
                size = n
                declaredSize = n
            } else if upper.hasPrefix("AUTH=") {
                // AUTH= means nothing while SASL is off.
                if s.saslEnabled, let err = saslMailOption(String(arg.dropFirst(5))) {
                    reply(err)
                    return false
                }
            } else if upper.hasPrefix("XVERP") && (upper.count == 5 || upper.dropFirst(5).first == "=")
                        && s.verpClients.matches(name, address: addr) && !ehloDiscard.contains(.verp) {
                var d = String(arg.dropFirst(5))
                if d.hasPrefix("=") { d.removeFirst() }
                if d.isEmpty { d = s.verpDelimiters }
                guard d.utf8.count == 2, d.utf8.allSatisfy({ s.verpFilter.contains($0) }) else {
                    return fail("501 5.5.4 Error: XVERP needs two characters from \(String(decoding: s.verpFilter.sorted(), as: UTF8.self))")
                }
                verp = d
            } else if upper.hasPrefix("RET=") {
                if ehloDiscard.contains(.dsn) { return fail("501 5.7.1 DSN support is disabled") }
                let v = upper.dropFirst(4)
                guard ret == 0, v == "FULL" || v == "HDRS" else { return fail("501 5.5.4 Bad RET parameter syntax") }
                ret = v == "FULL" ? DSNRet.full : DSNRet.headers
            } else if upper.hasPrefix("ENVID=") {
                if ehloDiscard.contains(.dsn) { return fail("501 5.7.1 DSN support is disabled") }
                guard envelopeID == nil, let d = Xtext.decode(String(arg.dropFirst(6))), Xtext.isPrintable(d) else {
                    return fail("501 5.5.4 Bad ENVID parameter syntax")
                }
                envelopeID = d
            } else if !ehloDiscard.contains(.smtputf8) && s.smtputf8 && upper == "SMTPUTF8" {
                utf8 = true
            } else {
                return fail("555 5.5.4 Unsupported option: \(arg)")
            }
        }
        guard let address = extractAddress(argv[2], allowEmpty: true, strict: s.strictRFC821, smtputf8: utf8) else {
            return fail("501 5.1.7 Bad sender address syntax")
        }
        if !s.standalone, let err = checkSize(sender: address, size: size) { return fail(err, nil) }
        if !s.standalone && !s.delayReject, let err = checkMail(address) {
            abortTransaction()
            return fail(err, nil)
        }
        sender = address
        encoding = body
        retFlags = ret
        envid = envelopeID ?? ""
        smtputf8Requested = utf8
        verpDelimiters = verp ?? ""
        transactionCount += 1
        gettimeofday(&arrival, nil)
        reply("250 2.1.0 Ok")
        return true
    }

    // MARK: RCPT

    func rcptCommand(_ argv: [SMTPToken]) -> Bool {
        guard let sender else { return fail("503 5.5.1 Error: need MAIL command") }
        if bdat != .none { return fail("503 5.5.1 Error: RCPT after BDAT") }
        guard argv.count >= 3, argv[1].text.lowercased() == "to:" else {
            return fail("501 5.5.4 Syntax: RCPT TO:<address>")
        }
        if argv[2].malformed { return fail("501 5.1.3 Bad recipient address syntax") }
        var notify = 0
        var orcpt: (type: String, address: String)?
        for token in argv.dropFirst(3) {
            let arg = token.text
            let upper = arg.uppercased()
            if upper.hasPrefix("NOTIFY=") {
                if ehloDiscard.contains(.dsn) { return fail("501 5.7.1 DSN support is disabled") }
                guard notify == 0, let n = DSNNotify.mask(String(arg.dropFirst(7))), n != 0 else {
                    return fail("501 5.5.4 Error: Bad NOTIFY parameter syntax")
                }
                notify = n
            } else if upper.hasPrefix("ORCPT=") {
                if ehloDiscard.contains(.dsn) { return fail("501 5.7.1 DSN support is disabled") }
                let v = arg.dropFirst(6)
                guard orcpt == nil, let semi = v.firstIndex(of: ";"), semi != v.startIndex,
                      let d = Xtext.decode(String(v[v.index(after: semi)...])) else {
                    return fail("501 5.5.4 Error: Bad ORCPT parameter syntax")
                }
                orcpt = (String(v[..<semi]), d)
            } else {
                return fail("555 5.5.4 Unsupported option: \(arg)")
            }
        }
        if s.recipientLimit > 0 && rcptCount >= s.recipientLimit {
            reply("452 4.5.3 Error: too many recipients")
            rcptOvershoot += 1
            return rcptOvershoot <= s.recipientOvershootLimit
        }
        guard let address = extractAddress(argv[2], allowEmpty: false, strict: s.strictRFC821, smtputf8: smtputf8Requested) else {
            return fail("501 5.1.3 Bad recipient address syntax")
        }
        if !s.standalone, let err = checkRcpt(address) { return fail(err, nil) }
        // The queue file is opened with the first acceptable recipient.
        if cleanup == nil && !cleanupFailed { openCleanup(sender: sender) }
        guard let c = cleanup else { return fail("451 4.3.0 Error: queue file write error", .resource) }
        rcptCount += 1
        if recipient == nil { recipient = address }
        // The original recipient is the address as the client wrote it.
        var raw = argv[2].text
        if raw.hasPrefix("<") && raw.hasSuffix(">") && raw.count >= 2 { raw = String(raw.dropFirst().dropLast()) }
        let dsnOrcpt = orcpt.map { "\($0.type);\($0.address)" } ?? "rfc822;\(raw)"
        var out: [UInt8] = []
        if notify != 0 { RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnNotifyFlags)=\(notify)".utf8)) }
        RecordCodec.append(&out, .attribute, Array("\(MailAttr.dsnOriginalRecipient)=\(dsnOrcpt)".utf8))
        RecordCodec.append(&out, .recipient, Array(address.utf8))
        do {
            try c.stream.write(out)
            try c.stream.flush()
        } catch {
            cleanupLost(error)
            return fail("451 4.3.0 Error: queue file write error", .resource)
        }
        reply("250 2.1.5 Ok")
        return true
    }

    // MARK: RSET, VRFY, ETRN

    func rsetCommand(_ argv: [SMTPToken]) -> Bool {
        if argv.count != 1 { return fail("501 5.5.4 Syntax: RSET") }
        abortTransaction()
        chatReset(s.historyThreshold)
        reply("250 2.0.0 Ok")
        return true
    }

    func vrfyCommand(_ argv: [SMTPToken]) -> Bool {
        if s.disableVRFY { return fail("502 5.5.1 VRFY command is disabled", .policy) }
        guard argv.count >= 2 else {
            return fail(s.smtputf8 ? "501 5.5.4 Syntax: VRFY address [SMTPUTF8]" : "501 5.5.4 Syntax: VRFY address")
        }
        var arg = argv[1]
        var utf8 = false
        if argv.count == 3 && s.smtputf8 && argv[2].text.uppercased() == "SMTPUTF8" {
            utf8 = true
        } else if argv.count > 2 {
            arg = SMTPToken(text: argv.dropFirst().map(\.text).joined(separator: " "),
                            malformed: argv.dropFirst().contains { $0.malformed })
        }
        guard let address = extractAddress(arg, allowEmpty: false, strict: false, smtputf8: utf8) else {
            return fail("501 5.1.3 Bad recipient address syntax")
        }
        if !s.standalone {
            let saved = smtputf8Requested
            if utf8 { smtputf8Requested = true }
            let err = checkRcpt(address)
            smtputf8Requested = saved
            if let err { return fail(err, nil) }
        }
        reply("252 2.0.0 \(arg.text)")
        return true
    }

    func etrnCommand(_ argv: [SMTPToken]) -> Bool {
        if s.heloRequired && helo == nil { return fail("503 Error: send HELO/EHLO first", .policy) }
        if sender != nil { return fail("503 Error: MAIL transaction in progress") }
        guard argv.count == 2 else { return fail("500 Syntax: ETRN domain") }
        var domain = argv[1].text
        if domain.hasPrefix("@") || domain.hasPrefix("#") { domain.removeFirst() }
        guard ValidHostname.isValid(domain) || ValidHostname.isMailhostLiteral(domain) else {
            return fail("501 Error: invalid parameter syntax")
        }
        if !s.standalone, let err = checkEtrn(domain) { return fail(err, nil) }
        switch FlushClient.sendSite(domain, config: config) {
        case .ok:
            reply("250 Queuing started")
            return true
        case .denied:
            Msg.warn("reject: ETRN \(domain.prefix(100))... from \(namaddr)")
            return fail("459 <\(domain)>: service unavailable", nil)
        case .bad:
            Msg.warn("bad ETRN \(domain.prefix(100))... from \(namaddr)")
            return fail("458 Unable to queue messages", nil)
        case .failed:
            Msg.warn("unable to talk to fast flush service")
            return fail("458 Unable to queue messages", nil)
        }
    }
}

/// RFC 3461 xtext (ENVID, ORCPT), decoded as Postfix's xtext_unquote() does.
enum Xtext {
    static func decode(_ s: String) -> String? {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        while i < b.count {
            if b[i] == UInt8(ascii: "+") {
                guard i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isPrintable(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
    }
}
