// Checks: the smtpd access restrictions: client, HELO, sender, relay, recipient, DATA and
// ETRN lists, access tables with every access(5) action, restriction classes, and the
// implicit unknown-recipient check; with smtpd_delay_reject the client, HELO and sender
// lists run at RCPT time.
// Mirrors Postfix smtpd/smtpd_check.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict

enum Stage {
    case client, helo, sender, recipient, data, etrn
}

enum Verdict {
    case permit
    case dunno
    case reject(String)
}

extension Session {
    /// The thing a reply names, and what it is called, for the list being evaluated.
    struct Subject {
        var name: String
        var what: String
    }

    func subject(_ stage: Stage, recipient: String?, etrnDomain: String? = nil) -> Subject {
        switch stage {
        case .client: return Subject(name: namaddr, what: "Client host")
        case .helo: return Subject(name: helo ?? "", what: "Helo command")
        case .sender: return Subject(name: sender ?? "", what: "Sender address")
        case .recipient: return Subject(name: recipient ?? "", what: "Recipient address")
        case .data: return Subject(name: "DATA", what: "Data command")
        case .etrn: return Subject(name: etrnDomain ?? "", what: "Etrn command")
        }
    }

    /// Evaluates one of the smtpd_*_restrictions lists; returns the reply for a
    /// rejection, nil when the list accepts.
    func restrictions(_ listName: String, stage: Stage, recipient: String? = nil, etrnDomain: String? = nil) -> String? {
        let list = s.lists[listName] ?? config.list(listName)
        warnOnly = false
        switch evaluate(list, stage: stage, recipient: recipient, etrnDomain: etrnDomain, depth: 0) {
        case .reject(let r): return r
        case .permit, .dunno: return nil
        }
    }

    /// Client, HELO and sender lists, each evaluated once per transaction.
    func restrictionsBeforeRecipient() -> String? {
        if clientVerdict == nil { clientVerdict = .some(restrictions("smtpd_client_restrictions", stage: .client)) }
        if let r = clientVerdict ?? nil { return r }
        if heloVerdict == nil { heloVerdict = .some(restrictions("smtpd_helo_restrictions", stage: .helo)) }
        if let r = heloVerdict ?? nil { return r }
        if sender != nil {
            if senderVerdict == nil { senderVerdict = .some(restrictions("smtpd_sender_restrictions", stage: .sender)) }
            if let r = senderVerdict ?? nil { return r }
        }
        return nil
    }

    /// Everything a recipient goes through at RCPT (or VRFY) time.
    func restrictionsForRecipient(_ address: String, vrfy: Bool = false) -> String? {
        if s.delayReject, let r = restrictionsBeforeRecipient() { return r }
        let relay = s.lists["smtpd_relay_restrictions"] ?? []
        let rcpt = s.lists["smtpd_recipient_restrictions"] ?? []
        if relay.isEmpty && rcpt.isEmpty {
            Msg.warn("the smtpd_relay_restrictions and smtpd_recipient_restrictions parameters are both empty; refusing all mail")
            return "451 4.3.5 Server configuration error"
        }
        if let r = restrictions("smtpd_relay_restrictions", stage: .recipient, recipient: address) { return r }
        if let r = restrictions("smtpd_recipient_restrictions", stage: .recipient, recipient: address) { return r }
        if config.bool("smtpd_reject_unlisted_recipient"), let r = unlistedRecipient(address) { return r }
        return nil
    }

