// Tok822: RFC 822/5322 address tokenizing and parsing into address trees.
// Mirrors Postfix global/tok822_parse.c, tok822_tree.c and tok822_find.c: tokens are atoms,
// quoted strings, comments, domain literals and single-character operators (the RFC 822
// specials plus '%', '!' and '|'); the parser works right to left, grouping the tokens of
// each address under an address node, moving comments aside, and inserting missing commas.
// Nothing it does not understand is thrown away, so a tree always converts back to text.

/// A token or a tree node.
public final class Tok822 {
    /// Token types: single-character operators use their byte value.
    public enum Kind {
        public static let atom = 256
        public static let quotedString = 257
        public static let comment = 258
        public static let domainLiteral = 259
        public static let address = 260
        public static let startGroup = 261
        static let minToken = 256
    }

    public var type: Int
    public var text: [UInt8]
    public var next: Tok822?
    public weak var prev: Tok822?
    /// First and last child of a tree node.
    public var head: Tok822?
    public weak var tail: Tok822?
    public weak var owner: Tok822?

    public init(_ type: Int, _ text: [UInt8] = []) {
        self.type = type
        self.text = text
    }

    public var string: String { String(decoding: text, as: UTF8.self) }

    // MARK: List surgery (tok822_tree.c)

    /// Inserts the list starting at `t2` after `self`; returns the last token of that list.
    @discardableResult
    func append(_ t2: Tok822) -> Tok822 {
        let nxt = next
        next = t2
        t2.prev = self
        var last = t2
        last.owner = owner
        while let n = last.next {
            last = n
            last.owner = owner
        }
        last.next = nxt
        nxt?.prev = last
        return last
    }

    /// Inserts the list starting at `t2` before `self`; returns `t2`.
    @discardableResult
    func prepend(_ t2: Tok822) -> Tok822 {
        let prv = prev
        prv?.next = t2
        t2.prev = prv
        var last = t2
        last.owner = owner
        while let n = last.next {
            last = n
            last.owner = owner
        }
        last.next = self
        prev = last
        return t2
    }

    /// Splits the list before `self`; returns the token that was before it.
    @discardableResult
    func cutBefore() -> Tok822? {
        let prv = prev
        if let p = prv {
            p.next = nil
            prev = nil
        }
        return prv
    }

    /// Removes `self` from its list; returns the token that was before it.
    @discardableResult
    func unlink() -> Tok822? {
        let prv = prev, nxt = next
        prv?.next = nxt
        nxt?.prev = prv
        prev = nil
        next = nil
        return prv
    }

    /// Appends a list as children of this node.
    @discardableResult
    func subAppend(_ t2: Tok822) -> Tok822 {
        if let t = tail {
            let last = t.append(t2)
            tail = last
            return last
        }
        head = t2
        var last = t2
        last.owner = self
        while let n = last.next {
            last = n
            last.owner = self
        }
        tail = last
        return last
    }

    /// The address nodes at the top level of a parsed list (tok822_grep).
    public static func addresses(_ list: Tok822?) -> [Tok822] {
        tokens(list).filter { $0.type == Kind.address }
    }

    /// The tokens of a list, following `next`.
    public static func tokens(_ list: Tok822?) -> [Tok822] {
        var out: [Tok822] = []
        var tp = list
        while let t = tp {
            out.append(t)
            tp = t.next
        }
        return out
    }
}

public enum Address822 {
    /// Single-character operators: RFC 822 specials, and %, ! and | as Postfix adds.
    static let opchars: Set<UInt8> = Set("|%!()<>@,;:\\\".[]".utf8)

    @inline(__always) static func isSpaceTabCRLF(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A
    }

