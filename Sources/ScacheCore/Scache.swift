// Scache: the connection cache server (scache(8)). smtp and lmtp clients hand it open
// connections to keep for a short while (connection_cache_ttl_limit at most), under an
// endpoint label (the server address) and, through a second request, under a
// destination label (the next hop); a later delivery asks for either and gets the
// descriptor back, most recent first. Descriptors travel with SCM_RIGHTS between dummy
// attributes; labels and properties are the clients' own business.
// Mirrors Postfix scache/scache.c and util/scache_multi.c.
import Glibc
import CShim
import MailUtil
import MailGlobal
import MailServer

public enum ScacheStatus {
    public static let ok = 0
    public static let bad = 1
    public static let fail = 2
}

/// The cache: sessions by endpoint, endpoints by destination, each with an expiry.
final class ConnectionCache {
    struct Session {
        let fd: Int32
        let prop: String
        let timer: Int
    }
    struct Link {
        let endpoint: String
        var prop: String
        var timer: Int
    }
    let loop: EventLoop
    var endpoints: [String: [Session]] = [:]
    var destinations: [String: [Link]] = [:]

    init(loop: EventLoop) { self.loop = loop }

    var sessionCount: Int { endpoints.values.reduce(0) { $0 + $1.count } }

    func saveEndpoint(ttl: Int, label: String, prop: String, fd: Int32) {
        var timer = 0
        timer = loop.after(Double(ttl)) { [unowned self] in
            guard var list = endpoints[label], let i = list.firstIndex(where: { $0.timer == timer }) else { return }
            close(list[i].fd)
            list.remove(at: i)
            endpoints[label] = list.isEmpty ? nil : list
        }
        endpoints[label, default: []].insert(Session(fd: fd, prop: prop, timer: timer), at: 0)
    }

    /// The most recent session of the endpoint, taken out of the cache.
    func findEndpoint(_ label: String) -> (fd: Int32, prop: String)? {
        guard var list = endpoints[label], !list.isEmpty else { return nil }
        let s = list.removeFirst()
        endpoints[label] = list.isEmpty ? nil : list
        loop.cancel(s.timer)
        return (s.fd, s.prop)
    }

    func saveDestination(ttl: Int, label: String, prop: String, endpoint: String) {
        var timer = 0
        timer = loop.after(Double(ttl)) { [unowned self] in
            guard var list = destinations[label], let i = list.firstIndex(where: { $0.timer == timer }) else { return }
            list.remove(at: i)
            destinations[label] = list.isEmpty ? nil : list
        }
        var list = destinations[label] ?? []
        if let i = list.firstIndex(where: { $0.endpoint == endpoint }) {
            loop.cancel(list[i].timer)
            list.remove(at: i)
        }
        list.insert(Link(endpoint: endpoint, prop: prop, timer: timer), at: 0)
        destinations[label] = list
    }

    /// A session of any endpoint the destination was seen at, most recent first.
    func findDestination(_ label: String) -> (fd: Int32, destProp: String, endpProp: String)? {
        for link in destinations[label] ?? [] {
            if let s = findEndpoint(link.endpoint) { return (s.fd, link.prop, s.prop) }
        }
        return nil
    }
}