    func evaluate(_ list: [String], stage: Stage, recipient: String?, etrnDomain: String?, depth: Int) -> Verdict {
        if depth > 100 {
            Msg.warn("restriction class nesting too deep")
            return .reject("451 4.3.5 Server configuration error")
        }
        let subj = subject(stage, recipient: recipient, etrnDomain: etrnDomain)
        var i = 0
        func reject(_ code: Int, _ dsn: String, _ text: String) -> Verdict? {
            let reply = "\(code) \(dsn) \(text)"
            if warnOnly {
                warnOnly = false
                logReject("reject_warning", reply, recipient: recipient)
                return nil
            }
            return .reject(reply)
        }
        func argument(_ name: String) -> String? {
            guard i + 1 < list.count else {
                Msg.warn("restriction `\(name)' requires a table argument")
                return nil
            }
            i += 1
            return list[i]
        }
        while i < list.count {
            let name = list[i]
            let lname = name.lowercased()
            var result: Verdict? = nil
            switch lname {
            case "permit":
                result = .permit
            case "reject":
                result = reject(s.rejectCode, Self.dsn(s.rejectCode, "7.1"),
                                "<\(subj.name)>: \(subj.what) rejected: Access denied")
            case "defer":
                result = reject(s.deferCode, Self.dsn(s.deferCode, "7.1"),
                                "<\(subj.name)>: \(subj.what) rejected: Access denied")
            case "warn_if_reject":
                warnOnly = true
                i += 1
                continue
            case "reject_unauth_pipelining":
                if illegalPipelining {
                    result = reject(503, "5.5.0", "<\(subj.name)>: \(subj.what) rejected: Improper use of SMTP command pipelining")
                }
            case "permit_mynetworks":
                if s.mynetworks.matches(addr) { result = .permit }
            case "permit_inet_interfaces":
                if s.ownAddresses.contains(peerBytes) { result = .permit }
            case "permit_sasl_authenticated", "permit_tls_clientcerts", "permit_tls_all_clientcerts":
                break
            case "reject_unauth_destination", "defer_unauth_destination", "permit_auth_destination",
                 "check_relay_domains", "reject_unlisted_recipient",
                 "reject_non_fqdn_recipient", "reject_unknown_recipient_domain":
                result = recipientRestriction(lname, recipient: stage == .recipient ? recipient : nil, subj: subj, reject: reject)
            case "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
                 "reject_invalid_helo_hostname", "reject_invalid_hostname",
                 "reject_unknown_helo_hostname", "reject_unknown_hostname":
                result = heloRestriction(lname, reject: reject)
            case "reject_non_fqdn_sender", "reject_unlisted_sender", "reject_unknown_sender_domain":
                if let snd = sender, !snd.isEmpty {
                    result = addressRestriction(lname, snd, what: "Sender address", reject: reject)
                }
            case "reject_unknown_client_hostname", "reject_unknown_client", "reject_unknown_reverse_client_hostname":
                let unknown = lname == "reject_unknown_reverse_client_hostname" ? reverseName == "unknown" : name == "unknown"
                if unknown {
                    let code = config.int(lname == "reject_unknown_reverse_client_hostname"
                                          ? "unknown_client_reject_code" : "unknown_client_reject_code")
                    result = reject(code, Self.dsn(code, "7.25"),
                                    "Client host rejected: cannot find your \(lname.contains("reverse") ? "reverse " : "")hostname, [\(addr)]")
                }
            case "check_client_access", "check_reverse_client_hostname_access", "check_client_a_access",
                 "check_helo_access", "check_sender_access", "check_recipient_access", "check_etrn_access":
                guard let table = argument(lname) else { return .reject("451 4.3.5 Server configuration error") }
                result = accessCheck(lname, table, stage: stage, recipient: recipient, etrnDomain: etrnDomain,
                                     depth: depth, reject: reject)
            case "sleep":
                if let v = argument(lname), let n = Int(v) { sleep(UInt32(max(n, 0))) }
            default:
                if let cls = s.restrictionClasses[name] {
                    switch evaluate(cls, stage: stage, recipient: recipient, etrnDomain: etrnDomain, depth: depth + 1) {
                    case .dunno: break
                    case let v: result = v
                    }
                } else if lname.hasPrefix("reject_rbl") || lname.hasPrefix("reject_rhsbl") || lname.hasPrefix("permit_dnswl")
                            || lname.hasPrefix("permit_rhswl") || lname == "check_policy_service" {
                    Msg.warn("restriction \(name) is not available in this build; ignored")
                    if lname != "reject_unknown_sender_domain" { _ = argument(lname) }
                } else {
                    Msg.warn("unknown smtpd restriction: \"\(name)\"")
                    return .reject("451 4.3.5 Server configuration error")
                }
            }
            if let r = result {
                switch r {
                case .dunno: break
                default: return r
                }
            }
            i += 1
        }
        return .dunno
    }

    /// The default DSN detail for a reply code class.
    static func dsn(_ code: Int, _ detail: String) -> String {
        (code >= 500 ? "5." : code >= 400 ? "4." : "2.") + detail
    }

    // MARK: Recipient and relay

