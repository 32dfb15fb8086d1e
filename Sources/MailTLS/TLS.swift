// MailTLS: TLS for the SMTP server (and later the client) over OpenSSL: a server context
// made from the smtpd_tls_* parameters (certificate chains, RSA and ECDSA together,
// protocols, cipher grades and exclusions, CA files), and a session on a connected
// descriptor that an FDStream reads and writes through once the handshake is done.
// Mirrors Postfix tls/tls_server.c, tls_certkey.c, tls_protocols.c, tls_misc.c
// (cipher grades, the summary log line).
import Glibc
import COpenSSL
import MailUtil
import MailGlobal

public enum TLSLevel: Int, Comparable, Sendable {
    case none, may, encrypt

    public static func < (a: TLSLevel, b: TLSLevel) -> Bool { a.rawValue < b.rawValue }

    /// smtpd_tls_security_level, or the old smtpd_use_tls / smtpd_enforce_tls when empty.
    public static func server(_ config: MailConfig, prefix: String = "smtpd") -> TLSLevel {
        let v = config.string("\(prefix)_tls_security_level").lowercased()
        switch v {
        case "": return config.bool("\(prefix)_enforce_tls") ? .encrypt : config.bool("\(prefix)_use_tls") ? .may : .none
        case "none": return .none
        case "may": return .may
        case "encrypt": return .encrypt
        default:
            Msg.warn("\(prefix)_tls_security_level: unknown TLS security level \"\(v)\" -- using \"none\"")
            return .none
        }
    }
}

/// The OpenSSL error queue as Postfix logs it ("TLS library problem: ...").
func logOpenSSLErrors() {
    while true {
        var file: UnsafePointer<CChar>?
        var line: Int32 = 0
        var data: UnsafePointer<CChar>?
        var flags: Int32 = 0
        let e = ERR_get_error_all(&file, &line, nil, &data, &flags)
        if e == 0 { break }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(e, &buf, buf.count)
        let where_ = file.map { String(cString: $0) } ?? ""
        let extra = flags & ERR_TXT_STRING != 0 ? data.map { String(cString: $0) } ?? "" : ""
        Msg.warn("TLS library problem: \(String(cString: buf)):\(where_):\(line):\(extra)")
    }
}

/// The client certificate is looked at, not judged, in the handshake (Postfix's
/// verify callback): trust is decided afterwards from the verification result.
private let acceptAnyCertificate: @convention(c) (Int32, OpaquePointer?) -> Int32 = { _, _ in 1 }

public final class TLSServerContext {
    let ctx: OpaquePointer
    public let logLevel: Int
    /// smtpd_tls_ask_ccert (or req_ccert at level encrypt): a client certificate is asked for.
    public private(set) var askCcert = false
    /// smtpd_tls_req_ccert at level encrypt: a trusted client certificate is required.
    public private(set) var requireCcert = false
    var fingerprintDigest = "sha256"

    deinit { SSL_CTX_free(ctx) }

    /// tls_set_protocols: the protocol list (">=TLSv1", "!SSLv2, !SSLv3", ...) as the
    /// range and holes of enabled versions; nil for a bad list.
    static func protocols(_ text: String) -> (min: Int32, max: Int32, disabled: UInt64)? {
        let names: [(String, Int32)] = [("SSLv3", SSL3_VERSION), ("TLSv1", TLS1_VERSION), ("TLSv1.1", TLS1_1_VERSION),
                                        ("TLSv1.2", TLS1_2_VERSION), ("TLSv1.3", TLS1_3_VERSION)]
        var include: Set<Int32> = []
        var exclude: Set<Int32> = []
        var lo = TLS1_VERSION, hi = TLS1_3_VERSION
        for w in Tokens.split(text, separators: Array(" \t\n\r,:".utf8)) {
            var word = Substring(w)
            if word.hasPrefix(">=") || word.hasPrefix("<=") {
                let ge = word.hasPrefix(">=")
                word = word.dropFirst(2)
                guard let v = names.first(where: { $0.0.lowercased() == word.lowercased() })?.1 else { return nil }
                if ge { lo = max(lo, v) } else { hi = min(hi, v) }
                continue
            }
            let neg = word.hasPrefix("!")
            if neg { word = word.dropFirst() }
            if word.lowercased() == "sslv2" { continue }
            guard let v = names.first(where: { $0.0.lowercased() == word.lowercased() })?.1 else { return nil }
            if neg { exclude.insert(v) } else { include.insert(v) }
        }
        var enabled = names.map { $0.1 }.filter { $0 >= lo && $0 <= hi && $0 != SSL3_VERSION }
        if !include.isEmpty { enabled = enabled.filter { include.contains($0) } }
        enabled = enabled.filter { !exclude.contains($0) }
        guard let mn = enabled.min(), let mx = enabled.max() else { return (0, 0, ~0) }
        var disabled: UInt64 = 0
        let ops: [(Int32, UInt64)] = [(TLS1_VERSION, cssl_op_no_tlsv1()), (TLS1_1_VERSION, cssl_op_no_tlsv1_1()),
                                      (TLS1_2_VERSION, cssl_op_no_tlsv1_2()), (TLS1_3_VERSION, cssl_op_no_tlsv1_3())]
        for (v, op) in ops where v > mn && v < mx && !enabled.contains(v) { disabled |= op }
        return (mn, mx, disabled)
    }

