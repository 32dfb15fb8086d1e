// UTF8Check: is this byte string well-formed UTF-8 (Postfix's valid_utf8_string)?
public enum UTF8Check {
    /// Well-formed UTF-8 without surrogates or code points above U+10FFFF.
    public static func isValid(_ bytes: [UInt8]) -> Bool {
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        var it = bytes.makeIterator()
        var decoder = Unicode.UTF8()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

}
