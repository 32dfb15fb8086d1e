// InetSocket: TCP sockets over IPv4 and IPv6: listen, connect with a time limit, and
// address formatting. Mirrors Postfix util/inet_listen.c, inet_connect.c and
// sane_sockaddr_to_hostaddr.c. Descriptors are close-on-exec.
import Glibc
import CShim

/// A socket address of either family.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public var family: Int32
    /// 4 or 16 bytes, network order.
    public var address: [UInt8]
    public var port: UInt16

    public init(family: Int32, address: [UInt8], port: UInt16) {
        self.family = family
        self.address = address
        self.port = port
    }

    /// Parses a numeric IPv4 or IPv6 address (without brackets).
    public init?(numeric host: String, port: UInt16) {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            self.init(family: AF_INET, address: withUnsafeBytes(of: v4) { Array($0) }, port: port)
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            self.init(family: AF_INET6, address: withUnsafeBytes(of: v6) { Array($0) }, port: port)
        } else {
            return nil
        }
    }

    /// The wildcard address of a family.
    public static func any(_ family: Int32, port: UInt16) -> SocketAddress {
        SocketAddress(family: family, address: [UInt8](repeating: 0, count: family == AF_INET6 ? 16 : 4), port: port)
    }

    /// Numeric host text (inet_ntop).
    public var host: String {
        var buf = [CChar](repeating: 0, count: 64)
        address.withUnsafeBytes { _ = inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    public var description: String { family == AF_INET6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var isLoopback: Bool {
        family == AF_INET ? address[0] == 127 : address == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// Calls `body` with a sockaddr for this address.
    public func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T) rethrows -> T {
        if family == AF_INET {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { raw in for i in 0..<4 { raw[i] = address[i] } }
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in for i in 0..<16 { raw[i] = address[i] } }
        return try withUnsafePointer(to: &sin6) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }

    /// Reads a sockaddr (IPv4-mapped IPv6 addresses become IPv4).
    public static func from(_ sa: UnsafePointer<sockaddr>) -> SocketAddress? {
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                SocketAddress(family: AF_INET, address: withUnsafeBytes(of: p.pointee.sin_addr) { Array($0) },
                              port: UInt16(bigEndian: p.pointee.sin_port))
            }
        case AF_INET6:
            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                let bytes = withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                let port = UInt16(bigEndian: p.pointee.sin6_port)
                if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                    return SocketAddress(family: AF_INET, address: Array(bytes[12...]), port: port)
                }
                return SocketAddress(family: AF_INET6, address: bytes, port: port)
            }
        default:
            return nil
        }
    }
}

public enum InetSocket {
    /// A listening TCP socket, non-blocking, SO_REUSEADDR (never SO_REUSEPORT: a second
    /// listener on the same port is an error, as in Postfix), IPv6 sockets IPv6-only. Errors read as Postfix's inet_listen:
    /// "bind 127.0.0.1 port 25: Address already in use".
    public static func listen(_ addr: SocketAddress, backlog: Int32) throws -> Int32 {
        let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current("socket") }
        var on: Int32 = 1
        if addr.family == AF_INET6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        let r = addr.withSockaddr { bind(fd, $0, $1) }
        if r < 0 {
            let e = SystemError.current("bind \(addr.host) port \(addr.port)")
            close(fd)
            throw e
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if Glibc.listen(fd, backlog) < 0 {
            let e = SystemError.current("listen")
            close(fd)
            throw e
        }
        return fd
    }

    /// Connects, waiting at most `timeout` seconds; the returned descriptor is blocking.
    /// `from` binds the local end first (smtp_bind_address).
    public static func connect(_ addr: SocketAddress, from: SocketAddress? = nil, timeout: Int) throws -> Int32 {
        let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current("socket") }
        if let from, from.withSockaddr({ bind(fd, $0, $1) }) < 0 {
            let e = SystemError.current("bind \(from.host)")
            close(fd)
            throw e
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let r = addr.withSockaddr { Glibc.connect(fd, $0, $1) }
        if r < 0 && errno != EINPROGRESS {
            let e = SystemError.current("connect to \(addr)")
            close(fd)
            throw e
        }
        if r < 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let pr = retryingEINTR { poll(&pfd, 1, Int32(clamping: timeout * 1000)) }
            var soerr: Int32 = 0
            var sl = socklen_t(MemoryLayout<Int32>.size)
            if pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0 {
                close(fd)
                throw SystemError(errno: pr == 0 ? ETIMEDOUT : soerr, "connect to \(addr)")
            }
        }
        _ = fcntl(fd, F_SETFL, flags)
        return fd
    }

    /// The addresses of a host name or numeric address (getaddrinfo, TCP), in the
    /// resolver's order; `family` AF_UNSPEC for both IPv4 and IPv6. The error is
    /// getaddrinfo's, for gai_strerror.
    public static func resolve(_ host: String, port: UInt16, family: Int32 = AF_UNSPEC) -> Result<[SocketAddress], GAIError> {
        if let numeric = SocketAddress(numeric: host, port: port) { return .success([numeric]) }
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let err = getaddrinfo(host, nil, &hints, &res)
        if err != 0 { return .failure(GAIError(code: err)) }
        defer { freeaddrinfo(res) }
        var out: [SocketAddress] = []
        var p = res
        while let ai = p {
            if let a = ai.pointee.ai_addr, var sa = SocketAddress.from(a) {
                sa.port = port
                if !out.contains(sa) { out.append(sa) }
            }
            p = ai.pointee.ai_next
        }
        return .success(out)
    }

    /// The local and peer addresses of a connected socket.
    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                getsockname(fd, p, &len) == 0 ? SocketAddress.from(p) : nil
            }
        }
    }

    public static func peerAddress(_ fd: Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                getpeername(fd, p, &len) == 0 ? SocketAddress.from(p) : nil
            }
        }
    }

    /// A port number or a service name from /etc/services (TCP).
    public static func port(_ text: String) -> UInt16? {
        // Numbers wrap at 65536, as Postfix's htons(atoi(port)) does.
        if !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return UInt16(truncatingIfNeeded: Int(text.suffix(9)) ?? 0)
        }
        guard let se = getservbyname(text, "tcp") else { return nil }
        return UInt16(bigEndian: UInt16(truncatingIfNeeded: se.pointee.s_port))
    }
}

public enum FileDescriptor {
    public static func setNonBlocking(_ fd: Int32, _ on: Bool = true) {
        let fl = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK)
    }

    public static func setCloseOnExec(_ fd: Int32, _ on: Bool = true) {
        let fl = fcntl(fd, F_GETFD)
        _ = fcntl(fd, F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC)
    }

    /// Waits until `fd` is readable for at most `ms` milliseconds; true when readable.
    public static func waitReadable(_ fd: Int32, milliseconds ms: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return retryingEINTR { poll(&pfd, 1, ms) } > 0
    }
}

/// A getaddrinfo() failure.
public struct GAIError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public init(code: Int32) { self.code = code }
    /// EAI_AGAIN and friends: the answer may be different later.
    public var isTemporary: Bool { code == EAI_AGAIN || code == EAI_MEMORY || code == EAI_SYSTEM }
    public var description: String { String(cString: gai_strerror(code)) }
}
