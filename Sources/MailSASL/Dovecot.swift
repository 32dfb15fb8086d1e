// Dovecot: SASL through Dovecot's authentication protocol (version 1) on its auth-client
// socket (smtpd_sasl_path, a path relative to the queue directory, "unix:PATH" or
// "inet:HOST:PORT"). One connection per process, opened at the first session that needs
// it and reopened once when a request cannot be sent.
// Mirrors Postfix xsasl/xsasl_dovecot_server.c.
import Glibc
import MailUtil

/// Mechanism properties: what the server says of each, what main.cf forbids or needs.
private struct MechProps: OptionSet {
    let rawValue: Int
    static let plaintext = MechProps(rawValue: 1 << 0)
    static let active = MechProps(rawValue: 1 << 1)
    static let dictionary = MechProps(rawValue: 1 << 2)
    static let anonymous = MechProps(rawValue: 1 << 3)
    static let forwardSecrecy = MechProps(rawValue: 1 << 4)
    static let mutualAuth = MechProps(rawValue: 1 << 5)
    static let `private` = MechProps(rawValue: 1 << 6)

    static let positive: MechProps = [.mutualAuth, .forwardSecrecy]
    static let negative: MechProps = [.plaintext, .active, .dictionary, .anonymous]

    /// The server's words (MECH lines).
    static let serverNames: [(String, MechProps)] = [
        ("plaintext", .plaintext), ("active", .active), ("dictionary", .dictionary),
        ("anonymous", .anonymous), ("forward-secrecy", .forwardSecrecy), ("mutual-auth", .mutualAuth),
        ("private", .private),
    ]
    /// main.cf's words (*_sasl_security_options).
    static let configNames: [(String, MechProps)] = [
        ("noplaintext", .plaintext), ("noactive", .active), ("nodictionary", .dictionary),
        ("noanonymous", .anonymous), ("forward_secrecy", .forwardSecrecy), ("mutual_auth", .mutualAuth),
    ]
}

final class DovecotServerImpl: SASLServerImpl {
    static let majorVersion = 1
    static let minorVersion = 0
    static let timeout = 20

    let socketPath: String
    var stream: FDStream?
    fileprivate var mechanisms: [(name: String, props: MechProps)] = []
    var requestID: UInt32 = 0

    init(socketPath: String) {
        self.socketPath = socketPath
    }

    func create(_ args: SASLServerArguments) -> SASLServer? {
        var props: MechProps = []
        for w in Tokens.split(args.securityOptions) {
            guard let p = MechProps.configNames.first(where: { $0.0 == w.lowercased() }) else {
                Msg.fatal("xsasl_dovecot_server_create: unknown name \"\(w)\" in \"\(args.securityOptions)\"")
            }
            props.insert(p.1)
        }
        return DovecotServer(impl: self, args: args, props: props)
    }

    /// The handshake: VERSION and CPID out; VERSION, MECH..., SPID, CUID, COOKIE, DONE in.
    func connect() -> Bool {
        var path = socketPath
        let fd: Int32
        do {
            if path.hasPrefix("inet:") {
                let hp = String(path.dropFirst(5))
                let colon = hp.lastIndex(of: ":") ?? hp.endIndex
                let host = String(hp[..<colon].filter { $0 != "[" && $0 != "]" })
                let port = colon < hp.endIndex ? InetSocket.port(String(hp[hp.index(after: colon)...])) : nil
                guard let port, let addr = SocketAddress(numeric: host.isEmpty ? "127.0.0.1" : host, port: port) else {
                    throw SystemError(errno: EINVAL)
                }
                fd = try InetSocket.connect(addr, timeout: Self.timeout)
            } else {
                if path.hasPrefix("unix:") { path.removeFirst(5) }
                fd = try UnixSocket.connect(path, timeout: Self.timeout)
            }
        } catch {
            Msg.warn("SASL: Connect to Dovecot auth socket '\(socketPath)' failed: \(Self.errorText(error))")
            return false
        }
        let s = FDStream(fd: fd, timeout: Self.timeout, closeOnDeinit: true)
        do {
            try s.write("VERSION\t\(Self.majorVersion)\t\(Self.minorVersion)\nCPID\t\(getpid())\n")
            try s.flush()
        } catch {
            Msg.warn("SASL: Couldn't send handshake: \(Self.errorText(error))")
            return false
        }
        var haveMech = false
        var list: [(String, MechProps)] = []
        while let line = try? s.readLine(limit: 10240) {
            let text = String(decoding: line.bytes, as: UTF8.self)
            if Msg.verbose > 0 { Msg.info("xsasl_dovecot_server_connect: auth reply: \(text)") }
            let f = text.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch f[0] {
            case "VERSION":
                guard f.count >= 3, let major = Int(f[1]), Int(f[2]) != nil else {
                    Msg.warn("SASL: Protocol version error")
                    return false
                }
                if major != Self.majorVersion {
                    Msg.warn("SASL: Protocol version mismatch (\(major) vs. \(Self.majorVersion))")
                    return false
                }
            case "MECH" where f.count >= 2:
                haveMech = true
                var props: MechProps = []
                for w in f.dropFirst(2) {
                    if let p = MechProps.serverNames.first(where: { $0.0 == w.lowercased() }) { props.insert(p.1) }
                }
                if props.contains(.private) { continue }
                list.append((f[1], props))
            case "SPID":
                if !haveMech {
                    Msg.warn("SASL: Connected to wrong auth socket (auth-master instead of auth-client)")
                    return false
                }
            case "DONE":
                stream = s
                mechanisms = list
                return true
            default:
                break
            }
        }
        return false
    }

