// Maps: a list of lookup tables searched in order, as every "*_maps" parameter is.
// Mirrors Postfix global/maps.c and the table registry of util/dict.c: the first table
// with an answer wins; a table that fails ends the search with that failure (tables
// after it are not asked, so they cannot hide it); an empty answer is a configuration
// error; an empty key is never looked up. A table opened with the same flags is shared
// within a process, and a daemon can ask whether any file behind its tables changed.
import Glibc
import MailUtil
import MailDict

/// Process-wide registry of open tables ("type:name(open mode,flags)" → table).
public enum DictCache {
    nonisolated(unsafe) static var tables: [String: Dict] = [:]
    nonisolated(unsafe) static var order: [String] = []

    /// The registry name Postfix uses: "hash:/etc/aliases(0,lock|fold_fix|utf8_request)".
    public static func registryName(_ spec: String, flags: DictFlags) -> String {
        "\(spec)(\(String(O_RDONLY, radix: 8)),\(flags.description))"
    }

    /// The shared instance of `spec` opened read-only with `flags`.
    public static func open(_ spec: String, flags: DictFlags) -> (name: String, dict: Dict) {
        let name = registryName(spec, flags: flags)
        if let d = tables[name] { return (name, d) }
        let d = DictRegistry.open(spec, mode: .readOnly, flags: flags)
        tables[name] = d
        order.append(name)
        return (name, d)
    }

    /// The instance registered under `name`, if any.
    public static func handle(_ name: String) -> Dict? { tables[name] }

    /// Registers an instance opened by the caller under `name` (proxymap's own names).
    public static func register(_ name: String, _ dict: Dict) {
        if tables[name] == nil { order.append(name) }
        tables[name] = dict
    }

    /// The registry name of the first table whose file changed since it was opened (only
    /// database files are watched, as in Postfix), or nil.
    public static func changedName() -> String? {
        for name in order where tables[name]?.hasChanged == true { return name }
        return nil
    }

    /// For daemons' pre-accept hooks: exit so that master starts a successor that opens
    /// the new tables ("table hash:/x(0,lock) has changed -- restarting").
    public static func exitIfChanged() {
        if let name = changedName() {
            Msg.info("table \(name) has changed -- restarting")
            exit(0)
        }
    }
}

public final class Maps {
    public let title: String
    public let names: [String]
    let dicts: [Dict]
    /// Why the last search failed, when it did.
    public private(set) var error: DictError?

    /// Opens every table of `mapNames` (comma/space separated, "{...}" grouped).
    public init(title: String, mapNames: String, flags: DictFlags) {
        self.title = title
        var names: [String] = []
        var dicts: [Dict] = []
        for token in Tokens.splitQuoted(mapNames) {
            let (name, dict) = DictCache.open(token, flags: flags)
            names.append(name)
            dicts.append(dict)
        }
        self.names = names
        self.dicts = dicts
    }

    public var isEmpty: Bool { dicts.isEmpty }

    /// The first answer for `key`; nil when no table has it (`error` is then nil) or when
    /// a table failed (`error` says how). `filter`: only tables with one of these flags
    /// (e.g. .fixed skips pattern tables).
    public func find(_ key: String, filter: DictFlags = []) -> String? {
        error = nil
        if key.isEmpty { return nil }
        for dict in dicts {
            if !filter.isEmpty && dict.flags.isDisjoint(with: filter) { continue }
            do {
                if let value = try dict.lookup(key) {
                    if value.isEmpty {
                        Msg.warn("\(title) lookup of \(key) returns an empty string result")
                        Msg.warn("\(title) should return NO RESULT in case of NOT FOUND")
                        error = .config
                        return nil
                    }
                    return value
                }
            } catch let e {
                error = e
                Msg.warn("\(dict.type):\(dict.name) lookup error for \"\(key)\"")
                return nil
            }
        }
        return nil
    }

    func setError(_ e: DictError?) { error = e }

    /// find() as a three-way answer.
    public func lookup(_ key: String, filter: DictFlags = []) -> MapsAnswer {
        if let v = find(key, filter: filter) { return .found(v) }
        if let e = error { return .failed(e) }
        return .notFound
    }
}

public enum MapsAnswer: Equatable, Sendable {
    case found(String)
    case notFound
    case failed(DictError)
}
