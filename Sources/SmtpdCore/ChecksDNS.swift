// ChecksDNS: the restrictions that ask the DNS: unknown HELO names and mail domains (with
// RFC 7505 null MX), DNS block and allow lists for client addresses and domain names
// (with reply filters, TXT reasons and rbl_reply_maps templates), permit_mx_backup, and
// the check_*_{ns,mx,a}_access restrictions. DNS answers are untrusted input: names are
// checked before use; a list that cannot be reached lists nobody.
// Mirrors Postfix smtpd/smtpd_check.c (reject_unknown_hostname, reject_unknown_mailhost,
// reject_rbl_addr, reject_rbl_domain, rbl_reject_reply, permit_mx_backup,
// check_server_access) and util/ip_match.c.
import Glibc
import MailUtil
import MailGlobal
import MailDNS

/// What a DNS list said about one query name (cached for the life of the process).
struct RBLAnswer {
    var addresses: [[UInt8]]
    var txt: String
}

extension Session {
    // MARK: Unknown names and domains

    func rejectUnknownHostname(_ name: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        let a = DNS.lookup(name, [.a, .mx, .aaaa])
        switch a.status {
        case .ok, .nullMX:
            return .dunno
        case .retry:
            return tempfail(s.unknownHeloTempfail, .policy, 450, "4.7.1", "<\(replyName)>: \(replyClass) rejected: Host not found")
        default:
            return checkReject(.policy, s.unknownHostnameCode, "4.7.1",
                               "<\(replyName)>: \(replyClass) rejected: \(a.status == .invalid ? "Malformed DNS server reply" : "Host not found")")
        }
    }

    /// reject_unknown_address: the domain of an address outside our own domains must have
    /// mail exchangers or an address.
    func rejectUnknownAddress(_ address: String, _ replyName: String, _ replyClass: String) throws -> CheckResult {
        let r = resolve(address, sender: replyClass == ReplyClass.sender ? recipient : sender)
        if r.flags.contains(.fail) { try dictRetry(address) }
        guard let at = r.recipient.lastIndex(of: "@") else { return .dunno }
        let domain = String(r.recipient[r.recipient.index(after: at)...])
        if !r.flags.isDisjoint(with: [.local, .alias, .virtual]) { return .dunno }
        if domain.hasPrefix("[") && domain.hasSuffix("]") { return .dunno }
        return rejectUnknownMailhost(domain, replyName, replyClass)
    }

    func rejectUnknownMailhost(_ domain: String, _ replyName: String, _ replyClass: String) -> CheckResult {
        let isSender = replyClass == ReplyClass.sender
        let a = DNS.lookup(domain, [.mx, .a, .aaaa])
        switch a.status {
        case .ok:
            return .dunno
        case .nullMX:
            return checkReject(.policy, isSender ? 550 : 556, isSender ? "5.7.27" : "5.1.10",
                               "<\(replyName)>: \(replyClass) rejected: Domain \(domain) does not accept mail (nullMX)")
        case .retry:
            return tempfail(s.unknownAddressTempfail, .policy, 450, isSender ? "4.1.8" : "4.1.2",
                            "<\(replyName)>: \(replyClass) rejected: Domain not found")
        default:
            return checkReject(.policy, s.unknownAddressCode, isSender ? "4.1.8" : "4.1.2",
                               "<\(replyName)>: \(replyClass) rejected: \(a.status == .invalid ? "Malformed DNS server reply" : "Domain not found")")
        }
    }

    // MARK: DNS lists

    /// The answer of a DNS list for a query name, with the "=pattern" filter applied to
    /// the addresses it returns; nil when the name is not listed.
    func rblLookup(_ query: String, filter: IPMatch?) -> RBLAnswer? {
        let answer: RBLAnswer
        if let cached = check.rblCache[query] {
            answer = cached
        } else {
            let a = DNS.resolver.query(query, .a)
            if a.status != .ok && a.status != .notFound {
                Msg.warn("\(query): RBL lookup error: \(a.reason)")
            }
            var txt = ""
            if a.status == .ok {
                let t = DNS.resolver.query(query, .txt)
                if t.status == .ok { txt = t.records.map(\.data).joined(separator: " / ") }
            }
            answer = RBLAnswer(addresses: a.status == .ok ? a.records.map(\.address) : [], txt: txt)
            check.rblCache[query] = answer
        }
        let listed = answer.addresses.filter { filter?.matches($0) ?? true }
        return listed.isEmpty ? nil : RBLAnswer(addresses: listed, txt: answer.txt)
    }

