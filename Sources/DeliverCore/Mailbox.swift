// Mailbox: appending a message to an mbox file under the locks a site asks for, writing
// one into a Maildir (tmp, then a unique name in new), and acting with a user's rights.
// Mirrors Postfix global/mbox_open.c, util/dot_lockfile.c, local/maildir.c and
// virtual/maildir.c, util/set_eugid.c.
import Glibc
import MailUtil
import MailGlobal

/// Whose rights a file operation uses.
public struct Rights: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public init(uid: uid_t, gid: gid_t) {
        self.uid = uid
        self.gid = gid
    }
}

/// How mailboxes are locked (mailbox_delivery_lock, virtual_mailbox_lock and friends).
public struct LockSettings: Sendable {
    public var styles: [String]
    public var attempts: Int
    public var delay: Int
    public var staleAfter: Int

    public init(config: MailConfig, parameter: String) {
        styles = config.list(parameter).map { $0.lowercased() }
        attempts = config.int("deliver_lock_attempts")
        delay = config.time("deliver_lock_delay")
        staleAfter = config.time("stale_lock_time")
    }
}

/// What a message copy is made of: the queue file, the content offset, and the
/// envelope lines to prepend.
public struct CopySource {
    public var queueFD: Int32
    public var offset: Int
    public var sender: String
    public var originalRecipient: String
    public var delivered: String

    public init(queueFD: Int32, offset: Int, sender: String, originalRecipient: String, delivered: String) {
        self.queueFD = queueFD
        self.offset = offset
        self.sender = sender
        self.originalRecipient = originalRecipient
        self.delivered = delivered
    }
}

public enum Mailbox {
    /// Runs `body` with the effective user and group `r` (only when running as root).
    public static func asUser<T>(_ r: Rights, _ body: () -> T) -> T {
        let wasUID = geteuid(), wasGID = getegid()
        guard getuid() == 0 else { return body() }
        if r.uid != wasUID || r.gid != wasGID {
            if seteuid(0) < 0 { Msg.fatal("seteuid(0): \(errnoText(errno))") }
            var g = r.gid
            setgroups(1, &g)
            if setegid(r.gid) < 0 { Msg.fatal("setegid(\(r.gid)): \(errnoText(errno))") }
            if seteuid(r.uid) < 0 { Msg.fatal("seteuid(\(r.uid)): \(errnoText(errno))") }
        }
        let result = body()
        if geteuid() != wasUID || getegid() != wasGID {
            if seteuid(0) < 0 { Msg.fatal("seteuid(0): \(errnoText(errno))") }
            var g = wasGID
            setgroups(1, &g)
            setegid(wasGID)
            seteuid(wasUID)
        }
        return result
    }

