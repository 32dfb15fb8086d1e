// UnixSocket: UNIX-domain stream sockets: connect with a time limit, listen, accept.
// Mirrors Postfix util/unix_connect.c and util/unix_listen.c. Descriptors are close-on-exec.
import Glibc
import CShim

public enum UnixSocket {
    /// Fills a sockaddr_un; throws ENAMETOOLONG for a path that does not fit.
    static func address(_ path: String) throws -> (sockaddr_un, socklen_t) {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let cap = MemoryLayout.size(ofValue: sa.sun_path)
        if bytes.count >= cap { throw SystemError(errno: ENAMETOOLONG, "connect to \(path)") }
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        return (sa, len)
    }

    /// Connects to the socket at `path`, waiting at most `timeout` seconds (nil = wait).
    /// The returned descriptor is blocking.
    public static func connect(_ path: String, timeout: Int? = nil) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current("socket") }
        var (sa, len) = try address(path)
        let flags = fcntl(fd, F_GETFL)
        if timeout != nil { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) }
        }
        if r < 0 {
            let e = errno
            if let t = timeout, e == EINPROGRESS || e == EAGAIN {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let pr = retryingEINTR { poll(&pfd, 1, Int32(clamping: t * 1000)) }
                var soerr: Int32 = 0
                var sl = socklen_t(MemoryLayout<Int32>.size)
                if pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0 {
                    close(fd)
                    throw SystemError(errno: pr == 0 ? ETIMEDOUT : (soerr != 0 ? soerr : errno), "connect to \(path)")
                }
            } else {
                close(fd)
                throw SystemError(errno: e, "connect to \(path)")
            }
        }
        if timeout != nil { _ = fcntl(fd, F_SETFL, flags) }
        return fd
    }

    /// Creates a listening socket at `path` (removing a stale one first) with the given mode.
    public static func listen(_ path: String, backlog: Int32 = 100, mode: mode_t = 0o666) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current("socket") }
        var (sa, len) = try address(path)
        _ = unlink(path)
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        if r < 0 {
            let e = SystemError.current("bind \(path)")
            close(fd)
            throw e
        }
        _ = chmod(path, mode)
        if Glibc.listen(fd, backlog) < 0 {
            let e = SystemError.current("listen \(path)")
            close(fd)
            throw e
        }
        return fd
    }

    /// Accepts one connection (close-on-exec).
    public static func accept(_ fd: Int32) throws -> Int32 {
        let c = retryingEINTR { cshim_accept4_cloexec(fd, nil, nil) }
        if c < 0 { throw SystemError.current("accept") }
        return c
    }
}
