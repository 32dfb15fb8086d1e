// Verify: the address verification server (verify(8)). smtpd asks it about an address
// (reject_unverified_recipient, reject_unverified_sender); it answers from its cache
// and, when it knows nothing or what it knows is getting old, sends a probe: a message
// without content from address_verify_sender, with the MTA_VRFY trace flag, that the
// queue manager routes with the address_verify_* transports and that the delivery agents
// take only as far as deciding deliverable or not. Their verdict comes back as an update.
// Cache entries are "status:probed:updated:text", as Postfix keeps them, in
// address_verify_map (in memory when that is empty).
// Mirrors Postfix verify/verify.c and util/dict_cache.c (the cleanup sweep).
import Glibc
import MailUtil
import MailDict
import MailGlobal
import MailServer

public enum VerifyRequestStatus {
    public static let ok = 0
    public static let fail = -1
    public static let bad = -2
}

/// One cache entry.
struct VerifyEntry: Equatable {
    var status: Int
    var probed: Int
    var updated: Int
    var text: String

    init(status: Int, probed: Int, updated: Int, text: String) {
        self.status = status
        self.probed = probed
        self.updated = updated
        self.text = text
    }

    /// verify_parse_entry: nil for a malformed entry.
    init?(_ raw: String) {
        let parts = raw.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, let s = Int(parts[0]), let p = Int(parts[1]), let u = Int(parts[2]),
              (0...3).contains(s), p >= 0, u >= 0 else { return nil }
        status = s
        probed = p
        updated = u
        text = String(parts[3])
    }

    var raw: String { "\(status):\(probed):\(updated):\(text)" }
}

/// The verification policy, apart from where entries are kept.
struct VerifyPolicy {
    var positiveExpire = 31 * 86400
    var positiveRefresh = 7 * 86400
    var negativeExpire = 3 * 86400
    var negativeRefresh = 3 * 3600
    var negativeCache = true
    /// A probe is not sent again for an address within this many seconds.
    static let probeTTL = 1000
    static let inProgress = "Address verification in progress"

    /// An entry that never had an answer (a probe is out) counts from its probe.
    func expired(_ e: VerifyEntry, now: Int) -> Bool {
        if e.updated == 0 { return e.probed + negativeExpire < now }
        return e.status == VerifyStatus.ok.rawValue ? e.updated + positiveExpire < now : e.updated + negativeExpire < now
    }

    func needsRefresh(_ e: VerifyEntry, now: Int) -> Bool {
        e.status == VerifyStatus.ok.rawValue ? e.updated + positiveRefresh < now : e.updated + negativeRefresh < now
    }
}

/// Where entries live: a table file, or memory.
final class VerifyCache {
    let dict: Dict?
    let label: String
    var memory: [String: String] = [:]
    static let cleanupKey = "_LAST_CACHE_CLEANUP_COMPLETED_"

    init(dict: Dict?, label: String = "internal:verify") {
        self.dict = dict
        self.label = label
    }

    /// data_redirect_map: a writable table file in a directory that mail_owner does not
    /// own is kept in data_directory instead.
    static func redirect(_ spec: String, config: MailConfig) -> String {
        let (type, name) = DictRegistry.split(spec)
        guard ["hash", "btree", "lmdb", "cdb", "dbm", "sdbm"].contains(type), let slash = name.lastIndex(of: "/") else {
            return spec
        }
        let dir = slash == name.startIndex ? "/" : String(name[..<slash])
        var st = stat()
        guard let pw = getpwnam(config.string("mail_owner")), stat(dir, &st) == 0, st.st_uid != pw.pointee.pw_uid else {
            return spec
        }
        let data = config.string("data_directory")
        Msg.warn("request to update table \(spec) in non-postfix directory \(dir)")
        Msg.warn("redirecting the request to postfix-owned data_directory \(data)")
        return "\(type):\(data)/\(name[name.index(after: slash)...])"
    }

    func lookup(_ key: String) -> String? {
        guard let dict else { return memory[key] }
        do {
            return try dict.lookup(key)
        } catch {
            Msg.warn("\(dict.label): lookup of \(key): \(error)")
            return nil
        }
    }

