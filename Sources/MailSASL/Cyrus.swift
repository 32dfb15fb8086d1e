// Cyrus: SASL through the Cyrus library (libsasl2), server and client. The library reads
// its own configuration (smtpd.conf: pwcheck_method, auxprop_plugin, sasldb_path,
// mech_list, ...) from cyrus_sasl_config_path or its built-in path.
// Mirrors Postfix xsasl/xsasl_cyrus_server.c, xsasl_cyrus_client.c and xsasl_cyrus_log.c.
import Glibc
import CSASL
import MailUtil

/// xsasl_cyrus_log: the library's messages in the mail log.
private let cyrusLog: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?) -> Int32 = { _, level, message in
    let text = message.map { String(cString: $0) } ?? ""
    switch level {
    case SASL_LOG_ERR, SASL_LOG_WARN:
        Msg.warn("SASL authentication problem: \(text)")
    case SASL_LOG_FAIL:
        Msg.warn("SASL authentication failure: \(text)")
    case SASL_LOG_NOTE:
        if Msg.verbose > 0 { Msg.info("SASL authentication info: \(text)") }
    case SASL_LOG_DEBUG:
        if Msg.verbose > 0 { Msg.info("SASL authentication debug: \(text)") }
    case SASL_LOG_TRACE:
        if Msg.verbose > 0 { Msg.info("SASL authentication trace: \(text)") }
    case SASL_LOG_PASS:
        if Msg.verbose > 0 { Msg.info("SASL authentication pass: \(text)") }
    default:
        break
    }
    return SASL_OK
}

enum Cyrus {
    /// A non-null empty input ("=" in SMTP): some mechanisms tell it from none.
    nonisolated(unsafe) static let empty: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

    static func errorText(_ status: Int32) -> String {
        String(cString: sasl_errstring(status, nil, nil))
    }

    /// The process-wide callbacks: only the log.
    nonisolated(unsafe) static let logCallbacks: UnsafeMutablePointer<sasl_callback_t> = {
        let p = UnsafeMutablePointer<sasl_callback_t>.allocate(capacity: 2)
        p[0] = sasl_callback_t(id: UInt(SASL_CB_LOG), proc: unsafeBitCast(cyrusLog, to: (@convention(c) () -> Int32).self), context: nil)
        p[1] = sasl_callback_t(id: UInt(SASL_CB_LIST_END), proc: nil, context: nil)
        return p
    }()

    static func setConfigPath(_ path: String) {
        guard !path.isEmpty else { return }
        let status = path.withCString { sasl_set_path(SASL_PATH_TYPE_CONFIG, UnsafeMutablePointer(mutating: $0)) }
        if status != SASL_OK { Msg.warn("failed to set Cyrus SASL configuration path: \"\(path)\"") }
    }

    /// sasl_decode64 of a client or server line; nil with the library's error text.
    static func decode(_ text: String) -> Result<[UInt8], SASLClientError> {
        let bytes = Array(text.utf8)
        var out = [CChar](repeating: 0, count: bytes.count + 1)
        var len: UInt32 = 0
        let status = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(bytes.count, 1)) {
                sasl_decode64($0, UInt32(bytes.count), &out, UInt32(out.count), &len)
            }
        }
        if status != SASL_OK { return .failure(SASLClientError(errorText(status))) }
        return .success(out.prefix(Int(len)).map { UInt8(bitPattern: $0) })
    }

    static func encode(_ data: UnsafePointer<CChar>?, _ len: UInt32) -> String {
        guard let data, len > 0 else { return "" }
        return String(decoding: Base64.encode(UnsafeRawBufferPointer(start: data, count: Int(len))), as: UTF8.self)
    }

    static func securityProperties(_ flags: UInt32) -> sasl_security_properties_t {
        var p = sasl_security_properties_t()
        p.min_ssf = 0
        p.max_ssf = 0   // no SASL security layer
        p.security_flags = UInt32(flags)
        p.maxbufsize = 0
        return p
    }
}

// MARK: Server

final class CyrusServerImpl: SASLServerImpl {
    let myhostname: String

    init?(path: String, myhostname: String, configPath: String) {
        self.myhostname = myhostname
        var major: Int32 = 0, minor: Int32 = 0, step: Int32 = 0
        sasl_version_info(nil, nil, &major, &minor, &step, nil)
        if major != SASL_VERSION_MAJOR {
            Msg.warn("incorrect SASL library version. Postfix was built with include files from version \(SASL_VERSION_MAJOR).\(SASL_VERSION_MINOR).\(SASL_VERSION_STEP), but the run-time library version is \(major).\(minor).\(step)")
            return nil
        }
        Cyrus.setConfigPath(configPath)
        if Msg.verbose > 0 { Msg.info("xsasl_cyrus_server_init: SASL config file is \(path).conf") }
        let status = sasl_server_init(Cyrus.logCallbacks, path)
        if status != SASL_OK {
            Msg.warn("SASL per-process initialization failed: \(Cyrus.errorText(status))")
            return nil
        }
    }