    /// tls_set_ciphers: a grade (high, medium, low, export, null) and its exclusions.
    static func cipherList(_ config: MailConfig, grade: String, exclude: String) -> String? {
        let g = grade.lowercased()
        guard ["high", "medium", "low", "export", "null"].contains(g) else { return nil }
        var list = config.string("tls_\(g)_cipherlist")
        for x in Tokens.split(exclude, separators: Array(" \t\n\r,:".utf8)) { list += ":!" + x }
        return list
    }

    /// What servers and clients set up alike: no compression or SSLv3, the protocol
    /// range, the cipher list, the CA certificates; false (logged) when unusable.
    static func configure(_ c: OpaquePointer, config: MailConfig, prefix: String, mandatory: Bool) -> Bool {
        _ = SSL_CTX_set_options(c, cssl_op_no_compression() | cssl_op_no_sslv3())
        let protoParam = mandatory ? "\(prefix)_tls_mandatory_protocols" : "\(prefix)_tls_protocols"
        let protoText = config.string(protoParam)
        guard let p = protocols(protoText) else {
            Msg.warn("Invalid TLS protocol list \"\(protoText)\": disabling TLS support")
            return false
        }
        if p.max == 0 {
            Msg.warn("\(protoParam): all protocols disabled: disabling TLS support")
            return false
        }
        _ = cssl_ctx_set_min_proto_version(c, p.min)
        _ = cssl_ctx_set_max_proto_version(c, p.max)
        if p.disabled != 0 { _ = SSL_CTX_set_options(c, p.disabled) }
        let grade = config.string(mandatory ? "\(prefix)_tls_mandatory_ciphers" : "\(prefix)_tls_ciphers")
        var exclude = config.string("\(prefix)_tls_exclude_ciphers")
        if mandatory { exclude += " " + config.string("\(prefix)_tls_mandatory_exclude_ciphers") }
        guard let list = cipherList(config, grade: grade, exclude: exclude), SSL_CTX_set_cipher_list(c, list) == 1 else {
            logOpenSSLErrors()
            Msg.warn("invalid cipher grade or cipher list \"\(grade)\": disabling TLS support")
            return false
        }
        let caFile = config.string("\(prefix)_tls_CAfile"), caPath = config.string("\(prefix)_tls_CApath")
        if !caFile.isEmpty || !caPath.isEmpty,
           SSL_CTX_load_verify_locations(c, caFile.isEmpty ? nil : caFile, caPath.isEmpty ? nil : caPath) != 1 {
            logOpenSSLErrors()
            Msg.warn("cannot load Certification Authority data, CAfile=\"\(caFile)\", CApath=\"\(caPath)\": disabling TLS support")
            return false
        }
        return true
    }

