// qmgr(8): the queue manager. Scans the incoming and deferred queues, brings messages
// into the active queue, groups their recipients by transport and destination, and hands
// them to the delivery agents over private/<transport>, as many at once as each
// destination's concurrency window allows; then removes, defers or returns each message.
// Mirrors Postfix qmgr/qmgr.c (triggers, main loop), qmgr_scan.c, qmgr_deliver.c and
// qmgr_defer.c; the scheduling is round-robin over destinations (not nqmgr's preemptive
// job scheduler).
import Glibc
import MailUtil
import MailGlobal
import MailServer

/// One directory walk over a queue, returning queue IDs one at a time (qmgr_scan.c).
final class Scanner {
    let queue: String
    var ids: [String] = []
    var position = 0
    var running = false
    /// Flags of the scan in progress, and those of a scan requested meanwhile.
    var all = false
    var flush = false
    var requested = false
    var nextAll = false
    var nextFlush = false

    init(queue: String) { self.queue = queue }

    func request(all a: Bool, flush f: Bool) {
        if running {
            requested = true
            nextAll = nextAll || a
            nextFlush = nextFlush || f
            // Modifiers apply to the scan in progress too.
            all = all || a
            flush = flush || f
        } else {
            start(all: a, flush: f)
        }
    }

    func start(all a: Bool, flush f: Bool) {
        ids = Scanner.walk(queue)
        position = 0
        running = true
        all = a
        flush = f
    }

    /// The next ID, or nil at the end (a pending request restarts the scan).
    func next() -> String? {
        guard running else { return nil }
        if position < ids.count {
            position += 1
            return ids[position - 1]
        }
        running = false
        if requested {
            requested = false
            start(all: nextAll, flush: nextFlush)
            nextAll = false
            nextFlush = false
            return next()
        }
        return nil
    }

    /// Every queue ID under `dir`, descending into one-character hash directories.
    static func walk(_ dir: String) -> [String] { MailQueue.scan(dir) }
}

/// A connection to a delivery agent, from connect to final reply.
final class AgentConnection {
    let fd: Int32
    let stream: FDStream
    unowned let transport: Transport
    var entry: Entry?
    var watchdog: Int?

    init(fd: Int32, transport: Transport, timeout: Int) {
        self.fd = fd
        self.transport = transport
        stream = FDStream(fd: fd, timeout: timeout, closeOnDeinit: true)
    }
}

public final class Qmgr {
    let config: MailConfig
    let ctx: ServerContext
    let loop: EventLoop
    let mailQueue: MailQueue
    let rewrite: TrivialRewriteClient
    let report: DeliveryReport
    let addressExtension: AddressExtension
    let incoming = Scanner(queue: QueueName.incoming)
    let deferredScan = Scanner(queue: QueueName.deferred)
    var preferIncoming = true
    var transports: [String: Transport] = [:]
    var transportOrder: [String] = []
    var nextTransport = 0
    var messages: [String: Message] = [:]
    var connections: [Int32: AgentConnection] = [:]
    var inCoreRecipients = 0
    var loopScheduled = false

    let activeLimit: Int
    let recipientLimit: Int
    let recipientBatch = 5000
    let minimalBackoff: Int
    let maximalBackoff: Int
    let maximalQueueLifetime: Int
    let bounceQueueLifetime: Int
    let queueRunDelay: Int
    let transportRetryTime: Int
    let ipcTimeout: Int
    let daemonTimeout: Int
    let deferTransports: Set<String>
    let doubleBounceSender: String
    let allowMinUser: Bool
    let verpBounceOff: Bool
    let clogWarnTime: Int
    let inFlowDelay: Int
    let processLimit: Int

