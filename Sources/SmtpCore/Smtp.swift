// Smtp: the smtp(8) and lmtp(8) delivery agents (one program; run as "lmtp" it speaks
// LMTP). A delivery request goes to the servers of its next hop in order until one takes
// it: greeting, EHLO (HELO when EHLO is refused; LHLO for LMTP), MAIL FROM with SIZE,
// BODY, SMTPUTF8, RET and ENVID as the server supports them, RCPT TO with NOTIFY and
// ORCPT, DATA with the content dot-stuffed, QUIT. Each recipient ends as the server
// answered it (LMTP: per recipient after the end of data), in Postfix's words.
// Mirrors Postfix smtp/smtp.c, smtp_connect.c, smtp_proto.c, smtp_chat.c, smtp_trouble.c.
// Not here yet: TLS, SASL, the connection cache, XFORWARD, 8BITMIME downgrading.
import Glibc
import MailUtil
import MailGlobal
import MailTLS
import MailServer
import DeliverCore

public final class Smtp {
    let config: MailConfig
    let lmtp: Bool
    let heloName: String
    let finder: AddressFinder
    let defaultPort: UInt16
    let connectTimeout: Int
    let heloTimeout: Int
    let mailTimeout: Int
    let rcptTimeout: Int
    let dataInitTimeout: Int
    let dataXferTimeout: Int
    let dataDoneTimeout: Int
    let quitTimeout: Int
    let sessionLimit: Int
    let skip5xxGreeting: Bool
    let neverSendEhlo: Bool
    let quoteEnvelope: Bool
    let lineLimit: Int
    let discardEHLO: Set<String>
    let bindAddress: String
    let deferIfNoMXAddress: Bool
    let softBounce: Bool
    let sendXforward: Bool
    let skipQuitResponse: Bool
    let content: ContentSettings
    /// The connection cache, when smtp_connection_cache_on_demand or
    /// smtp_connection_cache_destinations asks for one.
    let scache: ScacheClient?
    let cacheDestinations: MatchList?
    let cacheOnDemand: Bool
    let cacheTimeLimit: Int
    let reuseTimeLimit: Int
    let reuseCountLimit: Int
    /// The master.cf service name: part of every cache label.
    var service = ""
    let xforwardTimeout: Int
    let rsetTimeout: Int
    /// The longest server reply line read (line_length_limit, at least 512).
    let replyLineLimit: Int
    /// TLS: smtp_tls_security_level, smtp_tls_policy_maps, the *_cert_match names.
    let tlsLevel: ClientTLSLevel
    let tlsPolicy: Maps?
    let tlsVerifyMatch: [String]
    let tlsSecureMatch: [String]
    /// smtp_tls_fingerprint_cert_match and smtp_tls_fingerprint_digest (level fingerprint).
    let fingerprintMatch: [String]
    let fingerprintDigest: String
    /// smtp_tls_wrappermode: TLS from the first byte (SMTPS, port 465), at level encrypt
    /// or stronger.
    let tlsWrapper: Bool
    let starttlsTimeout: Int
    /// The contexts (opportunistic, mandatory), made before the privilege drop.
    var tlsContexts: [Bool: TLSClientContext] = [:]
    /// SASL: smtp_sasl_auth_enable, smtp_sasl_password_maps (opened as root) and friends.
    let sasl: ClientSASLSettings?

    /// `lmtp`: run under the name lmtp (argv[0]), as Postfix decides it.
    init(config: MailConfig, lmtp: Bool) {
        self.config = config
        self.lmtp = lmtp
        let prefix = lmtp ? "lmtp_" : "smtp_"
        let p = { (name: String) in prefix + name }
        let time = { (name: String) in config.time(prefix + name) }
        heloName = config.string(lmtp ? "lmtp_lhlo_name" : "smtp_helo_name")
        let families = (try? HostDefaults.families(inetProtocols: config.string("inet_protocols")).get()) ?? [AF_INET]
        let dnsLevel = config.string(p("dns_support_level"))
        let dns = !config.bool("disable_dns_lookups") && dnsLevel != "disabled"
        let preference = config.string(p("address_preference")).lowercased()
        finder = AddressFinder(families: families,
                               native: !config.list(p("host_lookup")).contains { $0.lowercased() == "dns" },
                               dns: dns, addressLimit: config.int(p("mx_address_limit")),
                               ownAddresses: HostDefaults.ownAddresses(config),
                               preferIPv6: preference == "ipv6" ? true : preference == "ipv4" ? false : nil)
        defaultPort = lmtp ? 24 : 25
        connectTimeout = time("connect_timeout")
        heloTimeout = time(lmtp ? "lhlo_timeout" : "helo_timeout")
        mailTimeout = time("mail_timeout")
        rcptTimeout = time("rcpt_timeout")
        dataInitTimeout = time("data_init_timeout")
        dataXferTimeout = time("data_xfer_timeout")
        dataDoneTimeout = time("data_done_timeout")
        quitTimeout = time("quit_timeout")
        sessionLimit = config.int(p("mx_session_limit"))
        skip5xxGreeting = config.bool(p("skip_5xx_greeting"))
        neverSendEhlo = !lmtp && config.bool("smtp_never_send_ehlo")
        quoteEnvelope = config.bool(p("quote_rfc821_envelope"))
        lineLimit = config.int(p("line_length_limit"))
        discardEHLO = Set(config.list(lmtp ? "lmtp_discard_lhlo_keywords" : "smtp_discard_ehlo_keywords").map { $0.lowercased() })
        bindAddress = config.string(p("bind_address"))
        deferIfNoMXAddress = config.bool(p("defer_if_no_mx_address_found"))
        softBounce = config.bool("soft_bounce")
        sendXforward = config.bool(p("send_xforward_command"))
        skipQuitResponse = config.bool(p("skip_quit_response"))
        content = ContentSettings(config: config, prefix: prefix)
        cacheOnDemand = config.bool(p("connection_cache_on_demand"))
        let dests = config.string(p("connection_cache_destinations"))
        cacheDestinations = dests.isEmpty ? nil : MatchList(name: p("connection_cache_destinations"), kind: .string,
                                                           options: [], text: dests)
        scache = cacheOnDemand || cacheDestinations != nil ? ScacheClient(config: config) : nil
        cacheTimeLimit = time("connection_cache_time_limit")
        reuseTimeLimit = time("connection_reuse_time_limit")
        reuseCountLimit = config.int(p("connection_reuse_count_limit"))
        xforwardTimeout = time("xforward_timeout")
        rsetTimeout = time("rset_timeout")
        replyLineLimit = max(config.int("line_length_limit"), 512)
        tlsLevel = ClientTLSLevel.parse(config, prefix: prefix)
        let policy = config.string(p("tls_policy_maps"))
        tlsPolicy = policy.isEmpty ? nil : Maps(title: p("tls_policy_maps"), mapNames: policy, flags: .lock)
        tlsVerifyMatch = Tokens.split(config.string(p("tls_verify_cert_match")), separators: Array(" \t\n\r,:".utf8))
        tlsSecureMatch = Tokens.split(config.string(p("tls_secure_cert_match")), separators: Array(" \t\n\r,:".utf8))
        starttlsTimeout = time("starttls_timeout")
        fingerprintMatch = Tokens.split(config.string(p("tls_fingerprint_cert_match")))
        fingerprintDigest = config.string(p("tls_fingerprint_digest"))
        tlsWrapper = config.bool(p("tls_wrappermode"))
        sasl = config.bool(p("sasl_auth_enable")) ? ClientSASLSettings(config: config, prefix: prefix) : nil
    }