    /// "zen.example=127.0.0.[2..11]" → the domain and its reply filter.
    func splitRBLSpec(_ spec: String) -> (String, IPMatch?)? {
        guard let eq = spec.firstIndex(of: "=") else { return (spec, nil) }
        let pattern = String(spec[spec.index(after: eq)...])
        guard let m = IPMatch(pattern) else {
            Msg.warn("bad reply filter in \"\(spec)\"")
            return nil
        }
        return (String(spec[..<eq]), m)
    }

    func rejectRBLAddress(_ spec: String, _ address: String, _ replyClass: String) throws -> CheckResult {
        guard let (domain, filter) = splitRBLSpec(spec), let bytes = SocketAddress(numeric: address, port: 0)?.address else {
            return .dunno
        }
        guard let hit = rblLookup(DNS.reverseName(bytes, domain: domain), filter: filter) else { return .dunno }
        return try rblReject(hit, spec: spec, domain: domain, what: address, replyClass)
    }

    func permitDNSWLAddress(_ spec: String, _ address: String) throws -> Bool {
        // A listed client still may not relay.
        if whereText == "RCPT", let r = recipient, try permitAuthDestination(r) != .ok { return false }
        guard let (domain, filter) = splitRBLSpec(spec), let bytes = SocketAddress(numeric: address, port: 0)?.address else {
            return false
        }
        return rblLookup(DNS.reverseName(bytes, domain: domain), filter: filter) != nil
    }

    /// The domain a right-hand-side list is asked about; nil for address literals and
    /// names that are not proper host names.
    func rhsDomain(_ what: String) -> String? {
        var domain = what
        if let at = what.lastIndex(of: "@") {
            domain = String(what[what.index(after: at)...])
            if domain.hasPrefix("[") { return nil }
        }
        domain = Self.truncateDot(domain)
        guard !domain.isEmpty, ValidHostname.isValid(domain) else { return nil }
        return domain
    }

    func rejectRBLDomain(_ spec: String, _ what: String, _ replyClass: String) throws -> CheckResult {
        guard let (domain, filter) = splitRBLSpec(spec), let d = rhsDomain(what) else { return .dunno }
        guard let hit = rblLookup(d + "." + domain, filter: filter) else { return .dunno }
        return try rblReject(hit, spec: spec, domain: domain, what: what, replyClass)
    }

    func permitRHSWLDomain(_ spec: String, _ what: String) throws -> Bool {
        if whereText == "RCPT", let r = recipient, try permitAuthDestination(r) != .ok { return false }
        guard let (domain, filter) = splitRBLSpec(spec), let d = rhsDomain(what) else { return false }
        return rblLookup(d + "." + domain, filter: filter) != nil
    }

    /// rbl_reject_reply: the reply from rbl_reply_maps (keyed by the list as written) or
    /// default_rbl_reply, with $rbl_* and the client's attributes expanded.
    func rblReject(_ hit: RBLAnswer, spec: String, domain: String, what: String, _ replyClass: String) throws -> CheckResult {
        var template: String?
        if let maps = s.rblReplyMaps {
            switch maps.lookup(spec) {
            case .found(let t): template = t
            case .failed: try serverError()
            case .notFound: break
            }
        }
        var text = ""
        while true {
            let t = template ?? s.defaultRBLReply
            var ex = MacroExpander(recurse: false, filter: s.expansionFilter) { name, _ in
                switch name {
                case "rbl_what": return what
                case "rbl_class": return replyClass
                case "rbl_code": return String(self.s.rblCode)
                case "rbl_domain": return domain
                case "rbl_reason", "rbl_txt": return hit.txt
                default: return self.expandAttribute(name)
                }
            }
            ex.warn = { Msg.warn($0) }
            let (out, status) = ex.expand(t)
            if status.isEmpty {
                text = out
                break
            }
            if template == nil { Msg.fatal("rbl_reject_reply: bad default rbl reply template: \(s.defaultRBLReply)") }
            Msg.warn("rbl_reject_reply: bad rbl reply template for domain \(domain): \(t)")
            template = nil
        }
        let code = Int(text.prefix(3)) ?? 0
        let (dsn, rest) = Self.splitDSN(String(text.dropFirst(4)), default: "5.7.1")
        return checkReject(.policy, code, Self.fixDSN(dsn, replyClass), rest.isEmpty ? "Service unavailable" : rest)
    }

