// PostmapTool: what postmap and postalias do with each table: build from text, query,
// delete, dump.
import Glibc
import CShim
import MailUtil
import MailDict
import MailGlobal

final class PostmapTool {
    let o: PostmapOptions
    let config: MailConfig
    let program: String

    init(options: PostmapOptions, config: MailConfig, program: String) {
        self.o = options
        self.config = config
        self.program = program
    }

    var defaultType: String { config.string("default_database_type") }

    /// "type:name", with the default type when none is given.
    func split(_ spec: String) -> (type: String, name: String) {
        if let colon = spec.firstIndex(of: ":") {
            return (String(spec[..<colon]), String(spec[spec.index(after: colon)...]))
        }
        return (defaultType, spec)
    }

    func open(_ spec: String, mode: DictOpenMode) -> Dict {
        let (type, name) = split(spec)
        return DictRegistry.open(type: type, name: name, mode: mode, flags: o.dictFlags.union(.lock))
    }

    // MARK: Query

    /// Prints a value the way postmap does; warns about empty results as Postfix does.
    func show(_ value: String, table: String, key: String) -> String {
        if value.isEmpty {
            Msg.warn("table \(table): key \(key): empty string result is not allowed")
            Msg.warn("table \(table) should return NO RESULT in case of NOT FOUND")
        }
        if o.fileValues {
            guard let decoded = Base64.decode(Array(value.utf8)) else {
                Msg.warn("table \(table): key \(key): malformed BASE64 value: \(value)")
                Msg.fatal("table \(table): query error")
            }
            return String(decoding: decoded, as: UTF8.self)
        }
        return value
    }

    func lookup(_ dict: Dict, _ key: String, label: String) -> String? {
        errno = 0
        do {
            return try dict.lookup(key)
        } catch .config {
            Msg.fatal("table \(label): query error")
        } catch {
            // As Postfix's "%m": whatever errno the table left, if any.
            let e = errno
            Msg.fatal("table \(label): query error: \(e != 0 ? errnoText(e) : "Application error")")
        }
    }

    /// -q key: the first table that has it; 0 when found.
    func query(_ key: String) -> Int32 {
        guard let key = validKey(key, label: nil) else { return 1 }
        for spec in o.tables {
            let dict = open(spec, mode: .readOnly)
            let label = spec.contains(":") ? spec : "\(defaultType):\(spec)"
            if let v = lookup(dict, key, label: label) {
                writeAll(1, Array((show(v, table: label, key: key) + "\n").utf8))
                dict.close()
                return 0
            }
            dict.close()
        }
        return 1
    }

    /// -q -: keys from standard input (or headers and body lines with -h/-b), each
    /// answered "key<TAB>value" (postalias: "key:<TAB>value"); 0 when one was found.
    func queryStdin() -> Int32 {
        var dicts: [Dict?] = Array(repeating: nil, count: o.tables.count)
        var found = false
        var out: [UInt8] = []
        let keys: AnyIterator<[UInt8]> = (o.headerKeys || o.bodyKeys)
            ? MessageKeys.iterator(fd: 0, headers: o.headerKeys, body: o.bodyKeys, mime: o.mimeKeys)
            : StdinLines.iterator(fd: 0)
        for raw in keys {
            for (i, spec) in o.tables.enumerated() {
                if dicts[i] == nil { dicts[i] = open(spec, mode: .readOnly) }
                let dict = dicts[i]!
                guard let key = validKey(raw, label: dict.label) else { break }
                if let v = lookup(dict, key, label: dict.label) {
                    out.append(contentsOf: raw)
                    if o.alias { out.append(UInt8(ascii: ":")) }
                    out.append(UInt8(ascii: "\t"))
                    out.append(contentsOf: show(v, table: dict.label, key: key).utf8)
                    out.append(UInt8(ascii: "\n"))
                    found = true
                    break
                }
            }
            if out.count >= 65536 {
                writeAll(1, out)
                out.removeAll(keepingCapacity: true)
            }
        }
        writeAll(1, out)
        dicts.forEach { $0?.close() }
        return found ? 0 : 1
    }

