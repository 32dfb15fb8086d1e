// MainDisplay: printing main.cf parameters, and the unused-parameter warnings.
// Mirrors Postfix postconf/postconf_main.c, postconf_print.c and postconf_unused.c.
import MailUtil
import MailGlobal

extension PostconfState {
    static let lineLimit = 80
    static let indent = "    "

    /// pcf_print_line: white space between words becomes one space; with -f, lines are
    /// folded before 80 columns and continued with four spaces.
    func printLine(_ text: String, fold: Bool) {
        var line = ""
        var len = 0
        for word in Tokens.split(text, separators: spaceSeparators) {
            let wl = word.utf8.count
            if len > 0 {
                if !fold || len + wl < PostconfState.lineLimit {
                    line += " "
                    len += 1
                } else {
                    line += "\n" + PostconfState.indent
                    len = PostconfState.indent.count
                }
            }
            line += word
            len += wl
        }
        out.write(line + "\n")
    }

    /// Shows one parameter as "name = value", "value" (-h) or "name" (-H).
    func printParameter(_ name: String, _ node: ParamNode) {
        guard var value = lookupValue(mode, name, node) else { return }
        let fold = mode.contains(.foldLine)
        if mode.contains(.hideValue) {
            printLine(name, fold: fold)
            return
        }
        if mode.contains(.showEval) && !node.raw {
            value = expand(value, mode: mode)
        }
        printLine(mode.contains(.hideName) ? value : "\(name) = \(value)", fold: fold)
    }

    /// pcf_show_parameters: every parameter of the selected classes in name order, or
    /// the named ones in command-line order.
    func showParameters(classes: ParamClass, names: [String]) {
        if names.isEmpty {
            for name in byteOrder(nodes.keys) {
                let node = nodes[name]!
                if !node.classes.intersection(classes).isEmpty {
                    printParameter(name, node)
                }
            }
            return
        }
        for name in names {
            if let node = nodes[name] {
                printParameter(name, node)
            } else {
                Msg.warn("\(name): unknown parameter")
            }
        }
    }

    /// main.cf settings that no program uses.
    func unusedMainParameters() -> [(name: String, value: String)] {
        main.keys.filter { nodes[$0] == nil }.map { ($0, main[$0]!) }
    }

    /// master.cf -o settings that no program uses.
    func unusedMasterParameters() -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for entry in master {
            guard let box = entry.params else { continue }
            for name in box.dict.keys where nodes[name] == nil && !entry.validNames.contains(name) {
                out.append((name, box.dict[name]!))
            }
        }
        return out
    }

    /// Warns about main.cf settings that no program uses.
    func flagUnusedMainParameters() {
        for (name, value) in unusedMainParameters() {
            out.flush()
            Msg.warn("\(mainPath): unused parameter: \(name)=\(value)")
        }
    }

    /// Warns about master.cf -o settings that no program uses.
    func flagUnusedMasterParameters() {
        for (name, value) in unusedMasterParameters() {
            out.flush()
            Msg.warn("\(masterPath): unused parameter: \(name)=\(value)")
        }
    }

    /// Parses -C: builtin, service, user, all.
    static func parseClasses(_ text: String) -> ParamClass {
        var c: ParamClass = []
        for word in Tokens.split(text) {
            switch word.lowercased() {
            case "builtin": c.insert(.builtin)
            case "service": c.insert(.service)
            case "user": c.insert(.user)
            case "all": c.formUnion(.all)
            default: Msg.fatal("unknown -C option value \"\(word)\" in \"\(text)\"")
            }
        }
        return c
    }
}
