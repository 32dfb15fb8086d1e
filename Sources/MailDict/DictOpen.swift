// DictOpen: "type:name" to an open table, through a registry of table types.
// Mirrors Postfix util/dict_open.c and dict_surrogate.c. A table that cannot be opened
// ends a command-line program, but a daemon carries on with a surrogate that fails
// every access with a temporary error (and says why, once at open and at each access),
// so that one broken table defers mail instead of stopping the mail system.
import Glibc
import MailUtil

/// How a table type opens its tables: (name, open mode, flags) → table; nil with errno
/// set when the name cannot be opened.
public typealias DictOpener = (_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict

/// Why a table could not be opened; `reason` is the text Postfix gives.
public struct DictOpenError: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

public enum DictRegistry {
    nonisolated(unsafe) static var openers: [String: DictOpener] = [:]
    /// Types that can also build a file from text (postmap/postalias).
    nonisolated(unsafe) static var builders: Set<String> = []
    /// Daemons continue with a failing stand-in; commands stop (Postfix's dict_allow_surrogate).
    nonisolated(unsafe) public static var allowSurrogate = false
    /// UTF-8 keys and values (smtputf8_enable), which changes how keys are folded.
    nonisolated(unsafe) public static var utf8Enabled = true
    nonisolated(unsafe) static var initialized = false

    /// Adds or replaces a table type.
    public static func register(_ type: String, buildable: Bool = false, _ opener: @escaping DictOpener) {
        openers[type] = opener
        if buildable { builders.insert(type) }
    }

    /// Registers the types this layer implements (once).
    static func ensureInitialized() {
        guard !initialized else { return }
        initialized = true
        BuiltinDicts.registerAll()
    }

    /// The names of every available type, sorted (postconf -m).
    public static var typeNames: [String] {
        ensureInitialized()
        return openers.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    public static func isRegistered(_ type: String) -> Bool {
        ensureInitialized()
        return openers[type] != nil
    }

    public static func canBuild(_ type: String) -> Bool {
        ensureInitialized()
        return builders.contains(type)
    }

    /// Splits "type:name"; fatal when there is no colon (as Postfix is).
    public static func split(_ spec: String) -> (type: String, name: String) {
        guard let colon = spec.firstIndex(of: ":") else {
            Msg.fatal("open dictionary: expecting \"type:name\" form instead of \"\(spec)\"")
        }
        return (String(spec[..<colon]), String(spec[spec.index(after: colon)...]))
    }

    /// Opens "type:name".
    public static func open(_ spec: String, mode: DictOpenMode = .readOnly, flags: DictFlags = []) -> Dict {
        let (type, name) = split(spec)
        return open(type: type, name: name, mode: mode, flags: flags)
    }

    public static func open(type: String, name: String, mode: DictOpenMode = .readOnly, flags: DictFlags = []) -> Dict {
        if type.isEmpty || name.isEmpty {
            Msg.fatal("open dictionary: expecting \"type:name\" form instead of \"\(type):\(name)\"")
        }
        ensureInitialized()
        guard let opener = openers[type] else {
            return surrogate(type: type, name: name, mode: mode, flags: flags,
                             reason: "unsupported dictionary type: \(type)")
        }
        let dict: Dict
        do {
            dict = try opener(name, mode, flags)
        } catch {
            return surrogate(type: type, name: name, mode: mode, flags: flags, reason: error.reason)
        }
        Msg.debug("dict_open: \(type):\(name)")
        if dict.flags.contains(.openLock) {
            if dict.flags.contains(.multiWriter) {
                dict.flags.remove(.openLock)
                dict.flags.insert(.lock)
            } else if !dict.lock(.exclusive, wait: false) {
                Msg.fatal("\(type):\(name): unable to get exclusive lock: \(errnoText(errno))")
            }
        }
        return dict
    }

    /// Stops a command, or gives a daemon a stand-in that fails every access.
    public static func surrogate(type: String, name: String, mode: DictOpenMode, flags: DictFlags, reason: String) -> Dict {
        if allowSurrogate {
            Msg.error(reason)
        } else {
            Msg.fatal(reason)
        }
        return SurrogateDict(type: type, name: name, flags: flags.union(.pattern), reason: reason,
                             writable: mode != .readOnly)
    }
}

/// A table that could not be opened: every access fails with a temporary error.
final class SurrogateDict: Dict {
    let reason: String
    let writable: Bool

    init(type: String, name: String, flags: DictFlags, reason: String, writable: Bool) {
        self.reason = reason
        self.writable = writable
        super.init(type: type, name: name, flags: flags)
    }

    func unavailable() -> DictError {
        Msg.warn("\(type):\(name) is unavailable. \(reason)")
        return .retry
    }

    override func lookup(_ key: String) throws(DictError) -> String? { throw unavailable() }

    override func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        if !writable { Msg.fatal("table \(type):\(name): update operation is not supported") }
        throw unavailable()
    }

    override func delete(_ key: String) throws(DictError) -> Bool {
        if !writable { Msg.fatal("table \(type):\(name): delete operation is not supported") }
        throw unavailable()
    }

    override func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? { throw unavailable() }
}