    /// The context for smtpd (prefix "smtpd"); nil, with the reason logged, when the
    /// keys and certificates cannot be used ("disabling TLS support").
    public init?(config: MailConfig, prefix: String, level: TLSLevel) {
        guard let c = SSL_CTX_new(TLS_server_method()) else {
            logOpenSSLErrors()
            return nil
        }
        ctx = c
        logLevel = Int(config.string("\(prefix)_tls_loglevel")) ?? 0
        let mandatory = level >= .encrypt
        if config.bool("tls_preempt_cipherlist") { _ = SSL_CTX_set_options(c, cssl_op_cipher_server_preference()) }
        guard Self.configure(c, config: config, prefix: prefix, mandatory: mandatory) else { return nil }
        // Keys and certificates: the chain files, else the RSA, DSA and ECDSA pairs.
        let chains = Tokens.split(config.string("\(prefix)_tls_chain_files"), separators: Array(" \t\n\r,".utf8))
        var loaded = 0
        if !chains.isEmpty {
            for f in chains {
                guard Self.readable(f) else { return nil }
                guard SSL_CTX_use_certificate_chain_file(c, f) == 1, SSL_CTX_use_PrivateKey_file(c, f, SSL_FILETYPE_PEM) == 1 else {
                    logOpenSSLErrors()
                    Msg.warn("error loading private keys and certificates from: \(f): disabling TLS support")
                    return nil
                }
                loaded += 1
            }
        } else {
            for (kind, cert, key) in [("RSA", "cert", "key"), ("DSA", "dcert", "dkey"), ("ECDSA", "eccert", "eckey")] {
                let certFile = config.string("\(prefix)_tls_\(cert)_file")
                guard !certFile.isEmpty else { continue }
                var keyFile = config.string("\(prefix)_tls_\(key)_file")
                if keyFile.isEmpty { keyFile = certFile }
                guard Self.readable(certFile), keyFile == certFile || Self.readable(keyFile) else { return nil }
                guard SSL_CTX_use_certificate_chain_file(c, certFile) == 1 else {
                    logOpenSSLErrors()
                    Msg.warn("cannot get \(kind) certificate from file \"\(certFile)\": disabling TLS support")
                    return nil
                }
                guard SSL_CTX_use_PrivateKey_file(c, keyFile, SSL_FILETYPE_PEM) == 1 else {
                    logOpenSSLErrors()
                    Msg.warn("cannot get \(kind) private key from file \"\(keyFile)\": disabling TLS support")
                    return nil
                }
                guard SSL_CTX_check_private_key(c) == 1 else {
                    logOpenSSLErrors()
                    Msg.warn("\(kind) private key in \(keyFile) does not match public key in \(certFile): disabling TLS support")
                    return nil
                }
                loaded += 1
            }
        }
        if loaded == 0 {
            Msg.warn("No server certs available. TLS won't be enabled")
            return nil
        }
        // Postfix has no server-side session cache without a database; tickets stay on.
        _ = cssl_ctx_set_session_cache_mode(c, Int(SSL_SESS_CACHE_OFF))
        requireCcert = level >= .encrypt && config.bool("\(prefix)_tls_req_ccert")
        askCcert = config.bool("\(prefix)_tls_ask_ccert") || requireCcert
        fingerprintDigest = config.string("\(prefix)_tls_fingerprint_digest")
        if askCcert {
            guard EVP_get_digestbyname(fingerprintDigest) != nil else {
                Msg.warn("Digest algorithm \"\(fingerprintDigest)\" not found: disabling TLS support")
                return nil
            }
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, acceptAnyCertificate)
            SSL_CTX_set_verify_depth(c, Int32(config.int("\(prefix)_tls_ccert_verifydepth")) + 1)
            let caFile = config.string("\(prefix)_tls_CAfile")
            if !caFile.isEmpty, let names = SSL_load_client_CA_file(caFile) { SSL_CTX_set_client_CA_list(c, names) }
            let sid = Array("smtpd".utf8)
            _ = SSL_CTX_set_session_id_context(c, sid, UInt32(sid.count))
        }
        // Session tickets under keys from tlsmgr, shared by every smtpd process; none when
        // the timeout is 0.
        let ticketTimeout = config.time("\(prefix)_tls_session_cache_timeout")
        if ticketTimeout > 0 {
            TLSManager.configure(config: config)
            TLSManager.ticketTimeout = ticketTimeout
            _ = SSL_CTX_set_timeout(c, Int(ticketTimeout))
            _ = SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticketKeyCallback)
        } else {
            _ = SSL_CTX_set_options(c, cssl_op_no_ticket())
        }
    }

    /// A key or certificate file that cannot be opened, as Postfix 3.7 reports it.
    static func readable(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            Msg.warn("error opening chain file: \(path): \(errnoText(errno))")
            return false
        }
        close(fd)
        return true
    }

    /// tls_server_start: the handshake on `fd` (made non-blocking), at most `timeout`
    /// seconds; nil when it failed (logged as Postfix does).
    public func accept(fd: Int32, timeout: Int, peer: String) -> TLSSession? {
        guard let session = TLSSession.handshake(ctx, fd: fd, timeout: timeout, client: false, peer: peer) else { return nil }
        if askCcert, let cert = SSL_get1_peer_certificate(session.ssl) {
            defer { X509_free(cert) }
            session.peerCertificate(cert, digest: fingerprintDigest)
            let result = SSL_get_verify_result(session.ssl)
            if result == Int(X509_V_OK) {
                session.trusted = true
                session.trust = "Trusted"
            } else {
                session.trust = "Untrusted"
                session.verifyError = String(cString: X509_verify_cert_error_string(result))
                if requireCcert { session.logVerifyFailure(result, peer: peer) }
            }
            if logLevel >= 2 {
                Msg.info("\(peer): subject_CN=\(session.peerCN), issuer_CN=\(session.issuerCN), fingerprint=\(session.certFingerprint), pkey_fingerprint=\(session.pkeyFingerprint)")
            }
        }
        if logLevel >= 1 { Msg.info(session.summary(peer: peer, role: "from")) }
        return session
    }
}

