// SafeFile: reading whole files and replacing them atomically.
// Mirrors Postfix util/edit_file.c (locked temporary file renamed into place) and the
// "atomic write" primitive: write a temporary file, fsync it, rename it over the target,
// fsync the directory. A crash at any step leaves either the old file or the new one.
import Glibc

public enum SafeFile {
    /// Reads a whole file. Throws SystemError("open PATH") and the like.
    public static func read(_ path: String) throws -> [UInt8] {
        let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError.current("open \(path)") }
        defer { close(fd) }
        return try readAll(fd: fd, path: path)
    }

    /// Reads from a descriptor until end of file.
    public static func readAll(fd: Int32, path: String = "input") throws -> [UInt8] {
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.current("read \(path)")
            }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    /// Writes all bytes to a descriptor.
    public static func writeAll(fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw SystemError.current("write \(path)")
                }
                off += n
            }
        }
    }

    /// Replaces `path` with `bytes`: writes `path.PID.tmp`, fsyncs it, renames it into
    /// place and fsyncs the directory. `mode` applies to a new file; an existing file keeps
    /// its mode and owner.
    public static func atomicWrite(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let tmp = "\(path).\(getpid()).tmp"
        var st = stat()
        let exists = stat(path, &st) == 0
        let fd = retryingEINTR { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC, exists ? st.st_mode & 0o7777 : mode) }
        if fd < 0 { throw SystemError.current("create \(tmp)") }
        do {
            if exists {
                _ = fchmod(fd, st.st_mode & 0o7777)
                if geteuid() == 0 { _ = fchown(fd, st.st_uid, st.st_gid) }
            }
            try writeAll(fd: fd, bytes, path: tmp)
            if fsync(fd) < 0 { throw SystemError.current("fsync \(tmp)") }
            if close(fd) < 0 { throw SystemError.current("close \(tmp)") }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        if rename(tmp, path) < 0 {
            let e = SystemError.current("rename \(tmp) to \(path)")
            unlink(tmp)
            throw e
        }
        syncDirectory(of: path)
    }

    /// Why safe_open refused a file; `reason` is Postfix's text ("cannot open file: ...").
    public struct OpenError: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Opens a file the way Postfix's safe_open does: an existing file must be a regular
    /// file with one link, not a symlink, and still the file that was looked up; with
    /// O_CREAT a missing file is created exclusively (never through a dangling symlink).
    public static func safeOpen(_ path: String, flags: Int32, mode: mode_t = 0o600) throws -> Int32 {
        let create = flags & O_CREAT != 0
        let fd = retryingEINTR { open(path, (flags & ~(O_CREAT | O_EXCL)) | O_CLOEXEC) }
        if fd < 0 {
            guard create && errno == ENOENT else {
                throw OpenError(reason: "cannot open file: \(errnoText(errno))")
            }
            let nfd = retryingEINTR { open(path, flags | O_CREAT | O_EXCL | O_CLOEXEC, mode) }
            if nfd < 0 { throw OpenError(reason: "cannot create file exclusively: \(errnoText(errno))") }
            return nfd
        }
        var fst = stat(), lst = stat()
        func fail(_ why: String) throws -> Never {
            close(fd)
            throw OpenError(reason: why)
        }
        if fstat(fd, &fst) < 0 { try fail("bad open file status: \(errnoText(errno))") }
        if fst.st_nlink != 1 { try fail("file has \(fst.st_nlink) hard links") }
        if fst.st_mode & S_IFMT == S_IFDIR { try fail("file is a directory") }
        // A symlink is followed only when root owns it (as Postfix allows).
        if lstat(path, &lst) < 0 || (lst.st_mode & S_IFMT == S_IFLNK && (lst.st_uid != 0 || stat(path, &lst) < 0))
            || lst.st_dev != fst.st_dev || lst.st_ino != fst.st_ino {
            try fail("file status changed unexpectedly")
        }
        return fd
    }

    /// safeOpen for appending (O_WRONLY | O_APPEND | O_CREAT).
    public static func openAppend(_ path: String, mode: mode_t) throws -> Int32 {
        try safeOpen(path, flags: O_WRONLY | O_APPEND | O_CREAT, mode: mode)
    }

    /// fsyncs the directory that holds `path`, making a rename or create durable.
    public static func syncDirectory(of path: String) {
        let dir = dirname(of: path)
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}