    /// Opens (creating when missing) and locks an mbox file, then appends the copy as
    /// `writer`; nil on success, else why not.
    public static func append(path: String, source: CopySource, flags: CopyFlags, locks: LockSettings,
                              writer: Rights, chownTo: Rights?, requireOwner: uid_t?, rejectExecutable: Bool = false,
                              ownershipHint: String? = "strict_mailbox_ownership") -> DeliveryStatus? {
        var dotlock: DotLock?
        if locks.styles.contains("dotlock") {
            do {
                dotlock = try DotLock.acquire(path, attempts: locks.attempts, delay: UInt32(max(locks.delay, 1)),
                                              staleAfter: locks.staleAfter)
            } catch let e as SystemError {
                // No dot-lock where we may not write (as dot_lockfile fails, the kernel
                // locks still apply).
                if e.errno != EACCES && e.errno != EPERM && e.errno != EROFS {
                    return DeliveryStatus(status: "4.2.0", reason: "unable to create lock file \(path).lock: \(errnoText(e.errno))")
                }
            } catch {}
        }
        defer { dotlock?.release() }
        let fd = open(path, O_APPEND | O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 {
            let e = errno
            return DeliveryStatus(status: MessageCopy.dsnCode(errno: e, default: "5.2.0"),
                                  reason: "cannot open file: \(errnoText(e))")
        }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        if let c = chownTo, st.st_size == 0, st.st_uid != c.uid {
            _ = fchown(fd, c.uid, c.gid)
            fstat(fd, &st)
        }
        if st.st_mode & S_IFMT != S_IFREG {
            return DeliveryStatus(status: "5.2.0", reason: "destination \(path) is not a regular file")
        }
        if st.st_nlink > 1 {
            return DeliveryStatus(status: "5.2.0", reason: "file has \(st.st_nlink) hard links")
        }
        if rejectExecutable && st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH) != 0 {
            return DeliveryStatus(status: "5.7.1", reason: "executable destination file \(path)")
        }
        if let owner = requireOwner, st.st_uid != owner {
            if let hint = ownershipHint { Msg.warn("specify \"\(hint) = no\" to ignore mailbox ownership mismatch") }
            return DeliveryStatus(status: "4.2.0", reason: "destination \(path) is not owned by recipient")
        }
        for style in locks.styles where style == "fcntl" || style == "flock" {
            var locked = false
            for attempt in 0..<max(locks.attempts, 1) {
                if attempt > 0 { sleep(UInt32(max(locks.delay, 1))) }
                if (try? FileLock.apply(fd, style: style == "fcntl" ? .fcntl : .flock, .exclusive, wait: false)) != nil {
                    locked = true
                    break
                }
            }
            if !locked {
                return DeliveryStatus(status: "4.2.0", reason: "unable to lock for exclusive access: \(errnoText(EAGAIN))")
            }
        }
        return asUser(writer) {
            MessageCopy.toFile(fd: fd, queueFD: source.queueFD, offset: source.offset, sender: source.sender,
                               originalRecipient: source.originalRecipient, delivered: source.delivered, flags: flags)
        }
    }

    /// Writes the copy into the Maildir `path` (its tmp, new and cur made as needed);
    /// call with the owner's rights. nil on success.
    public static func maildir(_ path: String, source: CopySource, flags: CopyFlags, hostname: String) -> DeliveryStatus? {
        let dir = path.hasSuffix("/") ? path : path + "/"
        let tmpdir = dir + "tmp/", newdir = dir + "new/", curdir = dir + "cur/"
        var tv = timeval()
        gettimeofday(&tv, nil)
        let tmpfile = "\(tmpdir)\(tv.tv_sec).P\(getpid()).\(hostname)"
        var fd = open(tmpfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 && errno == ENOENT {
            makeDirs(tmpdir)
            fd = open(tmpfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        }
        if fd < 0 {
            let e = errno
            return DeliveryStatus(status: MessageCopy.dsnCode(errno: e, default: "5.2.0"),
                                  reason: "create maildir file \(tmpfile): \(errnoText(e))")
        }
        var st = stat()
        if fstat(fd, &st) < 0 { Msg.fatal("fstat \(tmpfile): \(errnoText(errno))") }
        let newfile = newdir + "\(tv.tv_sec).V\(String(st.st_dev, radix: 16))I\(String(st.st_ino, radix: 16))M\(tv.tv_usec).\(hostname)"
        var failure = MessageCopy.toFile(fd: fd, queueFD: source.queueFD, offset: source.offset, sender: source.sender,
                                         originalRecipient: source.originalRecipient, delivered: source.delivered,
                                         flags: flags)
        close(fd)
        if failure == nil && link(tmpfile, newfile) < 0 {
            var ok = false
            if errno == ENOENT {
                makeDirs(curdir)
                makeDirs(newdir)
                ok = link(tmpfile, newfile) == 0
            }
            if !ok {
                let e = errno
                failure = DeliveryStatus(status: MessageCopy.dsnCode(errno: e, default: "5.2.0"),
                                         reason: "create maildir file \(newfile): \(errnoText(e))")
            }
        }
        if unlink(tmpfile) < 0 { Msg.warn("remove \(tmpfile): \(errnoText(errno))") }
        return failure
    }

    /// make_dirs: every missing directory of `path`, mode 0700.
    public static func makeDirs(_ path: String) {
        var built = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            built += "/" + part
            _ = mkdir(built, 0o700)
        }
    }
}
