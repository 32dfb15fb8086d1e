// AddressTokens: one address as a flat list of RFC 822 tokens, the form trivial-rewrite
// edits (Postfix's tok822_scan_addr tree with tok822_find_type, tok822_rfind_type,
// tok822_sub_keep_before/after), and its conversion back to internal or quoted text.
import MailGlobal

struct AddressTokens {
    var tokens: [Tok822]

    init(_ externalForm: String) {
        tokens = Address822.scan(externalForm)
    }

    init(tokens: [Tok822]) { self.tokens = tokens }

    static let at = Int(UInt8(ascii: "@"))
    static let dot = Int(UInt8(ascii: "."))
    static let colon = Int(UInt8(ascii: ":"))
    static let percent = Int(UInt8(ascii: "%"))
    static let bang = Int(UInt8(ascii: "!"))

    func first(_ type: Int, from start: Int = 0) -> Int? {
        tokens[start...].firstIndex { $0.type == type }
    }

    func last(_ type: Int) -> Int? {
        tokens.lastIndex { $0.type == type }
    }

    /// Tokens that were put into the address as its parts (Postfix's tok822_sub_append
    /// and tok822_sub_prepend set their owner); tokens straight from the scanner have no
    /// owner, and only those are followed by the spaces of tok822_append_space.
    nonisolated(unsafe) static let owner = Tok822(Tok822.Kind.address)

    /// Marks tokens as parts of the address.
    static func owned(_ toks: [Tok822]) -> [Tok822] {
        for t in toks { t.owner = owner }
        return toks
    }

    /// The text without quoting: Postfix's tok822_internalize, run over the tokens
    /// linked in this order (the links are undone afterwards, so no token keeps another
    /// alive).
    static func text(_ toks: ArraySlice<Tok822>) -> String {
        var prev: Tok822?
        for t in toks {
            prev?.next = t
            prev = t
        }
        prev?.next = nil
        defer { for t in toks { t.next = nil } }
        return Address822.internalize(toks.first)
    }

    var internalForm: String { AddressTokens.text(tokens[...]) }

    /// The text quoted as an RFC 822 address (tok822_externalize of an address node).
    var externalForm: String { Quote822.quote822(internalForm) }

    /// A new operator token, part of the address.
    static func op(_ c: Character) -> Tok822 {
        let t = Tok822(Int(c.asciiValue!))
        t.owner = owner
        return t
    }

    /// Scanned text appended as parts of the address.
    static func parts(_ text: String) -> [Tok822] { owned(Address822.scan(text)) }
}