    /// The TLS context for a level (made at start-up, when TLS is used at all).
    func tlsContext(mandatory: Bool) -> TLSClientContext? { tlsContexts[mandatory] }

    func makeTLSContexts() {
        guard tlsLevel != .none || tlsPolicy != nil else { return }
        let prefix = lmtp ? "lmtp" : "smtp"
        tlsContexts[false] = TLSClientContext(config: config, prefix: prefix, mandatory: false)
        tlsContexts[true] = TLSClientContext(config: config, prefix: prefix, mandatory: true)
    }

    /// The TLS policy for a next hop: smtp_tls_policy_maps (the next hop as written, then
    /// its domain and parent domains as ".domain"), else smtp_tls_security_level.
    func tlsPolicy(for nexthop: String) -> (level: ClientTLSLevel, match: [String]?) {
        guard let maps = tlsPolicy else {
            if tlsLevel == .fingerprint && fingerprintMatch.isEmpty {
                Msg.warn("nexthop domain \(nexthop): configured at fingerprint security level, but with no fingerprints to match.")
                return (.invalid, nil)
            }
            return (tlsLevel, nil)
        }
        var keys = [nexthop]
        var domain = nexthop
        if domain.hasPrefix("[") { domain = String(domain.dropFirst().prefix { $0 != "]" }) }
        else if let c = domain.lastIndex(of: ":") { domain = String(domain[..<c]) }
        if domain != nexthop { keys.append(domain) }
        var d = Substring(domain)
        while let dot = d.firstIndex(of: ".") {
            d = d[d.index(after: dot)...]
            keys.append("." + d)
        }
        for k in keys {
            guard let v = maps.find(k.lowercased()) else { continue }
            let words = v.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = words.first, let level = ClientTLSLevel(rawValue: first.lowercased()) else {
                Msg.warn("\(maps.title): unknown TLS security level \"\(v)\" for \(k): deferring")
                return (.invalid, nil)
            }
            var match: [String]?
            // Fingerprints contain ":", so they are separated by "|".
            let separator: Character = level == .fingerprint ? "|" : ":"
            for w in words.dropFirst() where w.lowercased().hasPrefix("match=") {
                match = (match ?? []) + w.dropFirst(6).split(separator: separator).map(String.init)
            }
            if level == .fingerprint && (match ?? fingerprintMatch).isEmpty {
                Msg.warn("nexthop domain \(domain): configured at fingerprint security level, but with no fingerprints to match.")
                return (.invalid, nil)
            }
            return (level, match)
        }
        return (tlsLevel, nil)
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        let lmtp = basename(of: arguments.first ?? "smtp") == "lmtp"
        desc.program = lmtp ? "lmtp" : "smtp"
        var agent: Smtp?
        desc.preInit = { ctx in
            agent = Smtp(config: ctx.config, lmtp: lmtp)
            agent?.service = ctx.serviceName
            agent?.makeTLSContexts()
        }
        SingleServer.run(arguments, desc) { client, ctx in
            guard let agent else { return }
            DeliveryAgent.serve(client, ctx) { job in agent.deliver(job) }
        }
    }

    // MARK: one delivery request

    /// What is left to do for each recipient.
    final class Pending {
        let rcpt: QueueRecipient
        var done = false
        init(_ r: QueueRecipient) { rcpt = r }
    }

    func deliver(_ job: DeliveryJob) -> Int {
        let r = job.request
        if r.nexthop.isEmpty { Msg.fatal("empty nexthop hostname") }
        if r.recipients.isEmpty { Msg.fatal("recipient count: 0") }
        let pending = r.recipients.map(Pending.init)
        var result = 0
        // Why the recipients still left are not delivered: the last failure seen.
        var why: LookupFailure?
        if lmtp && r.nexthop.hasPrefix("unix:") {
            let path = String(r.nexthop.dropFirst(5))
            do {
                let fd = try UnixSocket.connect(path, timeout: connectTimeout)
                // A UNIX-domain server is named after this host, as Postfix names it.
                let name = "\(config.string("myhostname"))[\(path)]"
                let s = Session(agent: self, job: job, pending: pending)
                s.dest = job.request.nexthop
                s.host = config.string("myhostname")
                s.run(fd: fd, name: name, relay: name, final: true)
                result |= s.result
            } catch {
                why = LookupFailure(status: "4.4.1", reason: "connect to \(path): \(errnoText((error as? SystemError)?.errno ?? ECONNREFUSED))")
            }
        } else {
            result |= deliverInet(job, pending, why: &why)
        }
        if pending.contains(where: { !$0.done }) {
            let w = why ?? LookupFailure(status: "4.3.0", reason: "server unavailable or unable to receive mail")
            let dsn = DeliveryStatus(status: w.status, reason: w.reason)
            for p in pending where !p.done {
                p.done = true
                result |= job.outcome(p.rcpt, relay: noRelayAgent, dsn: dsn)
            }
            if dsn.status.first == "4" { job.hop = dsn }
        }
        return result
    }

