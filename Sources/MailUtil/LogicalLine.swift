// LogicalLine: lines of Postfix-style text files (main.cf, master.cf, lookup table sources).
// Mirrors Postfix util/readlline.c (readllines): a logical line starts in column 1; lines
// that start with white space continue it; empty, all-white-space and '#' comment lines
// are skipped, also inside a continued line. Text after a NUL byte is ignored, as C
// strings end there.

/// One logical line and the number of its first physical line.
public struct LogicalLine: Sendable, Equatable {
    public init(text: [UInt8], firstLine: Int) {
        self.text = text
        self.firstLine = firstLine
    }

    public var text: [UInt8]
    public var firstLine: Int

    public var string: String { String(decoding: text, as: UTF8.self) }

    /// Splits file content into logical lines. `path` is used in warnings about a
    /// continuation line with nothing to continue.
    public static func read(_ content: [UInt8], path: String) -> [LogicalLine] {
        var out: [LogicalLine] = []
        var cur: [UInt8] = []
        var first = 0
        var lineno = 0
        var i = 0
        let n = content.count

        func flush() {
            if cur.isEmpty { return }
            if Tokens.isBlank(cur[0]) {
                let shown = String(decoding: cur.prefix(30), as: UTF8.self)
                Msg.warn("\(path): logical line must not start with whitespace: \"\(shown)\(cur.count > 30 ? "..." : "")\"")
            } else {
                // A C string ends at the first NUL.
                if let z = cur.firstIndex(of: 0) { cur.removeSubrange(z...) }
                out.append(LogicalLine(text: cur, firstLine: first))
            }
            cur.removeAll(keepingCapacity: true)
        }

        while i < n {
            var e = i
            while e < n && content[e] != 0x0A { e += 1 }
            let line = content[i..<e]
            lineno += 1
            i = e < n ? e + 1 : n
            var k = line.startIndex
            while k < line.endIndex && Tokens.isBlank(line[k]) { k += 1 }
            let skip = k == line.endIndex || line[k] == UInt8(ascii: "#")
            if skip { continue }
            let continues = Tokens.isBlank(line[line.startIndex])
            if !continues { flush() }
            if cur.isEmpty { first = lineno }
            cur.append(contentsOf: line)
        }
        flush()
        return out
    }

}
