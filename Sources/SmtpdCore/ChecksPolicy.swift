// ChecksPolicy: check_policy_service, delegating a decision to an external policy server
// over the plain attribute protocol ("name=value" lines ending in an empty line), with
// persistent connections, retries and a default action when the server cannot be
// reached. The server's answer is an access(5) action, handled as a table result.
// Mirrors check_policy_service and the policy client of Postfix smtpd/smtpd_check.c
// (SMTPD_POLICY_README), with util/attr_clnt.c for the connection.
import Glibc
import MailUtil
import MailGlobal

/// One policy server and its connection, shared by the sessions of a process.
final class PolicyClient {
    let endpoint: String
    var timeout: Int
    var maxIdle: Int
    var maxTTL: Int
    var tryLimit: Int
    var retryDelay: Int
    var requestLimit: Int
    var defaultAction: String
    var context: String

    var stream: FDStream?
    var connectedAt: UInt64 = 0
    var lastUse: UInt64 = 0
    var requests = 0

    /// `spec` is "inet:host:port", "unix:path", or "{ endpoint, name = value, ... }" with
    /// per-server overrides of the smtpd_policy_service_* settings.
    init(spec: String, config: MailConfig) {
        timeout = config.time("smtpd_policy_service_timeout")
        maxIdle = config.time("smtpd_policy_service_max_idle")
        maxTTL = config.time("smtpd_policy_service_max_ttl")
        tryLimit = config.int("smtpd_policy_service_try_limit")
        retryDelay = config.time("smtpd_policy_service_retry_delay")
        requestLimit = config.int("smtpd_policy_service_request_limit")
        defaultAction = config.string("smtpd_policy_service_default_action")
        context = config.string("smtpd_policy_service_policy_context")
        var words = [spec]
        if spec.hasPrefix("{") {
            words = Tokens.split(Tokens.extractBraced(spec).inner)
        }
        endpoint = words.first ?? spec
        for w in words.dropFirst() {
            guard let eq = w.firstIndex(of: "=") else {
                Msg.fatal("malformed option: missing '=' after attribute name: \"...\(w)...\"")
            }
            let name = String(w[..<eq]).lowercased()
            let value = String(w[w.index(after: eq)...])
            switch name {
            case "timeout": timeout = ConfigValue.parseTime(value) ?? timeout
            case "max_idle": maxIdle = ConfigValue.parseTime(value) ?? maxIdle
            case "max_ttl": maxTTL = ConfigValue.parseTime(value) ?? maxTTL
            case "try_limit": tryLimit = Int(value) ?? tryLimit
            case "retry_delay": retryDelay = ConfigValue.parseTime(value) ?? retryDelay
            case "request_limit": requestLimit = Int(value) ?? requestLimit
            case "default_action": defaultAction = value
            case "policy_context": context = value
            default: Msg.fatal("unknown attribute name: \"\(name)\" in \"\(spec)\"")
            }
        }
    }

    /// The server as Postfix names it in warnings: the endpoint without "inet:"/"unix:".
    var serverName: String {
        endpoint.hasPrefix("inet:") || endpoint.hasPrefix("unix:") ? String(endpoint.dropFirst(5)) : endpoint
    }

