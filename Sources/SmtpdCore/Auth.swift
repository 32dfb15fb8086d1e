// Auth: SMTP authentication (RFC 4954) in smtpd: the AUTH command and its exchange, the
// mechanism list EHLO offers, MAIL FROM's AUTH= parameter, and the restrictions that look
// at the login (permit_sasl_authenticated, the *_sender_login_mismatch family,
// check_sasl_access). The work of checking passwords is the SASL implementation's (Cyrus
// or Dovecot, smtpd_sasl_type).
// Mirrors Postfix smtpd/smtpd_sasl_glue.c, smtpd_sasl_proto.c and parts of smtpd_check.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailSASL

extension Session {
    // MARK: Per-session set-up (smtpd_sasl_activate)

    /// A SASL server for this session with the security options for its state (plain or
    /// TLS), and the mechanisms it offers after smtpd_sasl_mechanism_filter.
    func saslActivate() {
        guard let impl = s.saslImpl else { return }
        let tlsFlag = tls == nil ? 0 : 1
        let options = tls == nil ? s.saslOptions : s.saslTLSOptions
        let args = SASLServerArguments(service: s.saslService, realm: s.saslRealm.isEmpty ? nil : s.saslRealm,
                                       securityOptions: options, clientAddress: addr == "unknown" ? "" : addr,
                                       clientPort: port, serverAddress: serverAddr, serverPort: serverPort,
                                       tlsFlag: tlsFlag)
        guard let server = impl.create(args) else { Msg.fatal("SASL per-connection initialization failed") }
        guard let list = server.mechanisms else { Msg.fatal("no SASL authentication mechanisms") }
        var filtered = list
        if let filter = s.saslMechanismFilter {
            filtered = SASL.filterMechanisms(list) { filter.matches($0) }
            if filtered.isEmpty { Msg.fatal("smtpd_sasl_mechanism_filter discards all mechanisms in '\(list)'") }
        }
        sasl = server
        saslMechanisms = filtered
    }

    func saslDeactivate() {
        sasl = nil
        saslMechanisms = nil
        saslUsername = nil
        saslMethod = nil
        saslSender = nil
    }

    /// smtpd_sasl_exceptions_networks: clients that are not offered AUTH.
    var saslClientException: Bool {
        guard let list = s.saslExceptions else { return false }
        let match = list.matches(name, address: addr)
        if Msg.verbose > 0 { Msg.info("sasl_exceptions: \(namaddr), match=\(match ? 1 : 0)") }
        return match
    }

    /// The AUTH lines of the EHLO reply.
    func ehloAuthLines() -> [String] {
        guard let list = saslMechanisms, !saslClientException else { return [] }
        if s.tlsAuthOnly && tls == nil { return [] }
        return ["AUTH \(list)"] + (s.brokenSASLClients ? ["AUTH=\(list)"] : [])
    }

    // MARK: AUTH

    func authCommand(_ argv: [SMTPToken]) -> Bool {
        if s.heloRequired && helo == nil { return fail("503 5.5.1 Error: send HELO/EHLO first", .policy) }
        if s.standalone || sasl == nil || ehloDiscard.contains(.auth) {
            return fail("503 5.5.1 Error: authentication not enabled")
        }
        if sender != nil { return fail("503 5.5.1 Error: MAIL transaction in progress") }
        if s.tlsAuthOnly && tls == nil {
            // RFC 4954, Section 4.
            return fail("504 5.5.4 Encryption required for requested authentication mechanism")
        }
        if saslUsername != nil { return fail("503 5.5.1 Error: already authenticated") }
        if argv.count < 2 || argv.count > 3 { return fail("501 5.5.4 Syntax: AUTH mechanism") }
        return authenticate(method: argv[1].text, initialResponse: argv.count == 3 ? argv[2].text : nil)
    }

    /// smtpd_sasl_authenticate: challenges and responses until the server is done. Every
    /// failure is logged; the failed command counts as an error (tar pit).
    func authenticate(method: String, initialResponse: String?) -> Bool {
        guard let server = sasl else { return false }
        var step = server.first(mechanism: method, initialResponse: initialResponse)
        while case .more(let challenge) = step {
            reply("334 \(challenge)")
            if done { return false }
            guard let line = readClientLine(limit: s.saslResponseLimit, overflow: .truncate) else { return false }
            let text = String(decoding: line.bytes, as: UTF8.self)
            remember("In:  ", text)
            if line.overflow {
                // .truncate has already dropped the rest of the over-long line.
                reply("500 5.5.6 SASL response limit exceeded")
                return false
            }
            if text == "*" {
                Msg.warn("\(namaddr): SASL \(method) authentication aborted")
                reply("501 5.7.0 Authentication aborted")
                return false
            }
            step = server.next(text)
        }
        switch step {
        case .done:
            reply("235 2.7.0 Authentication successful")
            guard let user = server.username else { Msg.panic("cannot look up the authenticated SASL username") }
            saslUsername = Msg.printable(user)
            saslMethod = Msg.printable(method)
            return true
        case .fail(let why), .temp(let why):
            let reasonText = why.isEmpty ? "(reason unavailable)" : why
            let user = server.username
            Msg.warn("\(namaddr): SASL \(String(method.prefix(100))) authentication failed: \(reasonText), sasl_username=\(String((user ?? "(unavailable)").prefix(100)))")
            if case .temp = step {
                reply("454 4.7.0 Temporary authentication failure: \(reasonText)")
            } else {
                reply("535 5.7.8 Error: authentication failed: \(reasonText)")
            }
            return false
        case .more:
            return false
        }
    }

