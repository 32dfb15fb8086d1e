// Tlsmgr: the TLS manager (tlsmgr(8)). One process for the whole system keeps what the
// many short-lived smtpd and smtp processes must share: the session ticket keys smtpd
// encrypts its tickets with (so that any smtpd process can resume a session another one
// started), the client session caches of smtp and lmtp (*_tls_session_cache_database),
// and random seed bytes.
// Requests (attr0, after the "tlsmgr_protocol" announcement), as Postfix tls/tls_mgr.c
// sends them: seed (size), policy (cache_type), lookup/update/delete (cache_type,
// cache_id[, session]), tktkey (keyname, empty for the current key). Replies carry
// status 0 (ok), -1 (error) or -2 (failure), and the data asked for.
// Mirrors Postfix tlsmgr/tlsmgr.c and tls/tls_scache.c.
import Glibc
import MailUtil
import MailDict
import MailGlobal
import MailServer

public enum TlsmgrStatus {
    public static let ok = 0
    public static let error = -1
    public static let fail = -2
}

/// A ticket key as tls_mgr.c passes it: name (16 bytes), AES key (32), HMAC key (32),
/// expiry (a native time_t).
struct TicketKey: Equatable {
    static let size = 16 + 32 + 32 + MemoryLayout<Int>.size
    var name: [UInt8]
    var aes: [UInt8]
    var hmac: [UInt8]
    var expiry: Int

    static func random(expiry: Int) -> TicketKey {
        TicketKey(name: Tlsmgr.randomBytes(16), aes: Tlsmgr.randomBytes(32), hmac: Tlsmgr.randomBytes(32), expiry: expiry)
    }

    var bytes: [UInt8] {
        var out = name + aes + hmac
        withUnsafeBytes(of: expiry) { out += $0 }
        return out
    }
}

/// One client session cache: "time:base64-session" entries in a table file.
final class SessionCache {
    let type: String
    let dict: Dict
    let timeout: Int

    init(type: String, dict: Dict, timeout: Int) {
        self.type = type
        self.dict = dict
        self.timeout = timeout
    }

    func lookup(_ id: String, now: Int) -> [UInt8]? {
        guard let raw = try? dict.lookup(id) else { return nil }
        let parts = raw.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let t = Int(parts[0]), t + timeout > now, let data = Base64.decode(parts[1].utf8) else {
            _ = try? dict.delete(id)
            return nil
        }
        return data
    }

    func update(_ id: String, _ session: [UInt8], now: Int) -> Bool {
        do {
            try dict.update(id, "\(now):" + String(decoding: Base64.encode(session), as: UTF8.self))
            return true
        } catch {
            Msg.warn("\(dict.label): update of \(id): \(error)")
            return false
        }
    }

    func delete(_ id: String) {
        _ = try? dict.delete(id)
    }

    /// tls_scache_sequence at start-up and every timeout: expired entries go.
    @discardableResult
    func sweep(now: Int) -> Int {
        var expired: [String] = []
        var first = true
        while let kv = try? dict.sequence(first: first) {
            first = false
            let parts = kv.value.split(separator: ":", maxSplits: 1)
            if parts.count != 2 || (Int(parts[0]) ?? 0) + timeout <= now { expired.append(kv.key) }
        }
        for k in expired { _ = try? dict.delete(k) }
        return expired.count
    }
}

public final class Tlsmgr {
    var caches: [String: SessionCache] = [:]
    /// The newest key first; a key is used for new tickets for `ticketTimeout` seconds and
    /// accepted for as long again.
    var keys: [TicketKey] = []
    let ticketTimeout: Int
    var now: () -> Int = { Int(time(nil)) }

