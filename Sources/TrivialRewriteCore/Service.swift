// TrivialRewrite: the trivial-rewrite daemon: rewrite and resolve requests from many
// persistent clients.
// Mirrors Postfix trivial-rewrite/trivial-rewrite.c: a multi-server on the "rewrite"
// service; each request is "request" (rewrite, resolve or verify) and its attributes; a
// malformed request or an unknown rule drops the connection; the first attribute of every
// reply is the server's flags word (always 0). Every 10 seconds the process checks its
// table files and exits when one changed, so that its successor reads the new table.
import Glibc
import MailUtil
import MailDict
import MailGlobal
import MailServer

public enum TrivialRewrite {
    nonisolated(unsafe) static var settings: RewriteSettings!
    nonisolated(unsafe) static var resolver: Resolver!
    nonisolated(unsafe) static var regular: ResolveContext!
    nonisolated(unsafe) static var verify: ResolveContext!
    /// Non-zero asks clients to reconnect.
    nonisolated(unsafe) static var serverFlags = 0

    static func reply(_ pairs: [(String, String)]) -> AttrList {
        var l = AttrList()
        l.append("flags", int: serverFlags)
        for (n, v) in pairs { l.append(n, v) }
        return l
    }

    /// What the request's stream is called in warnings ("rewrite socket").
    nonisolated(unsafe) static var streamName = "rewrite socket"

    /// The values of `names`, in that order, as Postfix's strict attribute scan wants
    /// them; nil (after the warning) when one is missing or out of place. A surplus
    /// attribute after them is reported and ignored.
    static func scan(_ items: ArraySlice<AttrItem>, _ names: [String]) -> [String]? {
        var values: [String] = []
        var rest = items
        for name in names {
            guard let item = rest.first else {
                Msg.warn("missing attribute \(name) in input from \(streamName)")
                return nil
            }
            guard case .pair(let p) = item, p.name == name else {
                Msg.warn("unexpected attribute \(item.name ?? "") from \(streamName) (expecting: \(name))")
                return nil
            }
            values.append(String(decoding: p.value, as: UTF8.self))
            rest = rest.dropFirst()
        }
        if let extra = rest.first {
            Msg.warn("unexpected attribute \(extra.name ?? "") from \(streamName) (expecting: (list terminator))")
        }
        return values
    }

    /// One request; nil drops the connection.
    static func serve(_ request: AttrList) -> AttrList? {
        let items = request.items[...]
        guard let verbs = scan(items.prefix(1), ["request"]) else { return nil }
        let verb = verbs[0]
        let rest = items.dropFirst()
        switch verb {
        case RewriteProtocol.rewrite:
            guard let v = scan(rest, ["rule", "address"]) else { return nil }
            let (rule, address) = (v[0], v[1])
            guard let result = Rewriter.rewrite(address, rule: rule, settings) else {
                Msg.warn("unknown context: \(rule)")
                return nil
            }
            Msg.debug("`\(rule)' `\(address)' -> `\(result)'")
            return reply([("address", result)])
        case RewriteProtocol.resolve, RewriteProtocol.verify:
            guard let v = scan(rest, ["sender", "address"]) else { return nil }
            let (sender, address) = (v[0], v[1])
            let r = resolver.resolve(address, sender: sender, verb == RewriteProtocol.verify ? verify : regular)
            Msg.debug("`\(sender)' -> `\(address)' -> (`\(r.transport)' `\(r.nexthop)' `\(r.recipient)' `\(r.flags.rawValue)')")
            var l = reply([("transport", r.transport), ("nexthop", r.nexthop), ("recipient", r.recipient)])
            l.append("flags", int: r.flags.rawValue)
            return l
        default:
            Msg.warn("bad command \(String(verb.prefix(30)))")
            return nil
        }
    }

    /// Every 10 seconds: a table file that changed ends the process; master starts a
    /// successor that reads the new one. Clients reconnect.
    static func checkTables(_ ctx: ServerContext) {
        DictCache.exitIfChanged()
        _ = ctx.loop.after(10) { checkTables(ctx) }
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "trivial-rewrite"
        desc.postInit = { ctx in
            if !ctx.options.operands.isEmpty {
                Msg.fatal("unexpected command-line argument: \(ctx.options.operands.joined(separator: " "))")
            }
            settings = RewriteSettings(config: ctx.config)
            resolver = Resolver(config: ctx.config)
            regular = ResolveContext(config: ctx.config, verify: false)
            verify = ResolveContext(config: ctx.config, verify: true)
            streamName = "\(ctx.serviceName) socket"
            checkTables(ctx)
        }
        MultiServer.runAttr(arguments, desc, protocolName: MailProtocol.trivialRewrite, serve: serve)
    }
}
