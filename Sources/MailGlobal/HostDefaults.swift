// HostDefaults: defaults that come from the host: myhostname, mydomain, mynetworks.
// Mirrors Postfix global/mail_params.c (check_myhostname, check_mydomainname),
// global/mynetworks.c, global/own_inet_addr.c and util/inet_addr_local.c. No DNS lookups.
import Glibc
import CShim
import MailUtil

public enum HostDefaults {
    /// gethostname(3), or "localhost" if that fails.
    public static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        if gethostname(&buf, buf.count - 1) != 0 { return "localhost" }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// The default myhostname: the host name, made fully qualified with `.mydomain`
    /// (when mydomain is set explicitly) or `.localdomain`.
    public static func myhostname(explicitDomain: String?) -> String {
        let name = hostname()
        if name.contains(".") { return name }
        return name + "." + (explicitDomain ?? "localdomain")
    }

    /// The default mydomain: everything after the first dot of myhostname (possibly
    /// empty), or "localdomain" when there is no dot.
    public static func mydomain(myhostname: String) -> String {
        guard let dot = myhostname.firstIndex(of: ".") else { return "localdomain" }
        return String(myhostname[myhostname.index(after: dot)...])
    }

    /// An interface address with its netmask.
    public struct InterfaceAddress: Equatable, Sendable {
        public var family: Int32
        /// 4 or 16 bytes, network order.
        public var address: [UInt8]
        public var mask: [UInt8]
    }

    /// Address families named by inet_protocols ("all", "ipv4", "ipv6", a list), always
    /// IPv4 before IPv6; an unknown word is an error with Postfix's text.
    public static func families(inetProtocols: String) -> Result<[Int32], ConfigError> {
        var v4 = false, v6 = false
        for word in Tokens.split(inetProtocols) {
            switch word {
            case "all": v4 = true; v6 = true
            case "ipv4": v4 = true
            case "ipv6": v6 = true
            default: return .failure(ConfigError("unknown inet_protocols value \"\(word)\" in \"\(inetProtocols)\""))
            }
        }
        return .success((v4 ? [AF_INET] : []) + (v6 ? [AF_INET6] : []))
    }

    /// Addresses of the interfaces that are up, family by family in the given order.
    public static func localAddresses(families: [Int32]) -> [InterfaceAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0 else { return [] }
        defer { freeifaddrs(head) }
        var out: [InterfaceAddress] = []
        for fam in families {
            var p = head
            while let ifa = p {
                defer { p = ifa.pointee.ifa_next }
                guard let sa = ifa.pointee.ifa_addr, Int32(sa.pointee.sa_family) == fam,
                      ifa.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
                let addr = addressBytes(sa)
                var mask = [UInt8](repeating: 0xFF, count: addr.count)
                if let m = ifa.pointee.ifa_netmask, Int32(m.pointee.sa_family) == fam || m.pointee.sa_family == 0 {
                    let mb = addressBytes(m, family: fam)
                    if mb.count == addr.count { mask = mb }
                }
                out.append(InterfaceAddress(family: fam, address: addr, mask: mask))
            }
        }
        return out
    }

