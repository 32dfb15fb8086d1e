// MailQueue: the queue directory tree and the life of a queue file's name.
// Mirrors Postfix global/mail_queue.c: names of queues, hashed subdirectories, creating a
// file under a fresh queue ID (temporary name, fstat for the inode, rename into place),
// moving files between queues, and the "ready" test (owner-execute bit set).
// Paths are relative to the queue directory unless `root` is given.
import Glibc
import MailUtil

public enum QueueName {
    public static let maildrop = "maildrop"
    public static let incoming = "incoming"
    public static let active = "active"
    public static let deferred = "deferred"
    public static let hold = "hold"
    public static let corrupt = "corrupt"
    public static let bounce = "bounce"
    public static let `defer` = "defer"
    public static let trace = "trace"
    public static let flush = "flush"
    public static let saved = "saved"

    /// mail_queue_name_ok: 1-100 alphanumerics.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        return !u.isEmpty && u.count <= 100 && u.allSatisfy(isAlnum)
    }
}

/// Mode bits of queue files (the group bits of a ready file are flags).
public enum QueueFileMode {
    /// A file is complete when all owner bits are set.
    public static let ready: mode_t = 0o700
    /// Set by the flush service: unthrottle and deliver now.
    public static let unthrottle: mode_t = 0o040
    /// Set by `postsuper -f`: force-expire.
    public static let expire: mode_t = 0o010
    /// Set on files moved to corrupt/.
    public static let corrupt: mode_t = 0o400

    public static func isReady(_ mode: mode_t) -> Bool { mode & ready == ready }
}

public struct MailQueue: Sendable {
    /// Prefix for every path ("" = relative to the current directory).
    public let root: String
    public let hashedQueues: Set<String>
    public let hashDepth: Int
    public let longIDs: Bool

    public init(root: String = "", hashedQueues: [String] = ["deferred", "defer"], hashDepth: Int = 1,
                longIDs: Bool = false) {
        self.root = root.isEmpty || root.hasSuffix("/") ? root : root + "/"
        self.hashedQueues = Set(hashedQueues)
        self.hashDepth = hashDepth
        self.longIDs = longIDs
    }

    /// The directory that holds `id` in `queue`, e.g. "deferred/1".
    public func directory(_ queue: String, _ id: QueueID) -> String {
        var d = root + queue
        if hashedQueues.contains(queue) {
            for h in id.hashDirectories(depth: hashDepth) { d += "/" + h }
        }
        return d
    }

    /// The path of `id` in `queue`, e.g. "deferred/1/1E24012D687".
    public func path(_ queue: String, _ id: QueueID) -> String {
        directory(queue, id) + "/" + id.text
    }

    /// The queue layout main.cf describes.
    public init(config: MailConfig, root: String = "") {
        self.init(root: root, hashedQueues: config.list("hash_queue_names"), hashDepth: config.int("hash_queue_depth"),
                  longIDs: config.bool("enable_long_queue_ids"))
    }

    /// mail_open_ok: `id` in `queue` is a complete queue file that may be opened: a regular
    /// file with all owner bits set and one link. Returns its path and lstat result.
    public func openable(_ queue: String, _ id: String) -> (path: String, stat: stat)? {
        guard let qid = QueueID(id) else { return nil }
        let p = path(queue, qid)
        var st = stat()
        if lstat(p, &st) < 0 {
            if errno != ENOENT { Msg.warn("\(p): \(errnoText(errno))") }
            return nil
        }
        if st.st_mode & S_IFMT != S_IFREG {
            Msg.warn("\(p): uid \(st.st_uid): not a regular file")
            return nil
        }
        if st.st_mode & S_IRWXU != QueueFileMode.ready { return nil }
        if st.st_nlink > 1 {
            Msg.warn("\(p): uid \(st.st_uid): file has \(st.st_nlink) links")
            return nil
        }
        return (p, st)
    }

