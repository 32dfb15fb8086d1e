// Dict: one lookup table, as every daemon and postmap see it: lookup, update, delete,
// sequence, lock, close, and change detection.
// Mirrors Postfix util/dict.h, dict_alloc.c and dict.c. The flag bits are Postfix's own,
// because they travel over the wire to proxymap. A table that fails reports it by
// throwing DictError after it has logged why; "not found" is nil, never an error.
import Glibc
import MailUtil

/// Postfix's DICT_FLAG_* bits, with the same values.
public struct DictFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let duplicateWarn = DictFlags(rawValue: 1 << 0)
    public static let duplicateIgnore = DictFlags(rawValue: 1 << 1)
    /// Try keys without a trailing NUL byte.
    public static let try0Null = DictFlags(rawValue: 1 << 2)
    /// Try keys with a trailing NUL byte.
    public static let try1Null = DictFlags(rawValue: 1 << 3)
    /// Fixed keys (an indexed file), as opposed to patterns.
    public static let fixed = DictFlags(rawValue: 1 << 4)
    public static let pattern = DictFlags(rawValue: 1 << 5)
    /// Take a lock around each access.
    public static let lock = DictFlags(rawValue: 1 << 6)
    public static let duplicateReplace = DictFlags(rawValue: 1 << 7)
    public static let syncUpdate = DictFlags(rawValue: 1 << 8)
    public static let debug = DictFlags(rawValue: 1 << 9)
    public static let noRegsub = DictFlags(rawValue: 1 << 11)
    public static let noProxy = DictFlags(rawValue: 1 << 12)
    public static let noUnauth = DictFlags(rawValue: 1 << 13)
    /// Lowercase the key of a fixed-case table.
    public static let foldFix = DictFlags(rawValue: 1 << 14)
    /// Lowercase the key of a table with mixed-case patterns.
    public static let foldMul = DictFlags(rawValue: 1 << 15)
    public static let openLock = DictFlags(rawValue: 1 << 16)
    public static let bulkUpdate = DictFlags(rawValue: 1 << 17)
    public static let multiWriter = DictFlags(rawValue: 1 << 18)
    public static let utf8Request = DictFlags(rawValue: 1 << 19)
    public static let utf8Active = DictFlags(rawValue: 1 << 20)

    public static let foldAny: DictFlags = [.foldFix, .foldMul]
    public static let paranoid: DictFlags = [.noRegsub, .noProxy, .noUnauth]
    /// Set by the table itself.
    public static let implementationMask: DictFlags = [.fixed, .pattern, .multiWriter]
    /// What a requester may change between requests (proxymap).
    public static let requestMask: DictFlags = [.foldAny, .lock, .duplicateReplace, .duplicateWarn,
                                               .duplicateIgnore, .syncUpdate, .paranoid, .utf8Request]
    public var instanceFlags: DictFlags { DictFlags(rawValue: rawValue & ~(DictFlags.implementationMask.rawValue | DictFlags.requestMask.rawValue)) }

    /// Names as Postfix's dict_flags_str() prints them ("lock|fold_fix|utf8_request").
    static let names: [(DictFlags, String)] = [
        (.duplicateWarn, "warn_dup"), (.duplicateIgnore, "ignore_dup"), (.try0Null, "try0null"),
        (.try1Null, "try1null"), (.fixed, "fixed"), (.pattern, "pattern"), (.lock, "lock"),
        (.duplicateReplace, "replace"), (.syncUpdate, "sync_update"), (.debug, "debug"),
        (.noRegsub, "no_regsub"), (.noProxy, "no_proxy"), (.noUnauth, "no_unauth"),
        (.foldFix, "fold_fix"), (.foldMul, "fold_mul"), (.openLock, "open_lock"),
        (.bulkUpdate, "bulk_update"), (.multiWriter, "multi_writer"), (.utf8Request, "utf8_request"),
        (.utf8Active, "utf8_active"),
    ]

    public var description: String {
        DictFlags.names.filter { contains($0.0) }.map { $0.1 }.joined(separator: "|")
    }
}

/// Why a table could not answer: it is temporarily unavailable (retry), or broken as
/// configured (config). The table has logged the details.
public enum DictError: Error, Equatable, Sendable {
    case retry
    case config
}

