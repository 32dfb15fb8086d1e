// Checks: the access restrictions engine: the restriction lists of each protocol stage
// (client, HELO, sender, recipient with relay, ETRN, DATA, end of data), the generic
// evaluation of a list with restriction classes, warn_if_reject, defer_if_permit and
// defer_if_reject, the rejection reply and its log line, and access(5) table results.
// With smtpd_delay_reject the client, HELO and sender lists run again for each recipient.
// Mirrors Postfix smtpd/smtpd_check.c (3.7) with smtpd_dsn_fix.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict

/// SMTPD_CHECK_*: what a restriction decided.
enum CheckResult {
    case dunno, ok, reject
}

/// MAIL_ERROR_*: what kind of trouble a rejection reports (for notify_classes, and
/// warn_if_reject, which cannot soften software, resource and data errors).
enum ErrorClass {
    case policy, proto, bounce, software, resource, data
}

/// A deferred verdict: defer_if_permit or defer_if_reject with its reply.
struct DeferIf {
    var active = false
    var errorClass = ErrorClass.policy
    var code = 450
    var dsn = "4.7.1"
    var reason = ""
}

/// The restriction state of a session.
struct CheckState {
    var errorText = ""
    /// The nesting level at which warn_if_reject was seen (0: not in effect).
    var warnIfReject = 0
    var recursion = 0
    var deferIfPermit = DeferIf()
    var deferIfReject = DeferIf()
    var deferIfPermitClient = false
    var deferIfPermitHelo = false
    var deferIfPermitSender = false
    /// A DISCARD action: the message is accepted and thrown away; no more checks.
    var discard = false
    var recipientMapsChecked = false
    var senderMapsChecked = false
    /// DNS list answers, per query name, for the life of the process.
    var rblCache: [String: RBLAnswer] = [:]
}

/// A restriction that cannot go on: a configuration or lookup error, already formatted
/// in errorText (Postfix longjmps out of the list).
struct CheckAbort: Error {}

/// The stages' names in replies ("Client host rejected: ...").
enum ReplyClass {
    static let client = "Client host"
    static let reverseClient = "Unverified Client host"
    static let helo = "Helo command"
    static let sender = "Sender address"
    static let recipient = "Recipient address"
    static let etrn = "Etrn command"
    static let data = "Data command"
    static let endOfData = "End-of-data"
    static let saslUser = "SASL login name"
    static let clientCertificate = "Client certificate"
}

/// The access table restriction a bare "type:table" in a list stands for.
enum DefaultACL {
    static let client = "check_client_access"
    static let helo = "check_helo_access"
    static let sender = "check_sender_access"
    static let recipient = "check_recipient_access"
    static let etrn = "check_etrn_access"
}

extension Session {
    // MARK: Rejections

    /// smtpd_check_reject: formats and validates the reply, applies warn_if_reject,
    /// defer_if_reject and soft_bounce, and logs it.
    func checkReject(_ errorClass: ErrorClass, _ code: Int, _ dsn: String, _ text: String) -> CheckResult {
        let warn = check.warnIfReject != 0 && errorClass != .software && errorClass != .resource && errorClass != .data
        errorMask.insert(errorClass)
        var t = "\(code) \(dsn) \(text)"
        if code < 400 || code > 599 {
            Msg.warn("SMTP reply code configuration error: \(t)")
            t = "450 4.7.1 Service unavailable"
        } else if !DSNCode.isValid(dsn) {
            Msg.warn("DSN detail code configuration error: \(t)")
            t = "450 4.7.1 Service unavailable"
        }
        var b = Array(Msg.printable(t).utf8.prefix(510))
        for i in b.indices where b[i] < 0x20 || b[i] == 0x7F { b[i] = 0x20 }
        if !warn && check.deferIfReject.active && b.first == UInt8(ascii: "5") {
            check.warnIfReject = 0
            check.deferIfReject.active = false
            let d = check.deferIfReject
            return checkReject(d.errorClass, d.code, d.dsn, d.reason)
        }
        if s.softBounce && b.first == UInt8(ascii: "5") { b[0] = UInt8(ascii: "4") }
        // The DSN class follows the reply code.
        if b.count > 4 { b[4] = b[0] }
        check.errorText = String(decoding: b, as: UTF8.self)
        logWhatsup(warn ? "reject_warning" : "reject", check.errorText)
        return warn ? .dunno : .reject
    }

    /// reject_server_error: "451 4.3.5 Server configuration error", ending the list.
    func serverError() throws -> Never {
        _ = checkReject(.software, 451, "4.3.5", "Server configuration error")
        throw CheckAbort()
    }

    /// reject_dict_retry: a table that cannot be read defers the request.
    func dictRetry(_ replyName: String) throws -> Never {
        _ = checkReject(.resource, 451, "4.3.0", "<\(replyName)>: Temporary lookup failure")
        throw CheckAbort()
    }