public enum Scache {
    // Statistics as scache logs them (per interval).
    nonisolated(unsafe) static var destHits = 0, destMiss = 0, endpHits = 0, endpMiss = 0
    nonisolated(unsafe) static var destMax = 0, endpMax = 0, sessMax = 0
    nonisolated(unsafe) static var intervalStart = time(nil)

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "scache"
        desc.solitary = true
        desc.maxUse = 0
        var cache: ConnectionCache?
        var ttlLimit = 2
        desc.postInit = { ctx in
            cache = ConnectionCache(loop: ctx.loop)
            ttlLimit = ctx.config.time("connection_cache_ttl_limit")
            let every = ctx.config.time("connection_cache_status_update_time")
            if every > 0 {
                func tick() {
                    _ = ctx.loop.after(Double(every)) {
                        dumpStatus()
                        tick()
                    }
                }
                tick()
            }
        }
        desc.onExit = { _ in dumpStatus() }
        MultiServer.run(arguments, desc,
                        onConnect: { stream, _ in
                            var hello = AttrList()
                            hello.append(MailAttr.proto, MailProtocol.scache)
                            try? stream.write(AttrCodec.encode(hello, .attr0))
                        },
                        service: { stream, _ in
                            guard let cache else { return .close }
                            return serve(stream, cache, ttlLimit: ttlLimit)
                        })
    }

    static func reply(_ stream: FDStream, _ items: [(String, String)]) {
        var l = AttrList()
        for (n, v) in items { l.append(n, v) }
        try? stream.write(AttrCodec.encode(l, .attr0))
        try? stream.flush()
    }

    static func status(_ stream: FDStream, _ s: Int) { reply(stream, [(MailAttr.status, String(s))]) }

    /// One request: save_endp, find_endp, save_dest or find_dest.
    static func serve(_ stream: FDStream, _ cache: ConnectionCache, ttlLimit: Int) -> MultiServer.Disposition {
        let reader = AttrReader(stream, encoding: .attr0)
        let request: AttrList
        do {
            guard let r = try reader.readList() else { return .close }
            request = r
        } catch {
            Msg.warn("\(error)")
            return .close
        }
        var sc = request.scanner()
        guard let verb = try? sc.string(MailAttr.request) else {
            Msg.warn("missing request attribute")
            return .close
        }
        func fields(_ names: [String]) -> [String]? {
            var out: [String] = []
            for n in names {
                guard let v = try? sc.string(n) else { return nil }
                out.append(v)
            }
            return out
        }
        switch verb {
        case "save_endp":
            guard let ttl = try? sc.int(MailAttr.ttl), let f = fields([MailAttr.label, MailAttr.property]), ttl > 0 else {
                Msg.warn("bad save_endp request")
                status(stream, ScacheStatus.bad)
                return .keep
            }
            reply(stream, [(MailAttr.dummy, "")])
            let fd = FileDescriptor.waitReadable(stream.fd, milliseconds: 5000) ? cshim_recv_fd(stream.fd) : -1
            if fd < 0 {
                Msg.warn("\(stream.fd): unable to receive file descriptor: \(errnoText(errno))")
                status(stream, ScacheStatus.fail)
                return .close
            }
            cache.saveEndpoint(ttl: min(ttl, ttlLimit), label: f[0], prop: f[1], fd: fd)
            status(stream, ScacheStatus.ok)
            endpMax = max(endpMax, cache.endpoints.count)
            sessMax = max(sessMax, cache.sessionCount)
        case "save_dest":
            guard let ttl = try? sc.int(MailAttr.ttl), let f = fields([MailAttr.label, MailAttr.property, MailAttr.label]),
                  ttl > 0 else {
                Msg.warn("bad save_dest request")
                status(stream, ScacheStatus.bad)
                return .keep
            }
            cache.saveDestination(ttl: min(ttl, ttlLimit), label: f[0], prop: f[1], endpoint: f[2])
            status(stream, ScacheStatus.ok)
            destMax = max(destMax, cache.destinations.count)
        case "find_endp", "find_dest":
            guard let f = fields([MailAttr.label]) else {
                status(stream, ScacheStatus.bad)
                return .keep
            }
            let endpoint = verb == "find_endp"
            let found = endpoint ? cache.findEndpoint(f[0]).map { ($0.fd, [$0.prop]) }
                : cache.findDestination(f[0]).map { ($0.fd, [$0.destProp, $0.endpProp]) }
            guard let (fd, props) = found else {
                if endpoint { endpMiss += 1 } else { destMiss += 1 }
                reply(stream, [(MailAttr.status, String(ScacheStatus.fail))] + Array(repeating: (MailAttr.property, ""), count: endpoint ? 1 : 2))
                return .keep
            }
            if endpoint { endpHits += 1 } else { destHits += 1 }
            reply(stream, [(MailAttr.status, String(ScacheStatus.ok))] + props.map { (MailAttr.property, $0) })
            return pass(fd, stream, reader)
        default:
            Msg.warn("unrecognized request: \"\(verb)\", ignored")
            status(stream, ScacheStatus.bad)
        }
        return .keep
    }

    /// Hands a cached descriptor over: the client says it is ready (a dummy attribute),
    /// takes the descriptor, and confirms (another dummy).
    static func pass(_ fd: Int32, _ stream: FDStream, _ reader: AttrReader) -> MultiServer.Disposition {
        defer { close(fd) }
        guard (try? reader.readList()) ?? nil != nil, cshim_send_fd(stream.fd, fd) == 0,
              (try? reader.readList()) ?? nil != nil else {
            Msg.warn("\(stream.fd): cannot send file descriptor: \(errnoText(errno))")
            return .close
        }
        return .keep
    }

    static func dumpStatus() {
        if destHits + destMiss + endpHits + endpMiss + destMax + endpMax + sessMax > 0 {
            var t = intervalStart
            var tmv = tm()
            localtime_r(&t, &tmv)
            var buf = [CChar](repeating: 0, count: 32)
            strftime(&buf, 32, "%b %e %H:%M:%S", &tmv)
            Msg.info("statistics: start interval \(String(cString: buf))")
        }
        if destHits + destMiss > 0 {
            Msg.info("statistics: domain lookup hits=\(destHits) miss=\(destMiss) success=\(destHits * 100 / (destHits + destMiss))%")
            destHits = 0
            destMiss = 0
        }
        if endpHits + endpMiss > 0 {
            Msg.info("statistics: address lookup hits=\(endpHits) miss=\(endpMiss) success=\(endpHits * 100 / (endpHits + endpMiss))%")
            endpHits = 0
            endpMiss = 0
        }
        if destMax + endpMax + sessMax > 0 {
            Msg.info("statistics: max simultaneous domains=\(destMax) addresses=\(endpMax) connection=\(sessMax)")
            destMax = 0
            endpMax = 0
            sessMax = 0
        }
        intervalStart = time(nil)
    }
}