    func create(_ args: SASLServerArguments) -> SASLServer? {
        var conn: OpaquePointer?
        let status = sasl_server_new(args.service, myhostname, args.realm, nil, nil, nil, 0, &conn)
        guard status == SASL_OK, let conn else {
            Msg.warn("SASL per-connection server initialization: \(Cyrus.errorText(status))")
            return nil
        }
        let server = CyrusServer(conn: conn)
        if !args.securityOptions.isEmpty {
            let flags = SASL.securityFlags(args.securityOptions, parameter: "SASL security options")
            if flags == 0 {
                Msg.warn("bad per-session SASL security properties")
                return nil
            }
            server.flags = flags
        }
        var props = Cyrus.securityProperties(server.flags)
        let st = sasl_setprop(conn, SASL_SEC_PROPS, &props)
        if st != SASL_OK {
            Msg.warn("SASL per-connection security setup; \(Cyrus.errorText(st))")
            return nil
        }
        return server
    }
}

final class CyrusServer: SASLServer {
    var conn: OpaquePointer?
    var flags: UInt32 = 0

    init(conn: OpaquePointer) { self.conn = conn }
    deinit { sasl_dispose(&conn) }

    var mechanisms: String? {
        var list: UnsafePointer<CChar>?
        var count: Int32 = 0
        let status = sasl_listmech(conn, nil, "", " ", "", &list, nil, &count)
        guard status == SASL_OK, let list else {
            Msg.warn("xsasl_cyrus_server_get_mechanism_list: \(Cyrus.errorText(status))")
            return nil
        }
        if count <= 0 {
            Msg.warn("xsasl_cyrus_server_get_mechanism_list: no applicable SASL mechanisms")
            return nil
        }
        return String(cString: list)
    }

    /// xsasl_cyrus_server_auth_response.
    func response(_ status: Int32, _ out: UnsafePointer<CChar>?, _ len: UInt32) -> SASLStep {
        switch status {
        case SASL_OK: return .done
        case SASL_CONTINUE: return .more(Cyrus.encode(out, len))
        default:
            // An unknown user is reported as a bad password (privacy); trouble on this
            // side is temporary.
            let text = Cyrus.errorText(status == SASL_NOUSER ? SASL_BADAUTH : status)
            switch status {
            case SASL_FAIL, SASL_NOMEM, SASL_TRYAGAIN, SASL_UNAVAIL: return .temp(text)
            default: return .fail(text)
            }
        }
    }

    func first(mechanism: String, initialResponse: String?) -> SASLStep {
        var out: UnsafePointer<CChar>?
        var outLen: UInt32 = 0
        var status: Int32
        if let initialResponse {
            let data: [UInt8]
            switch Cyrus.decode(initialResponse) {
            case .success(let d): data = d
            case .failure(let e): return .fail(e.text)
            }
            status = data.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) {
                    sasl_server_start(conn, mechanism, $0.baseAddress ?? Cyrus.empty, UInt32(data.count), &out, &outLen)
                }
            }
        } else {
            status = sasl_server_start(conn, mechanism, nil, 0, &out, &outLen)
        }
        return response(status, out, outLen)
    }

    func next(_ text: String) -> SASLStep {
        let data: [UInt8]
        switch Cyrus.decode(text) {
        case .success(let d): data = d
        case .failure(let e): return .fail(e.text)
        }
        var out: UnsafePointer<CChar>?
        var outLen: UInt32 = 0
        let status = data.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) {
                sasl_server_step(conn, $0.baseAddress ?? Cyrus.empty, UInt32(data.count), &out, &outLen)
            }
        }
        return response(status, out, outLen)
    }

    var username: String? {
        var value: UnsafeRawPointer?
        guard sasl_getprop(conn, SASL_USERNAME, &value) == SASL_OK, let value else { return nil }
        return SASL.printable(String(cString: value.assumingMemoryBound(to: CChar.self)))
    }
}

// MARK: Client

/// The client's credentials, handed to the library through its callbacks.
private final class CyrusCredentials {
    var username: [CChar] = [0]
    var secret: UnsafeMutableRawPointer?

    func set(username: String, password: String) {
        self.username = Array(username.utf8CString)
        free(secret)
        // sasl_secret_t: an unsigned long length, then the bytes.
        let pw = Array(password.utf8)
        let size = MemoryLayout<UInt>.size + pw.count + 1
        let p = malloc(size)!
        p.storeBytes(of: UInt(pw.count), as: UInt.self)
        let data = p.advanced(by: MemoryLayout<UInt>.size).assumingMemoryBound(to: UInt8.self)
        for (i, b) in pw.enumerated() { data[i] = b }
        data[pw.count] = 0
        secret = p
    }

    deinit { free(secret) }
}

