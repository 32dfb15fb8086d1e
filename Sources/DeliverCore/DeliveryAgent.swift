// DeliveryAgent: the part every delivery agent shares: the conversation with the queue
// manager over private/<transport> (announcement, request, final reply), the queue file
// opened with the shared lock that tells a restarted queue manager the message is still
// being delivered, and the per-recipient reports.
// Mirrors Postfix global/deliver_request.c (deliver_request_read, deliver_request_done)
// and the common part of the agents' main loops (local.c, virtual.c, pipe.c, error.c).
import Glibc
import MailUtil
import MailGlobal
import MailServer

/// One delivery request being served, with its open queue file.
public final class DeliveryJob {
    public let request: DeliverRequest
    public let config: MailConfig
    public let report: DeliveryReport
    /// The queue file, open for reading and writing (recipients are marked done in it).
    public let fd: Int32
    public let path: String
    /// Trouble with the destination as a whole, for the final reply (hop status).
    public var hop: DeliveryStatus?
    /// The service name under which the agent runs (error vs retry, local, ...).
    public let service: String

    init(request: DeliverRequest, config: MailConfig, fd: Int32, path: String, service: String) {
        self.request = request
        self.config = config
        report = DeliveryReport(config: config)
        self.fd = fd
        self.path = path
        self.service = service
    }

    deinit { close(fd) }

    public var queueID: String { request.queueID }
    /// The flags that go with each report: only the trace bits of the request's flags
    /// (the others would mean something else to the bounce service).
    public var flags: DeliverFlags { request.flags.intersection(.traceMask) }

    /// The recipient is done: mark its record when the request says so.
    func markDone(_ r: QueueRecipient, _ status: Int, _ which: DeliverFlags) {
        if status == 0 && request.flags.contains(which) {
            DeliveryReport.completed(fd: fd, path: path, offset: r.offset)
        }
    }

    /// Reports a delivered recipient; 0 when it is done.
    @discardableResult
    public func sent(_ r: QueueRecipient, relay: String, dsn: DeliveryStatus, stats: MsgStats? = nil) -> Int {
        let st = report.sent(flags: flags, id: queueID, stats: stats ?? request.stats, recipient: r.info,
                             relay: relay, dsn: dsn)
        markDone(r, st, .success)
        return st
    }

    /// Reports a permanently failed recipient; 0 when it is done (bounced).
    @discardableResult
    public func bounce(_ r: QueueRecipient, relay: String, dsn: DeliveryStatus, stats: MsgStats? = nil) -> Int {
        let st = report.bounce(flags: flags, id: queueID, stats: stats ?? request.stats, recipient: r.info,
                               relay: relay, dsn: dsn)
        markDone(r, st, .bounce)
        return st
    }

    /// Reports a recipient to try again later; always -1.
    @discardableResult
    public func `defer`(_ r: QueueRecipient, relay: String, dsn: DeliveryStatus, stats: MsgStats? = nil) -> Int {
        report.defer(flags: flags, id: queueID, stats: stats ?? request.stats, recipient: r.info,
                     relay: relay, dsn: dsn)
    }

    /// Reports by DSN class: 2 sent, 4 defer, 5 bounce.
    @discardableResult
    public func outcome(_ r: QueueRecipient, relay: String, dsn: DeliveryStatus, stats: MsgStats? = nil) -> Int {
        switch dsn.status.first {
        case "2": return sent(r, relay: relay, dsn: dsn, stats: stats)
        case "5": return bounce(r, relay: relay, dsn: dsn, stats: stats)
        default: return self.defer(r, relay: relay, dsn: dsn, stats: stats)
        }
    }
}

public enum DeliveryAgent {
    nonisolated(unsafe) static var statusFilterSet = false

    /// Serves one connection from the queue manager: `deliver` handles the request and
    /// returns 0 when every recipient reached a final state, -1 otherwise.
    public static func serve(_ client: SingleServer.Client, _ ctx: ServerContext,
                             deliver: (DeliveryJob) -> Int) {
        // smtp_delivery_status_filter, local_delivery_status_filter, ...: once per process.
        if !statusFilterSet {
            statusFilterSet = true
            if ["smtp", "lmtp", "local", "virtual", "pipe"].contains(ctx.program) {
                DeliveryReport.useStatusFilter(ctx.config, parameter: "\(ctx.program)_delivery_status_filter")
            }
        }
        let stream = client.stream
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.deliver)
        do {
            try stream.write(AttrCodec.encode(hello, .attr0))
            try stream.flush()
        } catch {
            return
        }
        // The queue manager may change its mind after connecting (a transport went bad).
        if stream.bufferedInputCount == 0 {
            guard (try? stream.peekByte()) ?? nil != nil else { return }
        }
        let request: DeliverRequest
        do {
            request = try DeliverRequest.read(AttrReader(stream, encoding: .attr0))
        } catch {
            Msg.warn("deliver_request_get: error reading delivery request: \(error)")
            return
        }
        guard QueueName.isValid(request.queueName), QueueID.isValid(request.queueID), let qid = QueueID(request.queueID) else {
            Msg.warn("deliver_request_get: bad queue name or queue id: \(request.queueName) \(request.queueID)")
            return
        }
        let queue = MailQueue(config: ctx.config)
        let path = queue.path(request.queueName, qid)
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { Msg.fatal("open \(request.queueName) \(request.queueID): \(errnoText(errno))") }
        do {
            try FileLock.apply(fd, style: .flock, .shared, wait: false)
        } catch {
            Msg.fatal("shared lock \(path): \(errnoText((error as? SystemError)?.errno ?? EIO))")
        }
        let job = DeliveryJob(request: request, config: ctx.config, fd: fd, path: path, service: ctx.serviceName)
        let status = deliver(job)
        let reply = DeliverReply(hop: job.hop, status: status)
        do {
            try stream.write(AttrCodec.encode(reply.encoded, .attr0))
            try stream.flush()
            // Wait for the queue manager to close the connection (one byte or EOF).
            stream.startDeadline(seconds: ctx.config.time("ipc_timeout"))
            _ = try? stream.readByte()
        } catch {
            Msg.debug("send final status: \(error)")
        }
    }
}
