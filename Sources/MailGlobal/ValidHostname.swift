// ValidHostname: syntax checks for host names and address literals.
// Mirrors Postfix util/valid_hostname.c: labels of letters, digits, '_' and inner '-',
// at most 63 bytes each and 255 in all, no empty labels, and not all-numeric.

import MailUtil

public enum ValidHostname {
    public static let maxLength = 255
    public static let maxLabel = 63

    /// Checks a host name; `gripe` receives Postfix's warning text when it is bad.
    public static func isValid(_ name: String, gripe: ((String) -> Void)? = nil) -> Bool {
        let b = Array(name.utf8)
        let shown = String(name.prefix(100))
        if b.isEmpty {
            gripe?("valid_hostname: empty hostname")
            return false
        }
        var labelLength = 0
        var nonNumeric = false
        for (i, c) in b.enumerated() {
            if isAlnum(c) || c == UInt8(ascii: "_") {
                labelLength += 1
                if labelLength > maxLabel {
                    gripe?("valid_hostname: hostname label too long: \(shown)")
                    return false
                }
                if !(c >= 0x30 && c <= 0x39) { nonNumeric = true }
            } else if c == UInt8(ascii: ".") {
                if labelLength == 0 || i + 1 == b.count {
                    gripe?("valid_hostname: misplaced delimiter: \(shown)")
                    return false
                }
                labelLength = 0
            } else if c == UInt8(ascii: "-") {
                nonNumeric = true
                labelLength += 1
                if labelLength == 1 || i + 1 == b.count || b[i + 1] == UInt8(ascii: ".") {
                    gripe?("valid_hostname: misplaced hyphen: \(shown)")
                    return false
                }
            } else {
                gripe?("valid_hostname: invalid character \(c)(decimal): \(shown)")
                return false
            }
        }
        if !nonNumeric {
            gripe?("valid_hostname: numeric hostname: \(shown)")
            return false
        }
        if b.count > maxLength {
            gripe?("valid_hostname: bad length \(b.count) for \(shown)...")
            return false
        }
        return true
    }
}

extension ValidHostname {
    /// valid_utf8_hostname: with SMTPUTF8 a name may have UTF-8 labels (checked as
    /// U-labels: valid UTF-8, no empty label, no label over 63 bytes); ASCII names get
    /// the full check.
    public static func isValid(_ name: String, utf8: Bool) -> Bool {
        if !utf8 || name.utf8.allSatisfy({ $0 < 0x80 }) { return isValid(name) }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        if labels.contains(where: { $0.isEmpty }) {
            idnaWarning(name, "UIDNA_ERROR_EMPTY_LABEL")
            return false
        }
        return !labels.contains { $0.utf8.count > maxLabel } && name.utf8.count <= maxLength
    }

    nonisolated(unsafe) static var idnaReported: Set<String> = []

    /// Postfix's midna_domain warning, once per name and process (it caches results).
    static func idnaWarning(_ name: String, _ error: String) {
        guard idnaReported.insert(name).inserted else { return }
        Msg.warn("midna_domain_to_ascii_create: Problem translating domain \"\(name)\" to ASCII form: \(error)")
    }

    /// valid_ipv4_hostaddr: four decimal numbers of at most 255, no leading zero tricks.
    public static func isIPv4Address(_ s: Substring) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(p), v <= 255 else { return false }
        }
        return true
    }

    /// valid_ipv6_hostaddr: hexadecimal groups with at most one "::", optionally ending in
    /// an IPv4 address.
    public static func isIPv6Address(_ s: Substring) -> Bool {
        guard s.contains(":"), s.count <= 45 else { return false }
        let b = Array(s.utf8)
        var doubles = 0
        for i in 1..<max(b.count, 1) where b[i] == UInt8(ascii: ":") && b[i - 1] == UInt8(ascii: ":") { doubles += 1 }
        if doubles > 1 { return false }
        var groups = s.split(separator: ":", omittingEmptySubsequences: true)
        var count = 0
        if let last = groups.last, last.contains(".") {
            guard isIPv4Address(last) else { return false }
            groups.removeLast()
            count += 2
        }
        for g in groups {
            guard g.count <= 4, g.allSatisfy({ $0.isHexDigit }) else { return false }
            count += 1
        }
        if s.hasPrefix(":") && !s.hasPrefix("::") { return false }
        if s.hasSuffix(":") && !s.hasSuffix("::") { return false }
        return doubles == 1 ? count < 8 : count == 8
    }

    /// valid_hostaddr: an IPv4 or IPv6 address.
    public static func isAddress(_ s: String) -> Bool {
        isIPv4Address(s[...]) || isIPv6Address(s[...])
    }

    /// valid_mailhost_literal: "[1.2.3.4]" or "[IPv6:...]".
    public static func isMailhostLiteral(_ s: String) -> Bool {
        guard s.hasPrefix("["), s.hasSuffix("]"), s.count >= 2 else { return false }
        let inner = s.dropFirst().dropLast()
        if inner.lowercased().hasPrefix("ipv6:") { return isIPv6Address(inner.dropFirst(5)) }
        return isIPv4Address(inner)
    }
}
