// DNSLookup: DNS queries through the system resolver library (libresolv, honouring
// /etc/resolv.conf), and the parsing of their answers into typed records. Trusts nothing in
// the answer: every name and length is checked against the packet's bounds.
// Mirrors Postfix dns/dns_lookup.c, dns_rr.c, dns_strerror.c and dns_strtype.c (RFC 1035,
// RFC 3596 for AAAA, RFC 7505 for the null MX).
import Glibc
import CResolv

/// The record types Postfix asks for.
public enum DNSType: UInt16, Sendable, CaseIterable {
    case a = 1, ns = 2, cname = 5, soa = 6, ptr = 12, mx = 15, txt = 16, aaaa = 28

    /// The name Postfix's dns_strtype() gives the type, as in "type=MX" of a reason.
    public var name: String {
        switch self {
        case .a: return "A"
        case .ns: return "NS"
        case .cname: return "CNAME"
        case .soa: return "SOA"
        case .ptr: return "PTR"
        case .mx: return "MX"
        case .txt: return "TXT"
        case .aaaa: return "AAAA"
        }
    }
}

/// One resource record of an answer.
public struct DNSRecord: Equatable, Sendable {
    /// The owner name (without a trailing dot).
    public var name: String
    public var type: DNSType
    public var ttl: UInt32
    /// MX preference; 0 for other types.
    public var preference: Int
    /// A host name (MX, NS, PTR, CNAME), the text (TXT), or the address in text form (A, AAAA).
    public var data: String
    /// The address bytes (A: 4, AAAA: 16); empty for other types.
    public var address: [UInt8]

    public init(name: String, type: DNSType, ttl: UInt32 = 0, preference: Int = 0, data: String, address: [UInt8] = []) {
        self.name = name
        self.type = type
        self.ttl = ttl
        self.preference = preference
        self.data = data
        self.address = address
    }

    /// The RFC 7505 "no mail here" record: MX 0 with an empty exchange.
    public var isNullMX: Bool { type == .mx && data.isEmpty }
}

/// What a lookup found; the reason texts are Postfix's.
public enum DNSStatus: Sendable, Equatable {
    /// Records were found.
    case ok
    /// The name does not exist, or has no records of the type.
    case notFound
    /// A temporary failure (server failure, timeout): try again later.
    case retry
    /// The name or the answer is malformed.
    case invalid
    /// A permanent failure other than "not found".
    case fail
    /// The domain has a null MX (RFC 7505): it does not accept mail.
    case nullMX
}

public struct DNSAnswer: Sendable {
    public var status: DNSStatus
    public var records: [DNSRecord]
    /// Why there are no records (empty when status is .ok).
    public var reason: String
    /// True when the server said the name does not exist at all (NXDOMAIN).
    public var nxdomain: Bool
    /// The resolver's h_errno for a failed lookup (0 otherwise).
    public var herr: Int32

    public init(status: DNSStatus, records: [DNSRecord] = [], reason: String = "", nxdomain: Bool = false,
                herr: Int32 = 0) {
        self.status = status
        self.records = records
        self.reason = reason
        self.nxdomain = nxdomain
        self.herr = herr
    }

    /// dns_strerror() of the failure, as short reasons quote it ("Host not found").
    public var errorText: String { DNS.errorText(herr) }
}

/// The resolver in one place, so that tests can swap it.
public protocol DNSResolver {
    func query(_ name: String, _ type: DNSType) -> DNSAnswer
}

public struct SystemResolver: DNSResolver {
    public init() {}

    public func query(_ name: String, _ type: DNSType) -> DNSAnswer {
        DNS.query(name, type)
    }
}

public enum DNS {
    nonisolated(unsafe) public static var resolver: any DNSResolver = SystemResolver()

    /// Sends this thread's queries to one IPv4 server and port instead of those of
    /// /etc/resolv.conf (tests run a server of their own on loopback).
    public static func useServer(_ address: String, port: Int) -> Bool {
        cresolv_use_server(address, Int32(port)) == 0
    }

    /// dns_strerror(): the resolver's h_errno in words.
    public static func errorText(_ herr: Int32) -> String {
        switch herr {
        case HOST_NOT_FOUND: return "Host not found"
        case TRY_AGAIN: return "Host not found, try again"
        case NO_RECOVERY: return "Non-recoverable error"
        case NO_DATA: return "Host found but no data record of requested type"
        default: return "Unknown error"
        }
    }

    static func failure(_ name: String, _ type: DNSType, _ text: String) -> String {
        "Host or domain name not found. Name service error for name=\(name) type=\(type.name): \(text)"
    }

