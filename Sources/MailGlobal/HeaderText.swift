// HeaderText: recognising message header lines (is_header).
// Mirrors Postfix global/is_header.c.

public enum HeaderText {
    /// is_header(): "name:" where name is printable ASCII without spaces or colons.
    public static func isHeader(_ s: String) -> Bool {
        var n = 0
        var sawColon = false
        for c in s.utf8 {
            if c == UInt8(ascii: ":") {
                sawColon = true
                break
            }
            if c <= 32 || c >= 127 { break }
            n += 1
        }
        if sawColon { return n > 0 }
        guard n > 0 else { return false }
        let rest = s.utf8.dropFirst(n)
        let afterSpace = rest.drop(while: { $0 == 0x20 || $0 == 0x09 })
        return afterSpace.first == UInt8(ascii: ":")
    }
}