public final class TLSSession: StreamTransport {
    let ssl: OpaquePointer
    let fd: Int32
    public private(set) var wantsWrite = false

    init(ssl: OpaquePointer, fd: Int32) {
        self.ssl = ssl
        self.fd = fd
    }

    deinit { SSL_free(ssl) }

    /// The handshake on `fd` (made non-blocking), at most `timeout` seconds, as server
    /// (SSL_accept) or client (SSL_connect); nil when it failed, logged as Postfix does.
    static func handshake(_ ctx: OpaquePointer, fd: Int32, timeout: Int, client: Bool, peer: String,
                          prepare: (OpaquePointer) -> Void = { _ in }) -> TLSSession? {
        guard let ssl = SSL_new(ctx) else {
            logOpenSSLErrors()
            return nil
        }
        prepare(ssl)
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        SSL_set_fd(ssl, fd)
        let session = TLSSession(ssl: ssl, fd: fd)
        session.isClient = client
        let what = client ? "SSL_connect error to \(peer)" : "SSL_accept error from \(peer)"
        let deadline = monotonicNanos() + UInt64(max(timeout, 1)) * 1_000_000_000
        while true {
            let r = client ? SSL_connect(ssl) : SSL_accept(ssl)
            if r == 1 { return session }
            let err = SSL_get_error(ssl, r)
            guard err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE else {
                if err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 {
                    Msg.info("\(what): lost connection")
                } else {
                    Msg.info("\(what): \(err == SSL_ERROR_SSL ? -1 : Int(r))")
                    logOpenSSLErrors()
                }
                return nil
            }
            let now = monotonicNanos()
            guard now < deadline else {
                Msg.info("\(what): -1")
                Msg.warn("TLS handshake timeout")
                return nil
            }
            var pfd = pollfd(fd: fd, events: Int16(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(clamping: (deadline - now) / 1_000_000))
        }
    }

    public var pendingInput: Int { Int(SSL_pending(ssl)) }

    public func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let n = SSL_read(ssl, buffer, Int32(clamping: count))
        if n > 0 { return Int(n) }
        return fail(n)
    }

    public func write(_ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        let n = SSL_write(ssl, buffer, Int32(clamping: count))
        if n > 0 { return Int(n) }
        return fail(n)
    }

    /// Maps an SSL_read/SSL_write failure onto read(2)'s conventions.
    private func fail(_ n: Int32) -> Int {
        switch SSL_get_error(ssl, n) {
        case SSL_ERROR_WANT_READ:
            wantsWrite = false
            errno = EAGAIN
            return -1
        case SSL_ERROR_WANT_WRITE:
            wantsWrite = true
            errno = EAGAIN
            return -1
        case SSL_ERROR_ZERO_RETURN:
            return 0
        case SSL_ERROR_SYSCALL where errno == 0:
            return 0
        default:
            logOpenSSLErrors()
            if errno == 0 || errno == EAGAIN { errno = ECONNRESET }
            return -1
        }
    }