    func recipientRestriction(_ lname: String, recipient: String?, subj: Subject,
                              reject: (Int, String, String) -> Verdict?) -> Verdict? {
        guard let recipient else { return nil }
        switch lname {
        case "reject_unauth_destination", "check_relay_domains":
            if authorizedDestination(recipient) { return nil }
            return reject(s.relayCode, Self.dsn(s.relayCode, "7.1"), "<\(recipient)>: Relay access denied")
        case "defer_unauth_destination":
            if authorizedDestination(recipient) { return nil }
            let code = config.int("relay_domains_reject_code") >= 500 ? 454 : 454
            return reject(code, "4.7.1", "<\(recipient)>: Relay access denied")
        case "permit_auth_destination":
            return authorizedDestination(recipient) ? .permit : nil
        case "reject_unlisted_recipient":
            if let r = unlistedRecipient(recipient) { return .reject(r) }
            return nil
        case "reject_non_fqdn_recipient", "reject_unknown_recipient_domain":
            return addressRestriction(lname, recipient, what: "Recipient address", reject: reject)
        default:
            return nil
        }
    }

    /// permit_auth_destination: final delivery here, or a relay_domains destination.
    func authorizedDestination(_ recipient: String) -> Bool {
        let r = s.rewriter.resolve(recipient, sender: sender ?? "")
        if !r.recipient.contains("@") { return true }
        if !s.allowUntrustedRouting && r.flags.contains(.routed) { return false }
        if !r.flags.isDisjoint(with: [.local, .alias, .virtual]) { return true }
        return r.flags.contains(.relay)
    }

    /// The implicit (smtpd_reject_unlisted_recipient) or explicit unknown-user check.
    func unlistedRecipient(_ recipient: String) -> String? {
        let r = s.rewriter.resolve(recipient, sender: sender ?? "")
        if r.flags.contains(.fail) {
            return "451 4.3.0 <\(recipient)>: Temporary lookup failure"
        }
        func missing(_ finder: MailAddrFinder?, _ title: String, _ code: Int, _ why: String) -> String? {
            guard let finder else { return nil }
            if finder.find(r.recipient) != nil { return nil }
            if finder.maps.error != nil { return "451 4.3.0 <\(recipient)>: Temporary lookup failure" }
            return "\(code) \(Self.dsn(code, "1.1")) <\(recipient)>: Recipient address rejected: User unknown\(s.showUnknownTable ? " in \(why)" : "")"
        }
        if r.flags.contains(.local) {
            let lower = r.recipient.lowercased()
            if lower.hasPrefix(s.doubleBounceSender.lowercased() + "@") || lower.hasPrefix("postmaster@") { return nil }
            if s.virtualAliasMaps?.find(r.recipient) != nil { return nil }
            return missing(s.localRecipientMaps, "local_recipient_maps", s.unknownLocalCode, "local recipient table")
        }
        if r.flags.contains(.alias) {
            if s.virtualAliasMaps?.find(r.recipient) != nil { return nil }
            return "\(config.int("unknown_virtual_alias_reject_code")) 5.1.1 <\(recipient)>: Recipient address rejected: User unknown\(s.showUnknownTable ? " in virtual alias table" : "")"
        }
        if r.flags.contains(.virtual) {
            if s.virtualAliasMaps?.find(r.recipient) != nil { return nil }
            return missing(s.virtualMailboxMaps, "virtual_mailbox_maps", s.unverifiedRecipientCode, "virtual mailbox table")
        }
        if r.flags.contains(.relay) {
            if s.virtualAliasMaps?.find(r.recipient) != nil { return nil }
            return missing(s.relayRecipientMaps, "relay_recipient_maps", config.int("unknown_relay_recipient_reject_code"),
                           "relay recipient table")
        }
        return nil
    }

    // MARK: Address and HELO syntax

    func addressRestriction(_ lname: String, _ address: String, what: String,
                            reject: (Int, String, String) -> Verdict?) -> Verdict? {
        switch lname {
        case "reject_non_fqdn_sender", "reject_non_fqdn_recipient":
            let domain = address.lastIndex(of: "@").map { String(address[address.index(after: $0)...]) } ?? ""
            if domain.isEmpty || (!domain.contains(".") && !ValidHostname.isMailhostLiteral(domain)) {
                let isSender = lname.hasSuffix("sender")
                if !isSender && (address.lowercased() == "postmaster") { return nil }
                return reject(s.nonFQDNCode, Self.dsn(s.nonFQDNCode, "5.2"), "<\(address)>: \(what) rejected: need fully-qualified address")
            }
        default:
            // DNS-based checks (unknown domain, unlisted sender) are not available yet.
            break
        }
        return nil
    }

