// PatternDicts: regexp: (POSIX) and pcre: (PCRE2) tables: "/pattern/flags result" rules,
// first match wins, "if"/"endif" blocks, $1... substitution.
// Mirrors Postfix util/dict_regexp.c, dict_pcre.c and dict_stream.c (3.7): the same
// syntax, warnings (a bad rule is skipped with a warning, never the whole table) and
// semantics. Patterns are case-insensitive unless the "i" flag toggles that. A table is
// a file, or inline as "regexp:{ {rule}, {rule} }".
import Glibc
import CPCRE2
import MailUtil

/// The text of a pattern table: a file, or the inline "{ {line}, {line} }" form.
/// A table read from rules in a file or inline "{ {rule}, ... }" text.
protocol RuleTable: Dict {
    func load(_ content: [UInt8], path: String)
}

enum DictStream {
    /// Opens a rule table read-only: reads the rules, then lets the table compile them.
    static func openRules<T: RuleTable>(_ make: (String, String, DictFlags) -> T, type: String, name: String,
                                        mode: DictOpenMode, flags: DictFlags) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("\(type):\(name) map requires O_RDONLY access mode") }
        let (content, owner, path) = try read(type: type, name: name)
        let d = make(type, name, flags.union(.pattern))
        d.owner = owner
        d.load(content, path: path ?? name)
        return d
    }

    /// The non-empty logical lines of a rule file, without trailing white space, with the
    /// number of the line where each starts.
    static func ruleLines(_ content: [UInt8], path: String) -> [(text: [UInt8], line: Int)] {
        var out: [(text: [UInt8], line: Int)] = []
        for line in LogicalLine.read(content, path: path) {
            var b = line.text[...]
            while let l = b.last, Tokens.isBlank(l) { b = b.dropLast() }
            if !b.isEmpty { out.append((Array(b), line.firstLine)) }
        }
        return out
    }

    static func read(type: String, name: String) throws(DictOpenError) -> (content: [UInt8], owner: DictOwner, path: String?) {
        if name.hasPrefix("{") {
            let (inner, err) = Tokens.extractBraced(name)
            if let err { throw DictOpenError("\(type) map: \(err)") }
            var lines: [UInt8] = []
            for item in Tokens.splitQuoted(inner) {
                guard item.hasPrefix("{") else {
                    throw DictOpenError("\(type) map: no '{' at start of text in \"\(item)\"")
                }
                let (rule, err) = Tokens.extractBraced(item)
                if let err { throw DictOpenError("\(type) map: \(err)") }
                lines += Array(rule.utf8) + [0x0A]
            }
            return (lines, getuid() == 0 ? .trusted : .untrusted(uid: getuid()), nil)
        }
        let fd = Glibc.open(name, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw DictOpenError("open \(name): \(errnoText(errno))") }
        defer { Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) < 0 { Msg.fatal("fstat \(name): \(errnoText(errno))") }
        guard let content = try? SafeFile.readAll(fd: fd, path: name) else {
            Msg.fatal("\(type) map \(name): read error: \(errnoText(errno))")
        }
        return (content, st.st_uid == 0 ? .trusted : .untrusted(uid: st.st_uid), name)
    }
}

/// A compiled pattern: does it match, and where are the groups.
protocol CompiledPattern {
    var groupCount: Int { get }
    /// nil: no match; otherwise group ranges (byte offsets) for groups 1...n (nil when a
    /// group took no part). A match-time error is reported and counts as no match.
    func match(_ key: [UInt8], groups: Int) -> [Range<Int>?]?
}

/// One parsed pattern with its options, before compilation.
struct PatternSpec {
    var text: [UInt8]
    var positive: Bool
    var flags: [UInt8]
}

class PatternDict: Dict, RuleTable {
    enum Rule {
        case match(first: CompiledPattern, firstPositive: Bool, second: CompiledPattern?, secondPositive: Bool,
                   maxGroup: Int, result: Result, line: Int)
        case ifBlock(pattern: CompiledPattern, positive: Bool, endif: Int?, line: Int)
        case endif
    }