    /// One query, as dns_lookup() makes it: the name as given (no search list), the
    /// answer's records of the type asked (CNAMEs followed by the server), a null MX
    /// reported as such.
    public static func query(_ name: String, _ type: DNSType) -> DNSAnswer {
        var name = name
        if name.hasSuffix(".") { name.removeLast() }
        if name.isEmpty || name.utf8.count > 255 || name.hasPrefix(".") || name.contains("..") {
            return DNSAnswer(status: .invalid, reason: "Name service error for name=\(name) type=\(type.name): Malformed domain name",
                             herr: NO_RECOVERY)
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var herr: Int32 = 0
        let n = cresolv_query(name, Int32(type.rawValue), &buffer, Int32(buffer.count), &herr)
        if n < 0 {
            let reason = failure(name, type, errorText(herr))
            switch herr {
            case TRY_AGAIN: return DNSAnswer(status: .retry, reason: reason, herr: herr)
            case HOST_NOT_FOUND: return DNSAnswer(status: .notFound, reason: reason, nxdomain: true, herr: herr)
            case NO_DATA: return DNSAnswer(status: .notFound, reason: reason, herr: herr)
            default: return DNSAnswer(status: .fail, reason: reason, herr: herr)
            }
        }
        guard let records = parse(Array(buffer[0..<Int(min(n, Int32(buffer.count)))]), type: type) else {
            return DNSAnswer(status: .retry,
                             reason: "Name service error for name=\(name) type=\(type.name): Malformed or unexpected name server reply",
                             herr: TRY_AGAIN)
        }
        if records.isEmpty {
            return DNSAnswer(status: .notFound, reason: failure(name, type, errorText(NO_DATA)), herr: NO_DATA)
        }
        if type == .mx, records.contains(where: { $0.isNullMX }) {
            return DNSAnswer(status: .nullMX, records: records, reason: "Domain \(name) does not accept mail (nullMX)")
        }
        return DNSAnswer(status: .ok, records: records)
    }

    /// dns_lookup_l(): tries the types in order and stops at the first that has records
    /// (or a null MX, or a name that does not exist); otherwise a temporary failure of any
    /// of them makes the whole a temporary failure.
    public static func lookup(_ name: String, _ types: [DNSType]) -> DNSAnswer {
        var softError: DNSAnswer?
        var last = DNSAnswer(status: .notFound)
        for t in types {
            let a = resolver.query(name, t)
            switch a.status {
            case .ok, .nullMX, .invalid:
                return a
            case .retry:
                softError = softError ?? a
            case .notFound where a.nxdomain:
                return softError ?? a
            default:
                break
            }
            last = a
        }
        return softError ?? last
    }

    /// The name a DNS list is asked for an address: reversed octets for IPv4, reversed
    /// nibbles for IPv6, then the list's domain.
    public static func reverseName(_ address: [UInt8], domain: String) -> String {
        var labels: [String] = []
        if address.count == 4 {
            labels = address.reversed().map { String($0) }
        } else {
            for b in address.reversed() {
                labels.append(String(b & 0x0F, radix: 16))
                labels.append(String(b >> 4, radix: 16))
            }
        }
        return (labels + [domain]).joined(separator: ".")
    }

    // MARK: Answer parsing

    /// The records of `type` in the answer section; nil when the packet is malformed.
    static func parse(_ p: [UInt8], type: DNSType) -> [DNSRecord]? {
        guard p.count >= 12 else { return nil }
        let qd = Int(p[4]) << 8 | Int(p[5])
        let an = Int(p[6]) << 8 | Int(p[7])
        var pos = 12
        for _ in 0..<qd {
            guard readName(p, &pos) != nil, pos + 4 <= p.count else { return nil }
            pos += 4
        }
        var out: [DNSRecord] = []
        for _ in 0..<an {
            guard let owner = readName(p, &pos), pos + 10 <= p.count else { return nil }
            let rtype = UInt16(p[pos]) << 8 | UInt16(p[pos + 1])
            let ttl = UInt32(p[pos + 4]) << 24 | UInt32(p[pos + 5]) << 16 | UInt32(p[pos + 6]) << 8 | UInt32(p[pos + 7])
            let len = Int(p[pos + 8]) << 8 | Int(p[pos + 9])
            pos += 10
            guard pos + len <= p.count else { return nil }
            let start = pos
            pos += len
            guard rtype == type.rawValue else { continue }
            var rdpos = start
            switch type {
            case .a, .aaaa:
                let want = type == .a ? 4 : 16
                guard len == want else { return nil }
                let bytes = Array(p[start..<start + len])
                out.append(DNSRecord(name: owner, type: type, ttl: ttl, data: addressText(bytes), address: bytes))
            case .mx:
                guard len >= 3 else { return nil }
                let pref = Int(p[start]) << 8 | Int(p[start + 1])
                rdpos += 2
                guard let host = readName(p, &rdpos) else { return nil }
                out.append(DNSRecord(name: owner, type: type, ttl: ttl, preference: pref, data: host))
            case .txt:
                var text: [UInt8] = []
                while rdpos < pos {
                    let l = Int(p[rdpos])
                    rdpos += 1
                    guard rdpos + l <= pos else { return nil }
                    text += p[rdpos..<rdpos + l]
                    rdpos += l
                }
                out.append(DNSRecord(name: owner, type: type, ttl: ttl, data: String(decoding: text, as: UTF8.self)))
            case .ns, .ptr, .cname:
                guard let host = readName(p, &rdpos) else { return nil }
                out.append(DNSRecord(name: owner, type: type, ttl: ttl, data: host))
            case .soa:
                guard let host = readName(p, &rdpos) else { return nil }
                out.append(DNSRecord(name: owner, type: type, ttl: ttl, data: host))
            }
        }
        return out
    }

    /// A possibly compressed domain name at `pos`, which moves past it; nil when malformed.
    static func readName(_ p: [UInt8], _ pos: inout Int) -> String? {
        var labels: [String] = []
        var at = pos
        var jumped = false
        var jumps = 0
        var total = 0
        while true {
            guard at < p.count else { return nil }
            let l = Int(p[at])
            if l & 0xC0 == 0xC0 {
                guard at + 1 < p.count, jumps < 64 else { return nil }
                let target = (l & 0x3F) << 8 | Int(p[at + 1])
                if !jumped { pos = at + 2 }
                jumped = true
                jumps += 1
                at = target
                continue
            }
            guard l & 0xC0 == 0 else { return nil }
            at += 1
            if l == 0 { break }
            guard at + l <= p.count else { return nil }
            total += l + 1
            guard total <= 255 else { return nil }
            labels.append(String(decoding: p[at..<at + l], as: UTF8.self))
            at += l
        }
        if !jumped { pos = at }
        return labels.joined(separator: ".")
    }

    /// An address in the text form inet_ntop() gives it.
    public static func addressText(_ bytes: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBufferPointer { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