    func heloRestriction(_ lname: String, reject: (Int, String, String) -> Verdict?) -> Verdict? {
        guard let helo else { return nil }
        var h = helo
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        switch lname {
        case "reject_invalid_helo_hostname", "reject_invalid_hostname":
            if !ValidHostname.isValid(h) && !ValidHostname.isAddress(h) {
                return reject(s.invalidHostnameCode, Self.dsn(s.invalidHostnameCode, "5.2"), "<\(helo)>: Helo command rejected: Invalid name")
            }
        case "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname":
            if !ValidHostname.isAddress(h) && (!h.contains(".") || h.hasSuffix(".") && !h.dropLast().contains(".")) {
                return reject(s.nonFQDNCode, Self.dsn(s.nonFQDNCode, "5.2"), "<\(helo)>: Helo command rejected: need fully-qualified hostname")
            }
        default:
            break
        }
        return nil
    }

    // MARK: Access tables

    func accessCheck(_ lname: String, _ table: String, stage: Stage, recipient: String?, etrnDomain: String?,
                     depth: Int, reject: (Int, String, String) -> Verdict?) -> Verdict? {
        let maps = s.accessTable(table)
        let answer: MapsAnswer
        let subj: Subject
        switch lname {
        case "check_client_access":
            answer = AccessWalk.nameAddress(maps, name: name, address: addr, parentStyle: s.parentStyle)
            subj = Subject(name: namaddr, what: "Client host")
        case "check_reverse_client_hostname_access":
            answer = AccessWalk.nameAddress(maps, name: reverseName, address: addr, parentStyle: s.parentStyle)
            subj = Subject(name: "\(reverseName)[\(addr)]", what: "Client host")
        case "check_client_a_access":
            answer = AccessWalk.address(maps, addr)
            subj = Subject(name: namaddr, what: "Client host")
        case "check_helo_access":
            guard let helo else { return nil }
            answer = AccessWalk.domain(maps, helo, parentStyle: s.parentStyle)
            subj = Subject(name: helo, what: "Helo command")
        case "check_sender_access":
            guard let snd = sender else { return nil }
            let finder = MailAddrFinder(maps: maps, local: s.local, extension: s.ext)
            answer = snd.isEmpty ? maps.lookup(s.nullAccessKey) : AccessWalk.mail(finder, snd, parentStyle: s.parentStyle)
            subj = Subject(name: snd, what: "Sender address")
        case "check_recipient_access":
            guard stage == .recipient, let rcpt = recipient else { return nil }
            let finder = MailAddrFinder(maps: maps, local: s.local, extension: s.ext)
            answer = AccessWalk.mail(finder, rcpt, parentStyle: s.parentStyle)
            subj = Subject(name: rcpt, what: "Recipient address")
        default:
            guard let d = etrnDomain else { return nil }
            answer = AccessWalk.domain(maps, d, parentStyle: s.parentStyle)
            subj = Subject(name: d, what: "Etrn command")
        }
        switch answer {
        case .notFound:
            return nil
        case .failed:
            Msg.warn("\(table): table lookup problem")
            return .reject("451 4.3.0 <\(subj.name)>: \(subj.what) rejected: Temporary lookup failure")
        case .found(let value):
            return accessAction(value, table: table, subj: subj, stage: stage, recipient: recipient,
                                etrnDomain: etrnDomain, depth: depth, reject: reject)
        }
    }