    func update(_ key: String, _ value: String) {
        guard let dict else { memory[key] = value; return }
        do {
            try dict.update(key, value)
        } catch {
            Msg.warn("\(dict.label): update of \(key): \(error)")
        }
    }

    func delete(_ key: String) {
        guard let dict else { memory.removeValue(forKey: key); return }
        _ = try? dict.delete(key)
    }

    /// Every entry but the cleanup time stamp.
    func all() -> [(String, String)] {
        guard let dict else { return memory.map { ($0.key, $0.value) } }
        var out: [(String, String)] = []
        var first = true
        while let kv = try? dict.sequence(first: first) {
            first = false
            if kv.key != Self.cleanupKey { out.append((kv.key, kv.value)) }
        }
        return out
    }
}

public final class Verify {
    let config: MailConfig
    let cache: VerifyCache
    var policy = VerifyPolicy()
    let sender: String
    /// Sends a probe; false when it could not be queued (replaced in tests).
    var post: (String) -> Bool = { _ in false }
    var now: () -> Int = { Int(time(nil)) }

    init(config: MailConfig, cache: VerifyCache) {
        self.config = config
        self.cache = cache
        let s = config.string("address_verify_sender")
        sender = s == "<>" ? "" : s
        policy.positiveExpire = config.time("address_verify_positive_expire_time")
        policy.positiveRefresh = config.time("address_verify_positive_refresh_time")
        policy.negativeExpire = config.time("address_verify_negative_expire_time")
        policy.negativeRefresh = config.time("address_verify_negative_refresh_time")
        policy.negativeCache = config.bool("address_verify_negative_cache")
        post = { [unowned self] address in self.postProbe(address) }
    }

    /// verify_query_service: what is known about `address`, and a probe when that
    /// needs refreshing.
    func query(_ address: String) -> VerifyEntry {
        let t = now()
        let raw = cache.lookup(address)
        var e: VerifyEntry
        if let raw, let parsed = VerifyEntry(raw), !policy.expired(parsed, now: t) {
            e = parsed
        } else {
            e = VerifyEntry(status: VerifyStatus.todo.rawValue, probed: 0, updated: 0, text: VerifyPolicy.inProgress)
            if raw != nil && !policy.negativeCache { cache.delete(address) }
        }
        let answer = e
        if t - e.probed > VerifyPolicy.probeTTL && policy.needsRefresh(e, now: t) {
            Msg.debug("PROBE \(address) status=\(e.status) probed=\(e.probed) updated=\(e.updated)")
            if post(address) && (e.updated != 0 || policy.negativeCache) {
                e.probed = t
                cache.update(address, e.raw)
            }
        } else {
            Msg.debug("CACHED \(address) status=\(e.status) probed=\(e.probed) updated=\(e.updated)")
        }
        return answer
    }

    /// verify_update_service: a delivery agent's verdict. A failure does not replace a
    /// known good address.
    func update(_ address: String, status: Int, text: String) {
        if status != VerifyStatus.ok.rawValue, let raw = cache.lookup(address), let old = VerifyEntry(raw),
           old.status == VerifyStatus.ok.rawValue {
            Msg.debug("IGNORE \(address) status=\(status) text=\(text)")
            return
        }
        cache.update(address, VerifyEntry(status: status, probed: 0, updated: now(), text: text).raw)
    }

    /// The cleanup sweep: expired and malformed entries go.
    @discardableResult
    func sweep() -> (retained: Int, dropped: Int) {
        let t = now()
        var kept = 0, dropped = 0
        for (k, v) in cache.all() {
            if let e = VerifyEntry(v), !policy.expired(e, now: t) {
                kept += 1
            } else {
                cache.delete(k)
                dropped += 1
            }
        }
        if cache.dict != nil { cache.update(VerifyCache.cleanupKey, String(t)) }
        return (kept, dropped)
    }

    /// verify_post_mail: a probe with no content, through cleanup.
    func postProbe(_ address: String) -> Bool {
        do {
            let pm = try PostMail(config: config, sender: sender, recipient: address, source: .verify,
                                  traceFlags: DeliverFlags.mtaVerify.rawValue)
            return try pm.close().status == 0
        } catch {
            Msg.warn("probe for \(address): \(error)")
            return false
        }
    }

