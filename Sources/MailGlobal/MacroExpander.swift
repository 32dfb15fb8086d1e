// MacroExpander: $name expansion in configuration values.
// Mirrors Postfix util/mac_parse.c and util/mac_expand.c (3.7): $name, ${name}, $(name),
// $$, ${name?text}, ${name:text}, ${name?{a}:{b}}, and relational expressions
// ${{a} == {b} ? {x} : {y}} with ==, !=, <, <=, >=, > and the "level" suffix that compares
// compatibility levels (global/compat_level.c). Warnings use Postfix's wording; the caller
// decides whether an error is fatal.
import MailUtil

/// Result bits of an expansion, as Postfix's MAC_PARSE_*.
public struct MacroStatus: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// A syntax error, or nesting beyond 100 levels (a loop).
    public static let error = MacroStatus(rawValue: 1)
    /// A name was used whose value is undefined.
    public static let undefined = MacroStatus(rawValue: 2)
}

/// How a name is looked up: to use its value, or only to test it (`${name?...}`).
public enum MacroLookupMode: Sendable {
    case use, test
}

/// Expands macros. `lookup` returns nil for an undefined name.
public struct MacroExpander {
    public var recurse: Bool
    /// Scan only: visit every name (including both branches of conditionals), produce no text.
    public var scan: Bool
    /// Characters allowed in substituted values; others become "_" (nil = no filter).
    public var filter: Set<UInt8>?
    public var lookup: (String, MacroLookupMode) -> String?
    /// Receives warnings (syntax errors, nesting); defaults to Msg.warn.
    public var warn: (String) -> Void

    public init(recurse: Bool = true, scan: Bool = false, filter: Set<UInt8>? = nil,
                warn: @escaping (String) -> Void = { Msg.warn($0) },
                lookup: @escaping (String, MacroLookupMode) -> String?) {
        self.recurse = recurse
        self.scan = scan
        self.filter = filter
        self.lookup = lookup
        self.warn = warn
    }

    /// Expands `pattern`; returns the text and the status bits.
    public func expand(_ pattern: String) -> (String, MacroStatus) {
        var ctx = Context(expander: self)
        let st = ctx.parse(Array(pattern.utf8))
        return (String(decoding: ctx.result, as: UTF8.self), st)
    }

    /// Every name the pattern refers to, including names inside both branches of
    /// conditionals and relational operands (MAC_EXP_FLAG_SCAN).
    public static func names(in pattern: String, warn: @escaping (String) -> Void = { Msg.warn($0) }) -> [String] {
        var found: [String] = []
        var ex = MacroExpander(recurse: false, scan: true, warn: warn) { name, _ in
            found.append(name)
            return nil
        }
        ex.scan = true
        _ = ex.expand(pattern)
        return found
    }

    private struct Context {
        let expander: MacroExpander
        var result: [UInt8] = []
        var status: MacroStatus = []
        var level = 0

        init(expander: MacroExpander) { self.expander = expander }

        // mac_parse: split into literal text and macro references.
        mutating func parse(_ value: [UInt8]) -> MacroStatus {
            var buf: [UInt8] = []
            var st: MacroStatus = []
            var i = 0
            let n = value.count
            while i < n {
                let c = value[i]
                if c != UInt8(ascii: "$") {
                    buf.append(c)
                    i += 1
                } else if i + 1 < n && value[i + 1] == UInt8(ascii: "$") {
                    buf.append(c)
                    i += 2
                } else {
                    if !buf.isEmpty {
                        st.formUnion(callback(isExpr: false, buf))
                        buf.removeAll(keepingCapacity: true)
                    }
                    i += 1
                    if i < n && (value[i] == UInt8(ascii: "(") || value[i] == UInt8(ascii: "{")) {
                        let open = value[i]
                        let close: UInt8 = open == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "}")
                        var depth = 1
                        i += 1
                        var e = i
                        var truncated = false
                        while depth > 0 {
                            if e >= n {
                                expander.warn("truncated macro reference: \"\(String(decoding: value, as: UTF8.self))\"")
                                st.insert(.error)
                                truncated = true
                                break
                            }
                            if value[e] == open { depth += 1 }
                            if value[e] == close { depth -= 1 }
                            e += 1
                        }
                        if truncated { break }
                        buf.append(contentsOf: value[i..<(e - 1)])
                        i = e
                    } else {
                        var e = i
                        while e < n && (isAlnum(value[e]) || value[e] == UInt8(ascii: "_")) { e += 1 }
                        buf.append(contentsOf: value[i..<e])
                        i = e
                    }
                    if buf.isEmpty {
                        st.insert(.error)
                        expander.warn("empty macro name: \"\(String(decoding: value, as: UTF8.self))\"")
                        break
                    }
                    st.formUnion(callback(isExpr: true, buf))
                    buf.removeAll(keepingCapacity: true)
                }
            }
            if !buf.isEmpty && !st.contains(.error) {
                st.formUnion(callback(isExpr: false, buf))
            }
            return st
        }