    /// defer_if_permit: remembers the reply for when the request would be permitted
    /// (the first one counts).
    func deferIfPermit(_ errorClass: ErrorClass, _ code: Int, _ dsn: String, _ text: String) -> CheckResult {
        if check.warnIfReject != 0 { return checkReject(errorClass, code, dsn, text) }
        if !check.deferIfPermit.active {
            check.deferIfPermit = DeferIf(active: true, errorClass: errorClass, code: code, dsn: dsn, reason: text)
        }
        return .dunno
    }

    /// defer_if_reject: the next 5xx rejection becomes this reply.
    func deferIfReject(_ errorClass: ErrorClass, _ code: Int, _ dsn: String, _ text: String) {
        if !check.deferIfReject.active {
            check.deferIfReject = DeferIf(active: true, errorClass: errorClass, code: code, dsn: dsn, reason: text)
        }
    }

    /// The *_tempfail_action of a lookup that failed for now: defer_if_permit, or an
    /// immediate 4xx reply.
    func tempfail(_ action: TempfailAction, _ errorClass: ErrorClass, _ code: Int, _ dsn: String, _ text: String) -> CheckResult {
        action == .deferIfPermit ? deferIfPermit(errorClass, code, dsn, text) : checkReject(errorClass, code, dsn, text)
    }

    /// smtpd_acl_permit: a permit, logged when smtpd_log_access_permit_actions asks.
    func aclPermit(_ action: String, _ replyClass: String, _ replyName: String, _ extra: String = "") -> CheckResult {
        if s.logPermitActions.matches(action) {
            logWhatsup("permit", "action=\(action) for \(replyClass)=\(replyName) \(extra)")
        }
        return .ok
    }

    /// After a list: a remembered defer_if_permit turns an acceptance into a deferral.
    func forceDeferral(_ status: CheckResult) -> CheckResult {
        guard status != .reject, check.deferIfPermit.active else { return status }
        let d = check.deferIfPermit
        return checkReject(d.errorClass, d.code, d.dsn, d.reason)
    }

    func resetChecks() {
        check.recursion = 0
        check.warnIfReject = 0
        check.deferIfReject.active = false
    }

    /// One list, with configuration and lookup errors caught as rejections.
    func runList(_ list: [String], _ replyName: String, _ replyClass: String, _ defACL: String?) -> CheckResult {
        if list.isEmpty { return .dunno }
        do {
            return try generic(list, replyName, replyClass, defACL)
        } catch {
            return .reject
        }
    }

    // MARK: The stages

    func checkClient() -> String? {
        check.deferIfPermit.active = false
        resetChecks()
        let status = runList(s.lists.client, namaddr, ReplyClass.client, DefaultACL.client)
        check.deferIfPermitClient = check.deferIfPermit.active
        return status == .reject ? check.errorText : nil
    }

    func checkHelo(_ name: String) -> String? {
        let saved = helo
        helo = name
        defer { helo = saved }
        check.deferIfPermit.active = check.deferIfPermitClient
        resetChecks()
        let status = runList(s.lists.helo, name, ReplyClass.helo, DefaultACL.helo)
        check.deferIfPermitHelo = check.deferIfPermit.active
        return status == .reject ? check.errorText : nil
    }

    func checkMail(_ address: String) -> String? {
        let saved = sender
        sender = address
        defer { sender = saved }
        check.deferIfPermit.active = check.deferIfPermitClient || check.deferIfPermitHelo
        check.senderMapsChecked = false
        resetChecks()
        var status = runList(s.lists.sender, address, ReplyClass.sender, DefaultACL.sender)
        check.deferIfPermitSender = check.deferIfPermit.active
        if s.rejectUnlistedSender && status != .reject && !check.senderMapsChecked && !check.discard && !address.isEmpty {
            status = (try? checkSenderMaps(address)) ?? .reject
        }
        return status == .reject ? check.errorText : nil
    }

    /// smtpd_check_size and smtpd_check_queue: message_size_limit, then the free space in
    /// the queue file system.
    func checkSize(sender address: String, size: Int) -> String? {
        let saved = sender
        sender = address
        defer { sender = saved }
        if s.messageSizeLimit > 0 && size > s.messageSizeLimit {
            _ = checkReject(.policy, 552, "5.3.4", "Message size exceeds fixed limit")
            return check.errorText
        }
        var st = statvfs()
        guard statvfs(".", &st) == 0 else { return nil }
        // smtpd_check_queue, in blocks as Postfix compares them: more than queue_minfree
        // free, and more than 1.5 times message_size_limit. The announced SIZE counts
        // only against the limit (the reference takes a SIZE larger than the free space).
        let blockSize = max(Int(st.f_frsize), 1)
        let free = Int(st.f_bavail)
        if s.queueMinFree / blockSize >= free || Double(s.messageSizeLimit / blockSize) >= Double(free) / 1.5 {
            _ = checkReject(.resource, 452, "4.3.1", "Insufficient system storage")
            Msg.warn("not enough free space in mail queue: \(free * blockSize) bytes < 1.5*message size limit")
            return check.errorText
        }
        return nil
    }