/// Who owns a table's data: a root-owned file can be trusted with commands and files in
/// its results, another user's only for that user.
public enum DictOwner: Equatable, Sendable {
    case trusted
    case untrusted(uid: uid_t)
    case unknown
}

/// open(2)-style flags for opening tables.
public enum DictOpenMode: Sendable {
    case readOnly
    case readWrite
    /// Read and write a table that must exist already (postmap -d).
    case modify
    /// Create (or empty) for a bulk rebuild, as postmap does.
    case create

    public var flags: Int32 {
        switch self {
        case .readOnly: return O_RDONLY
        case .readWrite: return O_RDWR | O_CREAT
        case .modify: return O_RDWR
        case .create: return O_RDWR | O_CREAT | O_TRUNC
        }
    }

    public init(flags: Int32) {
        if flags & O_ACCMODE == O_RDONLY {
            self = .readOnly
        } else {
            self = flags & O_TRUNC != 0 ? .create : flags & O_CREAT != 0 ? .readWrite : .modify
        }
    }
}

/// One open table. Types subclass it and override what they support; the rest fails as
/// Postfix's defaults do ("table hash:/x: update operation is not supported").
open class Dict {
    public let type: String
    public let name: String
    public var flags: DictFlags
    public var owner: DictOwner = .trusted
    /// The file whose replacement or modification means the table changed, and its
    /// identity when opened.
    var changeWatch: (path: String, mtime: time_t, ino: ino_t, dev: dev_t)?
    /// Descriptor for lock(); -1 when the table has none.
    public var lockFD: Int32 = -1

    public init(type: String, name: String, flags: DictFlags) {
        self.type = type
        self.name = name
        self.flags = flags
    }

    /// "type:name" as messages show the table.
    public var label: String { "\(type):\(name)" }

    open func lookup(_ key: String) throws(DictError) -> String? {
        Msg.fatal("table \(type):\(name): lookup operation is not supported")
    }

    /// Stores a value; returns false when the key exists and duplicates are not replaced.
    @discardableResult
    open func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        Msg.fatal("table \(type):\(name): update operation is not supported")
    }

    /// Removes a key; false when it was not there.
    @discardableResult
    open func delete(_ key: String) throws(DictError) -> Bool {
        Msg.fatal("table \(type):\(name): delete operation is not supported")
    }

    /// The first (`first == true`) or next entry; nil at the end.
    open func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? {
        Msg.fatal("table \(type):\(name): sequence operation is not supported")
    }

    /// Locks or unlocks the whole table (postmap -i, postalias); false when it cannot.
    open func lock(_ op: LockOperation, wait: Bool = true) -> Bool {
        guard lockFD >= 0 else { return true }
        return (try? FileLock.apply(lockFD, style: .flock, op, wait: wait)) != nil
    }

    open func close() {}

    /// Watches `path` (the file the table was read from) for replacement or change.
    public func watch(_ path: String) {
        var st = stat()
        if stat(path, &st) == 0 { changeWatch = (path, st.st_mtim.tv_sec, st.st_ino, st.st_dev) }
    }

    /// True when the file behind the table was replaced or modified since it was opened;
    /// a daemon then finishes its work and exits, so that its successor opens the new one.
    open var hasChanged: Bool {
        guard let w = changeWatch else { return false }
        var st = stat()
        if stat(w.path, &st) != 0 { return true }
        return st.st_mtim.tv_sec != w.mtime || st.st_ino != w.ino || st.st_dev != w.dev
    }

    /// The key as the table compares it: lowercased when asked to fold.
    public func folded(_ key: String) -> String {
        guard flags.contains(.foldFix) else { return key }
        return DictKey.fold(key, utf8: DictRegistry.utf8Enabled && flags.contains(.utf8Request))
    }
}

public enum DictKey {
    /// Lowercases a key as Postfix does: casefold() when UTF-8 is enabled and the table
    /// was asked for it (full Unicode case folding), else lowercase() (ASCII only).
    public static func fold(_ key: String, utf8: Bool = true) -> String {
        utf8 ? CaseFold.fold(key) : CaseFold.lowercaseASCII(key)
    }
}