    /// One access(5) result.
    func accessAction(_ value: String, table: String, subj: Subject, stage: Stage, recipient: String?,
                      etrnDomain: String?, depth: Int,
                      reject: (Int, String, String) -> Verdict?) -> Verdict? {
        let trimmed = value.drop(while: { $0 == " " || $0 == "\t" })
        let cmdEnd = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? trimmed.endIndex
        let command = String(trimmed[..<cmdEnd])
        let text = String(trimmed[cmdEnd...].drop(while: { $0 == " " || $0 == "\t" }))
        func info(_ action: String, _ extra: String) {
            var line = "\(queueID ?? "NOQUEUE"): \(action): \(lastCommand) from \(namaddr): <\(subj.name)>: \(subj.what) \(extra);"
            if let sender { line += " from=<\(sender)>" }
            if let r = recipient { line += " to=<\(r)>" }
            line += " proto=\(protocolName)"
            if let helo { line += " helo=<\(helo)>" }
            Msg.info(line)
        }
        switch command.uppercased() {
        case "OK", "RELAY":
            return .permit
        case "DUNNO":
            return nil
        case "REJECT":
            let t = text.isEmpty ? "Access denied" : text
            let (dsn, rest) = Self.splitDSN(t, default: Self.dsn(s.accessRejectCode, "7.1"))
            return reject(s.accessRejectCode, dsn, "<\(subj.name)>: \(subj.what) rejected: \(rest)")
        case "DEFER":
            let t = text.isEmpty ? "Access denied" : text
            let (dsn, rest) = Self.splitDSN(t, default: Self.dsn(s.accessDeferCode, "7.1"))
            return reject(s.accessDeferCode, dsn, "<\(subj.name)>: \(subj.what) rejected: \(rest)")
        case "DEFER_IF_REJECT", "DEFER_IF_PERMIT":
            return nil
        case "HOLD":
            info("hold", "triggers HOLD action\(text.isEmpty ? "" : ": " + text)")
            savedFlags.insert(.hold)
            return nil
        case "DISCARD":
            info("discard", "triggers DISCARD action\(text.isEmpty ? "" : ": " + text)")
            savedFlags.insert(.discard)
            return .permit
        case "FILTER":
            guard text.contains(":") else { return badAction(table, value) }
            info("filter", "triggers FILTER \(text)")
            savedFilter = text
            return nil
        case "REDIRECT":
            guard !text.isEmpty else { return badAction(table, value) }
            info("redirect", "triggers REDIRECT \(text)")
            savedRedirect = text
            return nil
        case "BCC":
            guard !text.isEmpty else { return badAction(table, value) }
            info("bcc", "triggers BCC \(text)")
            savedBcc.append(text)
            return nil
        case "PREPEND":
            guard ContentHeader.isHeader(text) else { return badAction(table, value) }
            prependHeaders.append(text)
            return nil
        case "WARN":
            info("warn", text)
            return nil
        case "INFO":
            info("info", text)
            return nil
        default:
            break
        }
        // A numeric reply: 4xx/5xx rejects, 2xx permits.
        if command.count == 3, let code = Int(command), command.first != "0" {
            if code >= 200 && code < 300 { return .permit }
            if code >= 400 && code < 600 {
                let t = text.isEmpty ? "Access denied" : text
                let (dsn, rest) = Self.splitDSN(t, default: Self.dsn(code, "7.1"))
                return reject(code, dsn, "<\(subj.name)>: \(subj.what) rejected: \(rest)")
            }
            return badAction(table, value)
        }
        // Anything else is a restriction list (or a restriction class name).
        let list = Tokens.splitQuoted(value)
        switch evaluate(list, stage: stage, recipient: recipient, etrnDomain: etrnDomain, depth: depth + 1) {
        case .dunno: return nil
        case let v: return v
        }
    }

    func badAction(_ table: String, _ value: String) -> Verdict {
        Msg.warn("access table \(table): unknown or malformed action: \(value)")
        return .reject("451 4.3.5 Server configuration error")
    }

    /// "5.7.1 text" → ("5.7.1", "text"); text without a DSN code gets the default.
    static func splitDSN(_ text: String, default dsn: String) -> (String, String) {
        let parts = text.split(separator: " ", maxSplits: 1)
        if let f = parts.first, f.split(separator: ".").count == 3, let c = f.first, c == "2" || c == "4" || c == "5",
           f.allSatisfy({ $0.isNumber || $0 == "." }) {
            return (String(f), parts.count > 1 ? String(parts[1]) : "")
        }
        return (dsn, text)
    }
}

enum ContentHeader {
    static func isHeader(_ s: String) -> Bool {
        var i = s.utf8.startIndex
        var n = 0
        while i < s.utf8.endIndex, let c = Optional(s.utf8[i]), c > 32, c < 127, c != UInt8(ascii: ":") {
            i = s.utf8.index(after: i)
            n += 1
        }
        if n == 0 { return false }
        while i < s.utf8.endIndex, s.utf8[i] == 0x20 || s.utf8[i] == 0x09 { i = s.utf8.index(after: i) }
        return i < s.utf8.endIndex && s.utf8[i] == UInt8(ascii: ":")
    }
}
