// DictCIDR: cidr: tables: "network/prefix result" rules for IPv4 and IPv6 addresses,
// first match wins, "!" negation, "if"/"endif" blocks.
// Mirrors Postfix util/dict_cidr.c and cidr_match.c (3.7): the same pattern forms
// ("1.2.3.0/24", "[2001:db8::]/32", "[::1]"), warnings (a bad rule is skipped, with a
// suggestion when host bits are set) and semantics (rules of the other address family
// never match; a key that is no address is simply not found).
import Glibc
import MailUtil

final class DictCIDR: Dict, RuleTable {
    typealias Net = CIDRPattern

    enum Rule {
        case match(net: Net, positive: Bool, value: String)
        case ifBlock(net: Net, positive: Bool, endif: Int?, line: Int)
        case endif
    }

    var rules: [Rule] = []

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        try DictStream.openRules(DictCIDR.init, type: "cidr", name: name, mode: mode, flags: flags)
    }

    func warn(_ line: Int, _ text: String) {
        Msg.warn("cidr map \(name), line \(line): \(text)")
    }

    func load(_ content: [UInt8], path: String) {
        var stack: [Int] = []
        for (text, line) in DictStream.ruleLines(content, path: path) {
            do {
                try parse(text, stack: &stack, line: line)
            } catch {
                warn(line, "\(error.reason): skipping this rule")
            }
        }
        for i in stack.reversed() {
            if case .ifBlock(_, _, _, let line) = rules[i] { warn(line, "IF has no matching ENDIF") }
        }
    }

    func keyword(_ b: [UInt8], _ word: String) -> Bool {
        let w = Array(word.utf8)
        guard b.count >= w.count else { return false }
        for (x, y) in zip(b, w) where x | 0x20 != y { return false }
        return b.count == w.count || !MacParse.isAlnum(b[w.count])
    }

    /// Leading "!"s and white space: the negation they amount to, and where the rest starts.
    func negations(_ b: [UInt8], from: Int) -> (Bool, Int) {
        var i = from
        var positive = true
        while i < b.count && (b[i] == UInt8(ascii: "!") || Tokens.isBlank(b[i])) {
            if b[i] == UInt8(ascii: "!") { positive.toggle() }
            i += 1
        }
        return (positive, i)
    }

    func parse(_ b: [UInt8], stack: inout [Int], line: Int) throws(DictOpenError) {
        if keyword(b, "if") {
            let (positive, start) = negations(b, from: 2)
            let pattern = String(decoding: b[start...], as: UTF8.self)
            if pattern.isEmpty { throw DictOpenError("no address pattern") }
            let net = try CIDRPattern.parse(pattern)
            rules.append(.ifBlock(net: net, positive: positive, endif: nil, line: line))
            stack.append(rules.count - 1)
            return
        }
        if keyword(b, "endif") {
            if b[5...].contains(where: { !Tokens.isBlank($0) }) { throw DictOpenError("garbage after ENDIF") }
            guard let open = stack.popLast() else { throw DictOpenError("ENDIF without IF") }
            rules.append(.endif)
            if case .ifBlock(let n, let p, _, let l) = rules[open] {
                rules[open] = .ifBlock(net: n, positive: p, endif: rules.count - 1, line: l)
            }
            return
        }
        let (positive, start) = negations(b, from: 0)
        var i = start
        while i < b.count && !Tokens.isBlank(b[i]) { i += 1 }
        let pattern = String(decoding: b[start..<i], as: UTF8.self)
        while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
        let value = String(decoding: b[i...], as: UTF8.self)
        if pattern.isEmpty { throw DictOpenError("no address pattern") }
        let net = try CIDRPattern.parse(pattern)
        if value.isEmpty { throw DictOpenError("no lookup result") }
        rules.append(.match(net: net, positive: positive, value: value))
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        guard let (family, addr) = CIDRPattern.parseAddressFamily(key) else { return nil }
        var i = 0
        while i < rules.count {
            switch rules[i] {
            case .match(let net, let positive, let value):
                if net.family == family && net.contains(addr) == positive { return value }
                i += 1
            case .ifBlock(let net, let positive, let endif, _):
                if net.family == family && net.contains(addr) == positive {
                    i += 1
                } else {
                    guard let e = endif else { return nil }
                    i = e + 1
                }
            case .endif:
                i += 1
            }
        }
        return nil
    }
}