    /// smtp_connect_inet: the next hop (a list of destinations), then the fallback relays,
    /// until every recipient is done or a destination is final. A recipient that a server
    /// refuses for now stays for the next server; one refused for good is bounced.
    func deliverInet(_ job: DeliveryJob, _ pending: [Pending], why: inout LookupFailure?) -> Int {
        let primary = job.request.nexthop.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).map(String.init)
        if primary.isEmpty { Msg.panic("null destination: \"\(job.request.nexthop)\"") }
        let sites = primary + config.list(lmtp ? "lmtp_fallback_relay" : "smtp_fallback_relay")
        var result = 0
        var tried = 0
        var destSaved = false
        for (i, site) in sites.enumerated() where pending.contains(where: { !$0.done }) {
            tried = i
            var finalSite = i == sites.count - 1
            var servers: [ServerAddress] = []
            var domain = ""
            switch Destination.parse(site, lmtp: lmtp, defaultPort: defaultPort) {
            case .failure(let f):
                why = f
            case .success(.unix):
                why = LookupFailure(status: "5.4.4", reason: "bad destination syntax: \"\(site)\"")
            case .success(.inet(let host, let port, let mx)):
                domain = host
                var iAmMX = false
                switch mx ? finder.domainAddresses(host, port: port, iAmMX: &iAmMX) : finder.hostAddresses(host, port: port) {
                case .failure(var f):
                    if f.status == "5.4.4" && deferIfNoMXAddress && f.reason.hasPrefix("no MX host") { f.status = "4.4.4" }
                    why = f
                    // Mail that loops here would loop through a fallback relay too.
                    if f.status.hasSuffix(".4.6") { finalSite = true }
                case .success(let list):
                    servers = list
                }
                // As an MX host of the destination, only better MX hosts are tried.
                if iAmMX { finalSite = true }
            }
            // smtp_cache_policy: for the first next hop only.
            var load = false, store = false
            if i == 0, !servers.isEmpty, let scache, !scache.disabled {
                // The bare domain: without [], the port or "inet:".
                if let list = cacheDestinations, list.matches(domain) {
                    load = true
                    store = true
                } else if cacheOnDemand {
                    load = job.request.flags.contains(.connLoad)
                    store = job.request.flags.contains(.connStore)
                }
            }
            let destLabel = "\(service)\n\(site)"
            // The result of a session; the first one cached also serves the next hop.
            func account(_ s: Session) {
                result |= s.result
                if let f = s.tryNext { why = f }
                if let label = s.savedLabel, !destSaved {
                    scache?.saveDestination(ttl: cacheTimeLimit, label: destLabel, property: site, endpoint: label)
                    destSaved = true
                }
            }
            var sessions = 0
            // A session cached for this next hop goes first (it is already stored under it).
            if load, let (fd, prop) = scache?.findDestination(destLabel), let cached = CachedSession(property: prop) {
                let s = Session(agent: self, job: job, pending: pending)
                s.dest = site
                if s.probe(fd) {
                    s.cacheStore = store
                    s.run(cached: cached, fd: fd, final: finalSite && servers.count == 1)
                    if s.savedLabel != nil { destSaved = true }
                    account(s)
                    sessions += 1
                }
            }
            for (n, server) in servers.enumerated() where pending.contains(where: { !$0.done }) {
                let lastAddress = n == servers.count - 1
                let s = Session(agent: self, job: job, pending: pending)
                s.dest = site
                s.cacheStore = store
                s.endpointLabel = endpointLabel(server.address.host, server.address.port)
                // A failed handshake does not count towards the session limit; a session does.
                let limitReached = sessionLimit > 0 && sessions + 1 >= sessionLimit
                s.finalAfterHello = finalSite && limitReached
                if load, let (fd, prop) = scache?.findEndpoint(s.endpointLabel), let cached = CachedSession(property: prop),
                   s.probe(fd) {
                    s.run(cached: cached, fd: fd, final: finalSite && lastAddress)
                } else {
                    let fd: Int32
                    do {
                        fd = try connect(server)
                    } catch {
                        let e = (error as? SystemError)?.errno ?? ECONNREFUSED
                        why = LookupFailure(status: "4.4.1", reason: "connect to \(server.name):\(server.address.port): \(errnoText(e))")
                        Msg.info(why!.reason)
                        continue
                    }
                    s.host = server.host
                    s.port = server.address.port
                    s.address = server.address.host
                    s.run(fd: fd, name: server.name, relay: "\(server.name):\(server.address.port)", final: finalSite && lastAddress)
                }
                account(s)
                if s.greeted {
                    sessions += 1
                    if limitReached { break }
                }
            }
            if finalSite { break }
        }
        // A relay host or fallback relay that fails for good is the configuration's fault:
        // the mail waits for it to be fixed.
        if pending.contains(where: { !$0.done }), let w = why, w.permanent {
            if tried >= primary.count {
                Msg.warn("smtp_fallback_relay configuration problem")
                why!.status = "4.3.5"
            } else if !lmtp && sites[0] == config.string("relayhost") {
                Msg.warn("relayhost configuration problem")
                why!.status = "4.3.5"
            }
        }
        return result
    }

    /// A server's label in the connection cache: this service, its address and port.
    func endpointLabel(_ address: String, _ port: UInt16) -> String { "\(service)\n\(address)\n\(port)" }

    func connect(_ server: ServerAddress) throws -> Int32 {
        guard !bindAddress.isEmpty, let local = SocketAddress(numeric: bindAddress, port: 0),
              local.family == server.address.family else {
            return try InetSocket.connect(server.address, timeout: connectTimeout)
        }
        return try InetSocket.connect(server.address, from: local, timeout: connectTimeout)
    }
}