    enum Result {
        case literal(String)
        case template([MacParse.Segment])
    }

    var rules: [Rule] = []
    /// "regexp map" or "pcre map" as messages name it.
    var what: String { "\(type) map" }

    // Type-specific parts.
    var allowsSecondPattern: Bool { false }
    var missingDelimiterVerb: String { "skipping" }
    func compile(_ p: PatternSpec, line: Int, needGroups: Bool) -> CompiledPattern? { nil }
    /// Checks option letters; nil when one is unknown (after warning).
    func checkFlags(_ flags: [UInt8], line: Int) -> Bool { true }
    var zeroIndexText: String { "out-of-range replacement index" }

    func warn(_ line: Int, _ text: String) {
        Msg.warn("\(what) \(name), line \(line): \(text)")
    }

    func load(_ content: [UInt8], path: String) {
        var stack: [Int] = []
        for (text, line) in DictStream.ruleLines(content, path: path) {
            parse(text, line: line, stack: &stack)
        }
        for i in stack.reversed() {
            if case .ifBlock(_, _, _, let line) = rules[i] { warn(line, "IF has no matching ENDIF") }
        }
    }

    static func isAlnum(_ c: UInt8) -> Bool { MacParse.isAlnum(c) }

    func keyword(_ b: [UInt8], _ word: String) -> Bool {
        let w = Array(word.utf8)
        guard b.count >= w.count else { return false }
        for (x, y) in zip(b, w) where x | 0x20 != y { return false }
        return b.count == w.count || !PatternDict.isAlnum(b[w.count])
    }

    func parse(_ b: [UInt8], line: Int, stack: inout [Int]) {
        if !PatternDict.isAlnum(b[0]) {
            parseMatch(b, line: line)
        } else if keyword(b, "if") {
            var i = 2
            while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
            guard let (spec, end) = pattern(b, from: i, line: line, stopAtBang: false) else { return }
            var j = end
            while j < b.count && Tokens.isBlank(b[j]) { j += 1 }
            if j < b.count {
                warn(line, "ignoring extra text after IF statement: \"\(String(decoding: b[j...], as: UTF8.self))\"")
                warn(line, "do not prepend whitespace to statements between IF and ENDIF")
            }
            guard let compiled = compile(spec, line: line, needGroups: false) else { return }
            rules.append(.ifBlock(pattern: compiled, positive: spec.positive, endif: nil, line: line))
            stack.append(rules.count - 1)
        } else if keyword(b, "endif") {
            guard let open = stack.popLast() else {
                warn(line, "ignoring ENDIF without matching IF")
                return
            }
            if b[5...].contains(where: { !Tokens.isBlank($0) }) { warn(line, "ignoring extra text after ENDIF") }
            rules.append(.endif)
            if case .ifBlock(let p, let pos, _, let l) = rules[open] {
                rules[open] = .ifBlock(pattern: p, positive: pos, endif: rules.count - 1, line: l)
            }
        } else {
            warn(line, "ignoring unrecognized request")
        }
    }

    /// A pattern with its "!"s and flags, starting at `from`; nil after a warning.
    func pattern(_ b: [UInt8], from: Int, line: Int, stopAtBang: Bool) -> (PatternSpec, Int)? {
        var i = from
        var positive = true
        while i < b.count {
            if b[i] == UInt8(ascii: "!") {
                positive.toggle()
            } else if !Tokens.isBlank(b[i]) {
                break
            }
            i += 1
        }
        if i >= b.count {
            warn(line, "no regexp: skipping this rule")
            return nil
        }
        let delim = b[i]
        i += 1
        let start = i
        while i < b.count {
            if b[i] == UInt8(ascii: "\\") {
                if i + 1 < b.count { i += 1 } else { break }
            } else if b[i] == delim {
                break
            }
            i += 1
        }
        if i >= b.count || b[i] != delim {
            warn(line, "no closing regexp delimiter \"\(String(decoding: [delim], as: UTF8.self))\": \(missingDelimiterVerb) this rule")
            return nil
        }
        let text = Array(b[start..<i])
        i += 1
        let fstart = i
        while i < b.count && !Tokens.isBlank(b[i]) && !(stopAtBang && b[i] == UInt8(ascii: "!")) { i += 1 }
        let flags = Array(b[fstart..<i])
        if !checkFlags(flags, line: line) { return nil }
        return (PatternSpec(text: text, positive: positive, flags: flags), i)
    }