    // MARK: The service

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "verify"
        desc.solitary = true
        var verify: Verify?
        desc.postInit = { ctx in
            // Opened as mail_owner, so that a new cache file belongs to it.
            var map = ctx.config.string("address_verify_map")
            var dict: Dict?
            if !map.isEmpty {
                map = VerifyCache.redirect(map, config: ctx.config)
                dict = DictRegistry.open(map, mode: .readWrite,
                                         flags: [.duplicateReplace, .syncUpdate, .openLock, .utf8Request])
            }
            verify = Verify(config: ctx.config, cache: dict.map { VerifyCache(dict: $0, label: map) } ?? VerifyCache(dict: nil))
            // With the cache in memory the process must stay (Postfix sets max_use and
            // max_idle to 0 then).
            if ctx.config.string("address_verify_map").isEmpty {
                ctx.maxUse = 0
                ctx.maxIdle = 0
            }
            guard let v = verify, v.cache.dict != nil else { return }
            let every = ctx.config.time("address_verify_cache_cleanup_interval")
            guard every > 0 else { return }
            func arm(_ delay: Int) {
                _ = ctx.loop.after(Double(delay)) {
                    let r = v.sweep()
                    Msg.info("cache \(v.cache.label) full cleanup: retained=\(r.retained) dropped=\(r.dropped) entries")
                    arm(every)
                }
            }
            // The first sweep comes when the last one is an interval old (at once when
            // there was none).
            let last = v.cache.lookup(VerifyCache.cleanupKey).flatMap { Int($0) } ?? 0
            arm(max(0, min(every, last + every - Int(time(nil)))))
        }
        MultiServer.run(arguments, desc,
                        onConnect: { stream, _ in
                            var hello = AttrList()
                            hello.append(MailAttr.proto, MailProtocol.verify)
                            try? stream.write(AttrCodec.encode(hello, .attr0))
                            try? stream.flush()
                        },
                        service: { stream, _ in
                            guard let verify else { return .close }
                            return verify.serve(stream)
                        })
    }

    func reply(_ stream: FDStream, _ l: AttrList) {
        try? stream.write(AttrCodec.encode(l, .attr0))
        try? stream.flush()
    }

    func status(_ stream: FDStream, _ s: Int) {
        var l = AttrList()
        l.append(MailAttr.status, int: s)
        reply(stream, l)
    }

    func serve(_ stream: FDStream) -> MultiServer.Disposition {
        let request: AttrList
        do {
            guard let r = try AttrReader(stream, encoding: .attr0).readList() else { return .close }
            request = r
        } catch {
            Msg.warn("\(error)")
            return .close
        }
        var sc = request.scanner()
        guard let verb = try? sc.string(MailAttr.request) else {
            Msg.warn("malformed request")
            status(stream, VerifyRequestStatus.bad)
            return .close
        }
        switch verb {
        case "query":
            guard let address = try? sc.string(MailAttr.address) else {
                status(stream, VerifyRequestStatus.bad)
                return .keep
            }
            let e = query(address)
            var l = AttrList()
            l.append(MailAttr.status, int: VerifyRequestStatus.ok)
            l.append(MailAttr.recipientStatus, int: e.status)
            l.append(MailAttr.reason, e.text)
            reply(stream, l)
        case "update":
            guard let address = try? sc.string(MailAttr.address), let st = try? sc.int(MailAttr.recipientStatus),
                  let text = try? sc.string(MailAttr.reason) else {
                status(stream, VerifyRequestStatus.bad)
                return .keep
            }
            if !(0...3).contains(st) {
                Msg.warn("bad recipient status \(st) for recipient \(address)")
                status(stream, VerifyRequestStatus.bad)
                return .keep
            }
            update(address, status: st, text: text)
            status(stream, VerifyRequestStatus.ok)
        default:
            Msg.warn("unrecognized request: \"\(verb)\", ignored")
            status(stream, VerifyRequestStatus.bad)
        }
        return .keep
    }
}