        @discardableResult
        mutating func fail(_ text: String) -> MacroStatus {
            expander.warn(text)
            status.insert(.error)
            return status
        }

        // mac_expand_callback
        mutating func callback(isExpr: Bool, _ buf: [UInt8]) -> MacroStatus {
            level += 1
            if level > 101 {
                fail("unreasonable macro call nesting: \"\(str(buf))\"")
            }
            if status.contains(.error) { return status }
            defer { level -= 1 }

            if !isExpr {
                if !expander.scan { result.append(contentsOf: buf) }
                return status
            }
            var cp = 0
            var ch: UInt8 = 0
            var lookupValue: [UInt8]?
            var skip = 0
            if findLeftCurly(buf, &cp) {
                let (ok, v) = parseRelational(buf, &cp)
                if !ok { return status }
                lookupValue = v
                if cp < buf.count {
                    ch = buf[cp]
                    if ch != UInt8(ascii: "?") && ch != UInt8(ascii: ":") {
                        return fail("\"?\" or \":\" expected at: \"...}>>>\(prefix20(buf[cp...]))\"")
                    }
                    cp += 1
                }
            } else {
                while cp < buf.count && isWhite(buf[cp]) { cp += 1 }
                let start = cp
                var nameEnd = cp
                var mode = MacroLookupMode.use
                while true {
                    skip = 0
                    while cp + skip < buf.count && isWhite(buf[cp + skip]) { skip += 1 }
                    if cp + skip >= buf.count {
                        nameEnd = cp
                        cp = buf.count
                        ch = 0
                        break
                    }
                    let c = buf[cp + skip]
                    if c == UInt8(ascii: "?") || c == UInt8(ascii: ":") {
                        nameEnd = cp
                        ch = c
                        cp += skip + 1
                        mode = .test
                        break
                    }
                    let d = buf[cp]
                    if !isAlnum(d) && d != UInt8(ascii: "_") {
                        return fail("attribute name syntax error at: \"...\(str(buf[0..<cp]))>>>\(prefix20(buf[cp...]))\"")
                    }
                    cp += 1
                }
                let name = str(buf[start..<nameEnd])
                lookupValue = expander.lookup(name, mode).map { Array($0.utf8) }
            }

            let truthy = lookupValue.map { !$0.isEmpty } ?? false
            var pendingColon = false
            if ch == UInt8(ascii: "?") {
                let iftrue: [UInt8]
                if findLeftCurly(buf, &cp) {
                    guard let p = extractCurly(buf, &cp) else { return status }
                    iftrue = p
                } else {
                    iftrue = Array(buf[cp...])
                    cp = buf.count
                }
                if truthy || expander.scan {
                    status.formUnion(parse(iftrue))
                }
                if cp < buf.count {
                    if buf[cp] != UInt8(ascii: ":") {
                        return fail("\":\" expected at: \"...\(str(iftrue))}>>>\(prefix20(buf[cp...]))\"")
                    }
                    cp += 1
                    pendingColon = true
                }
            }
            if ch == UInt8(ascii: ":") || pendingColon {
                let iffalse: [UInt8]
                if findLeftCurly(buf, &cp) {
                    guard let p = extractCurly(buf, &cp) else { return status }
                    iffalse = p
                } else {
                    iffalse = Array(buf[cp...])
                    cp = buf.count
                }
                if !truthy || expander.scan {
                    status.formUnion(parse(iffalse))
                }
                if cp < buf.count {
                    return fail("unexpected input at: \"...\(str(iffalse))}>>>\(prefix20(buf[cp...]))\"")
                }
            } else if ch == 0 {
                if lookupValue == nil {
                    status.insert(.undefined)
                } else if lookupValue!.isEmpty || expander.scan {
                    // nothing
                } else if expander.recurse {
                    status.formUnion(parse(lookupValue!))
                } else if let filter = expander.filter {
                    result.append(contentsOf: lookupValue!.map { filter.contains($0) ? $0 : UInt8(ascii: "_") })
                } else {
                    result.append(contentsOf: lookupValue!)
                }
            }
            return status
        }

        // MAC_EXP_FIND_LEFT_CURLY
        func findLeftCurly(_ buf: [UInt8], _ cp: inout Int) -> Bool {
            var k = cp
            while k < buf.count && isWhite(buf[k]) { k += 1 }
            if k < buf.count && buf[k] == UInt8(ascii: "{") {
                cp = k
                return true
            }
            return false
        }

