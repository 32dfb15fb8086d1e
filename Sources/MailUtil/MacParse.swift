// MacParse: splits text into literal parts and $name references, as Postfix's mac_parse
// does: "$name", "${name}" and "$(name)" (names of letters, digits and "_" in the bare
// form, anything balanced in the bracketed ones), "$$" is a literal "$". Used where
// Postfix substitutes $1, $2, ... (regexp and pcre tables) or other short macros.
public enum MacParse {
    public enum Segment: Equatable, Sendable {
        case literal(String)
        case name(String)
    }

    /// The segments, or nil after warning about a truncated reference or an empty name
    /// (Postfix's "truncated macro reference" / "empty macro name").
    public static func parse(_ text: String, warn: (String) -> Void = { Msg.warn($0) }) -> [Segment]? {
        let b = Array(text.utf8)
        var out: [Segment] = []
        var lit: [UInt8] = []
        var i = 0
        func flushLiteral() {
            if !lit.isEmpty { out.append(.literal(String(decoding: lit, as: UTF8.self))) }
            lit.removeAll()
        }
        while i < b.count {
            if b[i] != UInt8(ascii: "$") {
                lit.append(b[i])
                i += 1
                continue
            }
            if i + 1 < b.count && b[i + 1] == UInt8(ascii: "$") {
                lit.append(b[i])
                i += 2
                continue
            }
            flushLiteral()
            i += 1
            var name: [UInt8] = []
            if i < b.count && (b[i] == UInt8(ascii: "{") || b[i] == UInt8(ascii: "(")) {
                let open = b[i]
                let close: UInt8 = open == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: ")")
                var level = 1
                var e = i + 1
                while level > 0 {
                    if e >= b.count {
                        warn("truncated macro reference: \"\(text)\"")
                        return nil
                    }
                    if b[e] == open { level += 1 }
                    if b[e] == close { level -= 1 }
                    e += 1
                }
                name = Array(b[(i + 1)..<(e - 1)])
                i = e
            } else {
                var e = i
                while e < b.count && (isAlnum(b[e]) || b[e] == UInt8(ascii: "_")) { e += 1 }
                name = Array(b[i..<e])
                i = e
            }
            if name.isEmpty {
                warn("empty macro name: \"\(text)\"")
                return nil
            }
            out.append(.name(String(decoding: name, as: UTF8.self)))
        }
        flushLiteral()
        return out
    }

    public static func isAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
    }
}
