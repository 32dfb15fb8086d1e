// ConnectionCache: the smtp/lmtp client's side of the scache(8) service. A session that
// ended cleanly is handed to scache instead of being closed with QUIT, under its server
// address (the endpoint) and, for the first one of a delivery request, under the next
// hop (the destination); later deliveries look for a destination session first, then
// for one per server address. Per-request policy: smtp_connection_cache_destinations,
// or on demand when the queue manager asks (DEL_REQ_FLAG_CONN_LOAD/STORE).
// Mirrors Postfix smtp/smtp_reuse.c, smtp_session.c (passivate/activate),
// smtp_connect.c (smtp_cache_policy) and global/scache_clnt.c.
import Glibc
import CShim
import MailUtil
import MailGlobal

/// A cached session's state: what the EHLO said and where it goes.
struct CachedSession {
    var host: String
    var address: String
    var port: UInt16
    var features: Set<String>
    var sizeLimit: Int
    var xforwardNames: Set<String>?
    var reuseCount: Int
    var expires: time_t

    var property: String {
        [String(reuseCount), features.sorted().joined(separator: ","), String(expires), String(sizeLimit),
         host, address, String(port), xforwardNames.map { "+" + $0.sorted().joined(separator: ",") } ?? "-"]
            .joined(separator: "\n")
    }

    init(host: String, address: String, port: UInt16, features: Set<String>, sizeLimit: Int,
         xforwardNames: Set<String>?, reuseCount: Int, expires: time_t) {
        self.host = host
        self.address = address
        self.port = port
        self.features = features
        self.sizeLimit = sizeLimit
        self.xforwardNames = xforwardNames
        self.reuseCount = reuseCount
        self.expires = expires
    }

    init?(property: String) {
        let f = property.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard f.count == 8, let reuse = Int(f[0]), let exp = Int(f[2]), let size = Int(f[3]), let port = UInt16(f[6]) else {
            return nil
        }
        reuseCount = reuse
        features = Set(f[1].split(separator: ",").map(String.init))
        expires = time_t(exp)
        sizeLimit = size
        host = f[4]
        address = f[5]
        self.port = port
        xforwardNames = f[7] == "-" ? nil : Set(f[7].dropFirst().split(separator: ",").map(String.init))
    }
}

/// scache_clnt: requests to private/scache; the first failure disables caching.
final class ScacheClient {
    let path: String
    let timeout: Int
    var client: AttrClient?
    var disabled = false

    init(config: MailConfig) {
        path = "private/" + config.string("connection_cache_service_name")
        timeout = config.time("connection_cache_protocol_timeout")
    }

    func connection() -> AttrClient? {
        if disabled { return nil }
        if let c = client { return c }
        do {
            let c = try AttrClient(path: path, timeout: timeout)
            try c.expectProtocol(MailProtocol.scache)
            client = c
            return c
        } catch let e as SystemError {
            Msg.warn("connect to \(path): \(errnoText(e.errno))")
        } catch {
            Msg.warn("problem talking to service \(path): \(error)")
        }
        disable()
        return nil
    }

    func disable() {
        Msg.warn("disabling connection caching")
        disabled = true
        client = nil
    }

    func failed(_ error: Error) {
        Msg.warn("problem talking to service \(path): \(error)")
        disable()
    }

    /// Hands `fd` over (and closes it here).
    func saveEndpoint(ttl: Int, label: String, property: String, fd: Int32) {
        defer { close(fd) }
        guard let c = connection() else { return }
        let l = Self.save("save_endp", ttl, [(MailAttr.label, label), (MailAttr.property, property)])
        do {
            _ = try c.request(l)  // the server's dummy: ready for the descriptor
            if cshim_send_fd(c.stream.fd, fd) < 0 { throw SystemError.current("send file descriptor") }
            _ = try c.receive()
        } catch {
            failed(error)
        }
    }

    func saveDestination(ttl: Int, label: String, property: String, endpoint: String) {
        guard let c = connection() else { return }
        let l = Self.save("save_dest", ttl, [(MailAttr.label, label), (MailAttr.property, property),
                                              (MailAttr.label, endpoint)])
        do { _ = try c.request(l) } catch { failed(error) }
    }

    static func save(_ verb: String, _ ttl: Int, _ pairs: [(String, String)]) -> AttrList {
        var l = AttrList()
        l.append(MailAttr.request, verb)
        l.append(MailAttr.ttl, int: ttl)
        for (n, v) in pairs { l.append(n, v) }
        return l
    }

    /// A cached session for the endpoint: its descriptor and property.
    func findEndpoint(_ label: String) -> (Int32, String)? {
        find("find_endp", label, properties: 1).map { ($0.0, $0.1[0]) }
    }

    /// A cached session for the destination: its descriptor and endpoint property.
    func findDestination(_ label: String) -> (Int32, String)? {
        find("find_dest", label, properties: 2).map { ($0.0, $0.1[1]) }
    }

    func find(_ verb: String, _ label: String, properties: Int) -> (Int32, [String])? {
        guard let c = connection() else { return nil }
        var l = AttrList()
        l.append(MailAttr.request, verb)
        l.append(MailAttr.label, label)
        do {
            var sc = try c.request(l).scanner()
            guard try sc.int(MailAttr.status) == 0 else { return nil }
            var props: [String] = []
            for _ in 0..<properties { props.append(try sc.string(MailAttr.property)) }
            var dummy = AttrList()
            dummy.append(MailAttr.dummy, "")
            try c.send(dummy)
            guard FileDescriptor.waitReadable(c.stream.fd, milliseconds: Int32(timeout * 1000)) else {
                throw SystemError(errno: ETIMEDOUT, "receive file descriptor")
            }
            let fd = cshim_recv_fd(c.stream.fd)
            if fd < 0 { throw SystemError.current("receive file descriptor") }
            try c.send(dummy)
            return (fd, props)
        } catch {
            failed(error)
            return nil
        }
    }
}
