// FileLock: advisory locks on open files (fcntl or flock) and dot-lock files.
// Mirrors Postfix util/myflock.c and util/dot_lockfile.c. The lock style names are the ones
// `postconf -l` lists and `mailbox_delivery_lock` accepts.
import Glibc

/// A kernel lock style.
public enum LockStyle: String, Sendable, CaseIterable {
    case flock, fcntl
}

/// What a lock request asks for.
public enum LockOperation: Sendable {
    case unlock, shared, exclusive
}

public enum FileLock {
    /// Lock methods this build supports, in the order `postconf -l` prints them.
    public static let supportedMethods = ["flock", "fcntl", "dotlock"]

    /// Applies or releases a lock. With `wait == false` a held lock fails at once with
    /// EAGAIN or EWOULDBLOCK, which `isWouldBlock` recognises.
    public static func apply(_ fd: Int32, style: LockStyle, _ op: LockOperation, wait: Bool = true) throws {
        switch style {
        case .flock:
            var how: Int32
            switch op {
            case .unlock: how = LOCK_UN
            case .shared: how = LOCK_SH
            case .exclusive: how = LOCK_EX
            }
            if !wait && op != .unlock { how |= LOCK_NB }
            if retryingEINTR({ flock(fd, how) }) < 0 {
                throw SystemError.current("lock")
            }
        case .fcntl:
            var fl = flock()
            switch op {
            case .unlock: fl.l_type = Int16(F_UNLCK)
            case .shared: fl.l_type = Int16(F_RDLCK)
            case .exclusive: fl.l_type = Int16(F_WRLCK)
            }
            fl.l_whence = Int16(SEEK_SET)
            fl.l_start = 0
            fl.l_len = 0
            let cmd = wait ? F_SETLKW : F_SETLK
            if retryingEINTR({ fcntl(fd, cmd, &fl) }) < 0 {
                let e = errno
                // F_SETLK reports a conflicting lock as EACCES on some systems.
                throw SystemError(errno: e == EACCES ? EAGAIN : e, "lock")
            }
        }
    }

    /// True for the errors a non-waiting lock request returns when the lock is held.
    public static func isWouldBlock(_ error: Error) -> Bool {
        guard let e = error as? SystemError else { return false }
        return e.errno == EAGAIN || e.errno == EWOULDBLOCK
    }
}

/// A dot-lock: the file `path.lock`, created exclusively, as mail readers expect.
public struct DotLock {
    public let lockPath: String

    /// Creates `path.lock`, retrying `attempts` times `delay` seconds apart and removing a
    /// lock file older than `staleAfter` seconds. Throws when the lock cannot be had.
    public static func acquire(_ path: String, attempts: Int = 5, delay: UInt32 = 1,
                               staleAfter: Int = 500) throws -> DotLock {
        let lockPath = path + ".lock"
        var lastError = SystemError(errno: EEXIST, "create \(lockPath)")
        for attempt in 0..<max(attempts, 1) {
            if attempt > 0 { sleep(delay) }
            let fd = retryingEINTR { open(lockPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0) }
            if fd >= 0 {
                close(fd)
                return DotLock(lockPath: lockPath)
            }
            lastError = .current("create \(lockPath)")
            if errno != EEXIST { throw lastError }
            var st = stat()
            if stat(lockPath, &st) == 0 && time(nil) > st.st_ctim.tv_sec + staleAfter {
                _ = unlink(lockPath)
            }
        }
        throw lastError
    }

    public func release() {
        _ = unlink(lockPath)
    }
}
