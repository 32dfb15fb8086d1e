// DictProxy: proxy:TYPE:NAME, a table looked up (or updated) by the proxymap service on
// the caller's behalf, so that chrooted or unprivileged programs can use tables they
// could not open, and many writers share one.
// Mirrors Postfix global/dict_proxy.c: stateless requests (table name and flags in every
// request), read-only opens go to $proxymap_service_name and read-write opens to
// $proxywrite_service_name; a broken connection is re-made after a second, for ever.
import Glibc
import MailUtil
import MailDict

/// Reply status of the proxymap protocol (dict_proxy.h).
public enum ProxyStatus: Int, Sendable {
    case ok = 0
    case noKey = 1
    case retry = 2
    case bad = 3
    case deny = 4
    case config = 5
}

/// Request names and attribute names of the proxymap protocol.
public enum ProxyProtocol {
    public static let open = "open"
    public static let lookup = "lookup"
    public static let update = "update"
    public static let delete = "delete"
    public static let sequence = "sequence"
}

final class DictProxy: Dict {
    let service: String
    let path: String
    /// Flags fixed at open; each request adds the per-request bits of `flags`.
    let instanceFlags: DictFlags
    var client: AttrClient?

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags,
                     config: MailConfig) throws(DictOpenError) -> Dict {
        if flags.contains(.noProxy) {
            return DictRegistry.open(name, mode: mode, flags: flags)
        }
        guard name.contains(":") else {
            throw DictOpenError("open dictionary: expecting \"type:name\" form instead of \"\(name)\"")
        }
        let service: String
        switch mode {
        case .readOnly: service = config.string("proxymap_service_name")
        case .readWrite, .modify: service = config.string("proxywrite_service_name")
        case .create: Msg.fatal("\(name): proxy map open requires O_RDONLY or O_RDWR mode")
        }
        // From the queue directory (daemons) the relative name works; anywhere else
        // (postmap from a shell) the full one.
        var path = "private/\(service)"
        if access(path, F_OK) != 0 {
            path = "\(config.string("queue_directory"))/private/\(service)"
        }
        let dict = DictProxy(name: name, flags: flags, service: service, path: path)
        var request = AttrList()
        request.append("request", ProxyProtocol.open)
        request.append("table", name)
        request.append("flags", int: dict.instanceFlags.rawValue)
        let reply = dict.converse(request, want: ["flags"])
        switch reply.status {
        case .ok:
            let serverFlags = DictFlags(rawValue: Int(reply.values[0]) ?? 0)
            dict.flags = dict.flags.subtracting(.implementationMask)
                .union(serverFlags.intersection(.implementationMask))
            return dict
        case .bad:
            Msg.fatal("\(service) open failed for table \"\(name)\": invalid request")
        case .deny:
            throw DictOpenError("\(service) service is not configured for table \"\(name)\"")
        default:
            // RETRY or CONFIG at open: the table cannot be opened on the server side.
            throw DictOpenError("\(service) open failed for table \"\(name)\": status \(reply.status.rawValue)")
        }
    }

    init(name: String, flags: DictFlags, service: String, path: String) {
        self.service = service
        self.path = path
        self.instanceFlags = flags.instanceFlags
        super.init(type: "proxy", name: name, flags: flags)
    }

    var requestFlags: Int { instanceFlags.union(flags.intersection(.requestMask)).rawValue }

    /// Sends one request and reads the status plus `want` attributes, reconnecting (after
    /// a second) until the service answers. Unknown status values are reported and
    /// retried, as Postfix does.
    func converse(_ request: AttrList, want: [String],
                  unexpected: ((Int) -> String)? = nil) -> (status: ProxyStatus, values: [String]) {
        while true {
            do {
                if client == nil { client = connectWait() }
                let reply = try client!.request(request)
                var sc = reply.scanner()
                let code = try sc.int("status")
                var values: [String] = []
                for name in want { values.append(try sc.string(name)) }
                if let status = ProxyStatus(rawValue: code) { return (status, values) }
                if let text = unexpected?(code) { Msg.warn(text) }
            } catch {
                if Msg.verbose > 0 { Msg.warn("dict_proxy: service \(service): \(error)") }
            }
            client = nil
            sleep(1)
        }
    }

    /// Connects to the service, as Postfix's mail_connect_wait(): a warning and ten
    /// seconds between attempts, fatal after the eleventh failure.
    func connectWait() -> AttrClient {
        var count = 0
        while true {
            do {
                let c = try AttrClient(path: path, timeout: 3600)
                try c.expectProtocol(MailProtocol.proxymap)
                return c
            } catch {
                count += 1
                let text = (error as? SystemError).map { errnoText($0.errno) } ?? "\(error)"
                if count > 10 { Msg.fatal("connect #\(count) to subsystem \(path): \(text)") }
                Msg.warn("connect #\(count) to subsystem \(path): \(text)")
            }
            sleep(10)
        }
    }

    func base(_ request: String) -> AttrList {
        var list = AttrList()
        list.append("request", request)
        list.append("table", name)
        list.append("flags", int: requestFlags)
        return list
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        var request = base(ProxyProtocol.lookup)
        request.append("key", key)
        let reply = converse(request, want: ["value"]) { code in
            "\(self.service) lookup failed for table \"\(self.name)\" key \"\(key)\": unexpected reply status \(code)"
        }
        switch reply.status {
        case .ok: return reply.values[0]
        case .noKey: return nil
        case .retry: throw .retry
        case .config: throw .config
        case .bad: Msg.fatal("\(service) lookup failed for table \"\(name)\" key \"\(key)\": invalid request")
        case .deny: Msg.fatal("\(service) service is not configured for table \"\(name)\"")
        }
    }

    override func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        try modify(ProxyProtocol.update, key, value)
    }

    override func delete(_ key: String) throws(DictError) -> Bool {
        try modify(ProxyProtocol.delete, key, nil)
    }

    /// An update (with a value) or delete request; false when the key was refused as a
    /// duplicate or was not there.
    func modify(_ verb: String, _ key: String, _ value: String?) throws(DictError) -> Bool {
        var request = base(verb)
        request.append("key", key)
        if let value { request.append("value", value) }
        let reply = converse(request, want: []) { code in
            "\(self.service) \(verb) failed for table \"\(self.name)\" key \"\(key)\": unexpected reply status \(code)"
        }
        switch reply.status {
        case .ok: return true
        case .noKey: return false
        case .retry: throw .retry
        case .config: throw .config
        case .bad: Msg.fatal("\(service) \(verb) failed for table \"\(name)\" key \"\(key)\": invalid request")
        case .deny: Msg.fatal("\(service) update access is not configured for table \"\(name)\"")
        }
    }

    override func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? {
        var request = base(ProxyProtocol.sequence)
        request.append("function", int: first ? 0 : 1)
        let function = first ? 0 : 1
        let reply = converse(request, want: ["key", "value"]) { code in
            "\(self.service) sequence failed for table \"\(self.name)\" function \(function): unexpected reply status \(code)"
        }
        switch reply.status {
        case .ok: return (reply.values[0], reply.values[1])
        case .noKey: return nil
        case .retry: throw .retry
        case .config: throw .config
        case .bad: Msg.fatal("\(service) sequence failed for table \"\(name)\" function \(function): invalid request")
        case .deny: Msg.fatal("\(service) service is not configured for table \"\(name)\"")
        }
    }

    override func close() { client = nil }
}
