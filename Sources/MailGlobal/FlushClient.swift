// FlushClient: requests to the fast flush service (ETRN, "postqueue -s", "postqueue -i",
// and the per-site logs that defer_append feeds).
// Mirrors Postfix global/flush_clnt.c: sites outside fast_flush_domains are refused here,
// without bothering the server; a server that cannot be reached is a failure.
import MailUtil

public enum FlushStatus: Equatable {
    case ok, denied, bad, failed

    init(_ code: Int) {
        switch code {
        case 0: self = .ok
        case 3: self = .bad
        case 4: self = .denied
        default: self = .failed
        }
    }
}

public enum FlushClient {
    /// One request to public/flush; the warning for an unreachable server is Postfix's.
    static func request(_ list: AttrList, config: MailConfig) -> FlushStatus {
        let name = config.string("flush_service_name")
        let client: AttrClient
        do {
            client = try AttrClient(serviceClass: MailClass.public, name: name, timeout: config.time("ipc_timeout"))
        } catch let e as SystemError {
            Msg.warn("connect to \(MailClass.public)/\(name): \(errnoText(e.errno))")
            return .failed
        } catch {
            return .failed
        }
        do {
            try client.expectProtocol(MailProtocol.flush)
            let reply = try client.request(list)
            var sc = reply.scanner()
            return FlushStatus(try sc.int(MailAttr.status))
        } catch {
            Msg.warn("\(MailClass.public)/\(name): \(error)")
            return .failed
        }
    }

    /// fast_flush_domains, as both the clients and the flush server match it.
    public static func domains(_ config: MailConfig) -> MatchList {
        MatchList(name: "fast_flush_domains", kind: .domain,
                  options: MatchList.parentStyle("fast_flush_domains", config: config),
                  text: config.string("fast_flush_domains"))
    }

    /// Delivers the deferred mail for `site` (ETRN, postqueue -s).
    public static func sendSite(_ site: String, config: MailConfig) -> FlushStatus {
        let list = domains(config)
        guard list.matches(site) else { return list.error != nil ? .failed : .denied }
        var req = AttrList()
        req.append(MailAttr.request, "send_site")
        req.append(MailAttr.site, site)
        return request(req, config: config)
    }

    /// Delivers one deferred message now (postqueue -i).
    public static func sendFile(_ queueID: String, config: MailConfig) -> FlushStatus {
        var req = AttrList()
        req.append(MailAttr.request, "send_file")
        req.append(MailAttr.queueID, queueID)
        return request(req, config: config)
    }

    /// Notes that `queueID` waits for `site` (defer_append, when the site is eligible).
    public static func add(site: String, queueID: String, config: MailConfig) -> FlushStatus {
        let list = domains(config)
        guard list.matches(site) else { return list.error != nil ? .failed : .denied }
        var req = AttrList()
        req.append(MailAttr.request, "add")
        req.append(MailAttr.site, site)
        req.append(MailAttr.queueID, queueID)
        return request(req, config: config)
    }

    /// Refreshes stale logs ("rfrsh") or all of them ("purge").
    public static func refresh(all: Bool, config: MailConfig) -> FlushStatus {
        var req = AttrList()
        req.append(MailAttr.request, all ? "purge" : "rfrsh")
        return request(req, config: config)
    }
}