private let cyrusGetUser: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>?, UnsafeMutablePointer<UInt32>?) -> Int32 = { context, id, result, len in
    guard let context, let result else { return SASL_FAIL }
    let creds = Unmanaged<CyrusCredentials>.fromOpaque(context).takeUnretainedValue()
    // Postfix sends no authorization identity unless send_cyrus_sasl_authzid.
    if id == SASL_CB_USER {
        result.pointee = Cyrus.empty
        len?.pointee = 0
        return SASL_OK
    }
    creds.username.withUnsafeBufferPointer { result.pointee = $0.baseAddress }
    len?.pointee = UInt32(strlen(result.pointee!))
    return SASL_OK
}

private let cyrusGetSecret: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<UnsafeMutablePointer<sasl_secret_t>?>?) -> Int32 = { _, context, _, result in
    guard let context, let result else { return SASL_BADPARAM }
    let creds = Unmanaged<CyrusCredentials>.fromOpaque(context).takeUnretainedValue()
    result.pointee = creds.secret?.assumingMemoryBound(to: sasl_secret_t.self)
    return SASL_OK
}

public final class CyrusClient: SASLClient {
    var conn: OpaquePointer?
    private let creds = CyrusCredentials()
    private let callbacks: UnsafeMutablePointer<sasl_callback_t>
    nonisolated(unsafe) private static var initialized = false

    /// xsasl_cyrus_client_init and _create: service "smtp", the server's host name, the
    /// security options (smtp_sasl_security_options and friends).
    public init?(service: String, serverName: String, securityOptions: String, parameter: String, configPath: String) {
        if !Self.initialized {
            Cyrus.setConfigPath(configPath)
            let status = sasl_client_init(Cyrus.logCallbacks)
            if status != SASL_OK {
                Msg.warn("SASL library initialization: \(Cyrus.errorText(status))")
                return nil
            }
            Self.initialized = true
        }
        callbacks = UnsafeMutablePointer<sasl_callback_t>.allocate(capacity: 5)
        let ctx = Unmanaged.passUnretained(creds).toOpaque()
        let user = unsafeBitCast(cyrusGetUser, to: (@convention(c) () -> Int32).self)
        let pass = unsafeBitCast(cyrusGetSecret, to: (@convention(c) () -> Int32).self)
        let log = unsafeBitCast(cyrusLog, to: (@convention(c) () -> Int32).self)
        callbacks[0] = sasl_callback_t(id: UInt(SASL_CB_LOG), proc: log, context: nil)
        callbacks[1] = sasl_callback_t(id: UInt(SASL_CB_USER), proc: user, context: ctx)
        callbacks[2] = sasl_callback_t(id: UInt(SASL_CB_AUTHNAME), proc: user, context: ctx)
        callbacks[3] = sasl_callback_t(id: UInt(SASL_CB_PASS), proc: pass, context: ctx)
        callbacks[4] = sasl_callback_t(id: UInt(SASL_CB_LIST_END), proc: nil, context: nil)
        var c: OpaquePointer?
        let status = sasl_client_new(service, serverName, nil, nil, callbacks, UInt32(SASL_SUCCESS_DATA), &c)
        guard status == SASL_OK, let c else {
            Msg.warn("per-session SASL client initialization: \(Cyrus.errorText(status))")
            callbacks.deallocate()
            return nil
        }
        conn = c
        let flags = SASL.securityFlags(securityOptions, parameter: parameter)
        var props = Cyrus.securityProperties(flags)
        let st = sasl_setprop(c, SASL_SEC_PROPS, &props)
        if st != SASL_OK {
            Msg.warn("set security properties: \(Cyrus.errorText(st))")
            return nil
        }
    }

    deinit {
        sasl_dispose(&conn)
        callbacks.deallocate()
    }

    public func first(mechanisms: String, username: String, password: String) -> Result<(mechanism: String, response: String), SASLClientError> {
        creds.set(username: username, password: password)
        var out: UnsafePointer<CChar>?
        var outLen: UInt32 = 0
        var mech: UnsafePointer<CChar>?
        let status = sasl_client_start(conn, mechanisms, nil, &out, &outLen, &mech)
        guard status == SASL_OK || status == SASL_CONTINUE, let mech else {
            return .failure(SASLClientError(Cyrus.errorText(status)))
        }
        return .success((String(cString: mech), Cyrus.encode(out, outLen)))
    }

    public func next(_ challenge: String) -> Result<String, SASLClientError> {
        let data: [UInt8]
        switch Cyrus.decode(challenge) {
        case .success(let d): data = d
        case .failure(let e): return .failure(e)
        }
        var out: UnsafePointer<CChar>?
        var outLen: UInt32 = 0
        let status = data.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) {
                sasl_client_step(conn, $0.baseAddress, UInt32(data.count), nil, &out, &outLen)
            }
        }
        guard status == SASL_OK || status == SASL_CONTINUE else {
            return .failure(SASLClientError(Cyrus.errorText(status)))
        }
        return .success(Cyrus.encode(out, outLen))
    }
}
