// proxymap(8): looks up (and, as proxywrite, updates) tables on behalf of other
// programs, so that chrooted or unprivileged clients can use tables they cannot open and
// many processes share one open table.
// Mirrors Postfix proxymap/proxymap.c: a multi-server speaking the proxymap protocol;
// only tables listed as proxy:TYPE:NAME in proxy_read_maps (proxymap) or proxy_write_maps
// (proxywrite) are served, including proxied members of unionmap:{...} and pipemap:{...}
// entries. Updates are refused on the read-only service. The read-only service exits
// before accepting a new client when a table file changed, so its successor reads the new
// table; the writer owns its tables and keeps them.
import Glibc
import MailUtil
import MailDict
import MailGlobal
import MailServer

nonisolated(unsafe) var writer = false
nonisolated(unsafe) var approved: Set<String> = []
let proxyPrefix = "proxy:"

nonisolated(unsafe) var parameterName = "proxy_read_maps"

/// Strips every leading "proxy:" (proxy:proxy:hash:x is hash:x).
func stripProxy(_ name: String) -> Substring {
    var rest = Substring(name)
    while rest.hasPrefix(proxyPrefix) { rest = rest.dropFirst(proxyPrefix.count) }
    return rest
}

/// Approves the proxy: entries of a table list, looking inside unionmap:{} and pipemap:{}.
func authorize(_ list: String) {
    for var entry in Tokens.splitQuoted(list) {
        if entry.hasPrefix("{") {
            let (inner, err) = Tokens.extractBraced(entry)
            if let err { Msg.fatal("bad \(parameterName) parameter value: \(err)") }
            entry = inner
        }
        if entry.hasPrefix(proxyPrefix) {
            let table = String(stripProxy(entry))
            if table.contains(":") && !approved.contains(table) {
                approved.insert(table)
                Msg.debug("allowlisting \(table) from \(parameterName)")
            }
        } else if entry.hasPrefix("unionmap:") || entry.hasPrefix("pipemap:") {
            let nested = String(entry[entry.index(after: entry.firstIndex(of: ":")!)...])
            guard nested.hasPrefix("{") else { Msg.fatal("bad \(parameterName) parameter value: missing '{' in \"\(entry)\"") }
            let (inner, err) = Tokens.extractBraced(nested)
            if let err { Msg.fatal("bad \(parameterName) parameter value: \(err)") }
            authorize(inner)
        }
    }
}

/// The shared instance of an approved table, or the status that refuses the request.
func find(_ table: String, _ requestFlags: DictFlags) -> (Dict?, ProxyStatus) {
    let name = String(stripProxy(table))
    guard name.contains(":") else { return (nil, .bad) }
    guard approved.contains(name) else {
        Msg.warn("request for unapproved table: \"\(name)\"")
        if Msg.verbose == 0 {
            Msg.warn("to approve this table for \(writer ? "read-write" : "read-only") access, list proxy:\(name) in main.cf:\(parameterName)")
        }
        return (nil, .deny)
    }
    let instance = "\(name):\(requestFlags.instanceFlags.description)"
    let dict: Dict
    if let d = DictCache.handle(instance) {
        dict = d
    } else {
        dict = DictRegistry.open(name, mode: writer ? .readWrite : .readOnly, flags: requestFlags)
        DictCache.register(instance, dict)
    }
    dict.flags = dict.flags.subtracting(.requestMask).union(requestFlags.intersection(.requestMask))
    return (dict, .ok)
}

func status(of error: DictError) -> ProxyStatus {
    switch error {
    case .retry: return .retry
    case .config: return .config
    }
}

/// Serves one request; every reply starts with the status.
func serve(_ request: AttrList) -> AttrList {
    var sc = request.scanner()
    var reply = AttrList()
    guard let verb = try? sc.string("request") else {
        Msg.warn("malformed request")
        reply.append("status", int: ProxyStatus.bad.rawValue)
        return reply
    }
    func table() -> (name: String, flags: DictFlags)? {
        guard let t = try? sc.string("table"), let f = try? sc.int("flags") else { return nil }
        return (t, DictFlags(rawValue: f))
    }
    switch verb {
    case ProxyProtocol.open:
        guard let (name, flags) = table() else { break }
        let (dict, st) = find(name, flags)
        reply.append("status", int: st.rawValue)
        reply.append("flags", int: dict?.flags.rawValue ?? 0)
        return reply

    case ProxyProtocol.lookup:
        guard let (name, flags) = table(), let key = try? sc.string("key") else { break }
        var st: ProxyStatus
        var value = ""
        let dict: Dict?
        (dict, st) = find(name, flags)
        if let dict {
            do {
                if let v = try dict.lookup(key) {
                    value = v
                } else {
                    st = .noKey
                }
            } catch {
                st = status(of: error)
            }
        }
        reply.append("status", int: st.rawValue)
        reply.append("value", value)
        return reply

    case ProxyProtocol.update, ProxyProtocol.delete:
        let isUpdate = verb == ProxyProtocol.update
        guard let (name, flags) = table(), let key = try? sc.string("key") else { break }
        var value = ""
        if isUpdate {
            guard let v = try? sc.string("value") else { break }
            value = v
        }
        var st: ProxyStatus
        if !writer {
            Msg.warn("refusing \(name) \(verb) request on non-proxywrite service")
            st = .deny
        } else {
            let dict: Dict?
            (dict, st) = find(name, flags)
            if let dict {
                dict.flags.insert(.syncUpdate)
                if isUpdate {
                    dict.flags.subtract([.duplicateIgnore, .duplicateWarn])
                    dict.flags.insert(.duplicateReplace)
                }
                do {
                    let done = isUpdate ? try dict.update(key, value) : try dict.delete(key)
                    st = done ? .ok : .noKey
                } catch {
                    st = status(of: error)
                }
            }
        }
        reply.append("status", int: st.rawValue)
        return reply

    case ProxyProtocol.sequence:
        guard let (name, flags) = table(), let function = try? sc.int("function") else { break }
        var st: ProxyStatus
        var key = "", value = ""
        let dict: Dict?
        (dict, st) = find(name, flags)
        if let dict {
            if function != 0 && function != 1 {
                st = .bad
            } else {
                do {
                    if let entry = try dict.sequence(first: function == 0) {
                        (key, value) = entry
                    } else {
                        st = .noKey
                    }
                } catch {
                    st = status(of: error)
                }
            }
        }
        reply.append("status", int: st.rawValue)
        reply.append("key", key)
        reply.append("value", value)
        return reply

    default:
        Msg.warn("unrecognized request: \"\(verb)\", ignored")
        reply.append("status", int: ProxyStatus.bad.rawValue)
        return reply
    }
    Msg.warn("malformed \(verb) request")
    reply.append("status", int: ProxyStatus.bad.rawValue)
    return reply
}

var desc = ServerDescription()
desc.program = "proxymap"
desc.postInit = { ctx in
    if !ctx.options.operands.isEmpty {
        Msg.fatal("unexpected command-line argument: \(ctx.options.operands.joined(separator: " "))")
    }
    writer = ctx.serviceName == ctx.config.string("proxywrite_service_name")
    parameterName = writer ? "proxy_write_maps" : "proxy_read_maps"
    authorize(ctx.config.string(parameterName))
}
desc.preAccept = { _ in
    // The writer changes its own tables; only the readers must pick up new files.
    if !writer { DictCache.exitIfChanged() }
}

MultiServer.runAttr(CommandLine.arguments, desc, protocolName: MailProtocol.proxymap, serve: serve)
