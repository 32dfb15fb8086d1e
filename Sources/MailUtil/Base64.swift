// Base64: the standard alphabet with "=" padding (RFC 4648), as Postfix util/base64_code.c.
// Decoding is strict: wrong length, bad characters or misplaced padding fail.

public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [Int8] = {
        var t = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = Int8(i) }
        return t
    }()

    public static func encode<C: Collection>(_ data: C) -> [UInt8] where C.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity((data.count + 2) / 3 * 4)
        var it = data.makeIterator()
        while let a = it.next() {
            let b = it.next()
            let c = it.next()
            out.append(alphabet[Int(a >> 2)])
            out.append(alphabet[Int((a & 0x03) << 4 | (b ?? 0) >> 4)])
            out.append(b.map { alphabet[Int(($0 & 0x0F) << 2 | (c ?? 0) >> 6)] } ?? UInt8(ascii: "="))
            out.append(c.map { alphabet[Int($0 & 0x3F)] } ?? UInt8(ascii: "="))
        }
        return out
    }

    public static func decode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        let t = Array(text)
        if t.count % 4 != 0 { return nil }
        var out = [UInt8]()
        out.reserveCapacity(t.count / 4 * 3)
        var i = 0
        while i < t.count {
            let last = i + 4 == t.count
            let pad2 = t[i + 2] == UInt8(ascii: "=")
            let pad3 = t[i + 3] == UInt8(ascii: "=")
            if (pad2 || pad3) && !last { return nil }
            if pad2 && !pad3 { return nil }
            let a = reverse[Int(t[i])], b = reverse[Int(t[i + 1])]
            if a < 0 || b < 0 { return nil }
            out.append(UInt8(a) << 2 | UInt8(b) >> 4)
            if !pad2 {
                let c = reverse[Int(t[i + 2])]
                if c < 0 { return nil }
                out.append(UInt8(b & 0x0F) << 4 | UInt8(c) >> 2)
                if !pad3 {
                    let d = reverse[Int(t[i + 3])]
                    if d < 0 { return nil }
                    out.append(UInt8(c & 0x03) << 6 | UInt8(d))
                }
            }
            i += 4
        }
        return out
    }
}