    /// Tokenizes without building address trees (tok822_scan). `limit` > 0 bounds the
    /// number of tokens, as header_address_token_limit does.
    public static func scan(_ text: String, limit: Int = 0) -> [Tok822] {
        let s = Array(text.utf8)
        var out: [Tok822] = []
        var i = 0
        let n = s.count
        // COLLECT: unescape backslashes, turn white space into plain spaces.
        func collect(_ tp: Tok822, _ cond: (UInt8) -> Bool) {
            while i < n {
                var c = s[i]
                if c == UInt8(ascii: "\\") {
                    i += 1
                    if i >= n { break }
                    c = s[i]
                } else if !cond(c) {
                    break
                }
                tp.text.append(isSpaceTabCRLF(c) ? 0x20 : c)
                i += 1
            }
        }
        while i < n {
            let c = s[i]
            i += 1
            if isSpaceTabCRLF(c) { continue }
            let tp: Tok822
            if c == UInt8(ascii: "(") {
                tp = Tok822(Tok822.Kind.comment, [c])
                var level = 1
                while i < n {
                    let d = s[i]
                    tp.text.append(d)
                    i += 1
                    if d == UInt8(ascii: "(") {
                        level += 1
                    } else if d == UInt8(ascii: ")") {
                        level -= 1
                        if level == 0 { break }
                    } else if d == UInt8(ascii: "\\") {
                        if i >= n { break }
                        tp.text.append(s[i])
                        i += 1
                    }
                }
            } else if c == UInt8(ascii: "[") {
                tp = Tok822(Tok822.Kind.domainLiteral)
                collect(tp) { $0 != UInt8(ascii: "]") }
                if i < n { i += 1 }
            } else if c == UInt8(ascii: "\"") {
                tp = Tok822(Tok822.Kind.quotedString)
                collect(tp) { $0 != UInt8(ascii: "\"") }
                if i < n { i += 1 }
            } else if c != UInt8(ascii: "\\") && opchars.contains(c) {
                tp = Tok822(Int(c))
            } else {
                tp = Tok822(Tok822.Kind.atom)
                i -= 1
                collect(tp) { !isSpaceTabCRLF($0) && !opchars.contains($0) }
                // An atom with specials (from backslash escapes) must be quoted later.
                if tp.text.contains(where: { $0 == 0x20 || $0 < 0x20 || $0 == 0x7F || opchars.contains($0) }) {
                    tp.type = Tok822.Kind.quotedString
                }
            }
            out.append(tp)
            if limit > 0 && out.count >= limit { break }
        }
        return out
    }

    /// Parses an address list into a token tree (tok822_parse); nil for empty input.
    public static func parse(_ text: String, limit: Int = 0) -> Tok822? {
        let toks = scan(text, limit: limit)
        guard let first = toks.first else { return nil }
        for k in 1..<toks.count {
            toks[k - 1].next = toks[k]
            toks[k].prev = toks[k - 1]
        }
        let head = Tok822(0), tail = Tok822(0)
        head.next = first
        first.prev = head
        toks.last!.next = tail
        tail.prev = toks.last!

        let doWord = 1, doGroup = 2
        var state = doWord
        var right = tail
        var tp = tail.prev!
        while tp.type != 0 {
            if tp.type == Tok822.Kind.comment {
                let prv = tp.unlink()!
                right = right.prepend(tp)
                tp = prv
                continue
            } else if tp.type == Int(UInt8(ascii: ";")) {
                right = group(tp, right, addComma: true)
                state = doGroup | doWord
            } else if tp.type == Int(UInt8(ascii: ":")) && state & doGroup != 0 {
                tp.type = Tok822.Kind.startGroup
                group(tp, right, addComma: false)
                while tp.type != 0 && tp.type != Int(UInt8(ascii: ",")) { tp = tp.prev! }
                right = tp
                continue
            } else if tp.type == Int(UInt8(ascii: ">")) {
                right = group(tp, right, addComma: true)
                while tp.type != 0 && tp.type != Int(UInt8(ascii: "<")) {
                    if tp.type == Tok822.Kind.comment {
                        let prv = tp.unlink()!
                        right = right.prepend(tp)
                        tp = prv
                        continue
                    }
                    tp = tp.prev!
                }
                group(tp, right, addComma: false)
                while tp.type != 0 && (tp.type > 0xFF || !">;,:".utf8.contains(UInt8(tp.type))) {
                    tp = tp.prev!
                }
                right = tp
                state |= doWord
                continue
            } else if tp.type == Tok822.Kind.atom || tp.type == Tok822.Kind.quotedString
                        || tp.type == Tok822.Kind.domainLiteral {
                if state & doWord == 0 {
                    right = group(tp, right, addComma: true).next!
                }
                state &= ~doWord
            } else if tp.type == Int(UInt8(ascii: ",")) {
                right = group(tp, right, addComma: false)
                state |= doWord
            } else {
                state |= doWord
            }
            tp = tp.prev!
        }
        group(tp, right, addComma: false)

        let result = head.next !== tail ? head.next : nil
        head.next?.cutBefore()
        tail.cutBefore()
        return result
    }

    /// Clusters the tokens strictly between `left` and `right` under a new address node,
    /// optionally inserting a comma after `left` (tok822_group). Returns `left`.
    @discardableResult
    static func group(_ left: Tok822, _ right: Tok822, addComma: Bool) -> Tok822 {
        if left !== right, let first = left.next, first !== right {
            right.cutBefore()
            first.cutBefore()
            let node = Tok822(Tok822.Kind.address)
            node.subAppend(first)
            left.append(node)
            node.append(right)
            if addComma { left.append(Tok822(Int(UInt8(ascii: ",")))) }
        }
        return left
    }