    /// A key that the table may see: with UTF-8 checks on, malformed UTF-8 is refused.
    func validKey(_ raw: [UInt8], label: String?) -> String? {
        if o.dictFlags.contains(.utf8Request) && DictRegistry.utf8Enabled && !UTF8Check.isValid(raw) {
            let shown = String(decoding: raw, as: UTF8.self)
            Msg.warn("\(label ?? (o.tables.first ?? "")): non-UTF-8 key \"\(shown)\": malformed UTF-8 or invalid codepoint")
            return nil
        }
        return String(decoding: raw, as: UTF8.self)
    }

    func validKey(_ key: String, label: String?) -> String? {
        validKey(UTF8Check.rawArgument(key), label: label)
    }

    // MARK: Delete

    /// -d key: removed from every table; 0 when removed from one.
    func delete(_ key: String) -> Int32 {
        var found = false
        for spec in o.tables {
            let dict = open(spec, mode: .modify)
            if remove(key, from: dict) { found = true }
            dict.close()
        }
        return found ? 0 : 1
    }

    func remove(_ key: String, from dict: Dict) -> Bool {
        do {
            return try dict.delete(key)
        } catch {
            Msg.fatal("table \(dict.label): delete error: Application error")
        }
    }

    func deleteStdin() -> Int32 {
        let dicts = o.tables.map { open($0, mode: .modify) }
        var found = false
        for raw in StdinLines.iterator(fd: 0) {
            let key = String(decoding: raw, as: UTF8.self)
            for d in dicts where remove(key, from: d) { found = true }
        }
        dicts.forEach { $0.close() }
        return found ? 0 : 1
    }

    // MARK: Dump

    /// -s: every record of the first table as "key<TAB>value".
    func dump(_ spec: String) -> Int32 {
        if split(spec).type == "proxy" { Msg.fatal("can't sequence maps via the proxy service") }
        let dict = open(spec, mode: .readOnly)
        var out: [UInt8] = []
        var first = true
        while true {
            let entry: (key: String, value: String)?
            do {
                entry = try dict.sequence(first: first)
            } catch {
                Msg.fatal("table \(dict.label): sequence error: Application error")
            }
            first = false
            guard let (k, v) = entry else { break }
            if k.isEmpty { Msg.warn("table \(dict.label): empty lookup key value is not allowed") }
            var value = v
            if o.fileValues {
                guard let decoded = Base64.decode(Array(v.utf8)) else {
                    Msg.warn("table \(dict.label): key \(k): malformed BASE64 value: \(v)")
                    continue
                }
                value = String(decoding: decoded, as: UTF8.self)
            } else if v.isEmpty {
                Msg.warn("table \(dict.label): key \(k): empty string result is not allowed")
                Msg.warn("table \(dict.label) should return NO RESULT in case of NOT FOUND")
            }
            out.append(contentsOf: k.utf8)
            if o.alias { out.append(UInt8(ascii: ":")) }
            out.append(UInt8(ascii: "\t"))
            out.append(contentsOf: value.utf8)
            out.append(UInt8(ascii: "\n"))
            if out.count >= 65536 {
                writeAll(1, out)
                out.removeAll(keepingCapacity: true)
            }
        }
        writeAll(1, out)
        dict.close()
        return 0
    }
}

/// Lines of a descriptor without their newline (a last line without one included).
enum StdinLines {
    static func iterator(fd: Int32) -> AnyIterator<[UInt8]> {
        let stream = FDStream(fd: fd)
        return AnyIterator {
            guard let (bytes, found, _) = try? stream.read(through: 0x0A, maxCount: Int.max / 2),
                  !bytes.isEmpty || found else { return nil }
            return bytes
        }
    }
}

extension UTF8Check {
    /// The bytes of a command-line argument as given (before Swift repaired bad UTF-8).
    static func rawArgument(_ value: String) -> [UInt8] {
        for i in 0..<Int(CommandLine.argc) {
            guard let p = CommandLine.unsafeArgv[i] else { continue }
            let raw = Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
            if String(decoding: raw, as: UTF8.self) == value { return raw }
        }
        return Array(value.utf8)
    }
}
