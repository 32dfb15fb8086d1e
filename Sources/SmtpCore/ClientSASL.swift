// ClientSASL: SMTP authentication in the smtp/lmtp client: the AUTH mechanisms a server
// offers (after smtp_sasl_mechanism_filter), the credentials from smtp_sasl_password_maps
// (per sender with smtp_sender_dependent_authentication, else per server host, then per
// destination), and the AUTH exchange through the Cyrus client library.
// Mirrors Postfix smtp/smtp_sasl_glue.c and smtp_sasl_proto.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailSASL

struct ClientSASLSettings {
    let prefix: String
    let passwordMaps: Maps?
    let senderDependent: Bool
    let mechanismFilter: MatchList?
    let options: String
    let tlsOptions: String
    let tlsVerifiedOptions: String
    let softBounce: Bool
    let dummyMailAuth: Bool
    let configPath: String

    init(config: MailConfig, prefix: String) {
        self.prefix = prefix
        let p = { (name: String) in prefix + name }
        let maps = config.string(p("sasl_password_maps"))
        passwordMaps = maps.isEmpty ? nil : Maps(title: p("sasl_password_maps"), mapNames: maps, flags: .lock)
        senderDependent = config.bool(p("sender_dependent_authentication"))
        let filter = config.string(p("sasl_mechanism_filter"))
        mechanismFilter = filter.isEmpty ? nil
            : MatchList(name: p("sasl_mechanism_filter"), kind: .string, options: [], text: filter)
        options = config.string(p("sasl_security_options"))
        tlsOptions = config.string(p("sasl_tls_security_options"))
        tlsVerifiedOptions = config.string(p("sasl_tls_verified_security_options"))
        softBounce = config.bool(p("sasl_auth_soft_bounce"))
        dummyMailAuth = config.bool(p("send_dummy_mail_auth"))
        configPath = config.string("cyrus_sasl_config_path")
        let type = config.string(p("sasl_type"))
        if type.lowercased() != "cyrus" { Msg.fatal("unsupported SASL client implementation: \(type)") }
    }
}

extension Session {
    /// smtp_sasl_helo_auth: the mechanism list of an AUTH (or AUTH=) line of the EHLO
    /// reply; a second list is added to the first.
    func helloAuth(_ words: [String]) {
        guard let settings = agent.sasl else { return }
        let offered = words.joined(separator: " ")
        let list = settings.mechanismFilter.map { f in SASL.filterMechanisms(offered) { f.matches($0) } } ?? offered
        features.insert("AUTH")
        if let have = authMechanisms {
            if have.lowercased() != list.lowercased() && !list.isEmpty && have.utf8.count < agent.lineLimit {
                authMechanisms = have + " " + list
            }
            return
        }
        if list.isEmpty {
            Msg.warn(words.isEmpty ? "\(relay) offered null AUTH mechanism list"
                     : "\(relay) offered no supported AUTH mechanisms: '\(offered)'")
        } else {
            authMechanisms = list
        }
    }

    enum Credentials {
        case found(user: String, password: String)
        case none
        case lookupError
    }

    /// smtp_sasl_passwd_lookup: "username:password" for the sender (when asked), the
    /// server's host name, or the destination.
    func saslCredentials() -> Credentials {
        guard let settings = agent.sasl, let maps = settings.passwordMaps else { return .none }
        var value: String?
        if !agent.lmtp && settings.senderDependent && !job.request.sender.isEmpty {
            let sender = job.request.sender
            value = maps.find(sender)
            if value == nil && maps.error == nil, let at = sender.lastIndex(of: "@") {
                value = maps.find(String(sender[at...]))
            }
        }
        if value == nil && maps.error == nil { value = maps.find(host) }
        if value == nil && maps.error == nil { value = maps.find(dest) }
        if maps.error != nil {
            Msg.warn("\(job.queueID): \(settings.prefix)sasl_password_maps lookup error")
            return .lookupError
        }
        guard let v = value else {
            if Msg.verbose > 0 { Msg.info("smtp_sasl_passwd_lookup: no auth info found (sender=`\(job.request.sender)', host=`\(host)')") }
            return .none
        }
        if let colon = v.firstIndex(of: ":") {
            return .found(user: String(v[..<colon]), password: String(v[v.index(after: colon)...]))
        }
        return .found(user: v, password: "")
    }

    /// smtp_sasl_helo_login: authenticate when the table has credentials for this server;
    /// any failure fails the session (its recipients are deferred or left for the next
    /// server) and the session is not reused.
    func saslLogin() throws {
        guard let settings = agent.sasl else { return }
        let user: String, password: String
        switch saslCredentials() {
        case .found(let u, let p):
            user = u
            password = p
        case .none:
            // No credentials: talk to each other as strangers.
            features.remove("AUTH")
            return
        case .lookupError:
            return softFail("4.3.0", "\(settings.prefix)sasl_password_maps lookup error")
        }
        cacheStore = false
        guard let mechanisms = authMechanisms else {
            return softFail("4.7.0", "SASL authentication failed: server \(name) offered no compatible authentication mechanisms for this type of connection security")
        }
        let options = tls == nil ? settings.options : (tls!.verified ? settings.tlsVerifiedOptions : settings.tlsOptions)
        guard let client = CyrusClient(service: agent.lmtp ? "lmtp" : "smtp", serverName: host, securityOptions: options,
                                       parameter: "\(settings.prefix)sasl_security_options", configPath: settings.configPath) else {
            return softFail("4.7.0", "SASL authentication failed; cannot authenticate to server \(name): SASL per-connection initialization failed")
        }
        let start: (mechanism: String, response: String)
        switch client.first(mechanisms: mechanisms, username: user, password: password) {
        case .success(let s): start = s
        case .failure(let e):
            return softFail("4.7.0", "SASL authentication failed; cannot authenticate to server \(name): \(e.text)")
        }
        try send(start.response.isEmpty ? "AUTH \(start.mechanism)" : "AUTH \(start.mechanism) \(start.response)")
        try flush("sending AUTH command")
        var steps = 0
        var r = try reply("receiving the AUTH response", timeout: agent.heloTimeout)
        while r.code / 100 == 3 {
            steps += 1
            if steps > 100 {
                return softFail("4.3.0", "SASL authentication failed; authentication protocol loop with server \(name)")
            }
            let challenge = String((r.lines.last ?? "").dropFirst(4))
            switch client.next(challenge) {
            case .success(let answer):
                try send(answer)
                try flush("sending AUTH response")
            case .failure(let e):
                return softFail("4.7.0", "SASL authentication failed; cannot authenticate to server \(name): \(e.text)")
            }
            r = try reply("receiving the AUTH response", timeout: agent.heloTimeout)
        }
        if r.code / 100 != 2 {
            var dsn = r.dsn
            if settings.softBounce && dsn.hasPrefix("5") { dsn = "4" + dsn.dropFirst() }
            let why = "SASL authentication failed; server \(name) said: \(r.text)"
            if dsn.hasPrefix("5") && !keepsForNextServer(dsn) {
                for p in pending where !p.done {
                    p.done = true
                    result |= job.outcome(p.rcpt, relay: relay, dsn: status(r, reason: why), stats: stats)
                }
            } else {
                softFail(dsn, why)
            }
            try? quit()
            return
        }
    }
}