    init(ctx: ServerContext) {
        self.ctx = ctx
        config = ctx.config
        loop = ctx.loop
        mailQueue = MailQueue(config: config)
        rewrite = TrivialRewriteClient(config: config)
        report = DeliveryReport(config: config)
        addressExtension = AddressExtension(config: config)
        activeLimit = config.int("qmgr_message_active_limit")
        recipientLimit = max(config.int("qmgr_message_recipient_limit"), activeLimit)
        minimalBackoff = config.time("minimal_backoff_time")
        maximalBackoff = max(config.time("maximal_backoff_time"), minimalBackoff)
        maximalQueueLifetime = config.time("maximal_queue_lifetime")
        bounceQueueLifetime = min(config.time("bounce_queue_lifetime"), maximalQueueLifetime)
        queueRunDelay = config.time("queue_run_delay")
        transportRetryTime = config.time("transport_retry_time")
        ipcTimeout = config.time("qmgr_ipc_timeout")
        daemonTimeout = config.time("qmgr_daemon_timeout")
        deferTransports = Set(config.list("defer_transports"))
        doubleBounceSender = config.string("double_bounce_sender")
        allowMinUser = config.bool("allow_min_user")
        verpBounceOff = config.bool("disable_verp_bounces")
        inFlowDelay = config.time("in_flow_delay")
        processLimit = config.int("default_process_limit")
        clogWarnTime = config.bool("helpful_warnings") ? config.time("qmgr_clog_warn_time") : 0
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "qmgr"
        desc.solitary = true
        desc.maxUse = 0
        desc.maxIdle = 0
        var qmgr: Qmgr?
        desc.postInit = { ctx in
            let q = Qmgr(ctx: ctx)
            qmgr = q
            q.start()
        }
        TriggerServer.run(arguments, desc) { bytes, _ in
            qmgr?.trigger(bytes)
        }
    }

    /// Start-up: what was active belongs to a previous run and goes back to incoming.
    func start() {
        for id in Scanner.walk(QueueName.active) {
            guard let qid = QueueID(id) else { continue }
            do {
                try mailQueue.move(qid, from: QueueName.active, to: QueueName.incoming)
            } catch {
                Msg.warn("\(id): rename from active to incoming: \(error)")
            }
        }
        incoming.request(all: false, flush: false)
        deferredScan.request(all: false, flush: false)
        armDeferredScan()
        scheduleLoop()
    }

    func armDeferredScan() {
        loop.after(Double(queueRunDelay)) { [weak self] in
            guard let self else { return }
            self.deferredScan.request(all: false, flush: false)
            self.armDeferredScan()
            self.scheduleLoop()
        }
    }

    /// A trigger: W/I scan incoming, D scan deferred, F forget dead sites, A scan all.
    func trigger(_ bytes: [UInt8]) {
        var scanIncoming = false, scanDeferred = false, flush = false, all = false
        for b in bytes {
            switch b {
            case UInt8(ascii: "W"), UInt8(ascii: "I"): scanIncoming = true
            case UInt8(ascii: "D"): scanDeferred = true
            case UInt8(ascii: "F"): flush = true
            case UInt8(ascii: "A"): all = true
            default: break
            }
        }
        if flush { unthrottleAll() }
        if scanIncoming || flush || all { incoming.request(all: all, flush: flush) }
        if scanDeferred || flush || all { deferredScan.request(all: all, flush: flush) }
        scheduleLoop()
    }

    func scheduleLoop() {
        if loopScheduled { return }
        loopScheduled = true
        loop.after(0) { [weak self] in
            guard let self else { return }
            self.loopScheduled = false
            self.runLoop()
        }
    }

    /// qmgr_loop: start deliveries where destinations have room, then feed one file.
    func runLoop() {
        drain()
        var fed: Scanner?
        if messages.count < activeLimit && inCoreRecipients < recipientLimit {
            let order = preferIncoming ? [incoming, deferredScan] : [deferredScan, incoming]
            preferIncoming.toggle()
            scan: for s in order {
                while let id = s.next() {
                    if messages[id] != nil { continue }
                    if feed(queue: s.queue, id: id, scanAll: s.all, flushFlags: (s.flush, s.flush)) {
                        fed = s
                        break scan
                    }
                }
            }
        }
        feedFlowTokens(fedIncoming: fed === incoming)
        if fed != nil {
            drain()
            scheduleLoop()
        }
    }

    /// Keeps about default_process_limit tokens in the flow pipe: one for each message
    /// taken from incoming, all of them while incoming is not being scanned, so that
    /// cleanup slows down only when mail arrives faster than the queue manager takes it.
    func feedFlowTokens(fedIncoming: Bool) {
        guard inFlowDelay > 0 else { return }
        let tokens = MailFlow.count()
        guard tokens >= 0 else { return }
        if tokens < processLimit {
            if fedIncoming {
                MailFlow.put(1)
            } else if !incoming.running {
                MailFlow.put(processLimit - tokens)
            }
        } else if tokens > processLimit {
            MailFlow.get(tokens - processLimit)
        }
    }

