// CompositeDicts: pipemap:{...} (each table's result is the next one's key),
// unionmap:{...} (every table's results joined with commas) and randmap:{...} (one of
// the listed values at random).
// Mirrors Postfix util/dict_pipe.c, dict_union.c and dict_random.c (3.7).
import Glibc
import MailUtil

enum CompositeSyntax {
    /// The elements of "{a, b c}": the outer braces must balance and hold something.
    static func elements(_ type: String, _ name: String, need: String) throws(DictOpenError) -> [String] {
        let bytes = Array(name.utf8)
        let len = bytes.first == UInt8(ascii: "{") ? Tokens.balancedLength(bytes[...]) : 0
        let bad = DictOpenError("bad syntax: \"\(type):\(name)\"; need \"\(type):{\(need)...}\"")
        guard len > 2, len == bytes.count else { throw bad }
        let items = Tokens.splitQuoted(String(decoding: bytes[1..<(len - 1)], as: UTF8.self))
        if items.isEmpty { throw bad }
        return items
    }

    static func tables(_ type: String, _ name: String, flags: DictFlags) throws(DictOpenError) -> [Dict] {
        let items = try elements(type, name, need: "type:name")
        guard items.allSatisfy({ $0.contains(":") }) else {
            throw DictOpenError("bad syntax: \"\(type):\(name)\"; need \"\(type):{type:name...}\"")
        }
        return items.map { DictRegistry.open($0, mode: .readOnly, flags: flags) }
    }

    /// The least trusted owner of the components.
    static func owner(_ dicts: [Dict]) -> DictOwner {
        var result = DictOwner.trusted
        for d in dicts {
            switch (result, d.owner) {
            case (.trusted, let o), (_, let o) where o == .unknown: result = o
            case (.untrusted(let a), .untrusted(let b)) where a != b: result = .unknown
            default: break
            }
        }
        return result
    }
}

/// What pipemap and unionmap share: a list of tables opened from "{t1:n1, t2:n2, ...}",
/// read-only, taking the first table's kind (fixed or pattern) as their own.
class CompositeDict: Dict {
    let tables: [Dict]

    static func openTables(_ type: String, _ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> [Dict] {
        if mode != .readOnly { throw DictOpenError("\(type):\(name) map requires O_RDONLY access mode") }
        return try CompositeSyntax.tables(type, name, flags: flags)
    }

    init(type: String, name: String, tables: [Dict], flags: DictFlags) {
        self.tables = tables
        let own = tables[0].flags.intersection([.fixed, .pattern])
        super.init(type: type, name: name, flags: flags.subtracting([.fixed, .pattern]).union(own))
        owner = CompositeSyntax.owner(tables)
    }
}

/// pipemap:{t1:n1, t2:n2, ...}: each table's answer is the next table's key.
final class DictPipe: CompositeDict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        DictPipe(type: "pipemap", name: name, tables: try openTables("pipemap", name, mode, flags), flags: flags)
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        var query = key
        for t in tables {
            guard let r = try t.lookup(query) else { return nil }
            query = r
        }
        return query
    }
}

/// unionmap:{t1:n1, t2:n2, ...}: every table's answer, joined with commas.
final class DictUnion: CompositeDict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        DictUnion(type: "unionmap", name: name, tables: try openTables("unionmap", name, mode, flags), flags: flags)
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        var results: [String] = []
        for t in tables {
            if let r = try t.lookup(key), !r.isEmpty { results.append(r) }
        }
        return results.isEmpty ? nil : results.joined(separator: ",")
    }
}

/// randmap:{value, value, ...}
final class DictRandom: Dict {
    let values: [String]

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("randmap:\(name) map requires O_RDONLY access mode") }
        let values = try CompositeSyntax.elements("randmap", name, need: "value")
        return DictRandom(name: name, values: values, flags: flags)
    }

    init(name: String, values: [String], flags: DictFlags) {
        self.values = values
        super.init(type: "randmap", name: name, flags: flags.union(.pattern))
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        values[Int.random(in: 0..<values.count)]
    }
}
