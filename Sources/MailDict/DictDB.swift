// DictDB: hash: and btree: tables, Berkeley DB files that Postfix's own programs read.
// Mirrors Postfix util/dict_db.c: the file is NAME.db, opened in a private Berkeley DB
// environment whose home is its directory, hash tables sized for 4096 elements; keys and
// values carry a trailing NUL unless the file was written without (both forms are tried
// until one is seen); keys are lowercased when the caller folds; a fine-grained lock is
// taken around each access when asked (daemons), or the whole file is locked by the
// caller (postmap).
import Glibc
import CBerkeleyDB
import MailUtil

public final class DictDB: Dict {
    /// Berkeley DB cache for this process's tables: small for reading, large for bulk
    /// building (berkeley_db_read_buffer_size / berkeley_db_create_buffer_size).
    nonisolated(unsafe) public static var cacheSize = 128 * 1024
    static let hashElements: UInt32 = 4096

    let db: UnsafeMutablePointer<DB>
    let env: UnsafeMutablePointer<DB_ENV>
    var cursor: UnsafeMutablePointer<DBC>?
    /// The file's descriptor: the per-access lock and change detection use it.
    let fd: Int32

    public static func openHash(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        try DictDB(type: "hash", dbType: DB_HASH, name: name, mode: mode, flags: flags)
    }

    public static func openBtree(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        try DictDB(type: "btree", dbType: DB_BTREE, name: name, mode: mode, flags: flags)
    }

    /// Opens NAME.db, or `file` (a temporary file that will replace NAME.db; messages
    /// still name NAME.db).
    public convenience init(type: String, name: String, file: String? = nil, mode: DictOpenMode, flags: DictFlags) throws(DictOpenError) {
        try self.init(type: type, dbType: type == "btree" ? DB_BTREE : DB_HASH, name: name, file: file, mode: mode, flags: flags)
    }

    init(type: String, dbType: DBTYPE, name: String, file: String? = nil, mode: DictOpenMode, flags: DictFlags) throws(DictOpenError) {
        let path = file ?? name + ".db"
        let shownPath = name + ".db"
        var lockFD: Int32 = -1
        if flags.contains(.lock) {
            lockFD = Glibc.open(path, mode.flags & ~(O_CREAT | O_TRUNC) | O_CLOEXEC, 0o644)
            if lockFD < 0 {
                if errno != ENOENT { throw DictOpenError("open database \(shownPath): \(errnoText(errno))") }
            } else if (try? FileLock.apply(lockFD, style: .flock, .shared)) == nil {
                Msg.fatal("shared-lock database \(shownPath) for open: \(errnoText(errno))")
            }
        }
        defer { if lockFD >= 0 { Glibc.close(lockFD) } }

        var envp: UnsafeMutablePointer<DB_ENV>?
        var rc = db_env_create(&envp, 0)
        guard rc == 0, let env = envp else { Msg.fatal("create DB environment: \(errnoText(rc))") }
        var gbytes: UInt32 = 0, bytes: UInt32 = 0
        var ncache: Int32 = 0
        rc = env.pointee.get_cachesize(env, &gbytes, &bytes, &ncache)
        if rc != 0 { Msg.fatal("get DB cache size: \(errnoText(rc))") }
        if gbytes == 0 && Int(bytes) < DictDB.cacheSize {
            rc = env.pointee.set_cache_max(env, gbytes, UInt32(DictDB.cacheSize))
            if rc != 0 { Msg.fatal("set DB max cache size \(DictDB.cacheSize): \(errnoText(rc))") }
            rc = env.pointee.set_cachesize(env, gbytes, UInt32(DictDB.cacheSize), ncache)
            if rc != 0 { Msg.fatal("set DB cache size \(DictDB.cacheSize): \(errnoText(rc))") }
        }
        rc = env.pointee.open(env, dirname(of: path), UInt32(DB_INIT_MPOOL | DB_CREATE | DB_PRIVATE), 0)
        if rc != 0 { Msg.fatal("open DB environment: \(errnoText(rc))") }

        var dbp: UnsafeMutablePointer<DB>?
        rc = db_create(&dbp, env, 0)
        guard rc == 0, let db = dbp else { Msg.fatal("create DB database: \(errnoText(rc))") }
        if dbType == DB_HASH && db.pointee.set_h_nelem(db, DictDB.hashElements) != 0 {
            Msg.fatal("set DB hash element count \(DictDB.hashElements): \(errnoText(errno))")
        }
        var dbFlags: UInt32 = 0
        let openFlags = mode.flags
        if openFlags == O_RDONLY { dbFlags |= UInt32(DB_RDONLY) }
        if openFlags & O_CREAT != 0 { dbFlags |= UInt32(DB_CREATE) }
        if openFlags & O_TRUNC != 0 { dbFlags |= UInt32(DB_TRUNCATE) }
        rc = db.pointee.open(db, nil, basename(of: path), nil, dbType, dbFlags, 0o644)
        if rc != 0 {
            _ = db.pointee.close(db, 0)
            _ = env.pointee.close(env, 0)
            throw DictOpenError("open database \(shownPath): \(errnoText(rc))")
        }
        var dbfd: Int32 = -1
        rc = db.pointee.fd(db, &dbfd)
        if rc != 0 { Msg.fatal("get database file descriptor: \(errnoText(rc))") }
        self.db = db
        self.env = env
        self.fd = dbfd
        var myFlags = flags.union(.fixed)
        if myFlags.isDisjoint(with: [.try0Null, .try1Null]) { myFlags.formUnion([.try0Null, .try1Null]) }
        super.init(type: type, name: shownPath, flags: myFlags)
        self.lockFD = dbfd
        _ = fcntl(dbfd, F_SETFD, FD_CLOEXEC)
        var st = stat()
        if fstat(dbfd, &st) < 0 { Msg.fatal("dict_db_open: fstat: \(errnoText(errno))") }
        changeWatch = (path, st.st_mtim.tv_sec, st.st_ino, st.st_dev)
        owner = st.st_uid == 0 ? .trusted : .untrusted(uid: st.st_uid)
        // A source file changed long after its database was built is worth a word.
        var src = stat()
        if flags.contains(.lock), stat(name, &src) == 0, src.st_mtim.tv_sec > st.st_mtim.tv_sec,
           src.st_mtim.tv_sec < time(nil) - 100 {
            Msg.warn("database \(shownPath) is older than source file \(name)")
        }
    }