    static func addressBytes(_ sa: UnsafeMutablePointer<sockaddr>, family: Int32? = nil) -> [UInt8] {
        let fam = family ?? Int32(sa.pointee.sa_family)
        if fam == AF_INET {
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }
            }
        }
        return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
            withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }
        }
    }

    /// Text form of an address (inet_ntop).
    public static func format(_ family: Int32, _ bytes: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(family, raw.baseAddress, &buf, socklen_t(buf.count))
        }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Parses an IPv4 or IPv6 address literal.
    public static func parseAddress(_ text: String) -> (family: Int32, bytes: [UInt8])? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (AF_INET, withUnsafeBytes(of: v4) { Array($0) })
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return (AF_INET6, withUnsafeBytes(of: v6) { Array($0) })
        }
        return nil
    }

    /// The single mask style named by mynetworks_style (class, subnet or host).
    public static func mynetworksStyle(_ text: String) -> Result<String, ConfigError> {
        var styles: [String] = []
        for w in Tokens.split(text) {
            guard ["class", "subnet", "host"].contains(w) else {
                return .failure(ConfigError("unknown mynetworks mask style value \"\(w)\" in \"\(text)\""))
            }
            if !styles.contains(w) { styles.append(w) }
        }
        guard styles.count == 1 else {
            return .failure(ConfigError("bad mynetworks_style value: \(text); specify exactly one value"))
        }
        return .success(styles[0])
    }

    /// mynetworks for a style ("host", "subnet", "class") over the given addresses:
    /// networks in address order, duplicates dropped, IPv6 in brackets.
    public static func mynetworks(style: String, addresses: [InterfaceAddress]) -> Result<String, ConfigError> {
        var parts: [String] = []
        for a in addresses {
            var mask = a.mask
            if style == "host" {
                mask = [UInt8](repeating: 0xFF, count: a.address.count)
            } else if style == "class" && a.family == AF_INET {
                let first = a.address[0]
                let bits: Int
                if first < 128 { bits = 8 } else if first < 192 { bits = 16 } else if first < 224 { bits = 24 }
                else if first < 240 { bits = 4 } else {
                    return .failure(ConfigError("mynetworks_core: unknown address class: \(format(a.family, a.address))"))
                }
                mask = prefixMask(bits, count: 4)
            }
            let net = zip(a.address, mask).map { $0 & $1 }
            var len = 0
            for byte in mask {
                if byte == 0xFF { len += 8; continue }
                len += (~byte).leadingZeroBitCount
                break
            }
            let text = format(a.family, net)
            let part = a.family == AF_INET6 ? "[\(text)]/\(len)" : "\(text)/\(len)"
            if !parts.contains(part) { parts.append(part) }
        }
        return .success(parts.joined(separator: " "))
    }

    static func prefixMask(_ bits: Int, count: Int) -> [UInt8] {
        (0..<count).map { i in
            let b = max(0, min(8, bits - i * 8))
            return b == 0 ? 0 : UInt8(0xFF << (8 - b) & 0xFF)
        }
    }

    /// The addresses of this mail system: those of inet_interfaces and proxy_interfaces
    /// (for "[address]" destinations, and the smtp client's "loops back to myself").
    public static func ownAddresses(_ config: MailConfig) -> [[UInt8]] {
        guard let fams = try? families(inetProtocols: config.string("inet_protocols")).get() else { return [] }
        var addrs: [[UInt8]] = []
        for param in ["inet_interfaces", "proxy_interfaces"] where !config.string(param).isEmpty {
            if case .success(let list) = interfaceAddresses(inetInterfaces: config.string(param), families: fams) {
                addrs += list.map { $0.address }
            }
        }
        return addrs
    }

    /// The addresses named by inet_interfaces: "all", "loopback-only", or a list of
    /// addresses and host names, each of which must belong to a local interface. An
    /// explicit list comes back sorted and without duplicates, as Postfix orders it.
    public static func interfaceAddresses(inetInterfaces: String, families: [Int32]) -> Result<[InterfaceAddress], ConfigError> {
        let words = Tokens.split(inetInterfaces)
        let local = localAddresses(families: families)
        if words.contains("all") { return .success(local) }
        var out: [InterfaceAddress] = []
        func add(_ fam: Int32, _ bytes: [UInt8], _ shown: String) -> ConfigError? {
            guard let iface = local.first(where: { $0.family == fam && $0.address == bytes }) else {
                return ConfigError("parameter inet_interfaces: no local interface found for \(shown)")
            }
            out.append(iface)
            return nil
        }
        for w in words {
            if w == "loopback-only" {
                for fam in families {
                    let lo: [UInt8] = fam == AF_INET ? [127, 0, 0, 1] : [UInt8](repeating: 0, count: 15) + [1]
                    if let e = add(fam, lo, format(fam, lo)) { return .failure(e) }
                }
                continue
            }
            var text = w
            if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
            if let (fam, bytes) = parseAddress(text) {
                if families.contains(fam), let e = add(fam, bytes, text) { return .failure(e) }
                continue
            }
            let resolved = resolve(text, families: families)
            if resolved.isEmpty {
                return .failure(ConfigError("config variable inet_interfaces: host not found: \(text)"))
            }
            for (fam, bytes) in resolved {
                if let e = add(fam, bytes, format(fam, bytes)) { return .failure(e) }
            }
        }
        out = mergeSort(out, by: compareAddresses)
        var uniq: [InterfaceAddress] = []
        for a in out where uniq.last.map({ $0.family != a.family || $0.address != a.address }) ?? true {
            uniq.append(a)
        }
        return .success(uniq)
    }

    /// Addresses of a host name (getaddrinfo, numeric results only).
    static func resolve(_ name: String, families: [Int32]) -> [(Int32, [UInt8])] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = families == [AF_INET] ? AF_INET : (families == [AF_INET6] ? AF_INET6 : AF_UNSPEC)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &res) == 0 else { return [] }
        defer { freeaddrinfo(res) }
        var out: [(Int32, [UInt8])] = []
        var p = res
        while let ai = p {
            if let sa = ai.pointee.ai_addr, families.contains(ai.pointee.ai_family) {
                out.append((ai.pointee.ai_family, addressBytes(sa)))
            }
            p = ai.pointee.ai_next
        }
        return out
    }

    /// Postfix's address order: IPv4 before IPv6; IPv4 by the difference of the raw
    /// network-order words read as native integers, IPv6 by bytes.
    static func compareAddresses(_ a: InterfaceAddress, _ b: InterfaceAddress) -> Int {
        if a.family != b.family { return a.family == AF_INET ? -1 : 1 }
        if a.family == AF_INET {
            let x = a.address.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let y = b.address.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            return Int(Int32(bitPattern: x &- y))
        }
        for (p, q) in zip(a.address, b.address) where p != q { return Int(p) - Int(q) }
        return 0
    }

    /// The merge sort glibc's qsort uses (halves, left element first on ties), so that
    /// even an inconsistent comparison orders elements as Postfix sees them.
    static func mergeSort<T>(_ items: [T], by cmp: (T, T) -> Int) -> [T] {
        if items.count <= 1 { return items }
        let n1 = items.count / 2
        let left = mergeSort(Array(items[0..<n1]), by: cmp)
        let right = mergeSort(Array(items[n1...]), by: cmp)
        var out: [T] = []
        out.reserveCapacity(items.count)
        var i = 0, j = 0
        while i < left.count && j < right.count {
            if cmp(left[i], right[j]) <= 0 { out.append(left[i]); i += 1 } else { out.append(right[j]); j += 1 }
        }
        out += left[i...]
        out += right[j...]
        return out
    }
}

/// A configuration error with Postfix's text, fatal where Postfix makes it fatal.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
