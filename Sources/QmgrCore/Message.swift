// Message: one queue file in the active queue: its envelope, the recipients read so far
// and what became of them, and how it leaves (removed, deferred with a retry time,
// returned to the sender when too old).
// Mirrors Postfix qmgr/qmgr_message.c (read, resolve, assign) and qmgr_active.c (feed,
// done, defer, corrupt).
import Glibc
import MailUtil
import MailGlobal

final class Message {
    let queueID: String
    let qid: QueueID
    /// The queue the file came from (incoming or deferred), for the log only.
    let fromQueue: String
    var info: QueueMessage
    /// When the message entered the active queue.
    var activeArrival = timeval()
    /// Entries handed to agents or waiting in destination queues.
    var refcount = 0
    /// Some recipient was deferred (DEL_STAT_DEFER).
    var deferred = false
    /// Scan flags that came with the message (flush: unthrottle what it needs).
    var flushEach = false
    var overrideDeferTransports = false
    var forceExpire = false
    /// Where the next batch of recipients starts (0: all read).
    var resumeOffset = 0
    /// Recipients read into memory so far, and the jobs they made.
    var recipientsRead = 0
    var jobs: [Job] = []

    /// Recipients still in the file (an estimate: done ones count until read).
    var recipientsUnread: Int { resumeOffset == 0 ? 0 : max(info.recipientCount - recipientsRead, 1) }

    init(queueID: String, qid: QueueID, fromQueue: String, info: QueueMessage) {
        self.queueID = queueID
        self.qid = qid
        self.fromQueue = fromQueue
        self.info = info
    }

    /// The trace flags of delivery requests (DEL_REQ_TRACE_FLAGS of trace_flags).
    var traceFlags: DeliverFlags { DeliverFlags(rawValue: info.traceFlags).intersection(.traceMask) }

    var stats: MsgStats {
        var s = MsgStats()
        s.incomingArrival = info.arrival
        s.activeArrival = activeArrival
        return s
    }
}

extension Qmgr {
    // MARK: Bringing a file into the active queue (qmgr_active_feed)

    /// Moves one file from `queue` to active and reads it; true when it was taken.
    @discardableResult
    func feed(queue: String, id: String, scanAll: Bool, flushFlags: (each: Bool, dfxp: Bool)) -> Bool {
        guard let qid = QueueID(id) else { return false }
        let path = mailQueue.path(queue, qid)
        var st = stat()
        guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, QueueFileMode.isReady(st.st_mode) else { return false }
        if !scanAll && Int(st.st_mtim.tv_sec) > Int(time(nil)) + 1 { return false }
        do {
            try mailQueue.move(qid, from: queue, to: QueueName.active)
        } catch let e as SystemError {
            if e.errno != ENOENT { Msg.fatal("qmgr_active_feed: \(id): rename from \(queue) to active: \(errnoText(e.errno))") }
            Msg.warn("qmgr_active_feed: \(id): rename from \(queue) to active: \(errnoText(e.errno))")
            return false
        } catch {
            return false
        }
        let unthrottle = st.st_mode & QueueFileMode.unthrottle != 0
        let expire = st.st_mode & QueueFileMode.expire != 0
        return open(id: id, qid: qid, from: queue, flushEach: flushFlags.each || unthrottle,
                    dfxp: flushFlags.dfxp || unthrottle, forceExpire: expire, clearUnthrottle: unthrottle)
    }

