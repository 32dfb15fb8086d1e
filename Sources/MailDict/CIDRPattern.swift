// CIDRPattern: an address or network as Postfix writes them in cidr: tables and address
// lists: "1.2.3.4", "1.2.3.0/24", "[2001:db8::]/32", "[::1]".
// Mirrors Postfix util/cidr_match.c, with its error texts.
import Glibc

public struct CIDRPattern: Sendable, Equatable {
    public let family: Int32
    public let bytes: [UInt8]
    public let prefix: Int

    public init(family: Int32, bytes: [UInt8], prefix: Int) {
        self.family = family
        self.bytes = bytes
        self.prefix = prefix
    }

    /// True when `addr` (4 or 16 bytes of this family) is inside the network.
    public func contains(_ addr: [UInt8]) -> Bool {
        guard addr.count == bytes.count else { return false }
        var bits = prefix
        for i in 0..<bytes.count {
            if bits <= 0 { return true }
            let mask: UInt8 = bits >= 8 ? 0xFF : UInt8(0xFF << (8 - bits) & 0xFF)
            if addr[i] & mask != bytes[i] { return false }
            bits -= 8
        }
        return true
    }

    /// An address key: IPv6 when it has a colon; nil when inet_pton rejects it.
    public static func parseAddressFamily(_ text: String) -> (Int32, [UInt8])? {
        let family: Int32 = text.contains(":") ? AF_INET6 : AF_INET
        guard let b = inetPton(family, text) else { return nil }
        return (family, b)
    }

    public static func parseAddress(_ text: String) -> [UInt8]? { parseAddressFamily(text)?.1 }

    /// "addr", "addr/len", "[addr]", "[addr]/len" or "[addr/len]".
    public static func parse(_ text: String) throws(DictOpenError) -> CIDRPattern {
        var pattern = text
        if pattern.hasPrefix("[") {
            guard let close = pattern.firstIndex(of: "]") else {
                throw DictOpenError("missing ']' character after \"\(text)\"")
            }
            let inner = String(pattern[pattern.index(after: pattern.startIndex)..<close])
            let rest = pattern[pattern.index(after: close)...]
            if !rest.isEmpty && !rest.hasPrefix("/") { throw DictOpenError("garbage after \"\(text)\"") }
            pattern = inner + rest
        }
        let family: Int32 = pattern.contains(":") ? AF_INET6 : AF_INET
        let maxBits = family == AF_INET6 ? 128 : 32
        var addrText = pattern
        var prefix = maxBits
        if let slash = pattern.firstIndex(of: "/") {
            addrText = String(pattern[..<slash])
            let maskText = pattern[pattern.index(after: slash)...]
            guard !maskText.isEmpty, maskText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw DictOpenError("bad mask value in \"\(text)\"")
            }
            guard let m = Int(maskText.prefix(9)), m <= maxBits else {
                throw DictOpenError("bad mask length in \"\(text)\"")
            }
            prefix = m
            guard let bytes = inetPton(family, addrText) else {
                throw DictOpenError("bad network value in \"\(text)\"")
            }
            let net = CIDRPattern(family: family, bytes: bytes, prefix: prefix)
            let masked = maskBytes(bytes, prefix)
            if masked != bytes {
                throw DictOpenError("non-null host address bits in \"\(text)\", perhaps you should use \"\(inetNtop(family, masked))/\(prefix)\" instead")
            }
            return net
        }
        guard let bytes = inetPton(family, addrText) else { throw DictOpenError("bad address pattern: \"\(text)\"") }
        return CIDRPattern(family: family, bytes: bytes, prefix: prefix)
    }

    static func maskBytes(_ b: [UInt8], _ prefix: Int) -> [UInt8] {
        var bits = prefix
        return b.map { byte in
            defer { bits -= 8 }
            if bits >= 8 { return byte }
            if bits <= 0 { return 0 }
            return byte & UInt8(0xFF << (8 - bits) & 0xFF)
        }
    }

    public static func inetPton(_ family: Int32, _ text: String) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 16)
        let ok = text.withCString { inet_pton(family, $0, &buf) }
        guard ok == 1 else { return nil }
        return Array(buf.prefix(family == AF_INET6 ? 16 : 4))
    }

    public static func inetNtop(_ family: Int32, _ bytes: [UInt8]) -> String {
        var out = [CChar](repeating: 0, count: 64)
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &out, 64) }
        return String(cString: out)
    }

}