/// One SMTP or LMTP conversation with one server.
final class Session {
    let agent: Smtp
    let job: DeliveryJob
    let pending: [Smtp.Pending]
    var stream: FDStream!
    var name = ""
    /// The server's host name, for Remote-MTA.
    var host = ""
    var relay = ""
    var result = 0
    /// Set when the next server should be tried, with the reason for the log if none works.
    var tryNext: LookupFailure?
    var features: Set<String> = []
    /// The attributes the server takes with XFORWARD, when it announced the command.
    var xforwardNames: Set<String>?
    var quitSent = false
    /// Connection caching: store the session when it ends cleanly, under this label.
    var cacheStore = false
    var endpointLabel = ""
    /// Where the session went when it was cached.
    var savedLabel: String?
    var address = ""
    var port: UInt16 = 0
    /// Earlier deliveries over this connection, and when it may no longer be reused.
    var reuseCount = 0
    var expires: time_t = 0
    /// The last transaction ended with the server in a known state (after "." or RSET).
    var clean = false
    /// The TLS session after STARTTLS (such a session is not cached).
    var tls: TLSSession?
    /// The destination being tried (a member of the next-hop list or a fallback relay),
    /// for smtp_sasl_password_maps.
    var dest = ""
    /// The AUTH mechanisms the server offers, after smtp_sasl_mechanism_filter (nil: no
    /// AUTH keyword, or none that the filter keeps).
    var authMechanisms: String?

    var reusable: Bool {
        cacheStore && agent.scache?.disabled == false && expires >= time(nil)
            && (agent.reuseCountLimit <= 0 || reuseCount + 1 < agent.reuseCountLimit)
    }
    var sizeLimit = 0
    /// The last server to try: soft failures defer the recipients instead of keeping them
    /// for the next server.
    var final = true
    /// The session becomes final once the handshake is done (the session limit is reached).
    var finalAfterHello = false
    /// The handshake was completed.
    var greeted = false

    init(agent: Smtp, job: DeliveryJob, pending: [Smtp.Pending]) {
        self.agent = agent
        self.job = job
        self.pending = pending
    }

    struct Reply {
        var code: Int
        var lines: [String]
        /// The reply as it goes into reasons: the lines joined by spaces.
        var text: String { lines.joined(separator: " ") }
        /// The enhanced status code: the reply's, or X.0.0 from the reply code.
        var dsn: String {
            let first = Array((lines.first ?? "").utf8)
            if first.count > 4 {
                let word = first[4...].prefix(while: { $0 != 0x20 })
                let text = String(decoding: word, as: UTF8.self)
                if DSNCode.isValid(text), word.first == first.first { return text }
            }
            return "\(code / 100).0.0"
        }
    }

    struct ContentFailure: Error {
        let status: String
        let reason: String
    }

    enum Failure: Error {
        case lost(String)
        case timeout(String)
    }

    /// A session from the connection cache: is it still good? (An RSET probe.)
    func probe(_ fd: Int32) -> Bool {
        stream = FDStream(fd: fd, closeOnDeinit: true)
        do {
            try send("RSET")
            try flush("sending RSET probe")
            let r = try reply("sending RSET probe", timeout: agent.rsetTimeout)
            if r.code / 100 == 2 { return true }
        } catch {}
        stream = nil
        return false
    }

    /// A session from the connection cache (probed): no greeting, no EHLO.
    func run(cached c: CachedSession, fd: Int32, final: Bool) {
        host = c.host
        address = c.address
        port = c.port
        features = c.features
        sizeLimit = c.sizeLimit
        xforwardNames = c.xforwardNames
        reuseCount = c.reuseCount
        expires = c.expires
        endpointLabel = agent.endpointLabel(address, port)
        greeted = true
        let name = "\(host)[\(address)]"
        run(fd: fd, name: name, relay: "\(name):\(port)", final: final, fromCache: true)
    }

    func run(fd: Int32, name: String, relay: String, final: Bool, fromCache: Bool = false) {
        self.name = name
        self.relay = relay
        self.final = final
        if !fromCache {
            expires = time(nil) + time_t(agent.reuseTimeLimit)
            stream = FDStream(fd: fd, closeOnDeinit: true)
        }
        gettimeofday(&statsStamp, nil)
        do {
            try converse(fromCache: fromCache)
        } catch Failure.lost(let stage) {
            softFail("4.4.2", "lost connection with \(name) while \(stage)")
        } catch Failure.timeout(let stage) {
            softFail("4.4.2", "conversation with \(name) timed out while \(stage)")
        } catch is ContentFailure {
            // The recipients have their result; the connection is dropped.
        } catch {
            softFail("4.4.2", "lost connection with \(name) while \(error)")
        }
        // A TLS session ends with a close_notify, and is never cached: hang up now.
        if let t = tls {
            t.shutdown()
            stream = nil
        }
    }

    var statsStamp = timeval()

    var stats: MsgStats {
        var s = job.request.stats
        s.connSetupDone = statsStamp
        s.reuseCount = reuseCount
        return s
    }

    /// A failure of the whole session: the next server may do better; the last one's
    /// failure is every remaining recipient's.
    func softFail(_ status: String, _ reason: String) {
        if final {
            for p in pending where !p.done {
                p.done = true
                result |= job.defer(p.rcpt, relay: relay, dsn: DeliveryStatus(status: status, reason: reason), stats: stats)
            }
            tryNext = LookupFailure(status: status, reason: reason)
        } else {
            keepForNextServer(status, reason)
        }
    }

    /// smtp_bulk_fail/smtp_rcpt_fail before the last server: say why this server is
    /// skipped, and leave the recipients for the next one.
    func keepForNextServer(_ status: String, _ reason: String) {
        Msg.info("\(job.queueID): \(reason)")
        tryNext = LookupFailure(status: status, reason: reason)
    }

    /// A 4xx (or a 5xx under soft_bounce) before the last server: try the next one.
    func keepsForNextServer(_ status: String) -> Bool {
        !final && (status.first == "4" || (status.first == "5" && agent.softBounce))
    }

    func send(_ line: String) throws {
        do {
            try stream.write(Array((line + "\r\n").utf8))
        } catch StreamError.timeout {
            throw Failure.timeout("sending \(line.split(separator: " ").first ?? "")")
        } catch {
            throw Failure.lost("sending \(line.split(separator: " ").first ?? "")")
        }
    }

    func flush(_ stage: String) throws {
        do { try stream.flush() } catch StreamError.timeout { throw Failure.timeout(stage) } catch { throw Failure.lost(stage) }
    }