    /// A close_notify to the peer (without waiting for its own).
    public func shutdown() {
        _ = SSL_shutdown(ssl)
    }

    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }
    public var cipherName: String { SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "" }
    public var cipherBits: (use: Int, alg: Int) {
        guard let c = SSL_get_current_cipher(ssl) else { return (0, 0) }
        var alg: Int32 = 0
        let use = SSL_CIPHER_get_bits(c, &alg)
        return (Int(use), Int(alg))
    }

    /// "key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    /// known to Postfix 3.7 with OpenSSL 3 for TLSv1.3 only.
    /// On the client side the signature is the server's (its certificate's key).
    var isClient = false

    var keyDetails: String {
        guard protocolVersion == "TLSv1.3" else { return "" }
        var out = ""
        let group = Int32(truncatingIfNeeded: cssl_get_negotiated_group(ssl))
        if group != 0 && group != NID_undef {
            let name = OBJ_nid2sn(group).map { String(cString: $0) } ?? ""
            if name == "X25519" || name == "X448" {
                out += " key-exchange \(name)"
            } else if !name.isEmpty {
                out += " key-exchange ECDHE (\(name))"
            }
        }
        // The server's signature, then the client's when it presented a certificate.
        let peerCert = SSL_get1_peer_certificate(ssl)
        defer { if let c = peerCert { X509_free(c) } }
        let peerKey = peerCert.flatMap { X509_get0_pubkey($0) }
        let ownKey = SSL_get_privatekey(ssl)
        func signature(_ role: String, _ key: OpaquePointer?, peer: Bool) {
            guard let key else { return }
            let bits = Int(EVP_PKEY_get_bits(key))
            switch EVP_PKEY_get_base_id(key) {
            case EVP_PKEY_RSA:
                out += " \(role)-signature \(protocolVersion == "TLSv1.3" ? "RSA-PSS" : "RSA") (\(bits) bits)"
            case EVP_PKEY_EC:
                out += " \(role)-signature ECDSA (\(curveName(key)))"
            case EVP_PKEY_ED25519:
                out += " \(role)-signature ED25519"
            default:
                break
            }
            var nid: Int32 = 0
            let got = peer ? cssl_get_peer_signature_nid(ssl, &nid) : cssl_get_signature_nid(ssl, &nid)
            if got == 1, nid != NID_undef, let sn = OBJ_nid2sn(nid) {
                out += " \(role)-digest \(String(cString: sn))"
            }
        }
        if isClient {
            signature("server", peerKey, peer: true)
            if ownKey != nil && SSL_get_certificate(ssl) != nil { signature("client", ownKey, peer: false) }
        } else {
            signature("server", ownKey, peer: false)
            signature("client", peerKey, peer: true)
        }
        return out
    }

    func curveName(_ key: OpaquePointer) -> String {
        var buf = [CChar](repeating: 0, count: 80)
        var len = 0
        guard EVP_PKEY_get_utf8_string_param(key, "group", &buf, buf.count, &len) == 1 else { return "" }
        let n = String(cString: buf)
        return n == "P-256" ? "prime256v1" : n == "P-384" ? "secp384r1" : n == "P-521" ? "secp521r1" : n
    }

    /// What the client learned of the server's certificate, or smtpd of the client's.
    public var trust = "Anonymous"
    public var trusted = false
    public var verified = false
    public var verifyError = ""
    /// The peer's certificate (smtpd with smtpd_tls_ask_ccert): present at all, its
    /// subject and issuer common names, the fingerprints of the certificate and of its
    /// public key (smtpd_tls_fingerprint_digest, "AB:CD:...").
    public private(set) var certPresent = false
    public private(set) var peerCN = ""
    public private(set) var issuerCN = ""
    public private(set) var certFingerprint = ""
    public private(set) var pkeyFingerprint = ""

    func peerCertificate(_ cert: OpaquePointer, digest: String) {
        certPresent = true
        func cn(_ name: OpaquePointer?, fallback: Int32? = nil) -> String {
            guard let name else { return "" }
            var buf = [CChar](repeating: 0, count: 256)
            for nid in [NID_commonName] + (fallback.map { [$0] } ?? []) {
                let n = X509_NAME_get_text_by_NID(name, nid, &buf, Int32(buf.count))
                if n > 0 { return String(cString: buf) }
            }
            return ""
        }
        peerCN = cn(X509_get_subject_name(cert))
        issuerCN = cn(X509_get_issuer_name(cert), fallback: NID_organizationName)
        guard let md = EVP_get_digestbyname(digest) else { return }
        func hex(_ bytes: ArraySlice<UInt8>) -> String {
            bytes.map { b in
                let h = String(b, radix: 16, uppercase: true)
                return h.count == 1 ? "0" + h : h
            }.joined(separator: ":")
        }
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var len: UInt32 = 0
        if X509_digest(cert, md, &out, &len) == 1 { certFingerprint = hex(out.prefix(Int(len))) }
        if let key = X509_get0_pubkey(cert) {
            var der: UnsafeMutablePointer<UInt8>?
            let n = i2d_PUBKEY(key, &der)
            if n > 0, let der {
                len = 0
                if EVP_Digest(der, Int(n), &out, &len, md, nil) == 1 { pkeyFingerprint = hex(out.prefix(Int(len))) }
                CRYPTO_free(der, nil, 0)
            }
        }
    }

    /// tls_verify_certificate_callback's log line for a client certificate.
    func logVerifyFailure(_ result: Int, peer: String) {
        switch Int32(result) {
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
            Msg.info("certificate verification failed for \(peer): self-signed certificate")
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
            Msg.info("certificate verification failed for \(peer): untrusted issuer \(issuerCN)")
        case X509_V_ERR_CERT_NOT_YET_VALID:
            Msg.info("client certificate verification failed for \(peer): certificate not yet valid")
        case X509_V_ERR_CERT_HAS_EXPIRED:
            Msg.info("client certificate verification failed for \(peer): certificate has expired")
        default:
            Msg.info("client certificate verification failed for \(peer): num=\(result):\(verifyError)")
        }
    }

    /// tls_log_summary for a new session.
    public func summary(peer: String, role: String) -> String {
        let bits = cipherBits
        // "reused" in Postfix means a connection reused through tlsproxy, not a resumed
        // session: a resumed session is "established" too.
        return "\(trust) TLS connection established \(role) \(peer): \(protocolVersion) with cipher \(cipherName) (\(bits.use)/\(bits.alg) bits)" + keyDetails
    }

    /// The Received: header comment of smtpd_tls_received_header, one or two lines.
    public var receivedText: [String] {
        let bits = cipherBits
        let first = "(using \(protocolVersion) with cipher \(cipherName) (\(bits.use)/\(bits.alg) bits)"
        let details = keyDetails
        if details.isEmpty { return [first + ")"] }
        // The client's signature, when there is one, goes on a line of its own.
        let marker = Array(" client-signature".utf8), bytes = Array(details.utf8)
        if let at = (0...max(0, bytes.count - marker.count)).first(where: { bytes[$0...].starts(with: marker) }), at > 0 {
            let server = String(decoding: bytes[1..<at], as: UTF8.self)
            let client = String(decoding: bytes[(at + 1)...], as: UTF8.self)
            return [first, " " + server, " " + client + ")"]
        }
        return [first, " " + details.dropFirst() + ")"]
    }
}

