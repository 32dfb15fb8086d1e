// ConfigFile: reading main.cf-style files: logical lines and name = value pairs.
// Mirrors Postfix util/readlline.c (readllines), util/split_nameval.c and the file loop of
// util/dict.c (dict_load_fp). A logical line starts in column 1; lines that start with white
// space continue it; empty, all-white-space and '#' comment lines are skipped, also inside
// a continued line. Text after a NUL byte in a line is ignored, as C strings end there.
import MailUtil

public enum ConfigFile {
    /// Splits file content into logical lines (see LogicalLine.read).
    public static func logicalLines(_ content: [UInt8], path: String) -> [LogicalLine] {
        LogicalLine.read(content, path: path)
    }

    /// Splits "name = value": the name ends at white space or '='; white space around the
    /// value is trimmed. Returns an error text as Postfix words it.
    public static func splitNameValue(_ text: [UInt8]) -> Result<(name: String, value: String), NameValueError> {
        var i = 0
        let n = text.count
        while i < n && Tokens.isBlank(text[i]) { i += 1 }
        if i == n || text[i] == UInt8(ascii: "=") { return .failure(.missingName) }
        let ns = i
        while i < n && !Tokens.isBlank(text[i]) && text[i] != UInt8(ascii: "=") { i += 1 }
        let ne = i
        while i < n && Tokens.isBlank(text[i]) { i += 1 }
        if i == n || text[i] != UInt8(ascii: "=") { return .failure(.missingEquals) }
        i += 1
        while i < n && Tokens.isBlank(text[i]) { i += 1 }
        var ve = n
        while ve > i && Tokens.isBlank(text[ve - 1]) { ve -= 1 }
        return .success((String(decoding: text[ns..<ne], as: UTF8.self),
                         String(decoding: text[i..<ve], as: UTF8.self)))
    }

    public enum NameValueError: Error, CustomStringConvertible {
        case missingName, missingEquals
        public var description: String {
            switch self {
            case .missingName: return "missing attribute name"
            case .missingEquals: return "missing '=' after attribute name"
            }
        }
    }

    /// Reads name = value pairs in file order. A malformed line is fatal, as in Postfix:
    /// "PATH, line N: missing '=' after attribute name: "text"".
    public static func parsePairs(_ content: [UInt8], path: String) -> [(name: String, value: String, line: Int)] {
        var out: [(String, String, Int)] = []
        for l in logicalLines(content, path: path) {
            switch splitNameValue(l.text) {
            case .success(let nv):
                out.append((nv.name, nv.value, l.firstLine))
            case .failure(let err):
                Msg.fatal("\(path), line \(l.firstLine): \(err): \"\(l.string)\"")
            }
        }
        return out
    }

    /// Loads a main.cf-style file into an ordered dictionary, warning when a name is set
    /// again to a different value, as Postfix does ("overriding earlier entry"). A missing
    /// file throws.
    public static func load(path: String, into entries: inout ConfigEntries) throws {
        let content = try SafeFile.read(path)
        for (name, value, line) in parsePairs(content, path: path) {
            if let old = entries[name], old != value {
                Msg.warn("\(path), line \(line): overriding earlier entry: \(name)=\(old)")
            }
            entries[name] = value
        }
    }

    public static func load(path: String) throws -> ConfigEntries {
        var entries = ConfigEntries()
        try load(path: path, into: &entries)
        return entries
    }
}

/// Name to value, remembering first-insertion order.
public struct ConfigEntries: Sendable {
    public private(set) var names: [String] = []
    private var values: [String: String] = [:]

    public init() {}

    public subscript(name: String) -> String? {
        get { values[name] }
        set {
            if let v = newValue {
                if values.updateValue(v, forKey: name) == nil { names.append(name) }
            } else if values.removeValue(forKey: name) != nil {
                names.removeAll { $0 == name }
            }
        }
    }

    public var count: Int { values.count }
    public func contains(_ name: String) -> Bool { values[name] != nil }
}
