// Destination: where the smtp/lmtp client sends a delivery request, from its next-hop
// field to the ordered list of server addresses.
// Mirrors Postfix smtp/smtp_connect.c (smtp_parse_destination), smtp_addr.c
// (smtp_domain_addr, smtp_host_addr: MX preference order, random order among equal
// preferences, the address limit, "loops back to myself") and global/dns_lookup.c texts.
import Glibc
import MailUtil
import MailGlobal
import MailDNS

/// One server address to try.
struct ServerAddress {
    var host: String
    var address: SocketAddress
    var preference: Int

    /// "host[address]".
    var name: String { "\(host)[\(address.host)]" }
}

/// A failure to find any server: the DSN code and the text.
struct LookupFailure: Error {
    var status: String
    var reason: String
    var permanent: Bool { status.first == "5" }
}

enum Destination {
    case inet(host: String, port: UInt16, mx: Bool)
    case unix(path: String)

    /// smtp_parse_destination: "[host]:port" (no MX lookup), "host:port", "inet:...",
    /// and for LMTP "unix:path"; the default port is the service's.
    static func parse(_ nexthop: String, lmtp: Bool, defaultPort: UInt16) -> Result<Destination, LookupFailure> {
        var d = nexthop
        if lmtp && d.hasPrefix("unix:") { return .success(.unix(path: String(d.dropFirst(5)))) }
        if d.hasPrefix("inet:") { d.removeFirst(5) }
        var host = d
        var portText: String?
        var bracketed = false
        if d.hasPrefix("[") {
            guard let close = d.firstIndex(of: "]") else { return .failure(LookupFailure(status: "5.1.2", reason: "bad destination syntax: \"\(nexthop)\"")) }
            host = String(d[d.index(after: d.startIndex)..<close])
            let rest = d[d.index(after: close)...]
            if rest.hasPrefix(":") { portText = String(rest.dropFirst()) } else if !rest.isEmpty {
                return .failure(LookupFailure(status: "5.1.2", reason: "bad destination syntax: \"\(nexthop)\""))
            }
            bracketed = true
        } else if let colon = d.lastIndex(of: ":"), !d[..<colon].contains(":") {
            host = String(d[..<colon])
            portText = String(d[d.index(after: colon)...])
        }
        var port = defaultPort
        if let p = portText, !p.isEmpty {
            if let n = UInt16(p) {
                port = n
            } else if let s = getservbyname(p, "tcp") {
                port = UInt16(bigEndian: UInt16(truncatingIfNeeded: s.pointee.s_port))
            } else {
                return .failure(LookupFailure(status: "4.3.5", reason: "unknown service: \(p)/tcp"))
            }
        }
        if host.isEmpty { return .failure(LookupFailure(status: "5.1.2", reason: "null destination: \"\(nexthop)\"")) }
        return .success(.inet(host: host, port: port, mx: !bracketed && !lmtp))
    }
}

/// How server addresses are found.
struct AddressFinder {
    let families: [Int32]
    let native: Bool
    let dns: Bool
    let addressLimit: Int
    let ownAddresses: [[UInt8]]
    let preferIPv6: Bool?

    /// The addresses of `host` (no MX), in the families wanted.
    func hostAddresses(_ host: String, port: UInt16, preference: Int = 0) -> Result<[ServerAddress], LookupFailure> {
        var literal = host
        if literal.lowercased().hasPrefix("ipv6:") { literal = String(literal.dropFirst(5)) }
        if let sa = SocketAddress(numeric: literal, port: port) {
            guard families.contains(sa.family) else {
                return .failure(LookupFailure(status: "5.4.4", reason: "Host or domain name not found. Name service error for name=\(host) type=\(sa.family == AF_INET ? "A" : "AAAA"): Host not found"))
            }
            return .success([ServerAddress(host: literal, address: sa, preference: preference)])
        }
        if native || !dns { return nativeAddresses(host, port: port, preference: preference) }
        var types: [DNSType] = []
        if families.contains(AF_INET) { types.append(.a) }
        if families.contains(AF_INET6) { types.append(.aaaa) }
        var out: [ServerAddress] = []
        var soft: DNSAnswer?
        var last: DNSAnswer?
        for t in types {
            let a = DNS.resolver.query(host, t)
            switch a.status {
            case .ok:
                for r in a.records where r.type == t {
                    let fam = t == .a ? AF_INET : AF_INET6
                    out.append(ServerAddress(host: host, address: SocketAddress(family: fam, address: r.address, port: port),
                                             preference: preference))
                }
            case .retry: soft = soft ?? a
            default: last = last ?? a
            }
        }
        if !out.isEmpty { return .success(order(out)) }
        if let s = soft { return .failure(LookupFailure(status: "4.4.3", reason: s.reason)) }
        let reason = last?.reason ?? "Host or domain name not found. Name service error for name=\(host) type=A: Host not found"
        return .failure(LookupFailure(status: "5.4.4", reason: reason))
    }

