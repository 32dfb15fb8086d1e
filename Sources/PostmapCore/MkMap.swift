// MkMap: a table being (re)built by postmap or postalias.
// Mirrors Postfix global/mkmap_open.c and mkmap_db.c: the existing NAME.db must be
// writable by whoever builds (a zero-length one is removed with a warning); an update
// (-i) changes it in place under an exclusive flock(2), which readers respect.
// A full rebuild goes to NAME.db.PID.tmp, which replaces NAME.db when complete (keeping
// its mode and owner); where the directory is not writable it is rebuilt in place under
// the lock, as Postfix always does.
import Glibc
import MailUtil
import MailDict

final class MkMap {
    let dict: Dict
    let type: String
    let name: String
    /// Replaces the old file or releases the lock, once the table is complete.
    private let complete: () -> Void

    private init(dict: Dict, type: String, name: String, complete: @escaping () -> Void) {
        self.dict = dict
        self.type = type
        self.name = name
        self.complete = complete
    }

    static func open(type: String, name: String, incremental: Bool, flags: DictFlags, aliasSignature: Bool) -> MkMap {
        guard type == "hash" || type == "btree" else {
            let d = DictRegistry.open(type: type, name: name, mode: incremental ? .readWrite : .create, flags: flags)
            return MkMap(dict: d, type: type, name: name) { d.close() }
        }
        let dbPath = name + ".db"
        var existing: stat?
        let probe = Glibc.open(dbPath, O_RDWR | O_CLOEXEC)
        if probe >= 0 {
            var st = stat()
            fstat(probe, &st)
            Glibc.close(probe)
            if st.st_size == 0 {
                Msg.warn("removing zero-length database file: \(dbPath)")
                if unlink(dbPath) < 0 { Msg.fatal("cannot remove zero-length database file \(dbPath): \(errnoText(errno))") }
            } else {
                existing = st
            }
        } else if errno != ENOENT {
            Msg.fatal("open \(dbPath): \(errnoText(errno))")
        }

        let dir = dirname(of: dbPath)
        let replace = !incremental && faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0
        if replace {
            let temp = "\(dbPath).\(getpid()).tmp"
            unlink(temp)
            Msg.cleanup = { unlink(temp) }
            let d = openDB(type: type, name: name, file: temp, mode: .create, flags: flags)
            return MkMap(dict: d, type: type, name: name) {
                d.close()
                if let old = existing {
                    _ = chmod(temp, old.st_mode & 0o7777)
                    if geteuid() == 0 { _ = chown(temp, old.st_uid, old.st_gid) }
                }
                let fd = Glibc.open(temp, O_RDONLY | O_CLOEXEC)
                if fd >= 0 {
                    _ = fsync(fd)
                    Glibc.close(fd)
                }
                if rename(temp, dbPath) < 0 { Msg.fatal("rename \(temp) to \(dbPath): \(errnoText(errno))") }
                SafeFile.syncDirectory(of: dbPath)
                Msg.cleanup = nil
            }
        }

        // In place, under an exclusive lock held until the table is complete.
        var lockFD: Int32 = -1
        if existing != nil {
            lockFD = Glibc.open(dbPath, O_RDWR | O_CLOEXEC)
            if lockFD < 0 { Msg.fatal("open \(dbPath): \(errnoText(errno))") }
            if (try? FileLock.apply(lockFD, style: .flock, .exclusive)) == nil {
                Msg.fatal("lock \(dbPath): \(errnoText(errno))")
            }
        }
        let d = openDB(type: type, name: name, file: nil, mode: incremental ? .readWrite : .create, flags: flags)
        if lockFD < 0 {
            lockFD = Glibc.open(dbPath, O_RDWR | O_CLOEXEC)
            if lockFD < 0 { Msg.fatal("open lockfile \(dbPath): \(errnoText(errno))") }
            if (try? FileLock.apply(lockFD, style: .flock, .exclusive)) == nil {
                Msg.fatal("lock \(dbPath): \(errnoText(errno))")
            }
        }
        let fd = lockFD
        return MkMap(dict: d, type: type, name: name) {
            d.close()
            Glibc.close(fd)
        }
    }

    static func openDB(type: String, name: String, file: String?, mode: DictOpenMode, flags: DictFlags) -> Dict {
        do {
            return try DictDB(type: type, name: name, file: file, mode: mode, flags: flags)
        } catch {
            Msg.fatal(error.reason)
        }
    }

    func put(_ key: String, _ value: String) {
        do {
            try dict.update(key, value)
        } catch {
            Msg.fatal("table \(type):\(name): write error: Application error")
        }
    }

    /// postalias's trailer: "@" (so that Sendmail sees a complete database), and the NIS
    /// records YP_LAST_MODIFIED and YP_MASTER_NAME, stored without NUL and unfolded.
    func addAliasSignature(myhostname: String, incremental: Bool) {
        if incremental {
            dict.flags.remove([.duplicateWarn, .duplicateIgnore])
            dict.flags.insert(.duplicateReplace)
        }
        put("@", "@")
        let saved = dict.flags
        dict.flags.remove([.try1Null, .foldFix])
        dict.flags.insert(.try0Null)
        let now = String(time(nil))
        put("YP_LAST_MODIFIED", String(repeating: "0", count: max(0, 10 - now.count)) + now)
        put("YP_MASTER_NAME", myhostname)
        dict.flags = saved
    }

    func finish() { complete() }
}
