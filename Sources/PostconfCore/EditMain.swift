// EditMain: "postconf -e", "-X" and "-#" on main.cf.
// Mirrors Postfix postconf/postconf_edit.c (pcf_edit_main): the file is copied line by line
// to main.cf.tmp (exclusively locked) with the named entries replaced, removed or commented
// out, new entries appended, and the copy renamed into place.
import Glibc
import MailUtil
import MailGlobal

extension PostconfState {
    func editMain(_ operands: [String]) {
        // Validate every operand before touching the file.
        var table = HashedDict(requestedSize: operands.count)
        var matched: Set<String> = []
        for op in operands {
            let trimmed = String(op.drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }))
            if op.contains("\n") { Msg.fatal("-e, -X, or -# accepts no multi-line input") }
            if trimmed.hasPrefix("#") { Msg.fatal("-e, -X, or -# accepts no comment input") }
            if mode.contains(.editConf) {
                switch ConfigFile.splitNameValue(Array(trimmed.utf8)) {
                case .success(let nv):
                    if let old = table[nv.name] {
                        Msg.warn("ignoring earlier request: '\(nv.name) = \(old)'")
                    }
                    table[nv.name] = nv.value
                case .failure(let err):
                    Msg.fatal("\(err): \"\(trimmed)\"")
                }
            } else {
                if trimmed.isEmpty { Msg.fatal("-X or -# requires non-blank parameter names") }
                if trimmed.contains("=") { Msg.fatal("-X or -# requires parameter names without value") }
                table[trimmed] = ""
            }
        }

        let (edit, content) = openForEdit(mainPath)

        var output: [UInt8] = []
        var current: String?          // the selected entry whose lines we are in
        var counts: [String: Int] = [:]
        for raw in physicalLines(content) {
            let line = raw.line
            var k = 0
            while k < line.count && Tokens.isBlank(line[k]) { k += 1 }
            if k == line.count || line[k] == UInt8(ascii: "#") {
                output += raw.withEnding
                continue
            }
            if k > 0 {
                if current != nil {
                    if mode.contains(.commentOut) { output.append(UInt8(ascii: "#")); output += raw.withEnding }
                } else {
                    output += raw.withEnding
                }
                continue
            }
            var e = 0
            while e < line.count && !" \t\r\n=".utf8.contains(line[e]) { e += 1 }
            let key = String(decoding: line[0..<e], as: UTF8.self)
            guard let value = table[key] else {
                current = nil
                output += raw.withEnding
                continue
            }
            current = key
            counts[key, default: 0] += 1
            if counts[key] == 2 { Msg.warn("\(mainPath): multiple entries for \"\(key)\"") }
            matched.insert(key)
            if mode.contains(.editConf) {
                output += Array("\(key) = \(value)\n".utf8)
            } else if mode.contains(.commentOut) {
                output.append(UInt8(ascii: "#"))
                output += raw.withEnding
            }
        }
        if mode.contains(.editConf) {
            for key in table.keys where !matched.contains(key) {
                output += Array("\(key) = \(table[key]!)\n".utf8)
            }
        }
        finishEdit(edit, output)
    }
}

extension PostconfState {
    /// Opens `path.tmp` (locked) for the new text and reads the current text of `path`;
    /// failures are fatal with Postfix's messages.
    func openForEdit(_ path: String) -> (EditFile, [UInt8]) {
        let edit: EditFile
        do {
            edit = try EditFile(path: path, mode: 0o600)
        } catch {
            Msg.fatal("open \(path).tmp: \((error as? SystemError)?.reason ?? "\(error)")")
        }
        do {
            return (edit, try SafeFile.read(path))
        } catch {
            edit.abandon()
            Msg.fatal("open \(path) for reading: \((error as? SystemError)?.reason ?? "\(error)")")
        }
    }

    /// Writes the new text and renames it into place with mode 0644.
    func finishEdit(_ edit: EditFile, _ output: [UInt8]) {
        do {
            try edit.write(output)
            try edit.commit(mode: 0o644)
        } catch {
            Msg.fatal("\(error)")
        }
    }
}

/// A physical line and the same line with its newline (if it had one).
struct PhysicalLine {
    var line: [UInt8]
    var withEnding: [UInt8]
}

func physicalLines(_ content: [UInt8]) -> [PhysicalLine] {
    var out: [PhysicalLine] = []
    var i = 0
    while i < content.count {
        var e = i
        while e < content.count && content[e] != 0x0A { e += 1 }
        let end = e < content.count ? e + 1 : e
        out.append(PhysicalLine(line: Array(content[i..<e]), withEnding: Array(content[i..<end])))
        i = end
    }
    return out
}
