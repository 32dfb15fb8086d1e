// CaseFold: Unicode full case folding, as Postfix's casefold() does for UTF-8 text when
// smtputf8_enable is on (ICU u_strFoldCase): "ÉCOLE" → "école", "Straße" → "strasse".
// ASCII text only lowercases; the table for the rest is generated (tools/gen-casefold.py).
public enum CaseFold {
    /// The folded text.
    public static func fold(_ text: String) -> String {
        var text = text
        // Fast path: ASCII text (scanned once over contiguous bytes).
        let kind: Int = text.withUTF8 { b in
            var upper = false
            for c in b {
                if c >= 0x80 { return 2 }
                if c >= 0x41 && c <= 0x5A { upper = true }
            }
            return upper ? 1 : 0
        }
        if kind == 0 { return text }
        if kind == 1 { return lowercaseASCII(text) }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for u in text.unicodeScalars {
            if u.value < 0x80 {
                out.unicodeScalars.append(u.value >= 0x41 && u.value <= 0x5A ? Unicode.Scalar(u.value | 0x20)! : u)
            } else if let i = index(of: u.value) {
                out += targets[i]
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// ASCII-only lowercasing (Postfix's lowercase()).
    public static func lowercaseASCII(_ text: String) -> String {
        var text = text
        return text.withUTF8 { b in
            guard b.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) else { return nil }
            return String(unsafeUninitializedCapacity: b.count) { out in
                for (i, c) in b.enumerated() { out[i] = c >= 0x41 && c <= 0x5A ? c | 0x20 : c }
                return b.count
            }
        } ?? text
    }

    static func index(of cp: UInt32) -> Int? {
        var lo = 0, hi = sources.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if sources[mid] == cp { return mid }
            if sources[mid] < cp { lo = mid + 1 } else { hi = mid - 1 }
        }
        return nil
    }
}