    /// smtp_address_preference: IPv4 or IPv6 first, or as found ("any").
    func order(_ list: [ServerAddress]) -> [ServerAddress] {
        guard let v6 = preferIPv6 else { return list }
        let first = list.filter { ($0.address.family == AF_INET6) == v6 }
        return first + list.filter { ($0.address.family == AF_INET6) != v6 }
    }

    /// smtp_host_lookup = native: the system resolver (/etc/hosts, then DNS).
    func nativeAddresses(_ host: String, port: UInt16, preference: Int) -> Result<[ServerAddress], LookupFailure> {
        let family = families == [AF_INET] ? AF_INET : (families == [AF_INET6] ? AF_INET6 : AF_UNSPEC)
        switch InetSocket.resolve(host, port: port, family: family) {
        case .failure(let e):
            return .failure(LookupFailure(status: e.code == EAI_AGAIN ? "4.4.3" : "5.4.4", reason: "\(host): \(e)"))
        case .success(let list):
            let out = list.filter { families.contains($0.family) }.map { ServerAddress(host: host, address: $0, preference: preference) }
            if out.isEmpty { return .failure(LookupFailure(status: "5.4.4", reason: "\(host): host not found")) }
            return .success(order(out))
        }
    }

    /// smtp_domain_addr: the MX hosts of `domain` by preference (random among equals),
    /// their addresses up to the limit, less this machine and anything after it; without
    /// MX records, the domain's own addresses.
    /// `iAmMX`: this machine is one of the MX hosts (the list holds the better ones only).
    func domainAddresses(_ domain: String, port: UInt16, iAmMX: inout Bool) -> Result<[ServerAddress], LookupFailure> {
        let loopDetect = port == 25
        if native || !dns { return nativeAddresses(domain, port: port, preference: 0) }
        let mx = DNS.lookup(domain, [.mx])
        switch mx.status {
        case .nullMX:
            return .failure(LookupFailure(status: "5.1.0", reason: mx.reason))
        case .retry:
            return .failure(LookupFailure(status: "4.4.3", reason: mx.reason))
        case .invalid, .fail:
            return .failure(LookupFailure(status: "5.4.4", reason: mx.reason))
        case .notFound:
            // No MX (or no such name): the domain's own addresses, and their errors.
            return hostAddresses(domain, port: port).map { loopDetect ? (selfCheck($0, domain: domain) ?? $0) : $0 }
                .flatMap { $0.isEmpty ? .failure(LookupFailure(status: "5.4.6", reason: "mail for \(domain) loops back to myself")) : .success($0) }
        case .ok:
            break
        }
        // Preference order; equal preferences in random order.
        var groups: [Int: [DNSRecord]] = [:]
        for r in mx.records where r.type == .mx { groups[r.preference, default: []].append(r) }
        var hosts: [DNSRecord] = []
        for pref in groups.keys.sorted() { hosts += groups[pref]!.shuffled() }
        var out: [ServerAddress] = []
        var soft: LookupFailure?
        for h in hosts {
            switch hostAddresses(h.data, port: port, preference: h.preference) {
            case .success(let list): out += list
            case .failure(let f): if !f.permanent { soft = soft ?? f }
            }
        }
        if out.isEmpty {
            if let soft { return .failure(soft) }
            return .failure(LookupFailure(status: "5.4.4", reason: "no MX host for \(domain) has a valid address record"))
        }
        // Ourselves at some preference: only better MX hosts are worth trying. (Only on
        // the SMTP port: a content filter on another port of this host is no loop.)
        if loopDetect, let selfPref = out.first(where: { ownAddresses.contains($0.address.address) })?.preference {
            out = out.filter { $0.preference < selfPref }
            iAmMX = true
            if out.isEmpty { return .failure(LookupFailure(status: "5.4.6", reason: "mail for \(domain) loops back to myself")) }
        }
        if addressLimit > 0 && out.count > addressLimit { out = Array(out.prefix(addressLimit)) }
        return .success(out)
    }

    /// A destination without MX whose address is ours loops.
    func selfCheck(_ list: [ServerAddress], domain: String) -> [ServerAddress]? {
        let others = list.filter { !ownAddresses.contains($0.address.address) }
        return others.count == list.count ? nil : others
    }
}
