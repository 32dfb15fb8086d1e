// ChecksAddress: the restrictions that look at names and addresses without asking the DNS:
// host name and address literal syntax, fully qualified addresses, relay authorization
// (the open-relay defence), and the unknown-user checks against the recipient tables of
// each address class.
// Mirrors Postfix smtpd/smtpd_check.c (reject_invalid_hostname, reject_non_fqdn_*,
// permit_auth_destination, reject_unauth_destination, check_relay_domains,
// check_rcpt_maps, reject_unverified_address).
import Glibc
import MailUtil
import MailGlobal

extension Session {
    /// A trailing dot is dropped, unless the name ends in two.
    static func truncateDot(_ name: String) -> String {
        name.hasSuffix(".") && !name.hasSuffix("..") ? String(name.dropLast()) : name
    }

    func rejectInvalidHostname(_ name: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        let test = Self.truncateDot(name)
        if !ValidHostname.isValid(test) && !ValidHostname.isAddress(test) {
            return checkReject(.policy, s.badNameCode, "5.5.2", "<\(replyName)>: \(replyClass) rejected: Invalid name")
        }
        return .dunno
    }

    /// An address literal such as "[192.0.2.1]" must hold a valid address.
    func rejectInvalidHostAddress(_ literal: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        var test = literal
        if test.hasPrefix("[") && test.hasSuffix("]") && test.count > 2 { test = String(test.dropFirst().dropLast()) }
        let inner = test.lowercased().hasPrefix("ipv6:") ? String(test.dropFirst(5)) : test
        if !ValidHostname.isAddress(inner) {
            return checkReject(.policy, s.badNameCode, "5.5.2", "<\(replyName)>: \(replyClass) rejected: invalid ip address")
        }
        return .dunno
    }

    func rejectNonFQDNHostname(_ name: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        let test = Self.truncateDot(name)
        if !ValidHostname.isValid(test, utf8: smtputf8Requested) || !test.contains(".") {
            return checkReject(.policy, s.nonFQDNCode, "5.5.2", "<\(replyName)>: \(replyClass) rejected: need fully-qualified hostname")
        }
        return .dunno
    }

    func rejectNonFQDNAddress(_ address: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        let domain = address.lastIndex(of: "@").map { String(address[address.index(after: $0)...]) } ?? ""
        if domain.hasPrefix("[") && domain.hasSuffix("]") { return .dunno }
        let test = Self.truncateDot(domain)
        if test.isEmpty || !ValidHostname.isValid(test, utf8: smtputf8Requested) || !test.contains(".") {
            return checkReject(.policy, s.nonFQDNCode, "4.5.2", "<\(replyName)>: \(replyClass) rejected: need fully-qualified address")
        }
        return .dunno
    }

    // MARK: Relay control

    /// smtpd_resolve_addr: what trivial-rewrite makes of an address (cached there).
    func resolve(_ address: String, sender: String?) -> ResolveReply {
        s.rewriter.resolve(address, sender: sender ?? "")
    }

    /// permit_auth_destination: final delivery here, or a relay_domains destination.
    func permitAuthDestination(_ address: String) throws -> CheckResult {
        let r = resolve(address, sender: sender)
        if r.flags.contains(.fail) { try dictRetry(address) }
        guard r.recipient.contains("@") else { return .ok }
        // Source-routed mail to an uncertain destination is not authorized.
        if !s.allowUntrustedRouting && r.flags.contains(.routed) { return .dunno }
        if !r.flags.isDisjoint(with: [.local, .alias, .virtual]) { return .ok }
        if r.flags.contains(.relay) { return .ok }
        return .dunno
    }

    func rejectUnauthDestination(_ address: String, _ code: Int, _ dsn: String) throws -> CheckResult {
        if try permitAuthDestination(address) == .ok { return .dunno }
        return checkReject(.policy, code, dsn, "<\(address)>: Relay access denied")
    }

    /// check_relay_domains (obsolete): clients in relay_domains may send anywhere.
    func checkRelayDomains(_ address: String) throws -> CheckResult {
        if s.relayDomains.matches(name) { return .ok }
        if try permitAuthDestination(address) == .ok { return .ok }
        return checkReject(.policy, s.relayCode, "5.7.1", "<\(address)>: Relay access denied")
    }

    // MARK: Unknown users

    func checkRecipientMaps(_ address: String) throws -> CheckResult {
        check.recipientMapsChecked = true
        return try checkAddressMaps(address, sender: sender, ReplyClass.recipient)
    }

    func checkSenderMaps(_ address: String) throws -> CheckResult {
        check.senderMapsChecked = true
        return try checkAddressMaps(address, sender: recipient, ReplyClass.sender)
    }