    /// One reply, multi-line replies joined; `stage` names what was waited for.
    func reply(_ stage: String, timeout: Int) throws -> Reply {
        stream.timeout = timeout > 0 ? timeout : nil
        var lines: [String] = []
        var code = 0
        while true {
            let line: Line?
            do {
                line = try stream.readLine(limit: agent.replyLineLimit)
            } catch StreamError.timeout {
                throw Failure.timeout(stage)
            } catch {
                throw Failure.lost(stage)
            }
            guard let l = line else { throw Failure.lost(stage) }
            let text = String(decoding: l.bytes, as: UTF8.self)
            let b = Array(l.bytes)
            let digits = b.count >= 3 && b[0...2].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
            if digits { code = Int(String(decoding: b[0...2], as: UTF8.self)) ?? 0 }
            lines.append(text)
            if !digits || b.count == 3 || b[3] != UInt8(ascii: "-") { break }
        }
        return Reply(code: code, lines: lines)
    }

    func said(_ r: Reply, _ command: String) -> String {
        "host \(name) said: \(r.text) (in reply to \(command))"
    }

    /// The status of a server's reply, with the reply and the server for the DSN
    /// (Diagnostic-Code: smtp; ..., Remote-MTA: dns; host).
    func status(_ r: Reply, reason: String, action: String = "") -> DeliveryStatus {
        DeliveryStatus(status: r.dsn, action: action, reason: reason, diagnosticType: "smtp", diagnosticText: r.text,
                       mtaType: "dns", mtaName: host)
    }

    func converse(fromCache: Bool) throws {
        if !fromCache {
            if !wrapperTLS() { return }
            try greetAndHello()
        }
        if tryNext != nil || !pending.contains(where: { !$0.done }) { return }
        if !fromCache {
            try startTLS()
            if tryNext != nil || !pending.contains(where: { !$0.done }) { return }
            if agent.sasl != nil && features.contains("AUTH") {
                try saslLogin()
                if tryNext != nil || !pending.contains(where: { !$0.done }) { return }
            }
        }
        if finalAfterHello { final = true }
        // Mail that asked for SMTPUTF8 and has UTF-8 in its envelope or headers goes only
        // to a server that offers it (all-ASCII mail goes anyway).
        var opts = job.request.sendopts
        if opts & 1 != 0 {
            if job.request.sender.utf8.contains(where: { $0 >= 0x80 }) { opts |= 4 }
            if job.request.recipients.contains(where: { $0.address.utf8.contains(where: { $0 >= 0x80 }) }) { opts |= 8 }
        }
        if opts & 1 != 0 && opts & ~1 != 0 && !features.contains("SMTPUTF8") {
            let why = "SMTPUTF8 is required, but was not offered by host \(name)"
            for p in pending where !p.done {
                p.done = true
                result |= job.outcome(p.rcpt, relay: relay, dsn: DeliveryStatus(status: "5.6.7", reason: why), stats: stats)
            }
            try? quit()
            return
        }
        // The server's SIZE limit.
        if sizeLimit > 0 && job.request.dataSize > sizeLimit {
            // Postfix hangs up here, without QUIT.
            let why = "message size \(job.request.dataSize) exceeds size limit \(sizeLimit) of server \(name)"
            for p in pending where !p.done {
                p.done = true
                result |= job.bounce(p.rcpt, relay: relay, dsn: DeliveryStatus(status: "5.3.4", reason: why), stats: stats)
            }
            return
        }
        try transaction()
        finish()
    }

    /// The end of a session: into the connection cache when it may be reused, else QUIT.
    func finish() {
        guard clean, !quitSent, reusable, let scache = agent.scache else {
            try? quit()
            return
        }
        do { try stream.flush() } catch { return }
        let c = CachedSession(host: host, address: address, port: port, features: features, sizeLimit: sizeLimit,
                              xforwardNames: xforwardNames, reuseCount: reuseCount + 1, expires: expires)
        stream.closeOnDeinit = false
        scache.saveEndpoint(ttl: agent.cacheTimeLimit, label: endpointLabel, property: c.property, fd: stream.fd)
        savedLabel = endpointLabel
    }

    func greetAndHello() throws {
        let greeting = try reply("receiving the initial server greeting", timeout: agent.heloTimeout)
        if greeting.code / 100 != 2 {
            let why = "host \(name) refused to talk to me: \(greeting.text)"
            if greeting.code / 100 == 5 && !agent.skip5xxGreeting {
                failAll(greeting, why)
                try? quit()
                return
            }
            try? quit()
            return softFail(greeting.dsn.first == "5" ? "4" + greeting.dsn.dropFirst() : greeting.dsn, why)
        }
        try hello()
        if tryNext == nil && pending.contains(where: { !$0.done }) { greeted = true }
    }

    /// SMTPS (smtp_tls_wrappermode): the handshake before the greeting, when the next
    /// hop's level is encrypt or stronger. False when the session cannot go on.
    func wrapperTLS() -> Bool {
        let policy = agent.tlsPolicy(for: job.request.nexthop)
        guard agent.tlsWrapper, policy.level >= .encrypt else { return true }
        guard let ctx = agent.tlsContext(mandatory: true) else {
            softFail("4.7.5", "TLS is required, but our TLS engine is unavailable")
            return false
        }
        return handshakeTLS(policy, ctx)
    }

    /// STARTTLS as the TLS policy of the next hop asks: opportunistic (may), mandatory
    /// (encrypt), with a certificate of a known fingerprint (fingerprint), or a trusted
    /// one whose names match (verify, secure).
    func startTLS() throws {
        if tls != nil { return }
        let policy = agent.tlsPolicy(for: job.request.nexthop)
        let level = policy.level
        if level == .invalid { return softFail("4.7.5", "TLS policy lookup for \(job.request.nexthop): configuration problem") }
        if level == .none { return }
        let mandatory = level >= .encrypt
        guard features.contains("STARTTLS") else {
            if mandatory {
                try? quit()
                return softFail("4.7.4", "TLS is required, but was not offered by host \(name)")
            }
            return
        }
        guard let ctx = agent.tlsContext(mandatory: mandatory) else {
            if mandatory {
                try? quit()
                return softFail("4.7.5", "TLS is required, but our TLS engine is unavailable")
            }
            return
        }
        try send("STARTTLS")
        try flush("sending STARTTLS")
        let r = try reply("receiving the STARTTLS response", timeout: agent.heloTimeout)
        if r.code != 220 {
            if mandatory {
                try? quit()
                return softFail("4.7.5", "TLS is required, but host \(name) refused to start TLS: \(r.text)")
            }
            return
        }
        guard handshakeTLS(policy, ctx) else { return }
        features = []
        authMechanisms = nil
        sizeLimit = 0
        xforwardNames = nil
        try hello()
    }

