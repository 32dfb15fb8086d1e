// RewriteClient and ResolveClient: the trivial-rewrite service from the callers' side
// (cleanup, smtpd, qmgr, local, ...).
// Mirrors Postfix global/rewrite_clnt.c and resolve_clnt.c: one persistent connection to
// $rewrite_service_name; the last answer is remembered for 30 seconds, so that the many
// identical queries of one message cost one round trip; a reply with non-zero server
// flags asks the client to reconnect (the service's tables changed).
import Glibc
import MailUtil

/// What trivial-rewrite's resolve says about a recipient.
public struct ResolveReply: Equatable, Sendable {
    public var transport: String
    public var nexthop: String
    public var recipient: String
    public var flags: ResolveFlags

    public init(transport: String, nexthop: String, recipient: String, flags: ResolveFlags) {
        self.transport = transport
        self.nexthop = nexthop
        self.recipient = recipient
        self.flags = flags
    }
}

/// RESOLVE_FLAG_* and RESOLVE_CLASS_* of resolve_clnt.h.
public struct ResolveFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let final = ResolveFlags(rawValue: 1 << 0)
    public static let routed = ResolveFlags(rawValue: 1 << 1)
    /// The address is malformed.
    public static let error = ResolveFlags(rawValue: 1 << 2)
    /// A table lookup failed: try again later.
    public static let fail = ResolveFlags(rawValue: 1 << 3)
    public static let local = ResolveFlags(rawValue: 1 << 8)
    public static let alias = ResolveFlags(rawValue: 1 << 9)
    public static let virtual = ResolveFlags(rawValue: 1 << 10)
    public static let relay = ResolveFlags(rawValue: 1 << 11)
    public static let `default` = ResolveFlags(rawValue: 1 << 12)
    public static let classMask: ResolveFlags = [.local, .alias, .virtual, .relay, .default]
}

/// Request and attribute names of the trivial-rewrite protocol.
public enum RewriteProtocol {
    public static let rewrite = "rewrite"
    public static let resolve = "resolve"
    public static let verify = "verify"
}

/// The shared connection to the rewrite service, with the 30-second answer caches.
public final class TrivialRewriteClient {
    let stream: ClientStream
    static let cacheSeconds: time_t = 30
    var lastRewrite: (rule: String, address: String, result: String, expires: time_t)?
    var lastResolve: (request: String, sender: String, address: String, reply: ResolveReply, expires: time_t)?

    public init(config: MailConfig) {
        stream = ClientStream(serviceClass: "private", service: config.string("rewrite_service_name"),
                              protocolName: MailProtocol.trivialRewrite, config: config)
    }

    /// Rewrites a quoted address with the "local" or "remote" rule set.
    public func rewrite(_ address: String, rule: String) -> String {
        let now = time(nil)
        if let c = lastRewrite, c.rule == rule, c.address == address, now < c.expires { return c.result }
        var req = AttrList()
        req.append("request", RewriteProtocol.rewrite)
        req.append("rule", rule)
        req.append("address", address)
        while true {
            let reply = stream.request(req)
            var sc = reply.scanner()
            guard let serverFlags = try? sc.int("flags"), let result = try? sc.string("address") else {
                Msg.warn("problem talking to service \(stream.service): malformed reply")
                stream.recover()
                sleep(1)
                continue
            }
            if serverFlags != 0 { stream.recover() }
            lastRewrite = (rule, address, result, now + TrivialRewriteClient.cacheSeconds)
            return result
        }
    }

    /// rewrite_clnt_internal: the same for an address in internal (unquoted) form.
    public func rewriteInternal(_ address: String, rule: String) -> String {
        Quote822.unquote822(rewrite(Quote822.quote822(address), rule: rule))
    }

    /// Resolves a recipient (internal form) for a sender; `verify` uses the
    /// address_verify_* transports.
    public func resolve(_ address: String, sender: String, verify: Bool = false) -> ResolveReply {
        let request = verify ? RewriteProtocol.verify : RewriteProtocol.resolve
        let now = time(nil)
        if let c = lastResolve, c.request == request, c.sender == sender, c.address == address, now < c.expires {
            return c.reply
        }
        var req = AttrList()
        req.append("request", request)
        req.append("sender", sender)
        req.append("address", address)
        while true {
            let reply = stream.request(req)
            var sc = reply.scanner()
            guard let serverFlags = try? sc.int("flags"), let transport = try? sc.string("transport"),
                  let nexthop = try? sc.string("nexthop"), let recipient = try? sc.string("recipient"),
                  let flags = try? sc.int("flags") else {
                Msg.warn("problem talking to service \(stream.service): malformed reply")
                stream.recover()
                sleep(1)
                continue
            }
            if serverFlags != 0 { stream.recover() }
            let r = ResolveReply(transport: transport, nexthop: nexthop, recipient: recipient,
                                 flags: ResolveFlags(rawValue: flags))
            // A failed lookup is not remembered: the next query asks again.
            if !r.flags.contains(.fail) {
                lastResolve = (request, sender, address, r, now + TrivialRewriteClient.cacheSeconds)
            }
            return r
        }
    }
}