    func parseMatch(_ b: [UInt8], line: Int) {
        guard let (first, end) = pattern(b, from: 0, line: line, stopAtBang: allowsSecondPattern) else { return }
        var i = end
        var second: PatternSpec?
        if allowsSecondPattern && i < b.count && b[i] == UInt8(ascii: "!") {
            guard let (s, e) = pattern(b, from: i, line: line, stopAtBang: true) else { return }
            // The "!" that introduced the second pattern is its negation.
            second = s
            i = e
        }
        while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
        if i >= b.count { warn(line, "no replacement text: using empty string") }
        let resultText = String(decoding: b[min(i, b.count)...], as: UTF8.self)

        // $number references: the largest one decides how many groups we need.
        var segments: [MacParse.Segment] = []
        if !resultText.isEmpty {
            guard let parsed = MacParse.parse(resultText) else {
                warn(line, "bad replacement syntax: skipping this rule")
                return
            }
            segments = parsed
        }
        var maxGroup = 0
        for seg in segments {
            guard case .name(let n) = seg else { continue }
            guard n.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                warn(line, "non-numeric replacement index \"\(n)\"")
                warn(line, "bad replacement syntax: skipping this rule")
                return
            }
            let v = Int(n.prefix(9)) ?? Int.max
            if v < 1 {
                warn(line, "\(zeroIndexText) \"\(n)\"")
                warn(line, "bad replacement syntax: skipping this rule")
                return
            }
            maxGroup = max(maxGroup, v)
        }
        if maxGroup > 0 && !first.positive {
            warn(line, "$number found in negative match replacement text: skipping this rule")
            return
        }
        if maxGroup > 0 && flags.contains(.noRegsub) {
            warn(line, "regular expression substitution is not allowed: skipping this rule")
            return
        }
        guard let compiled = compile(first, line: line, needGroups: maxGroup > 0) else { return }
        if maxGroup > compiled.groupCount {
            warn(line, "out of range replacement index \"\(maxGroup)\": skipping this rule")
            return
        }
        var second2: CompiledPattern?
        if let s = second {
            guard let c = compile(s, line: line, needGroups: false) else { return }
            second2 = c
        }
        let result: Result
        if maxGroup == 0 {
            result = .literal(segments.map { if case .literal(let t) = $0 { return t } else { return "" } }.joined())
        } else {
            result = .template(segments)
        }
        rules.append(.match(first: compiled, firstPositive: first.positive, second: second2,
                            secondPositive: second?.positive ?? true, maxGroup: maxGroup, result: result, line: line))
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        let k = Array((flags.contains(.foldMul) ? DictKey.fold(key, utf8: DictRegistry.utf8Enabled) : key).utf8)
        var i = 0
        while i < rules.count {
            switch rules[i] {
            case .match(let first, let firstPositive, let second, let secondPositive, let maxGroup, let result, _):
                let groups = first.match(k, groups: maxGroup)
                if (groups != nil) != firstPositive {
                    i += 1
                    continue
                }
                if let s = second, (s.match(k, groups: 0) != nil) != secondPositive {
                    i += 1
                    continue
                }
                switch result {
                case .literal(let t): return t
                case .template(let segs):
                    var out: [UInt8] = []
                    for seg in segs {
                        switch seg {
                        case .literal(let t): out += Array(t.utf8)
                        case .name(let n):
                            if let g = Int(n), let gs = groups, g - 1 < gs.count, let r = gs[g - 1] { out += k[r] }
                        }
                    }
                    return String(decoding: out, as: UTF8.self)
                }
            case .ifBlock(let p, let positive, let endif, _):
                if (p.match(k, groups: 0) != nil) == positive {
                    i += 1
                    continue
                }
                guard let e = endif else { return nil }
                i = e + 1
            case .endif:
                i += 1
            }
        }
        return nil
    }
}

