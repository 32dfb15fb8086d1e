// Master: reading master.cf and showing its entries (-M), fields (-F) and -o settings (-P).
// Mirrors Postfix postconf/postconf_master.c and postconf_match.c.
import MailUtil
import MailGlobal

extension PostconfState {
    /// Reads master.cf (pcf_read_master); a missing file is fatal when `failOnOpenError`.
    func readMaster(failOnOpenError: Bool) {
        masterRead = true
        let content: [UInt8]
        do {
            content = try SafeFile.read(masterPath)
        } catch {
            if failOnOpenError { Msg.fatal("\(error)") }
            Msg.warn("\(error)")
            return
        }
        var boxes: [String: ParamsBox] = [:]
        for e in MasterCF.entries(content, path: masterPath) {
            if e.fields.count < MasterCF.minimumFields {
                Msg.fatal("file \(masterPath): line \(e.line): bad field count")
            }
            if let err = PostconfState.checkFields(e.fields, quoted: e.text) { Msg.fatal(err) }
            let entry = MasterEntry(argv: PostconfState.normalize(e.fields), line: e.line)
            // Entries with the same service and type share one dictionary; an entry
            // without -o settings sees it only when an earlier entry created it.
            let params = PostconfState.optionSettings(entry.argv)
            if !params.isEmpty {
                let box = boxes[entry.nameSpace] ?? ParamsBox()
                boxes[entry.nameSpace] = box
                for (name, value) in params { box.dict[name] = value }
            }
            entry.params = boxes[entry.nameSpace]
            master.append(entry)
        }
    }

