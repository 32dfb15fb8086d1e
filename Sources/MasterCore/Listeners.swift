// Listeners: the endpoints master listens on for its services, and the wakeup triggers it
// sends them.
// Mirrors Postfix master/master_listen.c, master_wakeup.c and util/{inet,unix,fifo,
// unix_dgram,pass}_listen.c and *_trigger.c: inet sockets per address (SO_REUSEADDR,
// SO_REUSEPORT, IPv6-only), UNIX stream sockets mode 0666, FIFOs mode 0622 and UNIX
// datagram sockets 0666, the local ones created by mail_owner. All non-blocking and
// close-on-exec in master; children get them as fds 6 and up.
import Glibc
import CShim
import MailUtil
import MailGlobal

/// A listener failure, with Postfix's text ("bind 127.0.0.1 port 25: Address already in use").
struct ListenError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
    init(_ e: SystemError) { description = e.description }
}

/// Runs code with mail_owner's effective user and group IDs, as Postfix's set_eugid does
/// around creating local endpoints; a no-op without root (single-user mode).
struct Privileges {
    let uid: uid_t
    let gid: gid_t

    func asOwner<T>(_ body: () throws -> T) rethrows -> T {
        guard geteuid() == 0 else { return try body() }
        var g = gid
        if setegid(gid) < 0 || setgroups(1, &g) < 0 || seteuid(uid) < 0 {
            Msg.fatal("set_eugid(\(uid), \(gid)): \(errnoText(errno))")
        }
        defer {
            var root: gid_t = 0
            if seteuid(0) < 0 || setegid(0) < 0 || setgroups(1, &root) < 0 {
                Msg.fatal("set_ugid(0, 0): \(errnoText(errno))")
            }
        }
        return try body()
    }
}

enum Listeners {
    static func open(_ svc: MasterService, backlog: Int32, privileges: Privileges?) throws -> [Int32] {
        func local<T>(_ body: () throws -> T) throws -> T {
            if let p = privileges { return try p.asOwner(body) }
            return try body()
        }
        switch svc.type {
        case .inet:
            guard let port = svc.port else {
                throw ListenError("\(svc.name): Servname not supported for ai_socktype")
            }
            var fds: [Int32] = []
            do {
                for a in svc.inetAddresses {
                    var addr = a
                    addr.port = port
                    fds.append(try InetSocket.listen(addr, backlog: backlog))
                }
            } catch let e as SystemError {
                fds.forEach { close($0) }
                throw ListenError(e)
            }
            return fds
        case .unix, .pass:
            return [try local { try unixListen(svc.endpoint, type: SOCK_STREAM, backlog: backlog) }]
        case .unixDgram:
            return [try local { try unixListen(svc.endpoint, type: SOCK_DGRAM, backlog: nil) }]
        case .fifo:
            return [try local { try fifoListen(svc.endpoint) }]
        }
    }

    /// unlink, socket, bind, chmod 0666, non-blocking, listen (streams only).
    static func unixListen(_ path: String, type: __socket_type, backlog: Int32?) throws -> Int32 {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        if bytes.count >= MemoryLayout.size(ofValue: sa.sun_path) {
            throw ListenError("unix domain name too long: \(path)")
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        if unlink(path) < 0 && errno != ENOENT { throw ListenError("remove \(path): \(errnoText(errno))") }
        let fd = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw ListenError("socket: \(errnoText(errno))") }
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        if r < 0 {
            let e = errno
            close(fd)
            throw ListenError("bind: \(path): \(errnoText(e))")
        }
        if chmod(path, 0o666) < 0 {
            let e = errno
            close(fd)
            throw ListenError("fchmod socket \(path): \(errnoText(e))")
        }
        FileDescriptor.setNonBlocking(fd)
        if let backlog, listen(fd, backlog) < 0 {
            let e = errno
            close(fd)
            throw ListenError("listen: \(errnoText(e))")
        }
        return fd
    }

    /// unlink, mkfifo 0622, open read-write non-blocking (so that it never sees EOF).
    static func fifoListen(_ path: String) throws -> Int32 {
        if unlink(path) < 0 && errno != ENOENT { throw ListenError("remove \(path): \(errnoText(errno))") }
        if mkfifo(path, 0o622) < 0 { throw ListenError("\(path): mkfifo: \(errnoText(errno))") }
        let fd = Glibc.open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 { throw ListenError("\(path): open: \(errnoText(errno))") }
        _ = fchmod(fd, 0o622)
        return fd
    }

    /// Sends a wakeup request: "W" and a null byte over unix, pass and inet services (two
    /// writes, as Postfix's triggers do), a bare "W" into a FIFO. Waits at most a second;
    /// failures are reported only when verbose, as in Postfix 3.7.
    static func wakeup(_ svc: MasterService, privileges: Privileges?) {
        let w: [UInt8] = [UInt8(ascii: "W")]
        let nul: [UInt8] = [0]
        func send(_ fd: Int32, _ parts: [[UInt8]]) {
            for p in parts { _ = p.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        }
        func failed(_ why: String) {
            Msg.debug("master_wakeup_timer_event: service \(svc.name)(\(svc.identity)): \(why)")
        }
        switch svc.type {
        case .unix:
            do {
                let fd = try UnixSocket.connect(svc.endpoint, timeout: 1)
                send(fd, [w, nul])
                close(fd)
            } catch {
                failed("\(error)")
            }
        case .pass:
            // The trigger travels on a fresh socket whose other end is passed over.
            do {
                let fd = try UnixSocket.connect(svc.endpoint, timeout: 1)
                defer { close(fd) }
                var pair: [Int32] = [0, 0]
                guard cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), &pair) == 0 else {
                    return failed(errnoText(errno))
                }
                defer { close(pair[0]) }
                if cshim_send_fd(fd, pair[1]) < 0 { failed(errnoText(errno)) }
                close(pair[1])
                send(pair[0], [w, nul])
            } catch {
                failed("\(error)")
            }
        case .fifo:
            let open = { Glibc.open(svc.endpoint, O_WRONLY | O_NONBLOCK | O_CLOEXEC) }
            let fd = privileges.map { $0.asOwner(open) } ?? open()
            guard fd >= 0 else { return failed(errnoText(errno)) }
            send(fd, [w])
            close(fd)
        case .inet:
            guard var addr = svc.inetAddresses.first, let port = svc.port else { return }
            addr.port = port
            // A service on every address is reached on the loopback address.
            if svc.identity == String(port) {
                addr = SocketAddress(family: AF_INET, address: [127, 0, 0, 1], port: port)
            }
            do {
                let fd = try InetSocket.connect(addr, timeout: 1)
                send(fd, [w, nul])
                close(fd)
            } catch {
                failed("\(error)")
            }
        case .unixDgram:
            break
        }
    }
}