    func open(id: String, qid: QueueID, from queue: String, flushEach: Bool, dfxp: Bool, forceExpire: Bool,
              clearUnthrottle: Bool) -> Bool {
        let path = mailQueue.path(QueueName.active, qid)
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            if errno != ENOENT { Msg.fatal("open \(path): \(errnoText(errno))") }
            Msg.warn("open \(path): \(errnoText(errno))")
            return false
        }
        defer { close(fd) }
        do {
            try FileLock.apply(fd, style: .flock, .exclusive, wait: false)
        } catch {
            if FileLock.isWouldBlock(error) {
                Msg.info("\(id): skipped, still being delivered")
                deferFile(qid, from: QueueName.active, to: QueueName.incoming, delay: 60)
                return false
            }
            Msg.fatal("lock \(path): \(error)")
        }
        if clearUnthrottle {
            var st = stat()
            if fstat(fd, &st) == 0 { fchmod(fd, st.st_mode & ~QueueFileMode.unthrottle & 0o7777) }
        }
        let reader = QueueFileReader(fd: fd)
        let info: QueueMessage
        do {
            info = try reader.readMessage(lineLimit: 0, recipientLimit: recipientBatch)
        } catch {
            Msg.warn("\(id): \(error)")
            corrupt(qid)
            return false
        }
        let m = Message(queueID: id, qid: qid, fromQueue: queue, info: info)
        gettimeofday(&m.activeArrival, nil)
        m.flushEach = flushEach
        m.overrideDeferTransports = dfxp
        m.forceExpire = forceExpire
        m.resumeOffset = info.resumeOffset
        Msg.info("\(id): from=<\(LogAdhoc.logAddress(info.sender))>, size=\(info.contentLength), nrcpt=\(info.recipientCount) (queue active)")
        // The defer log describes the latest attempt only; a force-expired message keeps
        // its reasons for the notice it is about to get.
        if !(forceExpire && deferLogHasContent(qid)) {
            removeLog(QueueName.defer, qid)
        }
        messages[id] = m
        if forceExpire && deferLogHasContent(qid) {
            m.deferred = true
            done(m)
            return true
        }
        resolve(m, info.recipients, fd: fd)
        if m.refcount == 0 { done(m) }
        return true
    }

    func deferLogHasContent(_ qid: QueueID) -> Bool {
        var st = stat()
        return stat(mailQueue.path(QueueName.defer, qid), &st) == 0 && st.st_size > 0
    }

    func removeLog(_ queue: String, _ qid: QueueID) {
        let p = mailQueue.path(queue, qid)
        if unlink(p) < 0 && errno != ENOENT { Msg.fatal("remove \(p): \(errnoText(errno))") }
    }

    /// A file that cannot be read goes to the corrupt queue.
    func corrupt(_ qid: QueueID) {
        Msg.warn("saving corrupt file \"\(qid.text)\" from queue \"\(QueueName.active)\" to queue \"\(QueueName.corrupt)\"")
        do {
            try mailQueue.move(qid, from: QueueName.active, to: QueueName.corrupt)
        } catch {
            Msg.fatal("\(qid.text): rename from active to corrupt: \(error)")
        }
    }

    /// Sets the file's times to now+delay (its next retry) and moves it (qmgr_active_defer).
    func deferFile(_ qid: QueueID, from: String, to: String, delay: Int) {
        let path = mailQueue.path(from, qid)
        var times = [timespec(tv_sec: time(nil) + delay, tv_nsec: 0), timespec(tv_sec: time(nil) + delay, tv_nsec: 0)]
        if utimensat(AT_FDCWD, path, &times, 0) < 0 && errno != ENOENT {
            Msg.fatal("qmgr_active_defer: update \(path) time stamps: \(errnoText(errno))")
        }
        do {
            try mailQueue.move(qid, from: from, to: to)
        } catch let e as SystemError {
            if e.errno != ENOENT { Msg.fatal("qmgr_active_defer: rename \(qid.text) from \(from) to \(to): \(errnoText(e.errno))") }
            Msg.warn("qmgr_active_defer: rename \(qid.text) from \(from) to \(to): \(errnoText(e.errno))")
        } catch {}
    }

    // MARK: Recipients to destinations (qmgr_message_resolve, qmgr_message_assign)

    func resolve(_ m: Message, _ recipients: [QueueRecipient], fd: Int32) {
        var assigned: [(queue: DestQueue, rcpt: QueueRecipient)] = []
        let probe = m.traceFlags.contains(.mtaVerify)
        for rcpt in recipients {
            var transportName: String
            var nexthop: String
            var address = rcpt.address
            var redirected: (String, String)?
            if let filter = m.info.filter, !filter.isEmpty, !probe {
                let (t, n) = splitTransport(filter)
                transportName = t
                nexthop = n
                if nexthop.isEmpty {
                    nexthop = config.string("default_filter_nexthop")
                    if nexthop.isEmpty, let at = address.lastIndex(of: "@") { nexthop = String(address[address.index(after: at)...]) }
                    if nexthop.isEmpty { nexthop = config.string("myhostname") }
                }
            } else {
                if let r = m.info.redirect, !r.isEmpty { address = r }
                let reply = rewrite.resolve(address, sender: m.info.sender, verify: probe)
                transportName = reply.transport
                nexthop = reply.nexthop
                if reply.flags.contains(.fail) {
                    redirected = ("retry", "4.3.0 address resolver failure")
                } else if reply.flags.contains(.error) {
                    redirected = ("error", "5.1.3 bad address syntax")
                } else if rcpt.address.isEmpty {
                    redirected = ("error", "5.1.3 null recipient address")
                } else if m.forceExpire {
                    redirected = ("retry", "4.7.0 message is administratively expired")
                } else if !allowMinUser && rcpt.address.hasPrefix("-") {
                    redirected = ("error", "5.1.3 bad address syntax")
                } else if reply.flags.contains(.local) {
                    let r = reply.recipient
                    let local = r.lastIndex(of: "@").map { String(r[..<$0]) } ?? r
                    if local.lowercased() == doubleBounceSender.lowercased() {
                        var rs = m.stats
                        rs.agentHandoff = timeval()
                        let st = report.sent(flags: m.traceFlags, id: m.queueID, stats: rs, recipient: rcpt.info,
                                             relay: noRelayAgent,
                                             dsn: DeliveryStatus(status: "2.0.0", reason: "undeliverable postmaster notification discarded"))
                        if st == 0 {
                            DeliveryReport.completed(fd: fd, path: m.queueID, offset: rcpt.offset)
                        } else {
                            m.deferred = true
                        }
                        continue
                    }
                }
                if redirected == nil && !deferTransports.isEmpty && !m.overrideDeferTransports
                    && deferTransports.contains(transportName) {
                    redirected = ("retry", "4.3.2 deferred transport")
                }
            }
            if let (t, n) = redirected {
                transportName = t
                nexthop = n
            }
            let transport = self.transport(named: transportName)
            if m.flushEach && transport.throttled { unthrottle(transport) }
            if transport.throttled && redirected == nil {
                let why = transport.deadReason!
                let q = self.transport(named: "retry").queue(named: "\(why.status) \(why.reason)".lowercased(),
                                                             nexthop: "\(why.status) \(why.reason)")
                assigned.append((q, rcpt))
                continue
            }
            var qname = nexthop
            if transport.recipientLimit == 1 {
                var local = rcpt.address
                var domain = ""
                if let at = local.lastIndex(of: "@") {
                    domain = String(local[local.index(after: at)...])
                    local = String(local[..<at])
                }
                _ = domain
                if let stripped = addressExtension.strip(local) { local = stripped.bare }
                qname = local + "@" + nexthop
            }
            qname = qname.lowercased()
            let q = transport.queue(named: qname, nexthop: nexthop)
            if m.flushEach && q.throttled { unthrottleQueue(q) }
            if q.throttled {
                let why = q.deadReason!
                let rq = self.transport(named: "retry").queue(named: "\(why.status) \(why.reason)".lowercased(),
                                                              nexthop: "\(why.status) \(why.reason)")
                assigned.append((rq, rcpt))
                continue
            }
            assigned.append((q, rcpt))
        }
        // qmgr_message_sort: by transport, destination and address, so that entries fill up.
        assigned.sort {
            if $0.queue.transport.name != $1.queue.transport.name { return $0.queue.transport.name < $1.queue.transport.name }
            if $0.queue.name != $1.queue.name { return $0.queue.name < $1.queue.name }
            return $0.rcpt.address < $1.rcpt.address
        }
        var current: Entry?
        for (q, rcpt) in assigned {
            if let e = current, e.queue === q, q.transport.recipientLimit <= 0 || e.recipients.count < q.transport.recipientLimit {
                e.recipients.append(rcpt)
                continue
            }
            let e = q.transport.makeEntry(m, q)
            e.recipients.append(rcpt)
            m.refcount += 1
            current = e
            clogWarning(q)
        }
        m.recipientsRead += recipients.count
        inCoreRecipients += recipients.count
    }

    /// qmgr_entry_create's warning when one destination takes up much of the active queue.
    func clogWarning(_ q: DestQueue) {
        guard clogWarnTime > 0 else { return }
        let length = q.todoCount + q.busy
        let now = time(nil)
        guard length > activeLimit / 5, now >= q.clogTimeToWarn else { return }
        let share = Double(length) / Double(max(messages.count, 1))
        let t = q.transport
        Msg.warn("mail for \(q.nexthop) is using up \(length) of \(messages.count) active queue entries")
        if share < 0.9 { Msg.warn("this may slow down other mail deliveries") }
        if t.destinationConcurrencyLimit > 0 && t.destinationConcurrencyLimit <= q.busy + 1 {
            Msg.warn("you may need to increase the main.cf \(t.name)_destination_concurrency_limit from \(t.destinationConcurrencyLimit)")
        } else if Double(q.window) > Double(activeLimit) * share {
            Msg.warn("you may need to increase the main.cf qmgr_message_active_limit from \(activeLimit)")
        } else if q.peers.count > 1 {
            Msg.warn("you may need a separate master.cf transport for \(q.nexthop)")
        } else {
            Msg.warn("you may need to reduce \(t.name) connect and helo timeouts")
            Msg.warn("so that Postfix quickly skips unavailable hosts")
            Msg.warn("you may need to increase the main.cf minimal_backoff_time and maximal_backoff_time")
            Msg.warn("so that Postfix wastes less time on undeliverable mail")
            Msg.warn("you may need to increase the master.cf \(t.name) process limit")
        }
        Msg.warn("please avoid flushing the whole queue when you have")
        Msg.warn("lots of deferred mail, that is bad for performance")
        Msg.warn("to turn off these warnings specify: qmgr_clog_warn_time = 0")
        q.clogTimeToWarn = now + time_t(clogWarnTime)
    }

    func splitTransport(_ s: String) -> (String, String) {
        if let c = s.firstIndex(of: ":") {
            return (String(s[..<c]), String(s[s.index(after: c)...]))
        }
        return (s, "")
    }

    // MARK: Leaving the active queue (qmgr_active_done)

    /// An entry of `m` is finished; when none is left, read more recipients or finish.
    func entryDone(_ e: Entry) {
        let m = e.message
        m.refcount -= 1
        inCoreRecipients -= e.recipients.count
        e.queue.transport.entryDone(e)
        e.queue.transport.retire(e.queue)
        if m.refcount == 0 { moreOrDone(m) }
    }

    func moreOrDone(_ m: Message) {
        if m.resumeOffset > 0 {
            let path = mailQueue.path(QueueName.active, m.qid)
            let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
            if fd < 0 { Msg.fatal("open \(path): \(errnoText(errno))") }
            defer { close(fd) }
            let reader = QueueFileReader(fd: fd)
            do {
                let (rcpts, resume) = try reader.readRecipients(from: m.resumeOffset, dataOffset: m.info.dataOffset,
                                                                messageSize: m.info.messageSize, limit: recipientBatch,
                                                                lineLimit: 0)
                m.resumeOffset = resume
                resolve(m, rcpts, fd: fd)
            } catch {
                Msg.warn("\(m.queueID): \(error)")
                m.resumeOffset = 0
                m.deferred = true
            }
            if m.refcount > 0 { return }
            if m.resumeOffset > 0 { return moreOrDone(m) }
        }
        done(m)
    }

    func noticeFlags() -> Int { 0 }

    /// All recipients were tried: send notices, then remove or defer the file.
    func done(_ m: Message) {
        let bounceLog = mailQueue.path(QueueName.bounce, m.qid)
        var st = stat()
        if stat(bounceLog, &st) == 0 {
            if st.st_size == 0 {
                removeLog(QueueName.bounce, m.qid)
            } else {
                let status = notify(m, m.info.verpDelimiters != nil && !verpBounceOff ? .verp : .flush,
                                    service: config.string("bounce_service_name"))
                if status != 0 { m.deferred = true }
            }
        }
        let wantsTrace = !m.traceFlags.isDisjoint(with: [.userVerify, .record, .recordDelaySent])
            || m.info.qmgrFlags & (DSNNotify.success << 1) != 0
        if wantsTrace {
            let status = notify(m, .trace, service: config.string("trace_service_name"), flags: m.traceFlags.rawValue)
            if status == 0 && m.info.traceFlagsOffset > 0 {
                let path = mailQueue.path(QueueName.active, m.qid)
                let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
                if fd >= 0 {
                    try? QueueFileReader.overwriteType(fd: fd, at: m.info.traceFlagsOffset, .killed)
                    close(fd)
                }
            }
        }
        if m.deferred {
            let lifetime = m.info.sender.isEmpty ? bounceQueueLifetime : maximalQueueLifetime
            if Int(time(nil)) >= m.info.createTime + lifetime || m.forceExpire {
                Msg.info("\(m.queueID): from=<\(LogAdhoc.logAddress(m.info.sender))>, status=\(m.forceExpire ? "force-expired" : "expired"), returned to sender")
                let status = notify(m, m.info.verpDelimiters != nil && !verpBounceOff ? .verp : .flush,
                                    service: config.string("defer_service_name"), flags: BounceFlags.deleteRecipients.rawValue)
                if status == 0 { m.deferred = false }
            } else if m.info.warnTime > 0 && m.info.warnTime <= Int(time(nil)) {
                let status = notify(m, .warn, service: config.string("defer_service_name"))
                if status == 0 && m.info.warnOffset > 0 {
                    let path = mailQueue.path(QueueName.active, m.qid)
                    let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
                    if fd < 0 { Msg.fatal("update queue file \(path): \(errnoText(errno))") }
                    do {
                        try QueueFileReader.rewriteWarnTime(fd: fd, at: m.info.warnOffset, 0)
                    } catch {
                        Msg.fatal("update queue file \(path): \(error)")
                    }
                    close(fd)
                }
            }
        }
        if m.deferred {
            var delay = Int(time(nil)) - m.info.createTime
            if delay > maximalBackoff { delay = maximalBackoff }
            if delay < minimalBackoff { delay = minimalBackoff }
            deferFile(m.qid, from: QueueName.active, to: QueueName.deferred, delay: delay)
        } else {
            do {
                try mailQueue.remove(QueueName.active, m.qid)
                Msg.info("\(m.queueID): removed")
            } catch let e as SystemError {
                if e.errno != ENOENT { Msg.fatal("qmgr_active_done: remove \(m.queueID) from active: \(errnoText(e.errno))") }
                Msg.warn("qmgr_active_done: remove \(m.queueID) from active: \(errnoText(e.errno))")
            } catch {}
        }
        for job in m.jobs { job.transport.freeJob(job) }
        m.jobs = []
        messages.removeValue(forKey: m.queueID)
        scheduleLoop()
    }

    /// A notice request to the bounce daemon about `m` (bounce/defer/trace flush, warn).
    func notify(_ m: Message, _ command: BounceCommand, service: String, flags: Int = 0) -> Int {
        let status = BounceClient.notify(command, service: service, flags: flags, queueName: QueueName.active,
                                         queueID: m.queueID, encoding: m.info.encoding, sendopts: m.info.sendopts,
                                         sender: m.info.sender, envelopeID: m.info.envelopeID, retFlags: m.info.retFlags,
                                         verpDelimiters: command == .verp ? m.info.verpDelimiters : nil, config: config)
        if status != 0 && (command == .flush || command == .verp) && service == config.string("bounce_service_name") {
            Msg.info("\(m.queueID): status=deferred (bounce failed)")
        }
        return status
    }
}