    /// The handshake and the checks of the server certificate the level asks for.
    func handshakeTLS(_ policy: (level: ClientTLSLevel, match: [String]?), _ ctx: TLSClientContext) -> Bool {
        let level = policy.level
        var names: [String] = []
        if level >= .verify {
            let nexthop = job.request.nexthop
            var domain = nexthop.hasPrefix("[") ? String(nexthop.dropFirst().prefix { $0 != "]" }) : nexthop
            if !nexthop.hasPrefix("["), let c = domain.lastIndex(of: ":") { domain = String(domain[..<c]) }
            for m in policy.match ?? (level == .verify ? agent.tlsVerifyMatch : agent.tlsSecureMatch) {
                switch m.lowercased() {
                case "hostname": names.append(host)
                case "nexthop": names.append(domain)
                case "dot-nexthop": names.append("." + domain)
                default: names.append(m)
                }
            }
        }
        let fingerprints = level == .fingerprint ? policy.match ?? agent.fingerprintMatch : []
        guard let t = ctx.connect(fd: stream.fd, timeout: agent.starttlsTimeout, peer: relay, names: names,
                                  fingerprints: fingerprints, digest: agent.fingerprintDigest,
                                  cacheID: "\(agent.service):\(address):\(port):\(job.request.nexthop)") else {
            quitSent = true
            softFail("4.7.5", "Cannot start TLS: handshake failure")
            return false
        }
        tls = t
        stream.transport = t
        cacheStore = false
        if level >= .verify && (!t.trusted || !t.verified) {
            try? quit()
            softFail("4.7.5", t.trusted ? "Server certificate not verified" : "Server certificate not trusted")
            return false
        }
        if level == .fingerprint && !t.verified {
            try? quit()
            softFail("4.7.5", "Server certificate not verified")
            return false
        }
        return true
    }

    func failAll(_ r: Reply, _ why: String) {
        for p in pending where !p.done {
            p.done = true
            result |= job.outcome(p.rcpt, relay: relay, dsn: status(r, reason: why), stats: stats)
        }
    }

    func hello() throws {
        let helo = agent.heloName
        if agent.lmtp || !agent.neverSendEhlo {
            try send("\(agent.lmtp ? "LHLO" : "EHLO") \(helo)")
            try flush("performing the \(agent.lmtp ? "LHLO" : "EHLO") handshake")
            let r = try reply("performing the \(agent.lmtp ? "LHLO" : "EHLO") handshake", timeout: agent.heloTimeout)
            if r.code / 100 == 2 {
                for line in r.lines.dropFirst() {
                    let words = line.dropFirst(4).split(separator: " ")
                    guard let kw = words.first?.uppercased(), !agent.discardEHLO.contains(kw.lowercased()) else { continue }
                    if kw == "AUTH" || kw.hasPrefix("AUTH=") {
                        var list = words.dropFirst().map(String.init)
                        if kw != "AUTH" { list.insert(String(words[0].dropFirst(5)), at: 0) }
                        if agent.sasl != nil { helloAuth(list) }
                        continue
                    }
                    features.insert(kw)
                    if kw == "SIZE", words.count > 1, let n = Int(words[1]) { sizeLimit = n }
                    if kw == "XFORWARD" { xforwardNames = Set(words.dropFirst().map { $0.uppercased() }) }
                }
                return
            }
            if agent.lmtp {
                failSession(r, "LHLO")
                return
            }
        }
        try send("HELO \(helo)")
        try flush("performing the HELO handshake")
        let r = try reply("performing the HELO handshake", timeout: agent.heloTimeout)
        if r.code / 100 != 2 { failSession(r, "HELO") }
    }

    /// A 4xx/5xx at the session level: every recipient left gets it (5xx), or the next
    /// server is tried (4xx, unless this is the last one).
    func failSession(_ r: Reply, _ command: String) {
        let why = said(r, "\(command) command")
        if r.code / 100 == 5 && !keepsForNextServer(r.dsn) {
            failAll(r, why)
        } else {
            softFail(r.dsn, why)
        }
    }

    /// An envelope address through smtp_generic_maps.
    func generic(_ a: String) -> String { agent.content.mapGeneric(a) ?? a }

    /// SMTP_MIME_DOWNGRADE: 8-bit mail to a server without 8BITMIME is converted.
    var downgrading: Bool {
        !agent.content.disableConversion && !features.contains("8BITMIME") && job.request.encoding != "7bit"
    }

    func address(_ a: String) -> String {
        if a.isEmpty { return "" }
        return agent.quoteEnvelope ? Quote822.quote821(a) : a
    }

    /// xtext (RFC 3461): "+" and the bytes outside 0x21-0x7E as "+XX"; "=" too unless
    /// `equals` is false (XFORWARD values).
    static func xtext(_ s: String, equals: Bool = true) -> String {
        var out = ""
        for b in s.utf8 {
            if b < 0x21 || b > 0x7E || b == UInt8(ascii: "+") || (equals && b == UInt8(ascii: "=")) {
                out += (b < 0x10 ? "+0" : "+") + String(b, radix: 16, uppercase: true)
            } else {
                out.unicodeScalars.append(UnicodeScalar(b))
            }
        }
        return out
    }

    /// The XFORWARD commands for this request (smtp_send_xforward_command): the
    /// client's name, address and port, then its protocol, HELO name, the original
    /// queue ID and the origin, each attribute only when the server takes it and the
    /// request knows it.
    func xforwardCommands() -> [(String, String)] {
        guard agent.sendXforward, let announced = xforwardNames else { return [] }
        let r = job.request
        func known(_ v: String) -> Bool { !v.isEmpty && v.lowercased() != "unknown" }
        var out: [(String, String)] = []
        var first = ""
        for (name, value, ok) in [("NAME", r.clientName, known(r.clientName)), ("ADDR", r.clientAddress, known(r.clientAddress)),
                                  ("PORT", r.clientPort, known(r.clientPort))] where ok && announced.contains(name) {
            first += " \(name)=\(Session.xtext(value, equals: false))"
        }
        if !first.isEmpty { out.append(("XFORWARD" + first, "XFORWARD name/address command")) }
        var second = ""
        let source = r.rewriteContext.isEmpty ? "" : (r.rewriteContext == "local" ? "LOCAL" : "REMOTE")
        for (name, value, ok) in [("PROTO", r.clientProtocol, known(r.clientProtocol)), ("HELO", r.clientHelo, !r.clientHelo.isEmpty),
                                  ("IDENT", r.logIdent, !r.logIdent.isEmpty), ("SOURCE", source, !source.isEmpty)]
            where ok && announced.contains(name) {
            second += " \(name)=\(Session.xtext(value, equals: false))"
        }
        if !second.isEmpty { out.append(("XFORWARD" + second, "XFORWARD protocol/helo_name command")) }
        return out
    }