    static func errorText(_ error: Error) -> String {
        if let e = error as? SystemError { return String(cString: strerror(e.errno)) }
        return "\(error)"
    }

    func disconnect() {
        stream = nil
        mechanisms = []
    }
}

final class DovecotServer: SASLServer {
    let impl: DovecotServerImpl
    let args: SASLServerArguments
    fileprivate let props: MechProps
    var lastRequest: UInt32 = 0
    var username: String?
    var offered: [String]?

    fileprivate init(impl: DovecotServerImpl, args: SASLServerArguments, props: MechProps) {
        self.impl = impl
        self.args = args
        self.props = props
    }

    var mechanisms: String? {
        if impl.stream == nil && !impl.connect() { return nil }
        if offered == nil {
            let pos = props.intersection(.positive), neg = props.intersection(.negative)
            offered = impl.mechanisms.filter { $0.props.isSuperset(of: pos) && $0.props.isDisjoint(with: neg) }.map(\.name)
        }
        return offered!.isEmpty ? nil : offered!.joined(separator: " ")
    }

    static func isBase64(_ s: String) -> Bool {
        s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2b || $0 == 0x2f || $0 == 0x3d }
    }

    func first(mechanism: String, initialResponse: String?) -> SASLStep {
        guard let offered, offered.contains(where: { $0.lowercased() == mechanism.lowercased() }) else {
            return .fail("Invalid authentication mechanism")
        }
        if let r = initialResponse, !Self.isBase64(r) { return .fail("Invalid base64 data in initial response") }
        for attempt in 0..<2 {
            if impl.stream == nil && !impl.connect() { return .temp("") }
            impl.requestID &+= 1
            lastRequest = impl.requestID
            var line = "AUTH\t\(lastRequest)\t\(mechanism)\tservice=\(args.service)\tnologin\tlip=\(args.serverAddress)\trip=\(args.clientAddress)"
            if args.tlsFlag & 1 != 0 { line += "\tsecured" }
            if args.tlsFlag & 2 != 0 { line += "\tvalid-client-cert" }
            if let r = initialResponse { line += "\tresp=\(r)" }
            do {
                try impl.stream!.write(line + "\n")
                try impl.stream!.flush()
                break
            } catch {
                impl.disconnect()
                if attempt == 1 { return .temp("Can't connect to authentication server") }
            }
        }
        return handleReply()
    }

    func next(_ response: String) -> SASLStep {
        guard Self.isBase64(response) else { return .fail("Invalid base64 data in continued response") }
        guard let s = impl.stream else {
            return .temp("Connection lost to authentication server")
        }
        do {
            try s.write("CONT\t\(lastRequest)\t\(response)\n")
            try s.flush()
        } catch {
            impl.disconnect()
            return .temp("Connection lost to authentication server")
        }
        return handleReply()
    }

    /// OK, CONT or FAIL for our request; anything else is skipped.
    func handleReply() -> SASLStep {
        while let s = impl.stream, let line = try? s.readLine(limit: 65536) {
            let text = String(decoding: line.bytes, as: UTF8.self)
            if Msg.verbose > 0 { Msg.info("xsasl_dovecot_handle_reply: auth reply: \(text)") }
            var f = text.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            let cmd = f.removeFirst()
            guard ["OK", "CONT", "FAIL"].contains(cmd) else { continue }
            guard let id = f.first else {
                Msg.warn("SASL: Protocol error")
                continue
            }
            guard UInt32(id) == lastRequest else { continue }
            f.removeFirst()
            switch cmd {
            case "OK":
                parseArguments(f, success: true)
                if username == nil {
                    Msg.warn("missing Dovecot server OK username field")
                    return .fail("Authentication backend error")
                }
                return .done
            case "CONT":
                guard let challenge = f.first else {
                    Msg.warn("missing Dovecot server CONT reply field")
                    return .fail("Authentication backend error")
                }
                return .more(challenge)
            default:
                let reason = parseArguments(f, success: false)
                return f.contains("temp") ? .temp(reason) : .fail(reason)
            }
        }
        impl.disconnect()
        return .temp("Connection lost to authentication server")
    }

    @discardableResult
    func parseArguments(_ f: [String], success: Bool) -> String {
        username = nil
        var reason = ""
        for a in f {
            if a.hasPrefix("user=") {
                username = SASL.printable(String(a.dropFirst(5)))
            } else if a.hasPrefix("reason="), !success {
                reason = SASL.printable(String(a.dropFirst(7)))
            }
        }
        return reason
    }
}