    /// reject_maps_rbl (obsolete): reject_rbl_client for each of maps_rbl_domains.
    func rejectMapsRBL() -> CheckResult {
        if !Self.warnedMapsRBL {
            Msg.warn("support for restriction \"reject_maps_rbl\" will be removed from Postfix; use \"reject_rbl_client domain-name\" instead")
            Self.warnedMapsRBL = true
        }
        for d in s.mapsRBLDomains {
            if let st = try? rejectRBLAddress(d, addr, ReplyClass.client), st != .dunno { return st }
        }
        return .dunno
    }

    nonisolated(unsafe) static var warnedMapsRBL = false

    /// smtpd_expand_lookup: the session attributes a reply template may name.
    func expandAttribute(_ name: String) -> String? {
        func parts(_ a: String?) -> (local: String, domain: String)? {
            guard let a else { return nil }
            guard let at = a.lastIndex(of: "@") else { return (a, "") }
            return (String(a[..<at]), String(a[a.index(after: at)...]))
        }
        switch name {
        case "client_address": return addr
        case "client_name": return self.name
        case "client_port": return port
        case "reverse_client_name": return reverseName
        case "helo_name": return helo
        case "sender": return sender
        case "sender_name": return parts(sender)?.local
        case "sender_domain": return parts(sender)?.domain
        case "recipient": return recipient
        case "recipient_name": return parts(recipient)?.local
        case "recipient_domain": return parts(recipient)?.domain
        default: return nil
        }
    }

    // MARK: permit_mx_backup

    func permitMXBackup(_ address: String, _ replyName: String, _ replyClass: String) throws -> CheckResult {
        let r = resolve(address, sender: sender)
        if r.flags.contains(.fail) { try dictRetry(address) }
        guard let at = r.recipient.lastIndex(of: "@") else { return .ok }
        let domain = String(r.recipient[r.recipient.index(after: at)...])
        if !s.allowUntrustedRouting && r.flags.contains(.routed) { return .dunno }
        if !r.flags.isDisjoint(with: [.local, .alias, .virtual, .relay]) { return .ok }
        if domain.hasPrefix("[") && domain.hasSuffix("]") { return .dunno }
        let mx = DNS.resolver.query(domain, .mx)
        guard mx.status == .ok else {
            if mx.status == .retry {
                deferIfReject(.policy, 450, "4.4.4", "<\(replyName)>: \(replyClass) rejected: Unable to look up mail exchanger information: \(mx.errorText)")
            }
            return .dunno
        }
        let sorted = mx.records.sorted { $0.preference < $1.preference }
        let best = sorted.first?.preference ?? 0
        let primaries = sorted.filter { $0.preference == best }
        let backups = sorted.filter { $0.preference != best }
        if try iAmMX(primaries) { return .dunno }
        if backups.isEmpty { return .dunno }
        if !(try iAmMX(backups)) { return .dunno }
        if let nets = s.permitMXBackupNetworks {
            for p in primaries {
                for a in hostAddresses(p.data) where !nets.matches(DNS.addressText(a)) { return .dunno }
            }
        }
        return .ok
    }

    /// One of the hosts is this machine (one of inet_interfaces or proxy_interfaces).
    func iAmMX(_ hosts: [DNSRecord]) throws -> Bool {
        for h in hosts {
            for a in hostAddresses(h.data) where s.ownAddresses.contains(a) { return true }
        }
        return false
    }