    /// MAIL FROM's AUTH= (smtpd_sasl_mail_opt): the address a trusted client says the
    /// message was submitted by; "<>" means none. nil when accepted, else the reply.
    /// As in Postfix, the address stays set when the MAIL command then fails on another
    /// parameter, until the transaction is reset.
    func saslMailOption(_ value: String) -> String? {
        if sasl == nil {
            errorMask.insert(.proto)
            return "503 5.5.4 Error: authentication disabled"
        }
        if saslSender != nil {
            errorMask.insert(.proto)
            return "503 5.5.4 Error: multiple AUTH= options"
        }
        // "<>" sets nothing, and a second AUTH= after it is not a repeat.
        if value != "<>" { saslSender = Msg.printable(value) }
        return nil
    }

    /// The "client=" line of a new queue file, with what the login adds.
    func clientLogLine(_ id: String) -> String {
        var line = "\(id): client=\(namaddr)"
        if let m = saslMethod { line += ", sasl_method=\(m)" }
        if let u = saslUsername { line += ", sasl_username=\(u)" }
        if let snd = saslSender { line += ", sasl_sender=\(snd)" }
        return line
    }

    // MARK: Restrictions

    /// permit_sasl_authenticated: a login other than ANONYMOUS.
    var saslAuthenticated: Bool {
        guard sasl != nil, let m = saslMethod else { return false }
        return m.lowercased() != "anonymous"
    }

    /// reject_authenticated_sender_login_mismatch: a logged-in client must own the
    /// sender address in smtpd_sender_login_maps (an unowned address is refused too,
    /// unless `allowUnknown`).
    func rejectAuthSenderLoginMismatch(_ sender: String, allowUnknown: Bool) throws -> CheckResult {
        guard let maps = s.senderLoginMaps, let user = saslUsername else { return .dunno }
        let r = resolve(sender, sender: recipient)
        if r.flags.contains(.fail) { try dictRetry(sender) }
        var found = false
        if let owners = maps.find(r.recipient) {
            found = Tokens.split(owners, separators: Array(", \t\r\n".utf8)).contains { $0.lowercased() == user.lowercased() }
        } else {
            if maps.maps.error != nil { try dictRetry(sender) }
            if allowUnknown { return .dunno }
        }
        if found { return .dunno }
        return checkReject(.policy, 553, "5.7.1", "<\(sender)>: Sender address rejected: not owned by user \(user)")
    }

    /// reject_unauthenticated_sender_login_mismatch: a client that is not logged in may
    /// not use an address that smtpd_sender_login_maps gives an owner.
    func rejectUnauthSenderLoginMismatch(_ sender: String) throws -> CheckResult {
        guard let maps = s.senderLoginMaps, saslUsername == nil else { return .dunno }
        let r = resolve(sender, sender: recipient)
        if r.flags.contains(.fail) { try dictRetry(sender) }
        if maps.find(r.recipient) != nil {
            return checkReject(.policy, 553, "5.7.1", "<\(sender)>: Sender address rejected: not logged in")
        }
        if maps.maps.error != nil { try dictRetry(sender) }
        return .dunno
    }

    /// The four sender login restrictions.
    func senderLoginCheck(_ name: String) throws -> CheckResult {
        guard s.saslEnabled else {
            // The combined form is the authenticated and the unauthenticated check.
            let names = name == "reject_sender_login_mismatch"
                ? ["reject_authenticated_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch"] : [name]
            for n in names { Msg.warn("restriction `\(n)' ignored: no SASL support") }
            return .dunno
        }
        guard let sender, !sender.isEmpty else { return .dunno }
        switch name {
        case "reject_sender_login_mismatch":
            let st = try rejectAuthSenderLoginMismatch(sender, allowUnknown: false)
            if st == .reject { return st }
            return try rejectUnauthSenderLoginMismatch(sender)
        case "reject_known_sender_login_mismatch":
            return saslUsername != nil ? try rejectAuthSenderLoginMismatch(sender, allowUnknown: true)
                : try rejectUnauthSenderLoginMismatch(sender)
        case "reject_authenticated_sender_login_mismatch":
            return try rejectAuthSenderLoginMismatch(sender, allowUnknown: false)
        default:
            return try rejectUnauthSenderLoginMismatch(sender)
        }
    }
}

extension Session {
    /// permit_tls_clientcerts (a client certificate or public key fingerprint listed in
    /// relay_clientcerts) and permit_tls_all_clientcerts (any trusted certificate).
    func permitTLSClientCerts(_ name: String, all: Bool) throws -> CheckResult {
        guard let t = tls else { return .dunno }
        if all && t.trusted {
            if Msg.verbose > 0 { Msg.info("Relaying allowed for all verified client certificates") }
            return aclPermit(name, ReplyClass.client, namaddr)
        }
        if t.certPresent {
            guard let maps = s.relayClientCerts else { return .dunno }
            for key in [t.certFingerprint, t.pkeyFingerprint] {
                switch maps.lookup(key) {
                case .found: return aclPermit(name, ReplyClass.client, namaddr)
                case .notFound: continue
                default:
                    Msg.warn("relay_clientcerts: lookup error for fingerprint '\(t.certFingerprint)', pkey fingerprint \(t.pkeyFingerprint)")
                    try dictRetry(namaddr)
                }
            }
            if Msg.verbose > 0 {
                Msg.info("relay_clientcerts: No match for fingerprint '\(t.certFingerprint)', pkey fingerprint \(t.pkeyFingerprint)")
            }
        } else if s.tlsContext?.askCcert != true {
            Msg.warn("\(name) is requested, but \"smtpd_tls_ask_ccert = no\"")
        }
        return .dunno
    }
}
