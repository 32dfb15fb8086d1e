// HeaderText: recognising message header lines (is_header).
// Mirrors Postfix global/is_header.c; the scanner itself is MimeState.headerLength.

public enum HeaderText {
    /// is_header(): "name:" where name is printable ASCII without spaces or colons.
    public static func isHeader(_ s: String) -> Bool { MimeState.headerLength(s.utf8) != nil }

    /// cleanup_fold_header: "Name:" and address list pieces joined by spaces while the
    /// line stays under 70 bytes, continued on lines that start with a TAB.
    public static func fold(_ name: String, _ pieces: [String]) -> [String] {
        var lines: [String] = []
        var cur = name + ":"
        for p in pieces {
            let piece = String(p.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
            if piece.isEmpty { continue }
            if cur.utf8.count + 1 + piece.utf8.count >= 70 && cur != name + ":" {
                lines.append(cur)
                cur = "\t" + piece
            } else {
                cur += " " + piece
            }
        }
        lines.append(cur)
        return lines
    }
}
