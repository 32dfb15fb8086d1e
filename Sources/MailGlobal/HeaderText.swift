// HeaderText: recognising message header lines (is_header).
// Mirrors Postfix global/is_header.c; the scanner itself is MimeState.headerLength.

public enum HeaderText {
    /// is_header(): "name:" where name is printable ASCII without spaces or colons.
    public static func isHeader(_ s: String) -> Bool { MimeState.headerLength(s.utf8) != nil }

    /// The headers that hold sender addresses (HDR_OPT_SENDER) and recipient addresses
    /// (HDR_OPT_RECIP), lower case: the ones whose addresses are rewritten.
    public static let senderHeaders: Set<String> = ["from", "sender", "reply-to", "errors-to", "return-receipt-to",
                                                    "resent-from", "resent-sender", "resent-reply-to"]
    public static let recipientHeaders: Set<String> = ["to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc",
                                                       "resent-bcc"]

    /// cleanup_fold_header: "Name:" and address list pieces joined by spaces while the
    /// line stays under 70 bytes, continued on lines that start with a TAB.
    public static func fold(_ name: String, _ pieces: [String]) -> [String] {
        var lines: [String] = []
        var cur = name + ":"
        for p in pieces {
            let piece = p.trimmingCharacters()
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