/// An edit of a configuration file in Postfix's way: the temporary file `path.tmp` is
/// opened and exclusively locked, so concurrent editors take turns; the new text is written
/// there and renamed over the original.
public final class EditFile {
    public let path: String
    public let tmpPath: String
    private var fd: Int32

    /// Opens and locks `path.tmp`. A new file gets `mode`; the caller writes, then `commit`s.
    public init(path: String, mode: mode_t = 0o644) throws {
        self.path = path
        let tmpPath = path + ".tmp"
        self.tmpPath = tmpPath
        while true {
            let fd = retryingEINTR { open(tmpPath, O_WRONLY | O_CREAT | O_CLOEXEC, mode) }
            if fd < 0 { throw SystemError.current("open \(tmpPath)") }
            do {
                try FileLock.apply(fd, style: .flock, .exclusive, wait: true)
            } catch {
                close(fd)
                throw SystemError(errno: (error as? SystemError)?.errno ?? EIO, "lock \(tmpPath)")
            }
            // Someone else may have renamed the file we locked; start over if so.
            var fst = stat(), pst = stat()
            if fstat(fd, &fst) == 0 && stat(tmpPath, &pst) == 0
                && fst.st_ino == pst.st_ino && fst.st_dev == pst.st_dev {
                if ftruncate(fd, 0) < 0 {
                    close(fd)
                    throw SystemError.current("truncate \(tmpPath)")
                }
                _ = fchmod(fd, mode)
                self.fd = fd
                return
            }
            close(fd)
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try SafeFile.writeAll(fd: fd, bytes, path: tmpPath)
    }

    /// Flushes the new text to disk and renames it over the original, optionally setting
    /// the new file's mode first.
    public func commit(mode: mode_t? = nil) throws {
        if let m = mode, fchmod(fd, m) < 0 { throw SystemError.current("fchmod \(tmpPath)") }
        if fsync(fd) < 0 { throw SystemError.current("fsync \(tmpPath)") }
        if rename(tmpPath, path) < 0 { throw SystemError.current("rename \(tmpPath) to \(path)") }
        SafeFile.syncDirectory(of: path)
        close(fd)
        fd = -1
    }

    /// Gives up: removes the temporary file.
    public func abandon() {
        if fd >= 0 {
            unlink(tmpPath)
            close(fd)
            fd = -1
        }
    }

    deinit { abandon() }
}

/// The directory part of a path ("." when there is none), like dirname(1).
public func dirname(of path: String) -> String {
    var bytes = Array(path.utf8)
    while bytes.count > 1 && bytes.last == 0x2F { bytes.removeLast() }
    guard let slash = bytes.lastIndex(of: 0x2F) else { return "." }
    var end = slash
    while end > 0 && bytes[end - 1] == 0x2F { end -= 1 }
    return end == 0 ? "/" : String(decoding: bytes[0..<end], as: UTF8.self)
}

/// The last component of a path, like basename(1).
public func basename(of path: String) -> String {
    var bytes = Array(path.utf8)
    while bytes.count > 1 && bytes.last == 0x2F { bytes.removeLast() }
    guard let slash = bytes.lastIndex(of: 0x2F) else { return String(decoding: bytes, as: UTF8.self) }
    if bytes.count == 1 { return "/" }
    return String(decoding: bytes[(slash + 1)...], as: UTF8.self)
}

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null where they were not), so that
/// nothing opened later lands on them; false when one could not be opened there.
@discardableResult
public func openStandardDescriptors() -> Bool {
    var ok = true
    for fd in Int32(0)...2 where fcntl(fd, F_GETFD) < 0 {
        if open("/dev/null", O_RDWR) != fd { ok = false }
    }
    return ok
}