    func checkRcpt(_ address: String) -> String? {
        // RFC 5321 section 4.5.1: postmaster must be accepted, whatever else is said.
        if address.lowercased() == "postmaster" { return nil }
        let saved = recipient
        recipient = address
        defer { recipient = saved }
        if s.delayReject {
            if let e = checkClient() { return e }
            if let e = checkHelo(helo) { return e }
            if let e = checkMailIfAny() { return e }
        }
        check.deferIfPermit.active = check.deferIfPermitSender
        check.recipientMapsChecked = false
        resetChecks()
        var status = CheckResult.dunno
        let order = s.relayBeforeRecipientChecks ? [s.lists.relay, s.lists.recipient] : [s.lists.recipient, s.lists.relay]
        for list in order {
            status = runList(list, address, ReplyClass.recipient, DefaultACL.recipient)
            if status == .reject { break }
        }
        status = forceDeferral(status)
        if s.rejectUnlistedRecipient && status != .reject && !check.recipientMapsChecked && !check.discard {
            status = (try? checkRecipientMaps(address)) ?? .reject
        }
        return status == .reject ? check.errorText : nil
    }

    /// Without a HELO name (or a sender) that stage has nothing to check.
    func checkHelo(_ name: String?) -> String? {
        name.flatMap { checkHelo($0) }
    }

    func checkMailIfAny() -> String? {
        sender.flatMap { checkMail($0) }
    }

    func checkEtrn(_ domain: String) -> String? {
        if s.delayReject {
            if let e = checkClient() { return e }
            if let e = checkHelo(helo) { return e }
        }
        check.deferIfPermit.active = check.deferIfPermitClient || check.deferIfPermitHelo
        resetChecks()
        let status = forceDeferral(runList(s.lists.etrn, domain, ReplyClass.etrn, DefaultACL.etrn))
        return status == .reject ? check.errorText : nil
    }

    /// DATA and the first BDAT: one verdict for all recipients, so only a single recipient
    /// is named in the log.
    func checkData() -> String? {
        checkWholeMessage(s.lists.data, "DATA", ReplyClass.data)
    }

    func checkEndOfData() -> String? {
        checkWholeMessage(s.lists.endOfData, Where.endOfMessage, ReplyClass.endOfData)
    }

    func checkWholeMessage(_ list: [String], _ replyName: String, _ replyClass: String) -> String? {
        let saved = recipient
        if rcptCount > 1 { recipient = nil }
        defer { recipient = saved }
        check.deferIfPermit.active = false
        resetChecks()
        let status = forceDeferral(runList(list, replyName, replyClass, nil))
        return status == .reject ? check.errorText : nil
    }

    // MARK: The generic list

    /// generic_checks: evaluates a restriction list in order; the first restriction with a
    /// verdict ends it.
    func generic(_ list: [String], _ replyName: String, _ replyClass: String, _ defACL: String?) throws -> CheckResult {
        let savedRecursion = check.recursion
        check.recursion += 1
        defer { check.recursion = savedRecursion }
        var status = CheckResult.dunno
        var i = 0
        while i < list.count {
            if check.discard { break }
            let name = list[i]
            let lname = name.lowercased()
            if lname == "warn_if_reject" {
                if check.warnIfReject == 0 { check.warnIfReject = check.recursion }
                i += 1
                continue
            }
            // A bare "type:table" is the stage's own access table check.
            if name.contains(":") {
                guard let acl = defACL else {
                    Msg.warn("specify one of (check_client_access, check_reverse_client_hostname_access, check_helo_access, check_sender_access, check_recipient_access, check_etrn_access) before \(replyClass) restriction \"\(name)\"")
                    try serverError()
                }
                var j = 0
                status = try restriction(acl, acl, [acl, name], &j, replyName, replyClass, defACL)
            } else {
                status = try restriction(lname, name, list, &i, replyName, replyClass, defACL)
            }
            i += 1
            if check.warnIfReject >= check.recursion { check.warnIfReject = 0 }
            if status != .dunno { break }
            if check.deferIfPermit.active && check.deferIfReject.active { break }
        }
        return status
    }

    /// The argument after restriction `i` (moving past it), or nil when there is none.
    func argument(_ list: [String], _ i: inout Int) -> String? {
        guard i + 1 < list.count else { return nil }
        i += 1
        return list[i]
    }

    /// is_map_command: a check_*_access restriction and its table.
    func mapArgument(_ command: String, _ list: [String], _ i: inout Int) throws -> String {
        guard i + 1 < list.count, list[i + 1].contains(":") else {
            Msg.warn("restriction \(command): bad argument \"\(i + 1 < list.count ? list[i + 1] : command)\": need maptype:mapname")
            try serverError()
        }
        i += 1
        return list[i]
    }

    /// A restriction that needs a domain argument (the DNS lists).
    func domainArgument(_ name: String, _ list: [String], _ i: inout Int) -> String? {
        guard let a = argument(list, &i) else {
            Msg.warn("restriction \(name) requires domain name argument")
            return nil
        }
        return a
    }