    // MARK: Access

    /// Classifies a Berkeley DB status: 0 success, 1 not found or exists, -1 error (errno set).
    static func sanitize(_ status: Int32) -> Int32 {
        switch status {
        case 0: return 0
        case DB_NOTFOUND, DB_KEYEXIST: return 1
        case DB_KEYEMPTY:
            errno = EINVAL
            return -1
        default:
            errno = status
            return -1
        }
    }

    func withLock<T>(_ op: LockOperation, _ body: () -> T) -> T {
        if flags.contains(.lock) && (try? FileLock.apply(fd, style: .flock, op)) == nil {
            Msg.fatal("\(name): lock dictionary: \(errnoText(errno))")
        }
        defer {
            if flags.contains(.lock) && (try? FileLock.apply(fd, style: .flock, .unlock)) == nil {
                Msg.fatal("\(name): unlock dictionary: \(errnoText(errno))")
            }
        }
        return body()
    }

    /// get() with `bytes` as the key; the value without its trailing NUL, nil if absent.
    func get(_ bytes: [UInt8]) -> [UInt8]? {
        var bytes = bytes
        return bytes.withUnsafeMutableBytes { kp -> [UInt8]? in
            var k = DBT()
            k.data = kp.baseAddress
            k.size = UInt32(kp.count)
            var v = DBT()
            let status = DictDB.sanitize(db.pointee.get(db, nil, &k, &v, 0))
            if status < 0 { Msg.fatal("error reading \(name): \(errnoText(errno))") }
            if status != 0 { return nil }
            return DictDB.copy(v)
        }
    }

    /// Data as Postfix copies it: up to the first NUL.
    /// The text of a key or value, up to a NUL (stored keys and values may end in one).
    static func string(_ d: DBT) -> String {
        guard let p = d.data?.assumingMemoryBound(to: UInt8.self) else { return "" }
        let buf = UnsafeBufferPointer(start: p, count: Int(d.size))
        return String(decoding: buf[..<(buf.firstIndex(of: 0) ?? buf.endIndex)], as: UTF8.self)
    }

    static func copy(_ d: DBT) -> [UInt8] {
        guard let p = d.data?.assumingMemoryBound(to: UInt8.self) else { return [] }
        let buf = UnsafeBufferPointer(start: p, count: Int(d.size))
        if let nul = buf.firstIndex(of: 0) { return Array(buf[..<nul]) }
        return Array(buf)
    }

