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

    /// The default mydomain: myhostname without its first label, or "localdomain".
    public static func mydomain(myhostname: String) -> String {
        guard let dot = myhostname.firstIndex(of: ".") else { return "localdomain" }
        let rest = myhostname[myhostname.index(after: dot)...]
        return rest.isEmpty ? "localdomain" : String(rest)
    }

    /// An interface address with its netmask.
    public struct InterfaceAddress: Equatable, Sendable {
        public var family: Int32
        /// 4 or 16 bytes, network order.
        public var address: [UInt8]
        public var mask: [UInt8]
    }

    /// Address families named by inet_protocols ("all", "ipv4", "ipv6", a list).
    public static func families(inetProtocols: String) -> [Int32] {
        var fams: [Int32] = []
        for word in Tokens.split(inetProtocols.lowercased()) {
            switch word {
            case "all":
                fams += [AF_INET, AF_INET6]
            case "ipv4":
                fams.append(AF_INET)
            case "ipv6":
                fams.append(AF_INET6)
            default:
                break
            }
        }
        var seen = Set<Int32>()
        return fams.filter { seen.insert($0).inserted }
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

    /// mynetworks for a style ("host", "subnet", "class") over the given addresses.
    public static func mynetworks(style: String, addresses: [InterfaceAddress]) -> String? {
        let s = style.lowercased().trimmingBlanks
        guard s == "host" || s == "subnet" || s == "class" else { return nil }
        var parts: [String] = []
        for a in addresses {
            var mask = a.mask
            if s == "host" {
                mask = [UInt8](repeating: 0xFF, count: a.address.count)
            } else if s == "class" && a.family == AF_INET {
                let first = a.address[0]
                let bits: Int
                if first < 128 { bits = 8 } else if first < 192 { bits = 16 } else if first < 224 { bits = 24 } else { bits = 4 }
                mask = prefixMask(bits, count: 4)
            }
            let net = zip(a.address, mask).map { $0 & $1 }
            let len = mask.reduce(0) { $0 + $1.nonzeroBitCount }
            let text = format(a.family, net)
            parts.append(a.family == AF_INET6 ? "[\(text)]/\(len)" : "\(text)/\(len)")
        }
        return parts.joined(separator: " ")
    }

    static func prefixMask(_ bits: Int, count: Int) -> [UInt8] {
        (0..<count).map { i in
            let b = max(0, min(8, bits - i * 8))
            return b == 0 ? 0 : UInt8(0xFF << (8 - b) & 0xFF)
        }
    }

    /// The addresses named by inet_interfaces: "all", "loopback-only", or a list of
    /// addresses (host names are not resolved here; they need the resolver).
    public static func interfaceAddresses(inetInterfaces: String, families: [Int32]) -> [InterfaceAddress] {
        let words = Tokens.split(inetInterfaces)
        let local = localAddresses(families: families)
        if words.contains(where: { $0.lowercased() == "all" }) { return local }
        var out: [InterfaceAddress] = []
        for w in words {
            if w.lowercased() == "loopback-only" {
                for fam in families {
                    if fam == AF_INET { out.append(InterfaceAddress(family: AF_INET, address: [127, 0, 0, 1], mask: [255, 0, 0, 0])) }
                    if fam == AF_INET6 {
                        out.append(InterfaceAddress(family: AF_INET6, address: [UInt8](repeating: 0, count: 15) + [1],
                                                    mask: [UInt8](repeating: 0xFF, count: 16)))
                    }
                }
                continue
            }
            var text = w
            if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
            guard let (fam, bytes) = parseAddress(text), families.contains(fam) else { continue }
            let mask = local.first { $0.address == bytes }?.mask ?? [UInt8](repeating: 0xFF, count: bytes.count)
            out.append(InterfaceAddress(family: fam, address: bytes, mask: mask))
        }
        return out
    }
}
