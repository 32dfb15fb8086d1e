// Quote822: quoting and unquoting of address local parts.
// Mirrors Postfix global/quote_822_local.c and quote_821_local.c: a local part that is not
// a dot-string is put in double quotes with backslashes before '"', '\' and CR (RFC 5322),
// or also LF (RFC 5321). The split is at the last '@'; a source route "@a,@b:" is kept.

public enum Quote822 {
    /// Flags of the quoting functions.
    public struct Flags: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// Leave 8-bit bytes alone (the default for both functions).
        public static let eightBitClean = Flags(rawValue: 1)
        /// The whole input is a local part; do not look for '@'.
        public static let bareLocalPart = Flags(rawValue: 2)
        /// RFC 5321 only: '@' may appear unquoted in the local part.
        public static let exposeAt = Flags(rawValue: 4)
    }

    static let specials822: Set<UInt8> = Set("()<>@,;:\\\"[]".utf8)
    static let specials821: Set<UInt8> = Set("<>()[]\\,;:\"".utf8)

    /// quote_822_local: external (RFC 5322) form of an internal address.
    public static func quote822(_ address: String, flags: Flags = .eightBitClean) -> String {
        quote(Array(address.utf8), flags: flags, rfc821: false)
    }

    /// quote_821_local: external (RFC 5321 envelope) form of an internal address.
    public static func quote821(_ address: String, flags: Flags = .eightBitClean) -> String {
        quote(Array(address.utf8), flags: flags, rfc821: true)
    }

    static func quote(_ mbox: [UInt8], flags: Flags, rfc821: Bool) -> String {
        let end = flags.contains(.bareLocalPart) ? mbox.count : (mbox.lastIndex(of: UInt8(ascii: "@")) ?? mbox.count)
        var start = 0
        if mbox.first == UInt8(ascii: "@"), let colon = mbox.firstIndex(of: UInt8(ascii: ":")) {
            start = colon + 1
        }
        // A route colon after the last '@' cannot start the local part.
        if start > end { start = 0 }
        var out = Array(mbox[0..<start])
        let local = mbox[start..<end]
        if isDotString(local, flags: flags, rfc821: rfc821) {
            out += mbox[start...]
        } else {
            out.append(UInt8(ascii: "\""))
            for c in local {
                if (c > 127 && !flags.contains(.eightBitClean)) || c == UInt8(ascii: "\"")
                    || c == UInt8(ascii: "\\") || c == 0x0D || (rfc821 && c == 0x0A) {
                    out.append(UInt8(ascii: "\\"))
                }
                out.append(c)
            }
            out.append(UInt8(ascii: "\""))
            out += mbox[end...]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isDotString(_ local: ArraySlice<UInt8>, flags: Flags, rfc821: Bool) -> Bool {
        guard let first = local.first, first != UInt8(ascii: "."), local.last != UInt8(ascii: ".") else {
            return false
        }
        var prevDot = false
        for c in local {
            if c == UInt8(ascii: ".") {
                if prevDot { return false }
                prevDot = true
                continue
            }
            prevDot = false
            if c > 127 && !flags.contains(.eightBitClean) { return false }
            if c == 0x20 || c < 0x20 || c == 0x7F { return false }
            if rfc821 {
                if specials821.contains(c) { return false }
                if c == UInt8(ascii: "@") && !flags.contains(.exposeAt) { return false }
            } else if specials822.contains(c) {
                return false
            }
        }
        return true
    }

    /// unquote_822_local: internal form; quotes and backslashes are removed from the local
    /// part, text after the last unquoted '@' is kept as is.
    public static func unquote822(_ address: String) -> String {
        let mbox = Array(address.utf8)
        var out: [UInt8] = []
        var start = 0
        if mbox.first == UInt8(ascii: "@"), let colon = mbox.firstIndex(of: UInt8(ascii: ":")) {
            start = colon + 1
            out = Array(mbox[0..<start])
        }
        var inQuote = false
        var bareAtOut = -1
        var bareAtSrc = 0
        var i = start
        while i < mbox.count {
            let c = mbox[i]
            if c == UInt8(ascii: "\"") {
                inQuote.toggle()
                i += 1
                continue
            } else if c == UInt8(ascii: "@") {
                if !inQuote {
                    bareAtOut = out.count
                    bareAtSrc = i
                }
            } else if c == UInt8(ascii: "\\") {
                if i + 1 >= mbox.count {
                    i += 1
                    continue
                }
                i += 1
            }
            out.append(mbox[i])
            i += 1
        }
        if bareAtOut >= 0 {
            out.removeSubrange(bareAtOut...)
            out += mbox[bareAtSrc...]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