    init(ticketTimeout: Int) {
        self.ticketTimeout = ticketTimeout
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if fd < 0 { Msg.fatal("open /dev/urandom: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var got = 0
        while got < n {
            let r = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
            if r > 0 { got += r } else if r == 0 || errno != EINTR { Msg.fatal("read /dev/urandom: \(String(cString: strerror(errno)))") }
        }
        return out
    }

    /// tktkey: the key with this name (nil: the current one, made when there is none
    /// or it is too old to issue tickets with).
    func ticketKey(named name: [UInt8]?) -> TicketKey? {
        let t = now()
        keys.removeAll { $0.expiry + ticketTimeout <= t }
        if let name {
            return keys.first { $0.name == name }
        }
        if let k = keys.first, k.expiry > t { return k }
        let k = TicketKey.random(expiry: t + ticketTimeout)
        keys.insert(k, at: 0)
        return k
    }

    // MARK: The service

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "tlsmgr"
        desc.solitary = true
        desc.maxUse = 0
        desc.maxIdle = 0
        var mgr: Tlsmgr?
        // The cache files are opened as root, before the privilege drop, as Postfix does.
        desc.preInit = { ctx in
            let c = ctx.config
            let m = Tlsmgr(ticketTimeout: c.time("smtpd_tls_session_cache_timeout"))
            for type in ["smtp", "lmtp"] {
                let spec = c.string("\(type)_tls_session_cache_database")
                guard !spec.isEmpty else { continue }
                let flags: DictFlags = [.duplicateReplace, .openLock]
                let dict = DictRegistry.open(spec, mode: .readWrite, flags: flags)
                let cache = SessionCache(type: type, dict: dict, timeout: c.time("\(type)_tls_session_cache_timeout"))
                cache.sweep(now: m.now())
                m.caches[type] = cache
            }
            mgr = m
        }
        desc.postInit = { ctx in
            guard let m = mgr else { return }
            // The caches are swept every timeout, as Postfix's tlsmgr does.
            for cache in m.caches.values where cache.timeout > 0 {
                func arm() {
                    _ = ctx.loop.after(Double(cache.timeout)) {
                        cache.sweep(now: m.now())
                        arm()
                    }
                }
                arm()
            }
        }
        MultiServer.runAttr(arguments, desc, protocolName: MailProtocol.tlsmgr) { mgr?.handle($0) }
    }

    /// One request and its reply.
    func handle(_ request: AttrList) -> AttrList {
        var sc = request.scanner()
        var out = AttrList()
        func status(_ s: Int) -> AttrList {
            var l = AttrList()
            l.append("status", int: s)
            return l
        }
        guard let verb = try? sc.string("request") else {
            Msg.warn("null request")
            return status(TlsmgrStatus.fail)
        }
        switch verb {
        case "seed":
            guard let size = try? sc.int("size"), size > 0 else { return status(TlsmgrStatus.fail) }
            out.append("status", int: TlsmgrStatus.ok)
            out.append("seed", data: Self.randomBytes(min(size, 255)))
        case "policy":
            guard let type = try? sc.string("cache_type") else { return status(TlsmgrStatus.fail) }
            out.append("status", int: TlsmgrStatus.ok)
            let cache = caches[type]
            out.append("cachable", int: cache != nil || (type == "smtpd" && ticketTimeout > 0) ? 1 : 0)
            out.append("timeout", int: type == "smtpd" ? ticketTimeout : cache?.timeout ?? 0)
        case "lookup":
            guard let type = try? sc.string("cache_type"), let id = try? sc.string("cache_id") else {
                return status(TlsmgrStatus.fail)
            }
            if let session = caches[type]?.lookup(id, now: now()) {
                out.append("status", int: TlsmgrStatus.ok)
                out.append("session", data: session)
            } else {
                out.append("status", int: TlsmgrStatus.error)
                out.append("session", data: [])
            }
        case "update":
            guard let type = try? sc.string("cache_type"), let id = try? sc.string("cache_id"),
                  let session = try? sc.data("session") else {
                return status(TlsmgrStatus.fail)
            }
            guard let cache = caches[type] else { return status(TlsmgrStatus.error) }
            return status(cache.update(id, session, now: now()) ? TlsmgrStatus.ok : TlsmgrStatus.error)
        case "delete":
            guard let type = try? sc.string("cache_type"), let id = try? sc.string("cache_id") else {
                return status(TlsmgrStatus.fail)
            }
            caches[type]?.delete(id)
            return status(caches[type] == nil ? TlsmgrStatus.error : TlsmgrStatus.ok)
        case "tktkey":
            guard let name = try? sc.data("keyname") else { return status(TlsmgrStatus.fail) }
            guard ticketTimeout > 0, name.isEmpty || name.count == 16,
                  let key = ticketKey(named: name.isEmpty ? nil : name) else {
                out.append("status", int: TlsmgrStatus.error)
                out.append("keybuf", data: [])
                return out
            }
            out.append("status", int: TlsmgrStatus.ok)
            out.append("keybuf", data: key.bytes)
        default:
            Msg.warn("unknown request: \"\(verb)\"")
            return status(TlsmgrStatus.fail)
        }
        return out
    }
}