/// regexp: POSIX extended regular expressions (glibc regcomp).
final class DictRegexp: PatternDict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        try DictStream.openRules(DictRegexp.init, type: "regexp", name: name, mode: mode, flags: flags)
    }

    override var allowsSecondPattern: Bool { true }

    override func checkFlags(_ flags: [UInt8], line: Int) -> Bool {
        for f in flags where f != UInt8(ascii: "i") && f != UInt8(ascii: "m") && f != UInt8(ascii: "x") {
            warn(line, "unknown regexp option \"\(String(decoding: [f], as: UTF8.self))\": skipping this rule")
            return false
        }
        return true
    }

    final class Compiled: CompiledPattern {
        var re = regex_t()
        var groupCount = 0
        // unowned: the table owns its patterns (a strong reference made a cycle, and
        // no table was ever freed).
        unowned let owner: DictRegexp
        let line: Int

        init?(_ p: PatternSpec, owner: DictRegexp, line: Int, needGroups: Bool) {
            self.owner = owner
            self.line = line
            var opts = REG_EXTENDED | REG_ICASE
            for f in p.flags {
                switch f {
                case UInt8(ascii: "i"): opts ^= REG_ICASE
                case UInt8(ascii: "m"): opts ^= REG_NEWLINE
                default: opts ^= REG_EXTENDED
                }
            }
            if !needGroups { opts |= REG_NOSUB }
            let rc = (String(decoding: p.text, as: UTF8.self)).withCString { regcomp(&re, $0, opts) }
            if rc != 0 {
                owner.warn(line, Compiled.errorText(rc, &re))
                return nil
            }
            groupCount = Int(re.re_nsub)
        }

        deinit { regfree(&re) }

        static func errorText(_ rc: Int32, _ re: inout regex_t) -> String {
            var buf = [CChar](repeating: 0, count: 256)
            regerror(rc, &re, &buf, buf.count)
            return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        func match(_ key: [UInt8], groups: Int) -> [Range<Int>?]? {
            var pm = [regmatch_t](repeating: regmatch_t(), count: groups + 1)
            let rc = (key + [0]).withUnsafeBufferPointer { kp in
                kp.baseAddress!.withMemoryRebound(to: CChar.self, capacity: kp.count) { cp in
                    pm.withUnsafeMutableBufferPointer { pmp in
                        regexec(&re, cp, groups > 0 ? groups + 1 : 0, groups > 0 ? pmp.baseAddress : nil, 0)
                    }
                }
            }
            // REG_NOMATCH (glibc: 1).
            if rc == 1 { return nil }
            if rc != 0 {
                owner.warn(line, Compiled.errorText(rc, &re))
                return nil
            }
            return (1..<(groups + 1)).map { g -> Range<Int>? in
                pm[g].rm_so < 0 || pm[g].rm_so == pm[g].rm_eo ? nil : Int(pm[g].rm_so)..<Int(pm[g].rm_eo)
            }
        }
    }

    override func compile(_ p: PatternSpec, line: Int, needGroups: Bool) -> CompiledPattern? {
        Compiled(p, owner: self, line: line, needGroups: needGroups)
    }
}