    /// A refused XFORWARD is only worth a warning.
    func xforwardReply(_ command: String) throws {
        let r = try reply("sending \(command.dropLast(8))", timeout: agent.xforwardTimeout)
        if r.code / 100 != 2 { Msg.warn("host \(relay) said: \(r.text) (in reply to \(command))") }
    }

    func mailCommand() -> String {
        let r = job.request
        var cmd = "MAIL FROM:<\(address(generic(r.sender)))>"
        // No SIZE when the size changes on the way.
        if features.contains("SIZE") && r.dataSize > 0 && !downgrading { cmd += " SIZE=\(r.dataSize)" }
        if features.contains("8BITMIME") {
            if r.encoding == "8bit" { cmd += " BODY=8BITMIME" } else if r.encoding == "7bit" { cmd += " BODY=7BIT" }
        }
        if features.contains("SMTPUTF8") && r.sendopts & 1 != 0 { cmd += " SMTPUTF8" }
        if agent.sasl?.dummyMailAuth == true && features.contains("AUTH") { cmd += " AUTH=<>" }
        if features.contains("DSN") {
            if !r.envelopeID.isEmpty { cmd += " ENVID=\(Session.xtext(r.envelopeID))" }
            if r.retFlags == DSNRet.full { cmd += " RET=FULL" } else if r.retFlags == DSNRet.headers { cmd += " RET=HDRS" }
        }
        return cmd
    }

    func rcptCommand(_ q: QueueRecipient) -> String {
        var cmd = "RCPT TO:<\(address(generic(q.address)))>"
        if features.contains("DSN") {
            if !q.dsnOriginalRecipient.isEmpty {
                cmd += " ORCPT=\(Session.xtext(q.dsnOriginalRecipient))"
            } else if !q.originalRecipient.isEmpty {
                cmd += " ORCPT=\(Session.xtext("rfc822;" + Quote822.quote822(q.originalRecipient)))"
            }
            if q.notify != 0 { cmd += " NOTIFY=\(DSNNotify.text(q.notify))" }
        }
        return cmd
    }

    func transaction() throws {
        if tryNext != nil || !pending.contains(where: { !$0.done }) { return }
        let todo = pending.filter { !$0.done }
        let pipelining = features.contains("PIPELINING") || agent.lmtp
        let xforward = xforwardCommands()
        for (line, what) in xforward {
            try send(line)
            if !pipelining {
                try flush("sending \(what.dropLast(8))")
                try xforwardReply(what)
            }
        }
        // MAIL, the RCPTs and (with PIPELINING) DATA go out together.
        try send(mailCommand())
        if !pipelining { try flush("sending MAIL FROM") }
        var mailReply: Reply?
        if !pipelining {
            mailReply = try reply("sending MAIL FROM", timeout: agent.mailTimeout)
            if mailReply!.code / 100 != 2 {
                failSession(mailReply!, "MAIL FROM")
                return try reset()
            }
        }
        var accepted: [Smtp.Pending] = []
        var rcptReplies: [(Smtp.Pending, Reply)] = []
        for p in todo {
            try send(rcptCommand(p.rcpt))
            if !pipelining {
                try flush("sending RCPT TO")
                rcptReplies.append((p, try reply("sending RCPT TO", timeout: agent.rcptTimeout)))
            }
        }
        // A probe (sendmail -bv, address verification) ends after the RCPTs
        // (smtp_address_verify_target = rcpt).
        let probe = job.request.flags.traceOnly
        if pipelining {
            if !probe { try send("DATA") }
            try flush("sending MAIL FROM")
            for (_, what) in xforward { try xforwardReply(what) }
            mailReply = try reply("sending MAIL FROM", timeout: agent.mailTimeout)
            for p in todo { rcptReplies.append((p, try reply("sending RCPT TO", timeout: agent.rcptTimeout))) }
        }
        for (p, r) in rcptReplies {
            if mailReply!.code / 100 != 2 { break }
            if r.code / 100 == 2 && probe {
                p.done = true
                result |= job.sent(p.rcpt, relay: relay, dsn: status(r, reason: r.text), stats: stats)
            } else if r.code / 100 == 2 {
                accepted.append(p)
            } else if keepsForNextServer(r.dsn) {
                keepForNextServer(r.dsn, said(r, "RCPT TO command"))
            } else {
                p.done = true
                result |= job.outcome(p.rcpt, relay: relay, dsn: status(r, reason: said(r, "RCPT TO command")), stats: stats)
            }
        }
        if mailReply!.code / 100 != 2 {
            if pipelining && !probe { _ = try? reply("sending DATA", timeout: agent.dataInitTimeout) }
            failSession(mailReply!, "MAIL FROM")
            return try reset()
        }
        if probe { return try reset() }
        if !pipelining {
            if accepted.isEmpty { return try reset() }
            try send("DATA")
            try flush("sending DATA")
        }
        let dataReply = try reply("sending DATA", timeout: agent.dataInitTimeout)
        if accepted.isEmpty {
            if dataReply.code == 354 {
                // Nothing to send after all: an empty message is better than a hung session.
                try send(".")
                try flush("sending end of data")
                _ = try? reply("sending end of data", timeout: agent.dataDoneTimeout)
            }
            return try reset()
        }
        if dataReply.code != 354 {
            let dsn = status(dataReply, reason: said(dataReply, "DATA command"))
            if keepsForNextServer(dsn.status) { return keepForNextServer(dsn.status, dsn.reason) }
            for p in accepted {
                p.done = true
                result |= job.outcome(p.rcpt, relay: relay, dsn: dsn, stats: stats)
            }
            return
        }
        do {
            try sendContent()
        } catch let f as ContentFailure {
            // Every recipient still open fails as a whole (smtp_mime_fail); the session
            // is abandoned without the final dot.
            let dsn = DeliveryStatus(status: f.status, reason: f.reason)
            for p in accepted {
                p.done = true
                result |= job.outcome(p.rcpt, relay: relay, dsn: dsn, stats: stats)
            }
            throw f
        }
        try send(".")
        // With PIPELINING, QUIT goes with the end of the message (unless the session
        // is to be cached).
        if pipelining && !reusable {
            try send("QUIT")
            quitSent = true
        }
        try flush("sending end of data -- message may be sent more than once")
        let stage = "sending end of data -- message may be sent more than once"
        let replies: [Reply]
        if agent.lmtp {
            replies = try accepted.map { _ in try reply(stage, timeout: agent.dataDoneTimeout) }
        } else {
            let r = try reply(stage, timeout: agent.dataDoneTimeout)
            replies = Array(repeating: r, count: accepted.count)
        }
        clean = true
        // SMTP has one reply for all: a refusal for now is logged once.
        if !agent.lmtp, let r = replies.first, r.code / 100 != 2, keepsForNextServer(r.dsn) {
            return keepForNextServer(r.dsn, said(r, "end of DATA command"))
        }
        for (p, r) in zip(accepted, replies) {
            if r.code / 100 != 2 && keepsForNextServer(r.dsn) {
                keepForNextServer(r.dsn, said(r, "end of DATA command"))
                continue
            }
            p.done = true
            if r.code / 100 == 2 {
                // A server that does DSN itself sends the success notice (SMTP only).
                var rcpt = p.rcpt
                if !agent.lmtp && features.contains("DSN") { rcpt.notify &= ~DSNNotify.success }
                result |= job.sent(rcpt, relay: relay, dsn: status(r, reason: r.text, action: agent.lmtp ? "delivered" : "relayed"),
                                   stats: stats)
            } else {
                let dsn = status(r, reason: said(r, "end of DATA command"))
                result |= job.outcome(p.rcpt, relay: relay, dsn: dsn, stats: stats)
            }
        }
    }

