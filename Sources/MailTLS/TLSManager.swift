// TLSManager: the client side of tlsmgr(8): session ticket keys for smtpd (kept in the
// process while they are good), and the smtp/lmtp client session cache. Every smtpd
// process encrypts tickets with the same keys, so a client can resume its session with
// any of them; an smtp process resumes sessions that another one saved.
// Mirrors Postfix tls/tls_mgr.c and the ticket key callback of tls/tls_server.c.
import Glibc
import COpenSSL
import MailUtil
import MailGlobal

public enum TLSManager {
    nonisolated(unsafe) static var service = "tlsmgr"
    nonisolated(unsafe) static var client: AttrClient?
    /// Keys by name, and the one new tickets use.
    nonisolated(unsafe) static var keys: [[UInt8]: Key] = [:]
    nonisolated(unsafe) static var current: Key?
    nonisolated(unsafe) static var ticketTimeout = 3600

    struct Key {
        var name: [UInt8]
        var aes: [UInt8]
        var hmac: [UInt8]
        var expiry: Int

        init?(_ b: [UInt8]) {
            let n = MemoryLayout<Int>.size
            guard b.count == 80 + n else { return nil }
            name = Array(b[0..<16])
            aes = Array(b[16..<48])
            hmac = Array(b[48..<80])
            expiry = b[80...].withUnsafeBytes { $0.loadUnaligned(as: Int.self) }
        }
    }

    public static func configure(config: MailConfig) {
        service = config.string("tlsmgr_service_name")
    }

    /// One request, on a connection that is opened again once when it fails.
    static func request(_ l: AttrList) -> AttrList? {
        for _ in 0..<2 {
            do {
                if client == nil {
                    let c = try AttrClient(serviceClass: MailClass.private, name: service, timeout: 10)
                    _ = try c.expectProtocol(MailProtocol.tlsmgr)
                    client = c
                }
                return try client!.request(l)
            } catch {
                client = nil
            }
        }
        Msg.warn("problem talking to server private/\(service)")
        return nil
    }

    /// tls_mgr_key: the key for new tickets (nil name), or the one a ticket names.
    static func ticketKey(_ name: [UInt8]?) -> Key? {
        let now = Int(time(nil))
        if let name {
            if let k = keys[name], k.expiry + ticketTimeout > now { return k }
        } else if let k = current, k.expiry > now {
            return k
        }
        var l = AttrList()
        l.append("request", "tktkey")
        l.append("keyname", data: name ?? [])
        guard let r = request(l) else { return nil }
        var sc = r.scanner()
        guard (try? sc.int("status")) == 0, let buf = try? sc.data("keybuf"), let k = Key(buf) else { return nil }
        keys = keys.filter { $0.value.expiry + ticketTimeout > now }
        keys[k.name] = k
        if name == nil || k.expiry > (current?.expiry ?? 0) { current = k }
        return k
    }

    /// The smtp/lmtp session cache: policy, lookup, update.
    public static func cachable(_ type: String) -> Bool {
        var l = AttrList()
        l.append("request", "policy")
        l.append("cache_type", type)
        guard let r = request(l) else { return false }
        var sc = r.scanner()
        return (try? sc.int("status")) == 0 && (try? sc.int("cachable")) == 1
    }

    static func lookup(_ type: String, _ id: String) -> [UInt8]? {
        var l = AttrList()
        l.append("request", "lookup")
        l.append("cache_type", type)
        l.append("cache_id", id)
        guard let r = request(l) else { return nil }
        var sc = r.scanner()
        guard (try? sc.int("status")) == 0, let d = try? sc.data("session"), !d.isEmpty else { return nil }
        return d
    }

    static func update(_ type: String, _ id: String, _ session: [UInt8]) {
        var l = AttrList()
        l.append("request", "update")
        l.append("cache_type", type)
        l.append("cache_id", id)
        l.append("session", data: session)
        _ = request(l)
    }
}

// MARK: smtpd's session tickets

nonisolated(unsafe) private let macDigestKey = UnsafeMutablePointer(mutating: strdup("digest")!)
nonisolated(unsafe) private let macDigest = strdup("SHA256")!

/// The ticket key callback: a new ticket under the current key (enc = 1), or the key a
/// ticket names (0: unknown, full handshake; 2: good, but issue a new ticket).
let ticketKeyCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?,
                                       OpaquePointer?, OpaquePointer?, Int32) -> Int32 = { _, name, iv, cctx, hctx, enc in
    guard let name, let iv else { return -1 }
    let key: TLSManager.Key?
    if enc == 1 {
        key = TLSManager.ticketKey(nil)
    } else {
        key = TLSManager.ticketKey(Array(UnsafeBufferPointer(start: name, count: 16)))
    }
    guard let key else { return 0 }
    var params = [OSSL_PARAM_construct_utf8_string(macDigestKey, macDigest, 0), OSSL_PARAM_construct_end()]
    guard key.hmac.withUnsafeBufferPointer({ EVP_MAC_init(hctx, $0.baseAddress, 32, &params) }) == 1 else { return -1 }
    let ivLength = Int(EVP_CIPHER_get_iv_length(EVP_aes_256_cbc()))
    if enc == 1 {
        guard RAND_bytes(iv, Int32(ivLength)) == 1 else { return -1 }
        for i in 0..<16 { name[i] = key.name[i] }
        guard EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nil, key.aes, iv) == 1 else { return -1 }
        return 1
    }
    guard EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nil, key.aes, iv) == 1 else { return -1 }
    return key.expiry > Int(time(nil)) ? 1 : 2
}

// MARK: The client's session cache

/// The cache entry of the session being made (an smtp process has one at a time).
nonisolated(unsafe) var clientCacheEntry: (type: String, id: String)?

/// A new session (with TLS 1.3, when its ticket arrives): into the cache.
let newClientSession: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { _, sess in
    guard let sess, let entry = clientCacheEntry else { return 0 }
    let n = i2d_SSL_SESSION(sess, nil)
    guard n > 0 else { return 0 }
    var der = [UInt8](repeating: 0, count: Int(n))
    der.withUnsafeMutableBufferPointer { b in
        var p: UnsafeMutablePointer<UInt8>? = b.baseAddress
        _ = i2d_SSL_SESSION(sess, &p)
    }
    TLSManager.update(entry.type, entry.id, der)
    return 0
}