/// The client side (smtp, lmtp): smtp_tls_* parameters.
public final class TLSClientContext {
    let ctx: OpaquePointer
    public let logLevel: Int

    deinit { SSL_CTX_free(ctx) }

    public init?(config: MailConfig, prefix: String, mandatory: Bool) {
        guard let c = SSL_CTX_new(TLS_client_method()) else {
            logOpenSSLErrors()
            return nil
        }
        ctx = c
        logLevel = Int(config.string("\(prefix)_tls_loglevel")) ?? 0
        guard TLSServerContext.configure(c, config: config, prefix: prefix, mandatory: mandatory) else { return nil }
        // A client certificate, when one is configured.
        let certFile = config.string("\(prefix)_tls_cert_file")
        if !certFile.isEmpty {
            var keyFile = config.string("\(prefix)_tls_key_file")
            if keyFile.isEmpty { keyFile = certFile }
            guard TLSServerContext.readable(certFile), SSL_CTX_use_certificate_chain_file(c, certFile) == 1,
                  SSL_CTX_use_PrivateKey_file(c, keyFile, SSL_FILETYPE_PEM) == 1, SSL_CTX_check_private_key(c) == 1 else {
                logOpenSSLErrors()
                Msg.warn("cannot load client certificate and key from \(certFile), \(keyFile): disabling TLS support")
                return nil
            }
        }
        // The chain is checked, but the handshake goes on; the caller decides.
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nil)
        SSL_CTX_set_verify_depth(c, Int32(config.int("\(prefix)_tls_scert_verifydepth")) + 1)
        // The session cache of tlsmgr (*_tls_session_cache_database), when it keeps one.
        if !config.string("\(prefix)_tls_session_cache_database").isEmpty {
            TLSManager.configure(config: config)
            if TLSManager.cachable(prefix) {
                cacheType = prefix
                _ = cssl_ctx_set_session_cache_mode(c, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
                SSL_CTX_sess_set_new_cb(c, newClientSession)
            }
        }
    }