    /// Creates a new file in `queue` under a fresh ID, open for reading and writing, with
    /// mode 0600|extra (not yet ready). Returns the ID and descriptor.
    public func create(in queue: String, extraMode: mode_t = 0) throws -> (id: QueueID, fd: Int32) {
        var tv = timeval()
        var fd: Int32 = -1
        var temp = ""
        while true {
            gettimeofday(&tv, nil)
            temp = "\(root)\(queue)/\(tv.tv_usec).\(getpid())"
            fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600 | extraMode)
            if fd >= 0 { break }
            if errno != EEXIST { throw SystemError.current("create file \(temp)") }
            usleep(1)
        }
        var st = stat()
        if fstat(fd, &st) < 0 {
            let e = SystemError.current("fstat \(temp)")
            close(fd)
            unlink(temp)
            throw e
        }
        for attempt in 0...1000 {
            gettimeofday(&tv, nil)
            let id = longIDs
                ? QueueID.long(sec: Int(tv.tv_sec), usec: Int(tv.tv_usec), inode: UInt64(st.st_ino))
                : QueueID.short(usec: Int(tv.tv_usec), inode: UInt64(st.st_ino))
            let target = path(queue, id)
            if rename(temp, target) == 0 { return (id, fd) }
            let e = errno
            if e == ENOENT {
                try makeDirectories(directory(queue, id))
                continue
            }
            if attempt == 1000 || (e != EPERM && e != EISDIR) {
                let err = SystemError(errno: e, "rename \(temp) to \(target)")
                close(fd)
                unlink(temp)
                throw err
            }
        }
        close(fd)
        unlink(temp)
        throw SystemError(errno: EAGAIN, "rename \(temp): giving up")
    }

    /// Moves `id` from one queue to another, creating hash directories as needed.
    public func move(_ id: QueueID, from: String, to: String) throws {
        let src = path(from, id), dst = path(to, id)
        if rename(src, dst) == 0 { return }
        if errno == ENOENT {
            var st = stat()
            if stat(src, &st) == 0 {
                try makeDirectories(directory(to, id))
                if rename(src, dst) == 0 { return }
            } else {
                errno = ENOENT
            }
        }
        throw SystemError.current("rename \(src) to \(dst)")
    }

    /// Opens `queue`/`name` (a per-message or per-site logfile) for appending, creating it
    /// mode 0600 and its hash directories when missing; -1 with errno on failure.
    public func openAppend(_ queue: String, _ name: String) -> Int32 {
        guard let qid = QueueID(name) else {
            errno = EINVAL
            return -1
        }
        let p = path(queue, qid)
        var fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 && errno == ENOENT {
            try? makeDirectories(directory(queue, qid))
            fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        }
        return fd
    }

    /// Removes `id` from `queue`.
    public func remove(_ queue: String, _ id: QueueID) throws {
        let p = path(queue, id)
        if unlink(p) < 0 { throw SystemError.current("remove \(p)") }
    }

    /// Creates the directory and its missing parents, mode 0700.
    public func makeDirectories(_ dir: String) throws {
        var built = dir.hasPrefix("/") ? "/" : ""
        for part in dir.split(separator: "/") {
            built += (built.isEmpty || built == "/" ? "" : "/") + part
            if mkdir(built, 0o700) < 0 && errno != EEXIST {
                throw SystemError.current("mkdir \(built)")
            }
        }
    }

    /// Every queue ID under `dir` (scan_dir with mail_scan_dir_next): names that are valid
    /// queue IDs, descending into the one-character directories of hashed queues.
    public static func scan(_ dir: String) -> [String] {
        var out: [String] = []
        guard let d = opendir(dir) else { return out }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            if name.count == 1 {
                var st = stat()
                if lstat(dir + "/" + name, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
                    out += scan(dir + "/" + name)
                    continue
                }
            }
            if QueueID.isValid(name) { out.append(name) }
        }
        return out
    }
}