        // mac_exp_extract_curly_payload; cp is at "{".
        mutating func extractCurly(_ buf: [UInt8], _ cp: inout Int) -> [UInt8]? {
            var depth = 1
            var k = cp + 1
            let start = k
            while true {
                if k >= buf.count {
                    fail("unbalanced {} in attribute expression: \"\(str(buf[cp...]))\"")
                    return nil
                }
                let c = buf[k]
                if c == UInt8(ascii: "{") {
                    depth += 1
                } else if c == UInt8(ascii: "}") {
                    depth -= 1
                    if depth <= 0 { break }
                }
                k += 1
            }
            let payload = Array(buf[start..<k])
            k += 1
            while k < buf.count && isWhite(buf[k]) { k += 1 }
            cp = k
            return payload
        }

        // mac_exp_parse_relational; the value is "true" or "" (nil when only scanning).
        mutating func parseRelational(_ buf: [UInt8], _ cp: inout Int) -> (ok: Bool, value: [UInt8]?) {
            guard let left = extractCurly(buf, &cp) else { return (false, nil) }
            let opChars = Set("<>!=?+-*/~&|%".utf8)
            let opPos = cp
            var opLen = 0
            while cp + opLen < buf.count && opChars.contains(buf[cp + opLen]) { opLen += 1 }
            let opText = str(buf[cp..<(cp + opLen)])
            guard let op = RelOp(rawValue: opText) else {
                fail("\"==\" or \"!=\"\" or \"<\"\" or \"<=\"\" or \">=\"\" or \">\" expected at: \"...\(str(left))}>>>\(prefix20(buf[cp...]))\"")
                return (false, nil)
            }
            cp += opLen
            var compareLevels = false
            if cp < buf.count && isAlnum(buf[cp]) {
                let typePos = cp
                var typeLen = 1
                while cp + typeLen < buf.count && isAlnum(buf[cp + typeLen]) { typeLen += 1 }
                cp += typeLen
                if str(buf[typePos..<(typePos + typeLen)]) != "level" {
                    fail("bad operator suffix at: \"...\(opText)>>>\(str(buf[typePos..<(typePos + typeLen)]))\"")
                    return (false, nil)
                }
                compareLevels = true
            }
            if !findLeftCurly(buf, &cp) {
                fail("\"{expression}\" expected at: \"...{\(str(left))} \(str(buf[opPos..<(opPos + opLen)]))>>>\(prefix20(buf[cp...]))\"")
                return (false, nil)
            }
            guard let right = extractCurly(buf, &cp) else { return (false, nil) }
            // Operands are expanded on their own, but count toward the nesting limit (Postfix
            // restarts the count there and overflows its stack on a self-reference).
            var sub = Context(expander: expander)
            sub.level = level
            status.formUnion(sub.parse(left))
            let lval = sub.result
            var sub2 = Context(expander: expander)
            sub2.level = level
            status.formUnion(sub2.parse(right))
            let rval = sub2.result
            if expander.scan {
                return (!status.contains(.error), nil)
            }
            let outcome: Bool?
            if compareLevels {
                let warn = expander.warn
                if let a = CompatLevel.parse(str(lval), warn: warn),
                   let b = CompatLevel.parse(str(rval), warn: warn) {
                    outcome = op.holds(a.encoded - b.encoded)
                } else {
                    outcome = nil
                }
            } else if allDigits(lval) && allDigits(rval),
                      let a = Int(str(lval)), let b = Int(str(rval)) {
                outcome = op.holds(a - b)
            } else {
                outcome = op.holds(compareBytes(lval, rval))
            }
            guard let outcome else {
                status.insert(.error)
                return (false, nil)
            }
            if status.contains(.error) { return (false, nil) }
            return (true, outcome ? Array("true".utf8) : [])
        }
    }

    enum RelOp: String {
        case eq = "==", ne = "!=", lt = "<", le = "<=", ge = ">=", gt = ">"
        func holds(_ delta: Int) -> Bool {
            switch self {
            case .eq: return delta == 0
            case .ne: return delta != 0
            case .lt: return delta < 0
            case .le: return delta <= 0
            case .ge: return delta >= 0
            case .gt: return delta > 0
            }
        }
    }
}

@inline(__always) private func isWhite(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A
}

private func allDigits(_ b: [UInt8]) -> Bool {
    !b.isEmpty && b.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
}

/// strcmp(3) sign as an Int.
private func compareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
    for (x, y) in zip(a, b) where x != y { return Int(x) - Int(y) }
    return a.count - b.count
}

private func str<S: Sequence>(_ b: S) -> String where S.Element == UInt8 {
    String(decoding: Array(b), as: UTF8.self)
}

private func prefix20(_ b: ArraySlice<UInt8>) -> String {
    str(b.prefix(20))
}