    func transport(named name: String) -> Transport {
        if let t = transports[name] { return t }
        let t = Transport(name: name, config: config)
        transports[name] = t
        transportOrder.append(name)
        return t
    }

    // MARK: Delivery agents (qmgr_transport_select, qmgr_deliver)

    /// Opens connections to agents of transports with work that can start.
    func drain() {
        let now = monotonicNanos()
        var soonest: UInt64?
        for name in transportOrder {
            guard let t = transports[name], !t.throttled else { continue }
            while t.pending < 2 && t.wantedConnections(now: now) > t.pending {
                if !connect(t) { break }
            }
            for q in t.queues.values where q.ready && q.todoCount > 0 && q.nextStart > now {
                soonest = min(soonest ?? q.nextStart, q.nextStart)
            }
        }
        if let s = soonest {
            loop.after(Double(s - now) / 1e9) { [weak self] in self?.scheduleLoop() }
        }
    }

    func connect(_ t: Transport) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { Msg.fatal("socket: \(errnoText(errno))") }
        let path = "\(MailClass.private)/\(t.name)"
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.prefix(p.count - 1).enumerated() { p[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc < 0 && errno != EINPROGRESS {
            let e = errno
            close(fd)
            if e == EAGAIN {
                // The agent's listen queue is full: come back when a delivery finishes.
                return false
            }
            Msg.warn("connect to transport \(path): \(errnoText(e))")
            throttle(t, DeliveryStatus(status: "4.3.0", reason: "mail transport unavailable"))
            return false
        }
        let c = AgentConnection(fd: fd, transport: t, timeout: ipcTimeout)
        connections[fd] = c
        t.pending += 1
        loop.onReadable(fd) { [weak self] in self?.greeting(c) }
        c.watchdog = loop.after(Double(ipcTimeout)) { [weak self] in
            guard let self else { return }
            Msg.warn("timeout connecting to transport: \(t.name)")
            self.dropPending(c)
            self.throttle(t, DeliveryStatus(status: "4.3.0", reason: "mail transport unavailable"))
        }
        return true
    }

    func dropPending(_ c: AgentConnection) {
        if let w = c.watchdog { loop.cancel(w) }
        loop.remove(c.fd)
        connections.removeValue(forKey: c.fd)
        c.transport.pending -= 1
    }

    /// The agent answered: hand it the next entry (or hang up when there is none now).
    func greeting(_ c: AgentConnection) {
        let t = c.transport
        dropPending(c)
        var ok = false
        do {
            if let hello = try AttrReader(c.stream, encoding: .attr0).readList() {
                var sc = hello.scanner()
                try sc.expect(MailAttr.proto, equals: MailProtocol.deliver)
                ok = true
            }
        } catch {}
        if !ok {
            Msg.warn("private/\(t.name) socket: malformed response")
            throttle(t, DeliveryStatus(status: "4.3.0", reason: "mail transport unavailable"))
            scheduleLoop()
            return
        }
        guard let e = t.selectEntry(now: monotonicNanos()) else {
            scheduleLoop()
            return
        }
        c.entry = e
        var r = DeliverRequest()
        let m = e.message
        r.flags = m.traceFlags.union(.default).union(e.queue.cacheFlags)
        r.queueName = QueueName.active
        r.queueID = m.queueID
        r.dataOffset = m.info.dataOffset
        r.dataSize = m.info.contentLength
        r.nexthop = e.queue.nexthop
        r.encoding = m.info.encoding
        r.sendopts = m.info.sendopts
        r.sender = m.info.sender
        r.envelopeID = m.info.envelopeID
        r.retFlags = m.info.retFlags
        var stats = m.stats
        gettimeofday(&stats.agentHandoff, nil)
        r.stats = stats
        let a = m.info.attributes
        r.clientName = a[MailAttr.logClientName] ?? ""
        r.clientAddress = a[MailAttr.logClientAddress] ?? ""
        r.clientPort = a[MailAttr.logClientPort] ?? ""
        r.clientProtocol = a[MailAttr.logProtocolName] ?? ""
        r.clientHelo = a[MailAttr.logHeloName] ?? ""
        r.saslMethod = a[MailAttr.saslMethod] ?? ""
        r.saslUsername = a[MailAttr.saslUsername] ?? ""
        r.saslSender = a[MailAttr.saslSender] ?? ""
        r.logIdent = a[MailAttr.logIdent] ?? ""
        r.rewriteContext = a[MailAttr.rewriteContext] ?? ""
        r.recipients = e.recipients
        do {
            for l in r.encoded { try c.stream.write(AttrCodec.encode(l, .attr0)) }
            try c.stream.flush()
        } catch {
            Msg.warn("write to transport \(t.name): \(error)")
            finish(c, reply: nil)
            return
        }
        connections[c.fd] = c
        loop.onReadable(c.fd) { [weak self] in self?.finalReply(c) }
        c.watchdog = loop.after(Double(daemonTimeout)) { [weak self] in
            Msg.warn("timeout talking to transport \(t.name)")
            self?.finish(c, reply: nil)
        }
        scheduleLoop()
    }

    func finalReply(_ c: AgentConnection) {
        var reply: DeliverReply?
        c.stream.startDeadline(seconds: ipcTimeout)
        if let list = try? AttrReader(c.stream, encoding: .attr0).readList() {
            reply = try? DeliverReply.decode(list)
        }
        finish(c, reply: reply)
    }

    /// The agent is done with an entry (reply nil: it crashed or hung up).
    func finish(_ c: AgentConnection, reply: DeliverReply?) {
        if let w = c.watchdog { loop.cancel(w) }
        loop.remove(c.fd)
        connections.removeValue(forKey: c.fd)
        guard let e = c.entry else { return }
        c.entry = nil
        let q = e.queue
        let t = q.transport
        let m = e.message
        q.busy -= 1
        q.lastDone = time(nil)
        if let reply {
            if reply.status != 0 { m.deferred = true }
            if let hop = reply.hop, !hop.reason.isEmpty {
                var why = hop
                why.reason = "delivery temporarily suspended: " + hop.reason
                if t.negativeFeedback(q, why, minimalBackoff: minimalBackoff, loop: loop,
                                      unthrottle: { [weak self] in self?.unthrottleQueue(q) }) {
                    deferTodo(q, why)
                }
            } else {
                t.positiveFeedback(q, loop: loop)
            }
        } else {
            m.deferred = true
            Msg.warn("transport \(t.name) failure -- see a previous warning/fatal/panic logfile record for the problem description")
            throttle(t, DeliveryStatus(status: "4.3.0", reason: "unknown mail transport error"))
        }
        entryDone(e)
        scheduleLoop()
    }

    // MARK: Dead destinations and transports (qmgr_defer.c)

    /// Defers every entry still waiting for `q`, logged by the queue manager.
    func deferTodo(_ q: DestQueue, _ why: DeliveryStatus) {
        let entries = q.transport.removeTodo(q)
        for e in entries {
            let m = e.message
            for r in e.recipients {
                _ = report.defer(flags: m.traceFlags, id: m.queueID, stats: m.stats, recipient: r.info,
                                 relay: noRelayAgent, dsn: why)
            }
            m.deferred = true
            entryDone(e)
        }
    }

    func throttle(_ t: Transport, _ why: DeliveryStatus) {
        guard !t.throttled else { return }
        t.deadReason = why
        for q in Array(t.queues.values) { deferTodo(q, why) }
        t.unthrottleTimer = loop.after(Double(transportRetryTime)) { [weak self] in
            self?.unthrottle(t)
            self?.scheduleLoop()
        }
    }

    func unthrottle(_ t: Transport) {
        if let timer = t.unthrottleTimer { loop.cancel(timer) }
        t.unthrottleTimer = nil
        t.deadReason = nil
    }

    func unthrottleQueue(_ q: DestQueue) {
        q.transport.positiveFeedback(q, loop: loop)
        q.transport.retire(q)
        scheduleLoop()
    }

    func unthrottleAll() {
        for t in transports.values {
            unthrottle(t)
            for q in Array(t.queues.values) where q.throttled { unthrottleQueue(q) }
        }
    }
}
