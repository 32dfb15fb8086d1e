// Tokens: splitting of configuration text into words and lists.
// Mirrors Postfix util/mystrtok.c (mystrtok, mystrtokq), util/extpar.c, util/balpar.c and
// util/argv_splitq.c. Separators are sets of bytes; "{...}" groups keep separators inside
// one word, and extractBraced() removes the braces again.

/// Separators of Postfix lists: comma and white space.
public let listSeparators: [UInt8] = Array(", \t\r\n".utf8)
/// White space only.
public let spaceSeparators: [UInt8] = Array(" \t\r\n".utf8)

public enum Tokens {
    /// Splits on any of `separators`, dropping empty words (mystrtok).
    public static func split(_ text: String, separators: [UInt8] = listSeparators) -> [String] {
        splitBytes(Array(text.utf8), separators: separators).map { String(decoding: $0, as: UTF8.self) }
    }

    public static func splitBytes(_ bytes: [UInt8], separators: [UInt8]) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        let n = bytes.count
        while i < n {
            while i < n && separators.contains(bytes[i]) { i += 1 }
            if i >= n { break }
            let start = i
            while i < n && !separators.contains(bytes[i]) { i += 1 }
            out.append(bytes[start..<i])
        }
        return out
    }

    /// Splits like `split`, but text between `open` and `close` (nesting allowed) stays in
    /// one word even when it holds separators (mystrtokq). Braces are kept.
    public static func splitQuoted(_ text: String, separators: [UInt8] = listSeparators,
                                   open: UInt8 = UInt8(ascii: "{"), close: UInt8 = UInt8(ascii: "}")) -> [String] {
        let bytes = Array(text.utf8)
        var out: [String] = []
        var i = 0
        let n = bytes.count
        while i < n {
            while i < n && separators.contains(bytes[i]) { i += 1 }
            if i >= n { break }
            let start = i
            var level = 0
            while i < n {
                let c = bytes[i]
                if c == open {
                    level += 1
                } else if level > 0 && c == close {
                    level -= 1
                } else if level == 0 && separators.contains(c) {
                    break
                }
                i += 1
            }
            out.append(String(decoding: bytes[start..<i], as: UTF8.self))
        }
        return out
    }

    /// Length of the balanced "{...}" group at the start of `bytes` (which must start with
    /// `open`), or 0 when it is not closed (balpar).
    public static func balancedLength(_ bytes: ArraySlice<UInt8>, open: UInt8 = UInt8(ascii: "{"),
                                      close: UInt8 = UInt8(ascii: "}")) -> Int {
        var level = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let c = bytes[i]
            if c == open {
                level += 1
            } else if c == close {
                level -= 1
                if level == 0 { return i - bytes.startIndex + 1 }
            }
            i += 1
        }
        return 0
    }

    /// Removes the braces around "{ text }" and, with `strip`, the white space just inside
    /// them (extpar). Returns the inner text and an error text for an unclosed group or
    /// junk after the closing brace; the inner text is usable even with an error.
    public static func extractBraced(_ text: String, strip: Bool = true,
                                     open: UInt8 = UInt8(ascii: "{"), close: UInt8 = UInt8(ascii: "}"))
        -> (inner: String, error: String?) {
        let bytes = Array(text.utf8)
        precondition(bytes.first == open, "extractBraced: no '{' at start of text")
        var inner: ArraySlice<UInt8>
        var err: String?
        let len = balancedLength(bytes[...], open: open, close: close)
        let closeText = String(decoding: [close], as: UTF8.self)
        if len == 0 {
            err = "missing '\(closeText)' in \"\(text)\""
            inner = bytes[1...]
        } else {
            if len != bytes.count {
                err = "syntax error after '\(closeText)' in \"\(text)\""
            }
            inner = bytes[1..<(len - 1)]
        }
        if strip {
            while let f = inner.first, isBlank(f) { inner.removeFirst() }
            while let l = inner.last, isBlank(l) { inner.removeLast() }
        }
        return (String(decoding: inner, as: UTF8.self), err)
    }

    @inline(__always)
    public static func isBlank(_ b: UInt8) -> Bool {
        b == 0x20 || (b >= 0x09 && b <= 0x0D)
    }
}

extension String {
    /// The string without leading and trailing ASCII white space.
    public var trimmingBlanks: String {
        let bytes = Array(utf8)
        var s = 0, e = bytes.count
        while s < e && Tokens.isBlank(bytes[s]) { s += 1 }
        while e > s && Tokens.isBlank(bytes[e - 1]) { e -= 1 }
        if s == 0 && e == bytes.count { return self }
        return String(decoding: bytes[s..<e], as: UTF8.self)
    }
}
