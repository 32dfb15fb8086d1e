// Token: the SMTP command tokenizer and the extraction of an envelope address from its
// token. Trusts nothing: quotes and brackets may be unbalanced, bytes may be anything.
// Mirrors Postfix smtpd/smtpd_token.c and extract_addr() in smtpd/smtpd.c (RFC 5321
// section 4.1.2 with RFC 822 leniency where common practice needs it).
import MailUtil
import MailGlobal

/// One word of a command line.
struct SMTPToken {
    /// The text as sent, quotes and brackets included.
    var text: String
    /// A quote or angle bracket was not closed.
    var malformed: Bool
}

enum SMTPTokenizer {
    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }

    /// Splits a command line at white space, keeping quoted strings and <...> together;
    /// "FROM:" and "TO:" end a word of their own.
    static func split(_ line: [UInt8]) -> [SMTPToken] {
        var out: [SMTPToken] = []
        var i = 0
        // A NUL ends the line, as it ends a C string.
        let b = Array(line.prefix(while: { $0 != 0 }))
        while true {
            var word: [UInt8] = []
            var malformed = false
            tokenLoop: while i < b.count {
                let c = b[i]
                i += 1
                if isSpace(c) {
                    while i < b.count && isSpace(b[i]) { i += 1 }
                    if !word.isEmpty { break tokenLoop }
                } else if c == UInt8(ascii: "<") || c == UInt8(ascii: "\"") {
                    malformed = !quoted(b, &i, &word, start: c, end: c == UInt8(ascii: "<") ? UInt8(ascii: ">") : c)
                } else if c == UInt8(ascii: ":") {
                    word.append(c)
                    let w = String(decoding: word, as: UTF8.self).lowercased()
                    if w == "to:" || w == "from:" { break tokenLoop }
                } else {
                    if c == UInt8(ascii: "\\") {
                        word.append(c)
                        if i >= b.count { break tokenLoop }
                        word.append(b[i])
                        i += 1
                        continue
                    }
                    word.append(c)
                }
            }
            if word.isEmpty { return out }
            out.append(SMTPToken(text: String(decoding: word, as: UTF8.self), malformed: malformed))
        }
    }

    /// Copies a quoted or bracketed run up to its closing character (quotes nest inside
    /// brackets); false when the line ends first.
    static func quoted(_ b: [UInt8], _ i: inout Int, _ word: inout [UInt8], start: UInt8, end: UInt8) -> Bool {
        var stack: [UInt8] = [end]
        word.append(start)
        while i < b.count {
            let c = b[i]
            i += 1
            word.append(c)
            if c == UInt8(ascii: "\\") {
                if i >= b.count { return false }
                word.append(b[i])
                i += 1
            } else if c == stack.last! {
                if stack.count == 1 { return true }
                stack.removeLast()
            } else if c == UInt8(ascii: "\"") {
                stack.append(c)
            } else if c == UInt8(ascii: "<") && stack.last == UInt8(ascii: ">") {
                stack.append(UInt8(ascii: ">"))
            }
        }
        return false
    }
}

extension Session {
    /// The internal form of the address in `token` (extract_addr), with Postfix's warning
    /// for what it refuses; nil when the address is unacceptable.
    func extractAddress(_ token: SMTPToken, allowEmpty: Bool, strict: Bool, smtputf8: Bool) -> String? {
        var text = token.text
        // Some mailers send RFC 822 forms in the envelope: the address is what is inside
        // the outermost brackets, when the brackets enclose it all.
        if text.hasPrefix("<") && text.hasSuffix(">") && text.utf8.count >= 2 {
            text = String(text.dropFirst().dropLast())
        }
        var err = false
        let tree = Address822.parse(text)
        var address: Tok822?
        var naddr = 0
        var nonAddress = 0
        for t in Tok822.tokens(tree) {
            if t.type == Tok822.Kind.address {
                address = t
                naddr += 1
            } else if t.type != Int(UInt8(ascii: "<")) && t.type != Int(UInt8(ascii: ">")) {
                nonAddress += 1
            }
        }
        func illegal() {
            Msg.warn("Illegal address syntax from \(namaddr) in \(whereText) command: \(Msg.printable(token.text))")
        }
        if naddr > 1 || (strict && (nonAddress > 0 || !token.text.hasPrefix("<"))) {
            illegal()
            err = true
        }
        let internalForm = address.map { Address822.internalize($0.head) } ?? ""
        if !err {
            if (internalForm.isEmpty && !allowEmpty) || (strict && internalForm.hasPrefix("@"))
                || !addressResolves(internalForm, smtputf8: smtputf8) {
                illegal()
                err = true
            }
        }
        if err { return nil }
        // A source route (@a,@b:user@domain) is ignored, as RFC 5321 allows.
        if internalForm.hasPrefix("@"), let colon = internalForm.firstIndex(of: ":") {
            return String(internalForm[internalForm.index(after: colon)...])
        }
        return internalForm
    }

    /// smtpd_check_addr: the resolver must not call the address malformed, and without
    /// SMTPUTF8 its domain must be ASCII. Not in stand-alone mode (sendmail -bs), whose user
    /// cannot reach trivial-rewrite; cleanup rewrites the address later.
    func addressResolves(_ address: String, smtputf8: Bool) -> Bool {
        if address.isEmpty || s.standalone { return true }
        let r = s.rewriter.resolve(address, sender: whereText == "MAIL" ? (recipient ?? "") : (sender ?? ""))
        if r.flags.contains(.error) { return false }
        if !smtputf8, let at = r.recipient.lastIndex(of: "@") {
            let domain = r.recipient[r.recipient.index(after: at)...]
            if !domain.isEmpty && !domain.utf8.allSatisfy({ $0 < 0x80 }) { return false }
        }
        return true
    }
}
