// QueueID: queue file names, short and long, and the hashed directory they live in.
// Mirrors Postfix global/file_id.c, mail_queue.c (mail_queue_id_ok, mail_queue_dir) and
// util/safe_ultostr.c. Short IDs are %05X of the microseconds then %lX of the inode; long
// IDs are base-52 seconds (at least 6 digits), 4 base-52 digits of microseconds, "z", and
// the inode in base 51 (which never produces "z").

public struct QueueID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let text: String

    /// Wraps a name after checking it is 1-255 characters of [A-Za-z0-9_].
    public init?(_ text: String) {
        guard QueueID.isValid(text) else { return nil }
        self.text = text
    }

    public var description: String { text }

    public static func < (a: QueueID, b: QueueID) -> Bool { a.text < b.text }

    /// mail_queue_id_ok: 1..255 alphanumerics or underscores.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        return !u.isEmpty && u.count <= 255 && u.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    /// The 52 characters of long IDs: digits and consonants.
    public static let alphabet: [UInt8] = Array("0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz".utf8)
    static let longSeparator = UInt8(ascii: "z")

    /// A short ID from microseconds and inode number.
    public static func short(usec: Int, inode: UInt64) -> QueueID {
        QueueID(unchecked: hex(UInt64(usec), width: 5) + hex(inode, width: 0))
    }

    /// A long ID from seconds, microseconds and inode number.
    public static func long(sec: Int, usec: Int, inode: UInt64) -> QueueID {
        var s = encode(UInt64(sec), base: 52, pad: 6)
        s += encode(UInt64(usec), base: 52, pad: 4)
        s += "z"
        s += encode(inode, base: 51, pad: 0)
        return QueueID(unchecked: s)
    }

    private init(unchecked: String) { text = unchecked }

    /// True for IDs in the long format (a "z" at position 10 or later).
    public var isLong: Bool {
        let u = Array(text.utf8)
        guard let z = u.lastIndex(of: QueueID.longSeparator) else { return false }
        return z >= 10
    }

    /// The hex text whose leading characters name the hash directories: the ID itself
    /// for short IDs, %05X of the microseconds for long IDs.
    public var hashText: String {
        let u = Array(text.utf8)
        if let z = u.lastIndex(of: QueueID.longSeparator), z >= 10 {
            let usecDigits = u[(z - 4)..<z]
            var v: UInt64 = 0
            for c in usecDigits {
                guard let d = QueueID.alphabet.firstIndex(of: c) else { return text }
                v = v * 52 + UInt64(d)
            }
            return QueueID.hex(v, width: 5)
        }
        return text
    }

    /// Subdirectories for a hashed queue of the given depth, e.g. ["1"] for depth 1.
    public func hashDirectories(depth: Int) -> [String] {
        let h = Array(hashText.utf8)
        return (0..<max(depth, 0)).map { i in i < h.count ? String(UnicodeScalar(h[i])) : "_" }
    }

    /// MQID_GET_INUM: the inode number the name carries (hex after five digits of
    /// microseconds, or base 51 after the "z" of a long ID); nil when it does not parse.
    public var inode: UInt64? {
        let u = Array(text.utf8)
        if isLong, let z = u.lastIndex(of: QueueID.longSeparator) {
            let digits = u[(z + 1)...]
            guard !digits.isEmpty else { return nil }
            var v: UInt64 = 0
            for c in digits {
                guard let d = QueueID.alphabet.firstIndex(of: c), d < 51 else { return nil }
                let (m, o1) = v.multipliedReportingOverflow(by: 51)
                let (a, o2) = m.addingReportingOverflow(UInt64(d))
                if o1 || o2 { return nil }
                v = a
            }
            return v
        }
        guard u.count > 5 else { return nil }
        return UInt64(String(decoding: u[5...], as: UTF8.self), radix: 16)
    }

    /// The name postsuper gives the file when it does not match `inode` (fix_queue_id): the
    /// same time digits with the inode replaced; a long name becomes short unless `long`.
    public func renamed(inode: UInt64, long: Bool) -> QueueID {
        let u = Array(text.utf8)
        if isLong, let z = u.lastIndex(of: QueueID.longSeparator) {
            if long { return QueueID(unchecked: String(decoding: u[..<z], as: UTF8.self) + "z" + QueueID.encode(inode, base: 51, pad: 0)) }
            return QueueID(unchecked: hashText + QueueID.hex(inode, width: 0))
        }
        return QueueID(unchecked: String(decoding: u.prefix(5), as: UTF8.self) + QueueID.hex(inode, width: 0))
    }

    static func hex(_ v: UInt64, width: Int) -> String {
        var s = String(v, radix: 16, uppercase: true)
        if s.count < width { s = String(repeating: "0", count: width - s.count) + s }
        return s
    }

    static func encode(_ value: UInt64, base: UInt64, pad: Int) -> String {
        var digits: [UInt8] = []
        var v = value
        repeat {
            digits.append(alphabet[Int(v % base)])
            v /= base
        } while v > 0
        while digits.count < pad { digits.append(alphabet[0]) }
        return String(decoding: digits.reversed(), as: UTF8.self)
    }
}

@inline(__always) func isAlnum(_ c: UInt8) -> Bool {
    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
}