    func warnIgnoredAfter(_ list: [String], _ i: Int, _ name: String) {
        if i + 1 < list.count && check.warnIfReject == 0 {
            Msg.warn("restriction `\(list[i + 1])' after `\(name)' is ignored")
        }
    }

    /// One restriction of a list; `i` is at its name and moves past its arguments.
    func restriction(_ lname: String, _ name: String, _ list: [String], _ i: inout Int,
                     _ replyName: String, _ replyClass: String, _ defACL: String?) throws -> CheckResult {
        switch lname {
        // Generic restrictions.
        case "permit":
            let st = aclPermit(name, replyClass, replyName)
            if i + 1 < list.count { Msg.warn("restriction `\(list[i + 1])' after `\(name)' is ignored") }
            return st
        case "defer":
            let st = checkReject(.policy, s.deferCode, "4.3.2", "<\(replyName)>: \(replyClass) rejected: Try again later")
            warnIgnoredAfter(list, i, name)
            return st
        case "reject":
            let st = checkReject(.policy, s.rejectCode, "5.7.1", "<\(replyName)>: \(replyClass) rejected: Access denied")
            warnIgnoredAfter(list, i, name)
            return st
        case "reject_unauth_pipelining":
            if illegalPipelining {
                return checkReject(.proto, 503, "5.5.0", "<\(replyName)>: \(replyClass) rejected: Improper use of SMTP command pipelining")
            }
            return .dunno
        case "check_policy_service":
            guard i + 1 < list.count, list[i + 1].contains(":") else {
                Msg.warn("restriction check_policy_service must be followed by transport:server")
                try serverError()
            }
            i += 1
            return try checkPolicyService(list[i], replyName, replyClass, defACL)
        case "defer_if_permit":
            return deferIfPermit(.policy, 450, "4.7.0", "<\(replyName)>: \(replyClass) rejected: defer_if_permit requested")
        case "defer_if_reject":
            deferIfReject(.policy, 450, "4.7.0", "<\(replyName)>: \(replyClass) rejected: defer_if_reject requested")
            return .dunno
        case "sleep":
            guard i + 1 < list.count, !list[i + 1].isEmpty, list[i + 1].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                Msg.warn("restriction sleep must be followed by number")
                try serverError()
            }
            i += 1
            flush()
            sleep(UInt32(list[i]) ?? 0)
            return .dunno
        case "reject_plaintext_session":
            return checkReject(.policy, s.plaintextCode, "4.7.1", "Session encryption is required")

        // Client name and address.
        case "reject_unknown_client_hostname", "reject_unknown_client":
            if nameStatus != .ok {
                return checkReject(.policy, nameStatus >= .permanent ? s.unknownClientCode : 450, "4.7.25",
                                   "Client host rejected: cannot find your hostname, [\(addr)]")
            }
            return .dunno
        case "reject_unknown_reverse_client_hostname":
            if reverseNameStatus != .ok {
                return checkReject(.policy, reverseNameStatus >= .permanent ? s.unknownClientCode : 450, "4.7.1",
                                   "Client host rejected: cannot find your reverse hostname, [\(addr)]")
            }
            return .dunno
        case "permit_inet_interfaces":
            return s.ownAddresses.contains(peerBytes) ? aclPermit(name, ReplyClass.client, namaddr) : .dunno
        case "permit_mynetworks":
            if s.mynetworks.matches(addr) { return aclPermit(name, ReplyClass.client, namaddr) }
            if let e = s.mynetworks.error { _ = e; try dictRetry(namaddr) }
            return .dunno
        case "check_client_access":
            let table = try mapArgument(name, list, &i)
            return try accessNameAddress(table, name: self.name, address: addr, replyName: namaddr,
                                         replyClass: ReplyClass.client, defACL: defACL)
        case "check_reverse_client_hostname_access":
            let table = try mapArgument(name, list, &i)
            return try accessNameAddress(table, name: reverseName, address: addr, replyName: reverseName,
                                         replyClass: ReplyClass.reverseClient, defACL: defACL)
        case "reject_maps_rbl":
            return rejectMapsRBL()
        case "reject_rbl_client", "reject_rbl":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            return try rejectRBLAddress(d, addr, ReplyClass.client)
        case "permit_dnswl_client":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            return try permitDNSWLAddress(d, addr) ? aclPermit(name, ReplyClass.client, namaddr) : .dunno
        case "reject_rhsbl_client":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            return self.name.lowercased() == "unknown" ? .dunno : try rejectRBLDomain(d, self.name, ReplyClass.client)
        case "permit_rhswl_client":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            if self.name.lowercased() != "unknown", try permitRHSWLDomain(d, self.name) {
                return aclPermit(name, ReplyClass.client, namaddr)
            }
            return .dunno
        case "reject_rhsbl_reverse_client":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            return reverseName.lowercased() == "unknown" ? .dunno : try rejectRBLDomain(d, reverseName, ReplyClass.reverseClient)
        case "check_ccert_access":
            let table = try mapArgument(name, list, &i)
            // A fingerprint names the certificate itself: its issuer need not be trusted.
            guard let t = tls, t.certPresent else { return .dunno }
            for key in [t.certFingerprint, t.pkeyFingerprint] {
                let st = try accessFull(table, key, replyName: namaddr, replyClass: ReplyClass.clientCertificate, defACL: defACL)
                if st != .dunno { return st }
            }
            return .dunno
        case "check_sasl_access":
            let table = try mapArgument(name, list, &i)
            guard s.saslEnabled else {
                Msg.warn("restriction `\(name)' ignored: no SASL support")
                return .dunno
            }
            guard let user = saslUsername, !user.isEmpty else { return .dunno }
            return try accessMail(table, user, replyName: user, replyClass: ReplyClass.saslUser, defACL: defACL)
        case "check_client_ns_access", "check_client_mx_access", "check_client_a_access":
            let table = try mapArgument(name, list, &i)
            guard self.name.lowercased() != "unknown" else { return .dunno }
            return try checkServerAccess(table, self.name, Self.serverType(lname), namaddr, ReplyClass.client, defACL)
        case "check_reverse_client_ns_access", "check_reverse_client_mx_access", "check_reverse_client_a_access":
            let table = try mapArgument(name, list, &i)
            guard reverseName.lowercased() != "unknown" else { return .dunno }
            return try checkServerAccess(table, reverseName, Self.serverType(lname), reverseName, ReplyClass.reverseClient, defACL)

        // HELO/EHLO.
        case "check_helo_access":
            let table = try mapArgument(name, list, &i)
            guard let helo else { return .dunno }
            return try accessDomain(table, helo, replyName: helo, replyClass: ReplyClass.helo, defACL: defACL)
        case "reject_invalid_helo_hostname", "reject_invalid_hostname":
            guard let helo else { return .dunno }
            return helo.hasPrefix("[") ? rejectInvalidHostAddress(helo, helo, ReplyClass.helo)
                                       : rejectInvalidHostname(helo, helo, ReplyClass.helo)
        case "reject_unknown_helo_hostname", "reject_unknown_hostname":
            guard let helo else { return .dunno }
            return helo.hasPrefix("[") ? rejectInvalidHostAddress(helo, helo, ReplyClass.helo)
                                       : rejectUnknownHostname(helo, helo, ReplyClass.helo)
        case "permit_naked_ip_address":
            Msg.warn("restriction permit_naked_ip_address is deprecated. Use permit_mynetworks or permit_sasl_authenticated instead")
            if let helo, helo.allSatisfy({ "0123456789.:".contains($0) }),
               rejectInvalidHostAddress(helo, helo, ReplyClass.helo) == .dunno {
                return aclPermit(name, ReplyClass.helo, helo)
            }
            return .dunno
        case "check_helo_ns_access", "check_helo_mx_access", "check_helo_a_access":
            let table = try mapArgument(name, list, &i)
            guard let helo else { return .dunno }
            return try checkServerAccess(table, helo, Self.serverType(lname), helo, ReplyClass.helo, defACL)
        case "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname":
            guard let helo else { return .dunno }
            return helo.hasPrefix("[") ? rejectInvalidHostAddress(helo, helo, ReplyClass.helo)
                                       : rejectNonFQDNHostname(helo, helo, ReplyClass.helo)
        case "reject_rhsbl_helo":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            guard let helo else { return .dunno }
            return try rejectRBLDomain(d, helo, ReplyClass.helo)

        // Sender.
        case "check_sender_access":
            let table = try mapArgument(name, list, &i)
            guard let sender else { return .dunno }
            if sender.isEmpty {
                return try accessFull(table, s.nullAccessKey, replyName: sender, replyClass: ReplyClass.sender, defACL: defACL)
            }
            return try accessMail(table, sender, replyName: sender, replyClass: ReplyClass.sender, defACL: defACL)
        case "reject_unknown_sender_domain", "reject_unknown_address":
            guard let sender, !sender.isEmpty else { return .dunno }
            return try rejectUnknownAddress(sender, sender, ReplyClass.sender)
        case "reject_non_fqdn_sender":
            guard let sender, !sender.isEmpty else { return .dunno }
            return rejectNonFQDNAddress(sender, sender, ReplyClass.sender)
        case "check_sender_ns_access", "check_sender_mx_access", "check_sender_a_access":
            let table = try mapArgument(name, list, &i)
            guard let sender, !sender.isEmpty else { return .dunno }
            return try checkServerAccess(table, sender, Self.serverType(lname), sender, ReplyClass.sender, defACL)
        case "reject_rhsbl_sender":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            guard let sender, !sender.isEmpty else { return .dunno }
            return try rejectRBLDomain(d, sender, ReplyClass.sender)
        case "reject_unverified_sender":
            guard let sender, !sender.isEmpty else { return .dunno }
            return rejectUnverified(sender, sender, ReplyClass.sender, s.unverifiedSender)
        case "reject_unlisted_sender":
            guard let sender, !sender.isEmpty else { return .dunno }
            return try checkSenderMaps(sender)
        case "reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
             "reject_known_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch":
            return try senderLoginCheck(lname)

        // Recipient.
        case "check_recipient_access":
            let table = try mapArgument(name, list, &i)
            guard let recipient else { return .dunno }
            return try accessMail(table, recipient, replyName: recipient, replyClass: ReplyClass.recipient, defACL: defACL)
        case "permit_mx_backup":
            guard let recipient else { return .dunno }
            return try permitMXBackup(recipient, recipient, ReplyClass.recipient) == .ok
                ? aclPermit(name, ReplyClass.recipient, recipient) : .dunno
        case "permit_auth_destination":
            guard let recipient else { return .dunno }
            return try permitAuthDestination(recipient) == .ok ? aclPermit(name, ReplyClass.recipient, recipient) : .dunno
        case "reject_unauth_destination":
            guard let recipient else { return .dunno }
            return try rejectUnauthDestination(recipient, s.relayCode, "5.7.1")
        case "defer_unauth_destination":
            guard let recipient else { return .dunno }
            return try rejectUnauthDestination(recipient, s.relayCode - 100, "4.7.1")
        case "check_relay_domains":
            guard let recipient else { return .dunno }
            let st = try checkRelayDomains(recipient)
            warnIgnoredAfter(list, i, name)
            return st == .ok ? aclPermit(name, ReplyClass.recipient, recipient) : st
        case "permit_sasl_authenticated":
            return saslAuthenticated ? aclPermit(name, ReplyClass.client, namaddr) : .dunno
        case "permit_tls_all_clientcerts", "permit_tls_clientcerts":
            return try permitTLSClientCerts(name, all: lname == "permit_tls_all_clientcerts")
        case "reject_unknown_recipient_domain":
            guard let recipient else { return .dunno }
            return try rejectUnknownAddress(recipient, recipient, ReplyClass.recipient)
        case "reject_non_fqdn_recipient":
            guard let recipient else { return .dunno }
            return rejectNonFQDNAddress(recipient, recipient, ReplyClass.recipient)
        case "check_recipient_ns_access", "check_recipient_mx_access", "check_recipient_a_access":
            let table = try mapArgument(name, list, &i)
            guard let recipient else { return .dunno }
            return try checkServerAccess(table, recipient, Self.serverType(lname), recipient, ReplyClass.recipient, defACL)
        case "reject_rhsbl_recipient":
            guard let d = domainArgument(name, list, &i) else { return .dunno }
            guard let recipient else { return .dunno }
            return try rejectRBLDomain(d, recipient, ReplyClass.recipient)
        case "check_recipient_maps", "reject_unlisted_recipient":
            guard let recipient, !recipient.isEmpty else { return .dunno }
            return try checkRecipientMaps(recipient)
        case "reject_unverified_recipient":
            guard let recipient, !recipient.isEmpty else { return .dunno }
            return rejectUnverified(recipient, recipient, ReplyClass.recipient, s.unverifiedRecipient)
        case "reject_multi_recipient_bounce":
            if let sender, sender.isEmpty, rcptCount > (whereText == "RCPT" ? 0 : 1) {
                return checkReject(.policy, s.multiRecipientBounceCode, "5.5.3",
                                   "<\(replyName)>: \(replyClass) rejected: Multi-recipient bounce")
            }
            return .dunno

        // ETRN.
        case "check_etrn_access":
            let table = try mapArgument(name, list, &i)
            guard whereText == "ETRN" else { return .dunno }
            return try accessDomain(table, replyName, replyName: replyName, replyClass: ReplyClass.etrn, defACL: defACL)

        default:
            if let cls = s.restrictionClasses[name] {
                return try generic(cls, replyName, replyClass, defACL)
            }
            Msg.warn("unknown smtpd restriction: \"\(name)\"")
            try serverError()
        }
    }

    // MARK: Access tables

    func accessMaps(_ table: String) -> Maps { s.accessTable(table) }

    /// check_namadr_access: the host name and its parents, then the address and its
    /// prefixes; any answer, DUNNO included, ends the search.
    func accessNameAddress(_ table: String, name: String, address: String, replyName: String, replyClass: String,
                           defACL: String?) throws -> CheckResult {
        let hit = AccessWalk.nameAddressHit(accessMaps(table), name: name, address: address, parentStyle: s.parentStyle)
        return try accessResult(hit, table, replyName, replyClass, defACL)
    }

    func accessDomain(_ table: String, _ domain: String, replyName: String, replyClass: String, defACL: String?) throws -> CheckResult {
        try accessResult(AccessWalk.domainHit(accessMaps(table), domain, parentStyle: s.parentStyle),
                         table, replyName, replyClass, defACL)
    }

    func accessAddress(_ table: String, _ address: String, replyName: String, replyClass: String, defACL: String?) throws -> CheckResult {
        try accessResult(AccessWalk.addressHit(accessMaps(table), address), table, replyName, replyClass, defACL)
    }

    func accessFull(_ table: String, _ key: String, replyName: String, replyClass: String, defACL: String?) throws -> CheckResult {
        try accessResult(AccessHit(answer: accessMaps(table).lookup(key), key: key), table, replyName, replyClass, defACL)
    }

    func accessMail(_ table: String, _ address: String, replyName: String, replyClass: String, defACL: String?) throws -> CheckResult {
        let finder = MailAddrFinder(maps: accessMaps(table), local: s.local, extension: s.ext)
        let answer = AccessWalk.mail(finder, address, parentStyle: s.parentStyle)
        return try accessResult(AccessHit(answer: answer, key: address), table, replyName, replyClass, defACL)
    }

    func accessResult(_ hit: AccessHit, _ table: String, _ replyName: String, _ replyClass: String,
                      _ defACL: String?) throws -> CheckResult {
        switch hit.answer {
        case .notFound:
            return .dunno
        case .failed:
            // The table layer has logged why.
            try dictRetry(replyName)
        case .found(let value):
            return try tableResult(table, value, hit.key, replyName, replyClass, defACL)
        }
    }

    /// check_table_result: one access(5) action.
    func tableResult(_ table: String, _ value: String, _ datum: String, _ replyName: String, _ replyClass: String,
                     _ defACL: String?) throws -> CheckResult {
        let cmdEnd = value.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? value.endIndex
        let command = String(value[..<cmdEnd])
        let text = String(value[cmdEnd...].drop(while: { $0 == " " || $0 == "\t" }))
        let upper = command.uppercased()
        func rejectWith(_ code: Int, _ defaultDSN: String, _ fallback: String) -> CheckResult {
            let (dsn, rest) = Self.splitDSN(text, default: defaultDSN)
            return checkReject(.policy, code, Self.fixDSN(dsn, replyClass),
                               "<\(replyName)>: \(replyClass) rejected: \(rest.isEmpty ? fallback : rest)")
        }
        switch upper {
        case "DUNNO":
            return .dunno
        case "REJECT":
            return rejectWith(s.accessRejectCode, "5.7.1", "Access denied")
        case "DEFER":
            return rejectWith(s.accessDeferCode, "4.7.1", "Access denied")
        case "HANGUP":
            logWhatsup("hangup", text)
            shutdown(stream.fd, Int32(SHUT_RDWR))
            hungUp = true
            done = true
            throw CheckAbort()
        case "INFO":
            logWhatsup("info", text)
            return .dunno
        case "WARN":
            logWhatsup("warn", text)
            return .dunno
        case "FILTER":
            guard canDelegate(table, "FILTER") else { return .dunno }
            if text.isEmpty {
                Msg.warn("access table \(table) entry \"\(datum)\" has FILTER entry without value")
            } else if !text.contains(":") {
                Msg.warn("access table \(table) entry \"\(datum)\" requires transport:destination")
            } else {
                logWhatsup("filter", "<\(replyName)>: \(replyClass) triggers FILTER \(text)")
                savedFilter = text
            }
            return .dunno
        case "HOLD":
            guard canDelegate(table, "HOLD"), !savedFlags.contains(.hold) else { return .dunno }
            logWhatsup("hold", "<\(replyName)>: \(replyClass) \(text.isEmpty ? "triggers HOLD action" : text)")
            savedFlags.insert(.hold)
            return .dunno
        case "DISCARD":
            guard canDelegate(table, "DISCARD") else { return .dunno }
            logWhatsup("discard", "<\(replyName)>: \(replyClass) \(text.isEmpty ? "triggers DISCARD action" : text)")
            savedFlags.insert(.discard)
            check.discard = true
            return aclPermit(command, replyClass, replyName, "from \(table)")
        case "REDIRECT":
            guard canDelegate(table, "REDIRECT") else { return .dunno }
            if !text.contains("@") {
                Msg.warn("access table \(table) entry \"\(datum)\" requires user@domain target")
            } else {
                logWhatsup("redirect", "<\(replyName)>: \(replyClass) triggers REDIRECT \(text)")
                savedRedirect = text
            }
            return .dunno
        case "BCC":
            guard canDelegate(table, "BCC") else { return .dunno }
            if !text.contains("@") {
                Msg.warn("access table \(table) entry \"\(datum)\" requires user@domain target")
            } else {
                logWhatsup("bcc", "<\(replyName)>: \(replyClass) triggers BCC \(text)")
                savedBcc.append(text)
            }
            return .dunno
        case "DEFER_IF_PERMIT":
            let (dsn, rest) = Self.splitDSN(text, default: "4.7.1")
            return deferIfPermit(.policy, s.accessDeferCode, Self.fixDSN(dsn, replyClass),
                                 "<\(replyName)>: \(replyClass) rejected: \(rest.isEmpty ? "Service unavailable" : rest)")
        case "DEFER_IF_REJECT":
            let (dsn, rest) = Self.splitDSN(text, default: "4.7.1")
            deferIfReject(.policy, s.accessDeferCode, Self.fixDSN(dsn, replyClass),
                          "<\(replyName)>: \(replyClass) rejected: \(rest.isEmpty ? "Service unavailable" : rest)")
            return .dunno
        case "PREPEND":
            guard notInClientHelo(table, "PREPEND") else { return .dunno }
            if whereText == Where.endOfMessage {
                Msg.warn("access table \(table): action PREPEND must be used before smtpd_end_of_data_restrictions")
            } else if text.isEmpty || !HeaderText.isHeader(text) {
                Msg.warn("access table \(table) entry \"\(datum)\" requires header: text")
            } else {
                prependHeaders.append(text)
            }
            return .dunno
        default:
            break
        }
        // An all-numeric result means OK (some out-of-band systems store time stamps).
        if !value.isEmpty && value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return aclPermit(command, replyClass, replyName, "from \(table)")
        }
        // "4xx text" and "5xx text" reject; the reply code is validated later.
        let b = Array(value.utf8)
        if b.count >= 3, b[0] == UInt8(ascii: "4") || b[0] == UInt8(ascii: "5"),
           b[1] >= 0x30 && b[1] <= 0x39, b[2] >= 0x30 && b[2] <= 0x39, b.count == 3 || b[3] == 0x20 || b[3] == 0x09 {
            let code = Int(String(decoding: b[0..<3], as: UTF8.self)) ?? 450
            let (dsn, rest) = Self.splitDSN(text, default: String(UnicodeScalar(b[0])) + ".7.1")
            return checkReject(.policy, code, Self.fixDSN(dsn, replyClass), "<\(replyName)>: \(replyClass) rejected: \(rest)")
        }
        if upper == "OK" || upper == "RELAY" {
            return aclPermit(command, replyClass, replyName, "from \(table)")
        }
        // Anything else is a restriction list.
        let restrictions = Tokens.splitQuoted(value)
        if restrictions.isEmpty {
            Msg.warn("access table \(table) entry \(value) has empty value")
            return .ok
        }
        return try generic(restrictions, replyName, replyClass, defACL)
    }

    /// Actions cleanup carries out need a transaction: not at ETRN, and not in the client
    /// or HELO lists when those run outside one.
    func canDelegate(_ table: String, _ action: String) -> Bool {
        if whereText == "ETRN" {
            Msg.warn("access table \(table): action \(action) is unavailable in smtpd_etrn_restrictions")
            return false
        }
        return notInClientHelo(table, action)
    }

    func notInClientHelo(_ table: String, _ action: String) -> Bool {
        if !s.delayReject && (whereText == Where.connect || whereText == "HELO" || whereText == "EHLO") {
            Msg.warn("access table \(table): with smtpd_delay_reject=no, action \(action) is always skipped in \(ReplyClass.client) or \(ReplyClass.helo) restrictions")
            return false
        }
        return true
    }

    /// "5.7.1 text" gives its own DSN; other text gets the default.
    static func splitDSN(_ text: String, default dsn: String) -> (String, String) {
        let parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        if let f = parts.first, DSNCode.isValid(String(f)) {
            return (String(f), parts.count > 1 ? String(parts[1].drop(while: { $0 == " " })) : "")
        }
        return (dsn, text)
    }

    /// smtpd_dsn_fix: an address-related DSN must fit what is being refused.
    static func fixDSN(_ status: String, _ replyClass: String) -> String {
        let b = Array(status.utf8)
        guard b.count >= 5, b[1] == UInt8(ascii: "."), b[2] == UInt8(ascii: "1"), b[3] == UInt8(ascii: ".") else {
            return status
        }
        let micro = String(status.dropFirst(4))
        let map: [String: (String, String)] = [
            "1": ("4.1.0", "4.1.1"), "2": ("4.1.8", "4.1.2"), "3": ("4.1.7", "4.1.3"), "4": ("4.1.0", "4.1.4"),
            "5": ("4.1.0", "4.1.5"), "6": ("4.1.0", "4.1.6"), "7": ("4.1.7", "4.1.3"), "8": ("4.1.8", "4.1.2"),
        ]
        let entry = map[micro] ?? ("4.1.0", "4.1.0")
        var result: String
        if replyClass == ReplyClass.sender {
            result = entry.0
        } else if replyClass == ReplyClass.recipient {
            result = entry.1
        } else {
            result = "4.0.0"
        }
        // The class digit stays as it was.
        result = String(status.prefix(1)) + result.dropFirst()
        if status.dropFirst(2) != result.dropFirst(2) {
            Msg.info("mapping DSN status \(status) into \(replyClass) status \(result)")
        }
        return result
    }
}

/// *_tempfail_action values.
enum TempfailAction {
    case deferIfPermit, deferNow

    init(_ text: String, parameter: String) {
        switch text.lowercased() {
        case "defer_if_permit": self = .deferIfPermit
        case "defer": self = .deferNow
        default: Msg.fatal("invalid \(parameter) value: \(text)")
        }
    }
}

/// RFC 3463 status codes: class.subject.detail with 1-3 digit parts.
enum DSNCode {
    static func isValid(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let c = parts[0].first, parts[0].count == 1, c == "2" || c == "4" || c == "5" else { return false }
        return parts.dropFirst().allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }
}
