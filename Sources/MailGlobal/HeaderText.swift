// HeaderText: recognising message header lines (is_header).
// Mirrors Postfix global/is_header.c; the scanner itself is MimeState.headerLength.

public enum HeaderText {
    /// is_header(): "name:" where name is printable ASCII without spaces or colons.
    public static func isHeader(_ s: String) -> Bool { MimeState.headerLength(s.utf8) != nil }
}