    /// check_rcpt_maps: an address in one of our own domains must be a known user of the
    /// table of its address class.
    func checkAddressMaps(_ address: String, sender other: String?, _ replyClass: String) throws -> CheckResult {
        if s.noUnknownRecipientChecks { return .dunno }
        let r = resolve(address, sender: other)
        if r.flags.contains(.fail) { try dictRetry(address) }
        let isSender = replyClass == ReplyClass.sender
        func known(_ finder: MailAddrFinder?) throws -> Bool {
            guard let finder else { return false }
            if finder.find(r.recipient) != nil { return true }
            if finder.maps.error != nil { try dictRetry(address) }
            return false
        }
        // An address that a canonical or virtual alias map rewrites is taken to exist.
        if try known(s.recipientCanonicalMaps) || (isSender ? try known(s.senderCanonicalMaps) : false)
            || known(s.canonicalMaps) || known(s.virtualAliasMaps) {
            return .dunno
        }
        // What resolves to the error or retry transport is known to be undeliverable.
        if r.transport == "error" || r.transport == "retry" {
            let error = r.transport == "error"
            let (dsn, text) = Self.splitDSN(r.nexthop, default: error ? (isSender ? "5.1.0" : "5.1.1") : (isSender ? "4.1.0" : "4.1.1"))
            let code = error ? (r.flags.contains(.alias) ? s.virtualAliasCode : 550) : 450
            return checkReject(.bounce, code, Self.fixDSN(dsn, replyClass), "<\(address)>: \(replyClass) rejected: \(text)")
        }
        let dsn = isSender ? "5.1.0" : "5.1.1"
        func unknown(_ code: Int, _ table: String) -> CheckResult {
            checkReject(.bounce, code, dsn, "<\(address)>: \(replyClass) rejected: User unknown\(s.showUnknownTable ? " in \(table)" : "")")
        }
        let lower = r.recipient.lowercased()
        if r.flags.contains(.local) {
            guard let maps = s.localRecipientMaps else { return .dunno }
            // Mail for these is generated by Postfix itself and absorbed by qmgr.
            for prefix in [s.doubleBounceSender.lowercased(), "postmaster", "mailer-daemon"] where lower.hasPrefix(prefix) {
                return .dunno
            }
            return try known(maps) ? .dunno : unknown(s.unknownLocalCode, "local recipient table")
        }
        if r.flags.contains(.virtual) {
            guard let maps = s.virtualMailboxMaps else { return .dunno }
            return try known(maps) ? .dunno : unknown(s.unknownVirtualMailboxCode, "virtual mailbox table")
        }
        if r.flags.contains(.relay) {
            guard let maps = s.relayRecipientMaps else { return .dunno }
            return try known(maps) ? .dunno : unknown(s.unknownRelayRecipientCode, "relay recipient table")
        }
        return .dunno
    }
}

extension Session {
    /// reject_unverified_address: asks the verify service (polling while a probe is
    /// out, address_verify_poll_count times at most) and refuses an address that is
    /// not known to be deliverable.
    func rejectUnverified(_ address: String, _ replyName: String, _ replyClass: String, _ u: Unverified) -> CheckResult {
        let dsn = replyClass == ReplyClass.sender ? "4.1.7" : "4.1.1"
        var answer: (status: VerifyStatus, reason: String)?
        var count = 0
        while true {
            answer = VerifyClient.query(address: address, config: s.config)
            guard let a = answer, a.status == .todo else { break }
            count += 1
            if count >= s.verifyPollCount { break }
            sleep(UInt32(max(s.verifyPollDelay, 0)))
        }
        guard let a = answer else {
            Msg.warn("\(s.config.string("address_verify_service_name")) service failure")
            return tempfail(u.tempfail, .policy, 450, dsn, "<\(replyName)>: \(replyClass) rejected: address verification problem")
        }
        var code = 0
        switch a.status {
        case .todo, .deferred: code = u.deferCode
        case .bounced: code = u.rejectCode
        case .ok: code = 0
        }
        let why = code >= 400 && !u.reason.isEmpty ? u.reason : a.reason
        switch code / 100 {
        case 4:
            return tempfail(u.tempfail, .policy, code, dsn,
                            "<\(replyName)>: \(replyClass) rejected: unverified address: \(String(why.utf8.prefix(250)) ?? why)")
        case 0, 2:
            return .dunno
        default:
            return checkReject(.policy, code, dsn, "<\(replyName)>: \(replyClass) rejected: undeliverable address: \(why)")
        }
    }
}