    /// Whether a space goes after this token when converting to text.
    static func appendSpace(_ tp: Tok822) -> Bool {
        guard let nxt = tp.next, tp.owner == nil else { return false }
        if tp.type == Int(UInt8(ascii: ",")) || tp.type == Tok822.Kind.startGroup
            || nxt.type == Int(UInt8(ascii: "<")) { return true }
        func nonOperator(_ t: Tok822) -> Bool {
            t.type == Tok822.Kind.atom || t.type == Tok822.Kind.quotedString || t.type == Tok822.Kind.comment
                || t.type == Tok822.Kind.domainLiteral || t.type == Tok822.Kind.address
        }
        return nonOperator(tp) && nonOperator(nxt)
    }

    /// Internal (unquoted) text of a token list (tok822_internalize).
    public static func internalize(_ list: Tok822?, lineBreaks: Bool = false) -> String {
        var out: [UInt8] = []
        internalize(list, into: &out, lineBreaks: lineBreaks)
        return String(decoding: out, as: UTF8.self)
    }

    static func internalize(_ list: Tok822?, into out: inout [UInt8], lineBreaks: Bool) {
        var tp = list
        while let t = tp {
            tp = t.next
            switch t.type {
            case Int(UInt8(ascii: ",")):
                out.append(UInt8(ascii: ","))
                if lineBreaks {
                    out.append(0x0A)
                    continue
                }
            case Tok822.Kind.address:
                internalize(t.head, into: &out, lineBreaks: false)
            case Tok822.Kind.comment, Tok822.Kind.atom, Tok822.Kind.quotedString:
                out += t.text
            case Tok822.Kind.domainLiteral:
                out.append(UInt8(ascii: "[")); out += t.text; out.append(UInt8(ascii: "]"))
            case Tok822.Kind.startGroup:
                out.append(UInt8(ascii: ":"))
            default:
                out.append(UInt8(truncatingIfNeeded: t.type))
            }
            if appendSpace(t) { out.append(0x20) }
        }
    }

    /// External (quoted) text of a token list (tok822_externalize).
    public static func externalize(_ list: Tok822?, lineBreaks: Bool = false) -> String {
        var out: [UInt8] = []
        var tp = list
        func copyQuoted(_ s: [UInt8], _ set: Set<UInt8>) {
            for c in s {
                if set.contains(c) { out.append(UInt8(ascii: "\\")) }
                out.append(c)
            }
        }
        while let t = tp {
            tp = t.next
            switch t.type {
            case Int(UInt8(ascii: ",")):
                out.append(UInt8(ascii: ","))
                if lineBreaks {
                    out.append(0x0A)
                    continue
                }
            case Tok822.Kind.address:
                out += Array(Quote822.quote822(internalize(t.head)).utf8)
            case Tok822.Kind.atom, Tok822.Kind.comment:
                out += t.text
            case Tok822.Kind.quotedString:
                out.append(UInt8(ascii: "\""))
                copyQuoted(t.text, Set("\"\\\r\n".utf8))
                out.append(UInt8(ascii: "\""))
            case Tok822.Kind.domainLiteral:
                out.append(UInt8(ascii: "["))
                copyQuoted(t.text, Set("\\\r\n".utf8))
                out.append(UInt8(ascii: "]"))
            case Tok822.Kind.startGroup:
                out.append(UInt8(ascii: ":"))
            default:
                out.append(UInt8(truncatingIfNeeded: t.type))
            }
            if appendSpace(t) { out.append(0x20) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The addresses of a header value, each in internal form: for "Name <a@b>" the text
    /// inside the brackets, for a bare "a@b (comment)" the address without the comment.
    public static func internalAddresses(_ text: String, limit: Int = 0) -> [String] {
        Tok822.addresses(parse(text, limit: limit)).map { internalize($0.head) }
    }
}

extension Tok822 {
    /// Replaces the children of an address node with the tokens of `text` (an external
    /// address), as cleanup does after rewriting an address in a header.
    public func replaceChildren(with text: String) {
        head = nil
        tail = nil
        let toks = Address822.scan(text)
        guard let first = toks.first else { return }
        for k in 1..<toks.count {
            toks[k - 1].next = toks[k]
            toks[k].prev = toks[k - 1]
        }
        subAppend(first)
    }
}
