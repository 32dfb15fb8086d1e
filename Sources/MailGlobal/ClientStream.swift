// ClientStream: a long-lived connection to a multi-server service such as trivial-rewrite.
// Mirrors Postfix global/clnt_stream.c: connect and check the protocol once per
// connection; drop the connection after ipc_idle seconds without use or ipc_ttl seconds of
// age; on any error log, wait a second, reconnect and try again, for ever (the service
// is part of the mail system, and its absence is temporary) -- unless master is gone,
// when the process leaves (Postfix's would keep trying, holding its listen socket, so
// that the system could not be started again).
import Glibc
import MailUtil

public final class ClientStream {
    public let serviceClass: String
    public let service: String
    public let proto: String
    let idle: Int
    let ttl: Int
    var client: AttrClient?
    var openedAt: time_t = 0
    var lastUsed: time_t = 0

    public init(serviceClass: String, service: String, protocolName: String, config: MailConfig) {
        self.serviceClass = serviceClass
        self.service = service
        self.proto = protocolName
        idle = config.time("ipc_idle")
        ttl = config.time("ipc_ttl")
    }

    /// Drops the connection (the next request makes a new one).
    public func recover() { client = nil }

    /// Set by the server skeletons: called before each retry; it does not return when
    /// master has gone away.
    nonisolated(unsafe) public static var beforeRetry: () -> Void = {}

    /// Sends one request and returns the reply, reconnecting until the service answers.
    public func request(_ list: AttrList) -> AttrList {
        while true {
            let now = time(nil)
            if client != nil && (now - lastUsed >= idle || now - openedAt >= ttl) { client = nil }
            do {
                if client == nil {
                    let c = try AttrClient(serviceClass: serviceClass, name: service,
                                           timeout: 3600)
                    try c.expectProtocol(proto)
                    client = c
                    openedAt = now
                }
                let reply = try client!.request(list)
                lastUsed = time(nil)
                return reply
            } catch {
                let why = (error as? SystemError).map { errnoText($0.errno) } ?? "\(error)"
                Msg.warn("problem talking to service \(service): \(why)")
                client = nil
                Self.beforeRetry()
                sleep(1)
            }
        }
    }
}