    /// The cache type ("smtp", "lmtp") when sessions are cached.
    var cacheType: String?

    /// The handshake as a client; nil when it failed. `names`: the names the server
    /// certificate must carry to count as verified (empty: none asked for).
    /// `fingerprints` (level fingerprint): the certificate or public key fingerprints
    /// (with `digest`) that make it verified.
    /// `cacheID`: the session's name in the session cache (service, address, port and
    /// next hop), for resuming an earlier session and saving this one.
    public func connect(fd: Int32, timeout: Int, peer: String, names: [String],
                        fingerprints: [String] = [], digest: String = "sha256", cacheID: String? = nil) -> TLSSession? {
        clientCacheEntry = nil
        if let type = cacheType, let id = cacheID { clientCacheEntry = (type, id) }
        let prepare = { (ssl: OpaquePointer) in
            guard let entry = clientCacheEntry, let der = TLSManager.lookup(entry.type, entry.id) else { return }
            der.withUnsafeBufferPointer { b in
                var p: UnsafePointer<UInt8>? = b.baseAddress
                if let sess = d2i_SSL_SESSION(nil, &p, b.count) {
                    _ = SSL_set_session(ssl, sess)
                    SSL_SESSION_free(sess)
                }
            }
        }
        guard let session = TLSSession.handshake(ctx, fd: fd, timeout: timeout, client: true, peer: peer, prepare: prepare) else { return nil }
        let ssl = session.ssl
        if let cert = SSL_get1_peer_certificate(ssl) {
            defer { X509_free(cert) }
            session.trust = "Untrusted"
            let result = SSL_get_verify_result(ssl)
            if !fingerprints.isEmpty {
                session.peerCertificate(cert, digest: digest)
                let wanted = Set(fingerprints.map { $0.uppercased() })
                session.trusted = result == Int(X509_V_OK)
                if wanted.contains(session.certFingerprint) || wanted.contains(session.pkeyFingerprint) {
                    session.trust = "Verified"
                    session.verified = true
                } else {
                    // Postfix checks fingerprints as DANE TLSA records, and says so.
                    Msg.info("server certificate verification failed for \(peer): num=\(X509_V_ERR_DANE_NO_MATCH):no matching DANE TLSA records")
                }
            } else if result == Int(X509_V_OK) {
                session.trusted = true
                if names.isEmpty {
                    session.trust = "Trusted"
                } else if names.contains(where: { X509_check_host(cert, $0, $0.utf8.count, 0, nil) == 1 }) {
                    session.trust = "Verified"
                    session.verified = true
                } else {
                    // A name mismatch makes the certificate as good as untrusted.
                    session.verifyError = "num=\(X509_V_ERR_HOSTNAME_MISMATCH):hostname mismatch"
                }
            } else {
                session.verifyError = "num=\(result):\(String(cString: X509_verify_cert_error_string(result)))"
            }
            if !session.verifyError.isEmpty && !names.isEmpty {
                Msg.info("server certificate verification failed for \(peer): \(session.verifyError)")
            }
        }
        if logLevel >= 1 { Msg.info(session.summary(peer: peer, role: "to")) }
        return session
    }
}
