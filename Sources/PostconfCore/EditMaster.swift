// EditMaster: "postconf -Me/-MX/-M#" (entries), "-Fe" (fields) and "-Pe/-PX" (-o settings)
// on master.cf. Mirrors Postfix postconf/postconf_edit.c (pcf_edit_master): a locked copy in
// master.cf.tmp, entries that match a request rewritten in the -Mf layout, the rest copied
// byte for byte, then a rename into place.
import MailUtil
import MailGlobal

extension PostconfState {
    private struct MasterRequest {
        var pattern: Pattern
        /// Field or parameter name (-F, -P).
        var name: String?
        var value: String?
        let raw: String
        var matches = 0
    }

    func editMaster(_ operands: [String]) {
        var requests: [MasterRequest] = operands.map { parseMasterRequest($0) }
        let (edit, content) = openForEdit(masterPath)
        let lines = physicalLines(content)
        var output: [UInt8] = []
        enum Continuation { case copy, comment, drop }
        var continuation = Continuation.copy
        var lineNumber = 0
        var i = 0
        while i < lines.count {
            let raw = lines[i]
            lineNumber += 1
            i += 1
            let line = raw.line
            var k = 0
            while k < line.count && Tokens.isBlank(line[k]) { k += 1 }
            if k == line.count || line[k] == UInt8(ascii: "#") {
                output += raw.withEnding
                continue
            }
            if k > 0 {
                switch continuation {
                case .copy: output += raw.withEnding
                case .comment: output.append(UInt8(ascii: "#")); output += raw.withEnding
                case .drop: break
                }
                continue
            }
            let words = Tokens.split(String(decoding: line, as: UTF8.self), separators: spaceSeparators)
            if words.count < 2 {
                Msg.fatal("file \(masterPath): line \(lineNumber): specify service name and type on the same line")
            }
            if words[0].contains("=") {
                Msg.fatal("file \(masterPath): line \(lineNumber): service name syntax \"\(words[0])\" is unsupported with -Me, -Fe, -Pe, -X, or -#")
            }
            if words[1].contains("=") || words[1].contains("/") {
                Msg.fatal("file \(masterPath): line \(lineNumber): service type syntax \"\(words[1])\" is unsupported with -Me, -Fe, -Pe, -X, or -#")
            }
            let probe = MasterEntry(argv: [words[0], words[1]], line: lineNumber)
            let matching = requests.indices.filter { requests[$0].pattern.matchesEntry(probe) }
            continuation = .copy
            if matching.isEmpty {
                output += raw.withEnding
                continue
            }
            for r in matching { requests[r].matches += 1 }

            if mode.contains(.masterEntry) {
                if mode.contains(.commentOut) {
                    continuation = .comment
                    output.append(UInt8(ascii: "#"))
                    output += raw.withEnding
                } else if mode.contains(.editExclude) {
                    continuation = .drop
                } else {
                    continuation = .drop
                    if let r = matching.last(where: { requests[$0].matches == 1 }) {
                        output += Array(withFolding { formatEntry(parseReplacementEntry(requests[r])) }.utf8)
                    }
                }
                continue
            }

            // -Fe, -Pe, -PX: gather the whole entry, then rewrite it.
            let first = lineNumber
            var text = String(decoding: line, as: UTF8.self)
            while i < lines.count {
                let next = lines[i].line
                guard next.isEmpty || next.first == UInt8(ascii: "#") || Tokens.isBlank(next.first!) else { break }
                lineNumber += 1
                i += 1
                var m = 0
                while m < next.count && Tokens.isBlank(next[m]) { m += 1 }
                if m == next.count || next[m] == UInt8(ascii: "#") {
                    output += lines[i - 1].withEnding
                } else {
                    text += String(decoding: next, as: UTF8.self)
                }
            }
            let fields = MasterCF.split(text)
            if fields.count < MasterCF.minimumFields {
                Msg.fatal("file \(masterPath): line \(first): bad field count")
            }
            if let err = PostconfState.checkFields(fields, quoted: text) {
                Msg.fatal("file \(masterPath): line \(first): \(err)")
            }
            let entry = MasterEntry(argv: PostconfState.normalize(fields), line: first)
            for r in matching { apply(requests[r], to: entry) }
            output += Array(withFolding { formatEntry(entry) }.utf8)
        }

        if mode.contains(.masterEntry) && mode.contains(.editConf) {
            for r in requests where r.matches == 0 {
                output += Array(withFolding { formatEntry(parseReplacementEntry(r)) }.utf8)
            }
        }
        if !mode.contains(.masterEntry) {
            for r in requests where r.matches == 0 {
                Msg.warn("unmatched service_name/type: \"\(r.raw)\"")
            }
        }
        finishEdit(edit, output)
    }