    func connect() throws -> FDStream {
        let fd: Int32
        if endpoint.hasPrefix("inet:") {
            let hp = String(endpoint.dropFirst(5))
            guard let colon = hp.lastIndex(of: ":") else { throw SystemError(errno: EINVAL, "bad address: \(endpoint)") }
            var host = String(hp[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard let port = InetSocket.port(String(hp[hp.index(after: colon)...])),
                  case .success(let addrs) = InetSocket.resolve(host, port: port), let addr = addrs.first else {
                throw SystemError(errno: EINVAL, "bad address: \(endpoint)")
            }
            fd = try InetSocket.connect(addr, timeout: timeout)
        } else {
            let path = endpoint.hasPrefix("unix:") ? String(endpoint.dropFirst(5)) : endpoint
            fd = try UnixSocket.connect(path, timeout: timeout)
        }
        return FDStream(fd: fd, timeout: timeout, closeOnDeinit: true)
    }

    /// One request and its "action" reply; nil after tryLimit failures (logged).
    func query(_ request: [(String, String)]) -> String? {
        var body = ""
        for (n, v) in request { body += "\(n)=\(v)\n" }
        body += "\n"
        var lastError = ""
        for attempt in 0..<max(tryLimit, 1) {
            if attempt > 0 && retryDelay > 0 { sleep(UInt32(retryDelay)) }
            let now = monotonicNanos()
            if let _ = stream, (maxIdle > 0 && now - lastUse > UInt64(maxIdle) * 1_000_000_000)
                || (maxTTL > 0 && now - connectedAt > UInt64(maxTTL) * 1_000_000_000)
                || (requestLimit > 0 && requests >= requestLimit) {
                stream = nil
            }
            do {
                if stream == nil {
                    do {
                        stream = try connect()
                    } catch let e as SystemError {
                        Msg.warn("connect to \(serverName): \(errnoText(e.errno))")
                        throw e
                    }
                    connectedAt = now
                    requests = 0
                }
                guard let st = stream else { continue }
                try st.write(body)
                try st.flush()
                var action: String?
                while true {
                    guard let line = try st.readLine(limit: 4096) else { throw StreamError.eof }
                    if line.bytes.isEmpty { break }
                    let text = String(decoding: line.bytes, as: UTF8.self)
                    if text.hasPrefix("action=") && action == nil { action = String(text.dropFirst(7)) }
                }
                lastUse = monotonicNanos()
                requests += 1
                guard let action else {
                    lastError = "missing attribute action"
                    stream = nil
                    continue
                }
                return action
            } catch let e as SystemError {
                lastError = errnoText(e.errno)
                stream = nil
            } catch StreamError.timeout {
                lastError = "Connection timed out"
                stream = nil
            } catch {
                lastError = "lost connection"
                stream = nil
            }
        }
        Msg.warn("problem talking to server \(serverName): \(lastError)")
        return nil
    }
}

extension Session {
    func checkPolicyService(_ spec: String, _ replyName: String, _ replyClass: String, _ defACL: String?) throws -> CheckResult {
        let client = s.policyClient(spec)
        let state = whereText == "BDAT" || whereText == Where.bdatContent ? "DATA" : whereText
        let countsRecipients = ["DATA", "BDAT", Where.endOfMessage].contains(whereText)
        let request: [(String, String)] = [
            ("request", "smtpd_access_policy"),
            ("protocol_state", state),
            ("protocol_name", protocolName),
            ("helo_name", helo ?? ""),
            ("queue_id", queueID ?? ""),
            ("sender", sender ?? ""),
            ("recipient", recipient ?? ""),
            ("recipient_count", String(countsRecipients ? rcptCount : 0)),
            ("client_address", addr),
            ("client_name", name),
            ("reverse_client_name", reverseName),
            ("instance", instance),
            ("sasl_method", s.saslEnabled ? saslMethod ?? "" : ""),
            ("sasl_username", s.saslEnabled ? saslUsername ?? "" : ""),
            ("sasl_sender", s.saslEnabled ? saslSender ?? "" : ""),
            ("size", String(bytesReceived > 0 ? bytesReceived : declaredSize)),
            ("ccert_subject", tls?.trusted == true ? tls!.peerCN : ""),
            ("ccert_issuer", tls?.trusted == true ? tls!.issuerCN : ""),
            ("ccert_fingerprint", tls?.certFingerprint ?? ""),
            ("ccert_pubkey_fingerprint", tls?.pkeyFingerprint ?? ""),
            ("encryption_protocol", tls?.protocolVersion ?? ""),
            ("encryption_cipher", tls?.cipherName ?? ""),
            ("encryption_keysize", String(tls?.cipherBits.use ?? 0)),
            ("etrn_domain", whereText == "ETRN" ? replyName : ""),
            ("stress", config.string("stress")),
            ("client_port", port),
            ("policy_context", client.context),
            ("server_address", serverAddr),
            ("server_port", serverPort),
        ]
        let action = client.query(request) ?? client.defaultAction
        return try tableResult(spec, action, "policy query", replyName, replyClass, defACL)
    }

    /// A value that identifies the transaction to policy servers across its requests.
    var instance: String {
        String(getpid(), radix: 16) + "." + String(arrival.tv_sec, radix: 16) + "." + String(arrival.tv_usec, radix: 16)
            + "." + String(transactionCount, radix: 16)
    }
}
