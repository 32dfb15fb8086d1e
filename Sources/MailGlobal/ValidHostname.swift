// ValidHostname: syntax checks for host names and address literals.
// Mirrors Postfix util/valid_hostname.c: labels of letters, digits, '_' and inner '-',
// at most 63 bytes each and 255 in all, no empty labels, and not all-numeric.

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