    /// Output of -Me and the master edits uses the folded -M layout without expansion.
    private func withFolding<T>(_ body: () -> T) -> T {
        let saved = mode
        mode = mode.union(.foldLine).subtracting(.showEval)
        defer { mode = saved }
        return body()
    }

    private func parseReplacementEntry(_ r: MasterRequest) -> MasterEntry {
        let value = r.value ?? ""
        let fields = MasterCF.split(value)
        if fields.count < MasterCF.minimumFields { Msg.fatal("bad field count: \"\(r.raw)\"") }
        if let err = PostconfState.checkFields(fields, quoted: value) { Msg.fatal(err) }
        return MasterEntry(argv: PostconfState.normalize(fields), line: 0)
    }

    /// Applies one -Fe, -Pe or -PX request to an entry.
    private func apply(_ r: MasterRequest, to entry: MasterEntry) {
        let name = r.name ?? ""
        if mode.contains(.masterField) {
            let value = r.value ?? ""
            if name == "command" {
                let words = MasterCF.split(value)
                if words.isEmpty { Msg.fatal("-Fe requires a non-empty command") }
                let fields = Array(entry.argv[0..<7]) + words
                entry.argv = PostconfState.normalize(fields)
            } else {
                let index = MasterCF.fieldNames.firstIndex(of: name)!
                entry.argv[index] = value
                if let err = PostconfState.checkFields(entry.argv, quoted: value), name != "private" || !value.isEmpty {
                    Msg.fatal(err)
                }
            }
            return
        }
        // -Pe / -PX: walk the options.
        var argv = entry.argv
        var i = MasterCF.minimumFields
        var replaced = false
        while i < argv.count {
            let a = argv[i]
            if !a.hasPrefix("-") || a == "--" { break }
            if a == "-o" && i + 1 < argv.count {
                if argv[i + 1].hasPrefix(name + "=") {
                    if mode.contains(.editExclude) {
                        argv.removeSubrange(i...(i + 1))
                        continue
                    }
                    argv[i + 1] = name + "=" + (r.value ?? "")
                    replaced = true
                }
                i += 2
                continue
            }
            i += 1
        }
        if mode.contains(.editConf) && !replaced {
            argv.insert(contentsOf: ["-o", name + "=" + (r.value ?? "")], at: i)
        }
        entry.argv = argv
    }

    private func parseMasterRequest(_ op: String) -> MasterRequest {
        let trimmed = String(op.drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }))
        if op.contains("\n") { Msg.fatal("-Me, -Fe, -Pe, -X, or -# accept no multi-line input") }
        if trimmed.hasPrefix("#") { Msg.fatal("-Me, -Fe, -Pe, -X, or -# accept no comment input") }
        var patternText = trimmed
        var value: String?
        if mode.contains(.editConf) {
            switch ConfigFile.splitNameValue(Array(trimmed.utf8)) {
            case .success(let nv):
                patternText = nv.name
                value = nv.value
            case .failure(let err):
                Msg.fatal("\(err): \"\(op)\"")
            }
            if mode.contains(.masterParam) && PostconfState.hasBlank(value!) {
                Msg.fatal("-Pe does not accept whitespace in parameter value")
            }
        } else if trimmed.contains("=") {
            Msg.fatal("-X or -# requires names without value")
        }
        let parts = patternText.split(separator: "/").map(String.init)
        var pattern: Pattern?
        if !patternText.hasPrefix("/") && parts.allSatisfy({ $0 == "*" || !$0.contains("*") }) {
            pattern = PostconfState.parsePattern(parts.prefix(2).joined(separator: "/"), maxParts: 2)
        }
        if mode.contains(.masterEntry) {
            guard parts.count == 2, let p = pattern else {
                Msg.fatal("-Me, -MX or -M# requires service_name/type")
            }
            return MasterRequest(pattern: p, name: nil, value: value, raw: op)
        }
        let isField = mode.contains(.masterField)
        guard parts.count == 3, let p = pattern else {
            Msg.fatal(isField ? "-Fe or -FX requires service_name/type/field_name"
                              : "-Pe or -PX requires service_name/type/parameter")
        }
        let name = parts[2]
        if isField {
            if name != "*" && !MasterCF.fieldNames.contains(name) {
                Msg.fatal("invalid service attribute name: \"\(name)\"")
            }
            if name == "*" { Msg.fatal("-Fe does not accept wild-card field name") }
            if name != "command" && PostconfState.hasBlank(value ?? "") {
                Msg.fatal("-Fe does not accept whitespace in non-command field")
            }
        } else if name == "*" {
            Msg.fatal("-Pe does not accept wild-card parameter name")
        }
        return MasterRequest(pattern: p, name: name, value: value, raw: op)
    }
}