    /// The A (and AAAA) records of a host name.
    func hostAddresses(_ host: String) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for t in s.inet6 ? [DNSType.a, .aaaa] : [.a] {
            let a = DNS.resolver.query(host, t)
            if a.status == .ok { out += a.records.map(\.address) }
        }
        return out
    }

    // MARK: check_*_{ns,mx,a}_access

    static func serverType(_ restriction: String) -> DNSType {
        restriction.hasSuffix("_ns_access") ? .ns : restriction.hasSuffix("_mx_access") ? .mx : .a
    }

    /// check_server_access: the name servers, mail exchangers or addresses of a domain,
    /// each looked up in the access table by name and by address.
    func checkServerAccess(_ table: String, _ what: String, _ type: DNSType, _ replyName: String, _ replyClass: String,
                           _ defACL: String?) throws -> CheckResult {
        var domain = what
        if let at = what.lastIndex(of: "@") { domain = String(what[what.index(after: at)...]) }
        if domain.hasPrefix("[") {
            guard type == .a, domain.hasSuffix("]") else { return .dunno }
            var literal = String(domain.dropFirst().dropLast())
            if literal.lowercased().hasPrefix("ipv6:") { literal = String(literal.dropFirst(5)) }
            return try accessAddress(table, literal, replyName: replyName, replyClass: replyClass, defACL: defACL)
        }
        domain = Self.truncateDot(domain)
        if domain.isEmpty { return .dunno }
        var servers: [String]
        if type == .a {
            if ValidHostname.isAddress(domain) {
                return try accessAddress(table, domain, replyName: replyName, replyClass: replyClass, defACL: defACL)
            }
            servers = [domain]
        } else {
            var a = DNS.resolver.query(domain, type)
            if a.status == .nullMX { return .dunno }
            if a.status == .notFound {
                if type == .mx {
                    // No MX: the domain is its own mail host.
                    a = DNSAnswer(status: .ok, records: [DNSRecord(name: domain, type: .mx, data: domain)])
                } else {
                    // No NS: the parent domains are asked.
                    var name = domain
                    while a.status == .notFound, let dot = name.firstIndex(of: "."), name.index(after: dot) < name.endIndex {
                        name = String(name[name.index(after: dot)...])
                        a = DNS.resolver.query(name, type)
                    }
                }
            }
            guard a.status == .ok else {
                Msg.warn("Unable to look up \(type.name) host for \(what): \(a.errorText)")
                return .dunno
            }
            servers = a.records.map(\.data)
        }
        for server in servers {
            if type != .a {
                let st = try accessDomainFound(table, server, replyName, replyClass, defACL)
                if let st { return st }
            }
            let addrs: [SocketAddress]
            switch InetSocket.resolve(server, port: 0, family: s.inet6 ? AF_UNSPEC : AF_INET) {
            case .success(let l):
                addrs = l
            case .failure(let e):
                if type != .a { Msg.warn("Unable to look up \(type.name) host \(server) for \(replyClass) \(replyName): \(e)") }
                continue
            }
            for a in addrs {
                let hit = AccessWalk.addressHit(accessMaps(table), a.host)
                if hit.answer != .notFound {
                    return try accessResult(hit, table, replyName, replyClass, defACL)
                }
            }
        }
        return .dunno
    }

    /// A domain walk whose result counts when any key matched (DUNNO included).
    func accessDomainFound(_ table: String, _ domain: String, _ replyName: String, _ replyClass: String,
                           _ defACL: String?) throws -> CheckResult? {
        let hit = AccessWalk.domainHit(accessMaps(table), domain, parentStyle: s.parentStyle)
        if hit.answer == .notFound { return nil }
        return try accessResult(hit, table, replyName, replyClass, defACL)
    }
}

/// ip_match: an IPv4 address pattern with per-octet alternatives, such as
/// "127.0.0.[2..11]" or "127.0.[0;1].[2;4..6]".
struct IPMatch {
    /// For each octet, the ranges it may fall in.
    let octets: [[ClosedRange<Int>]]

    init?(_ pattern: String) {
        // Octets are separated by dots outside brackets ("[1..4]" is one octet).
        var parts: [Substring] = []
        var start = pattern.startIndex
        var depth = 0
        for i in pattern.indices {
            switch pattern[i] {
            case "[": depth += 1
            case "]": depth -= 1
            case "." where depth == 0:
                parts.append(pattern[start..<i])
                start = pattern.index(after: i)
            default: break
            }
        }
        parts.append(pattern[start...])
        guard parts.count == 4 else { return nil }
        var out: [[ClosedRange<Int>]] = []
        for p in parts {
            var ranges: [ClosedRange<Int>] = []
            if p.hasPrefix("[") && p.hasSuffix("]") && p.count > 2 {
                for item in p.dropFirst().dropLast().split(separator: ";", omittingEmptySubsequences: false) {
                    let b = Array(item.utf8)
                    var ends = [String(item)]
                    if let k = (0..<max(b.count - 1, 0)).first(where: { b[$0] == 0x2E && b[$0 + 1] == 0x2E }) {
                        ends = [String(decoding: b[..<k], as: UTF8.self), String(decoding: b[(k + 2)...], as: UTF8.self)]
                    }
                    guard let lo = Int(ends[0]), let hi = Int(ends.last!), lo >= 0, hi <= 255, lo <= hi else {
                        return nil
                    }
                    ranges.append(lo...hi)
                }
            } else {
                guard let v = Int(p), v >= 0, v <= 255, p.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
                ranges.append(v...v)
            }
            out.append(ranges)
        }
        octets = out
    }

    func matches(_ address: [UInt8]) -> Bool {
        guard address.count == 4 else { return false }
        return zip(address, octets).allSatisfy { b, ranges in ranges.contains { $0.contains(Int(b)) } }
    }
}