    override public func lookup(_ key: String) throws(DictError) -> String? {
        let k = Array(folded(key).utf8)
        var result: [UInt8]?
        withLock(.shared) {
            if flags.contains(.try1Null), let v = get(k + [0]) {
                flags.remove(.try0Null)
                result = v
            }
            if result == nil && flags.contains(.try0Null), let v = get(k) {
                flags.remove(.try1Null)
                result = v
            }
        }
        guard let r = result else { return nil }
        if flags.contains(.utf8Request) && DictRegistry.utf8Enabled && !UTF8Check.isValid(r) {
            Msg.warn("\(type):\(name): key \"\(key)\": non-UTF-8 value \"\(String(decoding: r, as: UTF8.self))\": malformed UTF-8 or invalid codepoint")
            throw .config
        }
        return String(decoding: r, as: UTF8.self)
    }

    override public func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        let name = folded(key)
        var k = Array(name.utf8)
        var v = Array(value.utf8)
        if flags.contains(.try1Null) && flags.contains(.try0Null) { flags.remove(.try0Null) }
        if flags.contains(.try1Null) {
            k.append(0)
            v.append(0)
        }
        let status: Int32 = withLock(.exclusive) {
            k.withUnsafeMutableBytes { kp in
                v.withUnsafeMutableBytes { vp in
                    var kd = DBT(), vd = DBT()
                    kd.data = kp.baseAddress
                    kd.size = UInt32(kp.count)
                    vd.data = vp.baseAddress
                    vd.size = UInt32(vp.count)
                    let s = DictDB.sanitize(db.pointee.put(db, nil, &kd, &vd,
                                                           flags.contains(.duplicateReplace) ? 0 : UInt32(DB_NOOVERWRITE)))
                    if s < 0 { Msg.fatal("error writing \(self.name): \(errnoText(errno))") }
                    if s > 0 {
                        if flags.contains(.duplicateIgnore) {
                        } else if flags.contains(.duplicateWarn) {
                            Msg.warn("\(self.name): duplicate entry: \"\(name)\"")
                        } else {
                            Msg.fatal("\(self.name): duplicate entry: \"\(name)\"")
                        }
                    }
                    if flags.contains(.syncUpdate) && db.pointee.sync(db, 0) != 0 {
                        Msg.fatal("\(self.name): flush dictionary: \(errnoText(errno))")
                    }
                    return s
                }
            }
        }
        return status == 0
    }

    override public func delete(_ key: String) throws(DictError) -> Bool {
        let k = Array(folded(key).utf8)
        func del(_ bytes: [UInt8]) -> Int32 {
            var bytes = bytes
            return bytes.withUnsafeMutableBytes { kp in
                var kd = DBT()
                kd.data = kp.baseAddress
                kd.size = UInt32(kp.count)
                let s = DictDB.sanitize(db.pointee.del(db, nil, &kd, 0))
                if s < 0 { Msg.fatal("error deleting from \(name): \(errnoText(errno))") }
                return s
            }
        }
        var status: Int32 = 1
        withLock(.exclusive) {
            if flags.contains(.try1Null) {
                status = del(k + [0])
                if status == 0 { flags.remove(.try0Null) }
            }
            if status > 0 && flags.contains(.try0Null) {
                status = del(k)
                if status == 0 { flags.remove(.try1Null) }
            }
            if flags.contains(.syncUpdate) && db.pointee.sync(db, 0) != 0 {
                Msg.fatal("\(name): flush dictionary: \(errnoText(errno))")
            }
        }
        return status == 0
    }

    override public func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? {
        if first && cursor == nil {
            var c: UnsafeMutablePointer<DBC>?
            _ = db.pointee.cursor(db, nil, &c, 0)
            cursor = c
        }
        guard let c = cursor else { Msg.panic("dict_db_sequence: no cursor") }
        return withLock(.shared) {
            var k = DBT(), v = DBT()
            let status = c.pointee.get(c, &k, &v, UInt32(first ? DB_FIRST : DB_NEXT))
            if status != 0 && status != DB_NOTFOUND {
                Msg.fatal("error [\(status)] seeking \(name): \(errnoText(status))")
            }
            if status != 0 { return nil }
            return (DictDB.string(k), DictDB.string(v))
        }
    }

    override public func lock(_ op: LockOperation, wait: Bool = true) -> Bool {
        (try? FileLock.apply(fd, style: .flock, op, wait: wait)) != nil
    }

    override public func close() {
        if let c = cursor { _ = c.pointee.close(c) }
        cursor = nil
        if db.pointee.sync(db, 0) != 0 { Msg.fatal("flush database \(name): \(errnoText(errno))") }
        let rc = db.pointee.close(db, 0)
        if rc != 0 { Msg.info("close database \(name): \(errnoText(rc)) (possible Berkeley DB bug)") }
        _ = env.pointee.close(env, 0)
    }
}