/// pcre: Perl-compatible regular expressions (PCRE2), matched byte by byte.
final class DictPCRE: PatternDict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        try DictStream.openRules(DictPCRE.init, type: "pcre", name: name, mode: mode, flags: flags)
    }

    override var missingDelimiterVerb: String { "ignoring" }
    override var zeroIndexText: String { "out of range replacement index" }

    override func checkFlags(_ flags: [UInt8], line: Int) -> Bool {
        for f in flags {
            switch f {
            case UInt8(ascii: "i"), UInt8(ascii: "m"), UInt8(ascii: "s"), UInt8(ascii: "x"),
                 UInt8(ascii: "A"), UInt8(ascii: "E"), UInt8(ascii: "U"):
                continue
            case UInt8(ascii: "X"):
                warn(line, "ignoring obsolete regexp option \"X\"")
            default:
                warn(line, "unknown regexp option \"\(String(decoding: [f], as: UTF8.self))\": skipping this rule")
                return false
            }
        }
        return true
    }

    final class Compiled: CompiledPattern {
        let code: OpaquePointer
        let data: OpaquePointer
        let groupCount: Int
        unowned let owner: DictPCRE
        let line: Int

        init?(_ p: PatternSpec, owner: DictPCRE, line: Int) {
            self.owner = owner
            self.line = line
            var opts = UInt32(PCRE2_CASELESS) | UInt32(PCRE2_DOTALL)
            for f in p.flags {
                switch f {
                case UInt8(ascii: "i"): opts ^= UInt32(PCRE2_CASELESS)
                case UInt8(ascii: "m"): opts ^= UInt32(PCRE2_MULTILINE)
                case UInt8(ascii: "s"): opts ^= UInt32(PCRE2_DOTALL)
                case UInt8(ascii: "x"): opts ^= UInt32(PCRE2_EXTENDED)
                case UInt8(ascii: "A"): opts ^= UInt32(PCRE2_ANCHORED)
                case UInt8(ascii: "E"): opts ^= UInt32(PCRE2_DOLLAR_ENDONLY)
                case UInt8(ascii: "U"): opts ^= UInt32(PCRE2_UNGREEDY)
                default: break
                }
            }
            var err: Int32 = 0
            var off: Int = 0
            guard let code = p.text.withUnsafeBufferPointer({
                pcre2_compile_8($0.baseAddress, $0.count, opts, &err, &off, nil)
            }) else {
                owner.warn(line, "error in regex at offset \(off): \(Compiled.message(err))")
                return nil
            }
            self.code = code
            data = pcre2_match_data_create_from_pattern_8(code, nil)
            var count: UInt32 = 0
            pcre2_pattern_info_8(code, UInt32(PCRE2_INFO_CAPTURECOUNT), &count)
            groupCount = Int(count)
        }

        deinit {
            pcre2_match_data_free_8(data)
            pcre2_code_free_8(code)
        }

        static func message(_ code: Int32) -> String {
            var buf = [UInt8](repeating: 0, count: 256)
            let n = pcre2_get_error_message_8(code, &buf, buf.count)
            if n < 0 { return "unexpected pcre2 error code \(code)" }
            return String(decoding: buf[0..<Int(n)], as: UTF8.self)
        }

        func match(_ key: [UInt8], groups: Int) -> [Range<Int>?]? {
            let rc = key.withUnsafeBufferPointer { pcre2_match_8(code, $0.baseAddress, $0.count, 0, 0, data, nil) }
            if rc == PCRE2_ERROR_NOMATCH { return nil }
            if rc < 0 {
                owner.warn(line, Compiled.message(rc))
                return nil
            }
            let ov = pcre2_get_ovector_pointer_8(data)!
            let pairs = Int(pcre2_get_ovector_count_8(data))
            return (1..<(groups + 1)).map { g -> Range<Int>? in
                guard g < pairs, g < Int(rc) else { return nil }
                let s = ov[2 * g], e = ov[2 * g + 1]
                return s == size_t.max || s == e ? nil : Int(s)..<Int(e)
            }
        }
    }

    override func compile(_ p: PatternSpec, line: Int, needGroups: Bool) -> CompiledPattern? {
        Compiled(p, owner: self, line: line)
    }
}