    /// The content, record by record, through smtp_text_out (CRLF line ends, leading
    /// dots doubled, lines longer than smtp_line_length_limit broken with CRLF SPACE), or
    /// first through the MIME parser when checks, generic maps or 8-bit conversion apply.
    func sendContent() throws {
        let writer = ContentWriter(settings: agent.content, queueID: job.queueID, lineLimit: agent.lineLimit)
        let mime = writer.parser(downgrading: downgrading)
        stream.timeout = agent.dataXferTimeout > 0 ? agent.dataXferTimeout : nil
        do {
            let reader = QueueFileReader(fd: job.fd)
            reader.seek(job.request.dataOffset)
            var sawEnd = false
            var prev = RecordType.normalText
            while let (_, r) = try reader.next(maxLength: 0) {
                guard r.type == .normalText || r.type == .continuedText else {
                    sawEnd = r.type == .extractedStart
                    break
                }
                if let mime { mime.update(r.type, r.data) } else { writer.text(r.type, r.data[...]) }
                prev = r.type
                if writer.out.count >= 65536 {
                    try stream.write(writer.out)
                    writer.out.removeAll(keepingCapacity: true)
                }
                if writer.mimeFailure != nil { break }
            }
            if let mime {
                mime.update(nil, [])
            } else if prev == .continuedText {
                // The last line lacked its newline.
                writer.text(.normalText, [][...])
            }
            if let e = writer.mimeFailure {
                // There is no way to take back a message half sent: hang up.
                throw ContentFailure(status: "5.6.0", reason: e.text)
            }
            if !sawEnd { Msg.warn("bad record type in message content") }
            try stream.write(writer.out)
        } catch StreamError.timeout {
            throw Failure.timeout("sending message body")
        } catch is StreamError {
            throw Failure.lost("sending message body")
        } catch let f as ContentFailure {
            throw f
        } catch {
            // A queue file that cannot be read: not the server's fault.
            Msg.warn("\(job.queueID): read queue file: \(error)")
            throw Failure.lost("sending message body")
        }
    }

    /// RSET after a transaction that went nowhere, before QUIT.
    func reset() throws {
        try send("RSET")
        try flush("sending RSET")
        let r = try? reply("sending RSET", timeout: agent.rsetTimeout)
        clean = r.map { $0.code / 100 == 2 } ?? false
    }

    func quit() throws {
        if !quitSent {
            try send("QUIT")
            try flush("sending QUIT")
        }
        if !agent.skipQuitResponse { _ = try? reply("sending QUIT", timeout: agent.quitTimeout) }
    }
}

/// smtp_tls_security_level (and the level of a policy table entry).
enum ClientTLSLevel: String, Comparable {
    case invalid, none, may, encrypt, fingerprint, verify, secure
    static let order: [ClientTLSLevel] = [.invalid, .none, .may, .encrypt, .fingerprint, .verify, .secure]
    static func < (a: ClientTLSLevel, b: ClientTLSLevel) -> Bool { order.firstIndex(of: a)! < order.firstIndex(of: b)! }

    init?(rawValue: String) {
        switch rawValue {
        case "none": self = .none
        case "may", "dane": self = .may
        case "encrypt": self = .encrypt
        case "fingerprint": self = .fingerprint
        case "verify": self = .verify
        case "secure": self = .secure
        case "invalid": self = .invalid
        default: return nil
        }
    }

    /// The parameter, or the old smtp_use_tls / smtp_enforce_tls when it is empty.
    static func parse(_ config: MailConfig, prefix: String) -> ClientTLSLevel {
        let v = config.string(prefix + "tls_security_level").lowercased()
        if v.isEmpty {
            if config.bool(prefix + "enforce_tls") {
                return config.bool(prefix + "tls_enforce_peername") ? .verify : .encrypt
            }
            return config.bool(prefix + "use_tls") ? .may : .none
        }
        if let l = ClientTLSLevel(rawValue: v), l != .invalid { return l }
        Msg.warn("\(prefix)tls_security_level: unsupported TLS security level \"\(v)\": mail will be deferred")
        return .invalid
    }
}
