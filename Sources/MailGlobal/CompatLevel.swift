// CompatLevel: compatibility_level values ("major[.minor[.patch]]") and their order.
// Mirrors Postfix global/compat_level.c: levels are compared as numbers per component,
// so "3.10" is above "3.9".
import MailUtil

public struct CompatLevel: Comparable, Sendable, CustomStringConvertible {
    public let major: Int
    public let minor: Int
    public let patch: Int

    public init(major: Int, minor: Int = 0, patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// The newest level whose defaults this release knows (Postfix 3.7: 3.6); below it,
    /// programs log that backwards-compatible defaults are in use.
    public static let current = CompatLevel(major: 3, minor: 6)

    /// The single comparable number Postfix uses (11+/10/10 bits).
    public var encoded: Int { (major << 20) | (minor << 10) | patch }

    /// Parses a level; reports "malformed compatibility level syntax" through `warn`.
    public static func parse(_ text: String, warn: (String) -> Void) -> CompatLevel? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        func number(_ s: Substring, max: Int) -> Int? {
            guard !s.isEmpty, let v = ConfigValue.parseLong(String(s)), v >= 0, v <= max,
                  s.first.map({ $0 != " " && $0 != "\t" && $0 != "+" && $0 != "-" }) == true
            else { return nil }
            return v
        }
        var level: CompatLevel?
        if parts.count >= 1 && parts.count <= 3, let ma = number(parts[0], max: Int.max >> 20) {
            if parts.count == 1 {
                level = CompatLevel(major: ma)
            } else if let mi = number(parts[1], max: 0x3ff) {
                if parts.count == 2 {
                    level = CompatLevel(major: ma, minor: mi)
                } else if let pa = number(parts[2], max: 0x3ff) {
                    level = CompatLevel(major: ma, minor: mi, patch: pa)
                }
            }
        }
        if level == nil { warn("malformed compatibility level syntax: \"\(text)\"") }
        return level
    }

    /// Canonical text: "0".."2" alone, otherwise "major.minor[.patch]".
    public var description: String {
        if major <= 2 { return "\(major)" }
        return patch != 0 ? "\(major).\(minor).\(patch)" : "\(major).\(minor)"
    }

    public static func < (a: CompatLevel, b: CompatLevel) -> Bool { a.encoded < b.encoded }
}