    /// pcf_check_master_entry: validates the fixed fields; returns the error text.
    static func checkFields(_ f: [String], quoted: String) -> String? {
        func bad(_ field: String, _ value: String) -> String {
            "invalid \(field) field \"\(value)\" in \"\(quoted)\""
        }
        if !MasterCF.transportTypes.contains(f[1]) { return bad("type", f[1]) }
        for (i, name) in [(2, "private"), (3, "unprivileged"), (4, "chroot")] {
            if f[i].utf8.count != 1 || !"yn-".contains(f[i]) { return bad(name, f[i]) }
        }
        var wake = Substring(f[5])
        if wake.hasSuffix("?") { wake = wake.dropLast() }
        if wake != "-" && !wake.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return bad("wakeup", f[5]) }
        if f[6] != "-" && (f[6].isEmpty || !f[6].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })) {
            return bad("process_limit", f[6])
        }
        return nil
    }

    /// pcf_normalize_options: splits option clusters at "o" ("-vo x" -> "-v -o x"), separates
    /// "-oname=value", strips "{ }" around -o values and other braced arguments, and writes
    /// braced -o values as name=value without blanks around "=".
    static func normalize(_ fields: [String]) -> [String] {
        var argv = Array(fields[0..<MasterCF.minimumFields])
        var args = Array(fields[MasterCF.minimumFields...])
        var i = 0
        while i < args.count {
            var arg = Array(args[i].utf8)
            if arg.first != UInt8(ascii: "-") || arg == Array("--".utf8) { break }
            if arg.count > 2, let k = arg[2...].firstIndex(of: UInt8(ascii: "o")) {
                args.insert("-" + String(decoding: arg[k...], as: UTF8.self), at: i + 1)
                arg = Array(arg[..<k])
                args[i] = String(decoding: arg, as: UTF8.self)
            }
            guard arg.count >= 2 && arg[1] == UInt8(ascii: "o") else {
                i += 1
                continue
            }
            if arg.count > 2 {
                args[i] = "-o"
                args.insert(String(decoding: arg[2...], as: UTF8.self), at: i + 1)
            } else if i + 1 >= args.count {
                i += 1
                continue
            }
            if args[i + 1].hasPrefix("{") {
                let text = unbrace(args[i + 1])
                switch ConfigFile.splitNameValue(Array(text.utf8)) {
                case .success(let nv):
                    args[i + 1] = nv.name + "=" + nv.value
                case .failure(let err):
                    Msg.warn("master.cf: \(err): \"\(text)\"")
                    args[i + 1] = text
                }
            }
            i += 2
        }
        while i < args.count {
            if args[i].hasPrefix("{") { args[i] = unbrace(args[i]) }
            i += 1
        }
        argv += args
        return argv
    }

    static func unbrace(_ word: String) -> String {
        let (inner, err) = Tokens.extractBraced(word, strip: true)
        if let err { Msg.warn("master.cf: \(err)") }
        return inner
    }

    /// The name=value pairs of an entry's -o options before its first operand.
    static func optionSettings(_ argv: [String]) -> [(String, String)] {
        var out: [(String, String)] = []
        var i = MasterCF.minimumFields
        while i < argv.count {
            let a = argv[i]
            if !a.hasPrefix("-") || a == "--" { break }
            if a == "-o" && i + 1 < argv.count {
                if case .success(let nv) = ConfigFile.splitNameValue(Array(argv[i + 1].utf8)), argv[i + 1].contains("=") {
                    out.append((nv.name, nv.value))
                }
                i += 2
                continue
            }
            i += 1
        }
        return out
    }

    // MARK: Formatting

    static let columns = [0, 11, 17, 25, 33, 41, 49, 57]

    static func hasBlank(_ s: String) -> Bool {
        s.utf8.contains { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }
    }

    /// The command arguments as -M and -F print them: with -f, each "-o value" on its own
    /// line; values with blanks in braces (except the first operand, as Postfix does).
    func formatArguments(_ entry: MasterEntry, lineLength: inout Int, valuePadding: Int) -> String {
        let argv = entry.argv
        let fold = mode.contains(.foldLine)
        var out = ""
        var inOptions = true
        var i = MasterCF.minimumFields
        while i < argv.count {
            let a = argv[i]
            var value: String?
            var parens = false
            var alen = a.utf8.count
            if inOptions {
                if !a.hasPrefix("-") || a == "--" {
                    inOptions = false
                } else if a.utf8.count > 1 && Array(a.utf8)[1] == UInt8(ascii: "o") && i + 1 < argv.count {
                    lineLength = PostconfState.lineLimit
                    var v = argv[i + 1]
                    if mode.contains(.showEval) { v = expand(v, mode: mode, entry: entry) }
                    value = v
                    alen += v.utf8.count + valuePadding
                    parens = PostconfState.hasBlank(v)
                    if parens { alen += 2 }
                }
            } else {
                parens = PostconfState.hasBlank(a)
            }
            if lineLength > PostconfState.indent.count {
                if !fold || lineLength + 1 + alen < PostconfState.lineLimit {
                    out += " "
                    lineLength += 1
                } else {
                    out += "\n" + PostconfState.indent
                    lineLength = PostconfState.indent.count
                }
            }
            let shown = !inOptions && parens ? "{\(a)}" : a
            out += shown
            lineLength += shown.utf8.count
            if let v = value {
                let vs = parens ? "{\(v)}" : v
                out += " " + vs
                i += 1
                lineLength = PostconfState.lineLimit
            }
            i += 1
        }
        return out
    }

    /// One -M entry.
    func formatEntry(_ entry: MasterEntry) -> String {
        var line = ""
        var len = 0
        for k in 0..<MasterCF.minimumFields {
            if len > 0 {
                repeat {
                    line += " "
                    len += 1
                } while len < PostconfState.columns[k]
            }
            line += entry.argv[k]
            len += entry.argv[k].utf8.count
        }
        return line + formatArguments(entry, lineLength: &len, valuePadding: 3) + "\n"
    }

    /// One -F record.
    func formatField(_ entry: MasterEntry, _ field: Int) -> String {
        var text = ""
        var len = 0
        if !mode.contains(.hideName) {
            let n = "\(entry.argv[0])/\(entry.argv[1])/\(MasterCF.fieldNames[field])"
            text += n
            len += n.utf8.count
            if !mode.contains(.hideValue) {
                text += " = "
                len += 3
            }
        }
        if !mode.contains(.hideValue) {
            let v = entry.argv[field]
            if len > 0 && len + v.utf8.count > PostconfState.lineLimit {
                text += "\n" + PostconfState.indent
                len = PostconfState.indent.count
            }
            text += v
            len += v.utf8.count
            if field == 7 {
                text += formatArguments(entry, lineLength: &len, valuePadding: 1)
            }
        }
        return text + "\n"
    }

    // MARK: Selection

    /// A "service[/type[/name]]" pattern; nil components are wildcards.
    struct Pattern {
        var parts: [String?]
        let text: String
        var matches = 0

        func matchesEntry(_ e: MasterEntry) -> Bool {
            (parts[0] == nil || parts[0] == e.argv[0]) && (parts.count < 2 || parts[1] == nil || parts[1] == e.argv[1])
        }
    }

    /// Splits a pattern into 1...`maxParts` components (empty ones dropped); "*" is a
    /// wildcard and may not be mixed with other text. Nil for a malformed pattern.
    static func parsePattern(_ text: String, maxParts: Int) -> Pattern? {
        if text.hasPrefix("/") { return nil }
        let parts = text.split(separator: "/").map(String.init)
        if parts.isEmpty || parts.count > maxParts { return nil }
        var out: [String?] = []
        for p in parts {
            if p == "*" { out.append(nil); continue }
            if p.contains("*") { return nil }
            out.append(p)
        }
        while out.count < maxParts { out.append(nil) }
        return Pattern(parts: out, text: text)
    }

    func showMasterEntries(_ operands: [String]) {
        var patterns = operands.map { op -> Pattern in
            guard let p = PostconfState.parsePattern(op, maxParts: 2) else {
                Msg.fatal("-M option requires service_name[/type]")
            }
            return p
        }
        for entry in master {
            if patterns.isEmpty {
                out.write(formatEntry(entry))
                continue
            }
            for k in patterns.indices where patterns[k].matchesEntry(entry) {
                patterns[k].matches += 1
                out.write(formatEntry(entry))
            }
        }
        warnUnmatched(patterns)
    }

    func showMasterFields(_ operands: [String]) {
        var patterns = operands.map { op -> Pattern in
            guard let p = PostconfState.parsePattern(op, maxParts: 3) else {
                Msg.fatal("-F option requires service_name[/type[/field]]")
            }
            if let f = p.parts[2], !MasterCF.fieldNames.contains(f) {
                Msg.fatal("invalid service attribute name: \"\(f)\"")
            }
            return p
        }
        for entry in master {
            if patterns.isEmpty {
                for f in 0..<MasterCF.minimumFields { out.write(formatField(entry, f)) }
                continue
            }
            for k in patterns.indices where patterns[k].matchesEntry(entry) {
                patterns[k].matches += 1
                if let f = patterns[k].parts[2] {
                    out.write(formatField(entry, MasterCF.fieldNames.firstIndex(of: f)!))
                } else {
                    for f in 0..<MasterCF.minimumFields { out.write(formatField(entry, f)) }
                }
            }
        }
        warnUnmatched(patterns)
    }

    func showMasterParams(_ operands: [String]) {
        var patterns = operands.map { op -> Pattern in
            guard let p = PostconfState.parsePattern(op, maxParts: 3) else {
                Msg.fatal("-P option requires service_name[/type[/parameter]]")
            }
            return p
        }
        let fold = mode.contains(.foldLine)
        func show(_ entry: MasterEntry, _ name: String, _ value: String) {
            let full = "\(entry.nameSpace)/\(name)"
            if mode.contains(.hideValue) {
                printLine(full, fold: fold)
                return
            }
            let v = mode.contains(.showEval) ? expand(value, mode: mode, entry: entry) : value
            printLine(mode.contains(.hideName) ? v : "\(full) = \(v)", fold: fold)
        }
        for entry in master {
            guard let box = entry.params, !box.dict.isEmpty else { continue }
            let sorted = byteOrder(box.dict.keys)
            if patterns.isEmpty {
                for n in sorted { show(entry, n, box.dict[n]!) }
                continue
            }
            for k in patterns.indices where patterns[k].matchesEntry(entry) {
                if let n = patterns[k].parts[2] {
                    guard let v = box.dict[n] else { continue }
                    patterns[k].matches += 1
                    show(entry, n, v)
                } else {
                    patterns[k].matches += 1
                    for n in sorted { show(entry, n, box.dict[n]!) }
                }
            }
        }
        warnUnmatched(patterns)
    }

    func warnUnmatched(_ patterns: [Pattern]) {
        for p in patterns where p.matches == 0 {
            Msg.warn("unmatched request: \"\(p.text)\"")
        }
    }
}
