// Scheduler: transports, per-destination queues, entries, and the concurrency feedback
// that decides how many deliveries a destination gets at once.
// Mirrors Postfix qmgr/qmgr_transport.c, qmgr_queue.c, qmgr_entry.c, qmgr_feedback.c and
// qmgr_defer.c: slow start from initial_destination_concurrency, positive and negative
// feedback with hysteresis, dead destinations after a pseudo-cohort of failures, dead
// transports when their agent cannot be reached.
import Glibc
import MailUtil
import MailGlobal

/// A feedback setting: "1", "1/concurrency", "1/sqrt_concurrency", "a/b".
struct Feedback {
    enum Kind { case constant, concurrency, sqrtConcurrency }
    var kind: Kind
    var value: Double
    let hysteresis = 1.0

    init(name: String, text: String) {
        let t = text.lowercased().replacingOccurrences(of: " ", with: "")
        var k = Kind.constant
        var num = t
        if t.hasSuffix("/concurrency") {
            k = .concurrency
            num = String(t.dropLast("/concurrency".count))
        } else if t.hasSuffix("/sqrt_concurrency") {
            k = .sqrtConcurrency
            num = String(t.dropLast("/sqrt_concurrency".count))
        }
        var v: Double?
        if let slash = num.firstIndex(of: "/"), let a = Double(num[..<slash]), let b = Double(num[num.index(after: slash)...]), b > 0 {
            v = a / b
        } else {
            v = Double(num)
        }
        if let x = v, x >= 0, x <= 1 {
            kind = k
            value = x
        } else {
            Msg.warn("\(name): ignoring malformed or out-of-range value \"\(text)\" -- using 1")
            kind = .constant
            value = 1
        }
    }

    func amount(window: Int) -> Double {
        switch kind {
        case .constant: return value
        case .concurrency: return value / Double(max(window, 1))
        case .sqrtConcurrency: return value / Double(max(window, 1)).squareRoot()
        }
    }
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        guard !a.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

/// A group of recipients of one message for one destination, delivered together.
final class Entry {
    let message: Message
    unowned let queue: DestQueue
    unowned let peer: Peer
    var recipients: [QueueRecipient] = []

    init(message: Message, peer: Peer) {
        self.message = message
        self.queue = peer.queue
        self.peer = peer
    }
}

/// The entries of one job for one destination (qmgr_peer.c): a job picks its
/// destinations round-robin, and each destination's entries in the order they were made.
final class Peer {
    unowned let job: Job
    unowned let queue: DestQueue
    /// Entries not yet selected, oldest first (from `head` on).
    private var waiting: [Entry] = []
    private var head = 0
    /// Entries waiting or being delivered.
    var refcount = 0

    init(job: Job, queue: DestQueue) {
        self.job = job
        self.queue = queue
    }

    var isEmpty: Bool { head == waiting.count }
    var waitingEntries: ArraySlice<Entry> { waiting[head...] }

    func append(_ e: Entry) {
        waiting.append(e)
    }

    func removeFirst() -> Entry {
        let e = waiting[head]
        head += 1
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        }
        return e
    }

    /// Takes every waiting entry off the peer.
    func removeAll() -> ArraySlice<Entry> {
        let all = waiting[head...]
        waiting = []
        head = 0
        return all
    }
}

/// One message's recipients on one transport (qmgr_job.c). Jobs are kept in the
/// order their messages entered the active queue; a job that preempts another is put
/// in front of it and remembered as its child on the preemption stack.
final class Job {
    unowned let message: Message
    unowned let transport: Transport
    weak var prev: Job?
    var next: Job?
    weak var stackParent: Job?
    var stackChildren: [Job] = []
    /// -1 off the job list, 0 on it, above 0 when it preempted the job below it.
    var stackLevel = -1
    var blockerTag = 0
    var peers: [Peer] = []
    /// The same peers by destination (a job may have thousands).
    var peerByQueue: [ObjectIdentifier: Peer] = [:]
    var nextPeer = 0
    /// Delivery slots: counted per selected entry, spent on preemption.
    var slotsUsed = 0
    var slotsAvailable = 0
    var selectedEntries = 0
    var readEntries = 0

    init(message: Message, transport: Transport) {
        self.message = message
        self.transport = transport
    }

    var hasEntries: Bool { selectedEntries < readEntries }
    /// The entries the job may still get: those read, plus every unread recipient.
    var maxEntries: Int { readEntries + message.recipientsUnread }

    func peer(for q: DestQueue) -> Peer {
        if let p = peerByQueue[ObjectIdentifier(q)] { return p }
        let p = Peer(job: self, queue: q)
        peers.append(p)
        peerByQueue[ObjectIdentifier(q)] = p
        q.peers.append(p)
        return p
    }

    /// qmgr_peer_select: the next destination, round-robin, that has room and an entry.
    func selectPeer(now: UInt64) -> Peer? {
        let n = peers.count
        for k in 0..<n {
            let i = (nextPeer + k) % n
            let p = peers[i]
            if p.queue.ready && p.queue.nextStart <= now && !p.isEmpty {
                nextPeer = (i + 1) % n
                return p
            }
        }
        return nil
    }
}

/// A per-destination queue of one transport (the nexthop, or recipient@nexthop).
final class DestQueue {
    let name: String
    let nexthop: String
    unowned let transport: Transport
    var window: Int
    var success = 0.0
    var failure = 0.0
    var failCohorts = 0.0
    var busy = 0
    /// Entries waiting for this destination, and the jobs' peers that hold them.
    var todoCount = 0
    var peers: [Peer] = []
    var blockerTag = 0
    /// When the next "using up ... active queue entries" warning may be logged.
    var clogTimeToWarn: time_t = 0
    /// Why the destination is dead (window 0), if it is.
    var deadReason: DeliveryStatus?
    var unthrottleTimer: Int?
    /// When the next delivery may start (destination rate delay).
    var nextStart: UInt64 = 0
    /// When the last delivery to this destination ended (seconds).
    var lastDone: time_t = 0
    /// On-demand connection caching (DEL_REQ_FLAG_CONN_LOAD/STORE) for the agent.
    var cacheFlags: DeliverFlags = []

    /// qmgr_entry_select: caching is turned on for back-to-back deliveries and stays on
    /// while deliveries are concurrent or back to back; after that, cached connections
    /// are still used up but no new ones are stored.
    func updateCacheFlags(now: time_t) {
        let backToBack = lastDone + 1 >= now
        if !cacheFlags.contains(.connStore) {
            if backToBack { cacheFlags.formUnion([.connLoad, .connStore]) }
        } else if !(busy > 1 || backToBack) {
            cacheFlags.remove(.connStore)
        }
    }

    init(name: String, nexthop: String, transport: Transport) {
        self.name = name
        self.nexthop = nexthop
        self.transport = transport
        window = transport.initialConcurrency
    }

    var throttled: Bool { deadReason != nil }
    var ready: Bool { !throttled && busy < window }
}

/// A transport (master.cf service reached through private/NAME) and its destinations.
final class Transport {
    let name: String
    let destinationConcurrencyLimit: Int
    let initialConcurrency: Int
    let recipientLimit: Int
    let positive: Feedback
    let negative: Feedback
    let failCohortLimit: Double
    let rateDelay: Int
    var queues: [String: DestQueue] = [:]
    /// Preemption (the nqmgr scheduler): delivery_slot_cost, _loan, _discount and
    /// minimum_delivery_slots of the transport.
    let slotCost: Int
    let slotLoan: Int
    let slotLoanFactor: Int
    let minSlots: Int
    /// The job list, its current job, and the tag that marks blocked jobs and queues.
    var jobHead: Job?
    weak var jobTail: Job?
    weak var jobCurrent: Job?
    var blockerTag = 1
    var blockedQueues: [DestQueue] = []
    weak var candidateCache: Job?
    weak var candidateCacheCurrent: Job?
    var candidateCacheTime: time_t = 0
    /// Connections to the agent that have not yet sent the greeting.
    var pending = 0
    var deadReason: DeliveryStatus?
    var unthrottleTimer: Int?

    init(name: String, config: MailConfig) {
        self.name = name
        var limit = config.transportInt(name, "_destination_concurrency_limit", fallback: "default_destination_concurrency_limit")
        let rate = config.transportTime(name, "_destination_rate_delay", fallback: "default_destination_rate_delay")
        if rate > 0 { limit = 1 }
        destinationConcurrencyLimit = limit
        var initial = config.transportInt(name, "_initial_destination_concurrency", fallback: "initial_destination_concurrency")
        if limit > 0 && initial > limit { initial = limit }
        initialConcurrency = max(initial, 1)
        recipientLimit = config.transportInt(name, "_destination_recipient_limit", fallback: "default_destination_recipient_limit")
        func fb(_ suffix: String, _ fallback: String) -> Feedback {
            let n = name + suffix
            let known = config.rawValue(n) != nil
            return Feedback(name: known ? n : fallback, text: known ? config.string(n) : config.string(fallback))
        }
        positive = fb("_destination_concurrency_positive_feedback", "default_destination_concurrency_positive_feedback")
        negative = fb("_destination_concurrency_negative_feedback", "default_destination_concurrency_negative_feedback")
        failCohortLimit = Double(config.transportInt(name, "_destination_concurrency_failed_cohort_limit",
                                                     fallback: "default_destination_concurrency_failed_cohort_limit"))
        rateDelay = rate
        slotCost = config.transportInt(name, "_delivery_slot_cost", fallback: "default_delivery_slot_cost")
        slotLoan = config.transportInt(name, "_delivery_slot_loan", fallback: "default_delivery_slot_loan")
        slotLoanFactor = config.transportInt(name, "_delivery_slot_discount", fallback: "default_delivery_slot_discount")
        minSlots = config.transportInt(name, "_minimum_delivery_slots", fallback: "default_minimum_delivery_slots")
    }

    var throttled: Bool { deadReason != nil }

    func queue(named qname: String, nexthop: String) -> DestQueue {
        if let q = queues[qname] { return q }
        let q = DestQueue(name: qname, nexthop: nexthop, transport: self)
        queues[qname] = q
        return q
    }

    /// Forgets a destination that has nothing to do and is not dead.
    func retire(_ q: DestQueue) {
        guard q.todoCount == 0, q.busy == 0, !q.throttled else { return }
        queues.removeValue(forKey: q.name)
    }

    /// How many more deliveries could start now (ready destinations' free slots).
    func wantedConnections(now: UInt64) -> Int {
        if throttled { return 0 }
        var n = 0
        for q in queues.values where q.ready && q.todoCount > 0 && q.nextStart <= now {
            n += min(q.window - q.busy, q.todoCount)
        }
        return n
    }

    // MARK: Entries

    /// qmgr_entry_create: a new, empty entry of `m` for `q`.
    func makeEntry(_ m: Message, _ q: DestQueue) -> Entry {
        let job = obtainJob(m)
        let p = job.peer(for: q)
        let e = Entry(message: m, peer: p)
        p.append(e)
        p.refcount += 1
        q.todoCount += 1
        job.readEntries += 1
        return e
    }

    /// qmgr_entry_select: takes the next entry of the peer for delivery.
    func select(_ p: Peer, now: UInt64) -> Entry {
        let e = p.removeFirst()
        let q = p.queue
        q.todoCount -= 1
        q.busy += 1
        p.job.selectedEntries += 1
        q.updateCacheFlags(now: time(nil))
        if rateDelay > 0 { q.nextStart = now + UInt64(rateDelay) * 1_000_000_000 }
        return e
    }

    /// Takes every waiting entry of `q` off its peers (a dead destination).
    func removeTodo(_ q: DestQueue) -> [Entry] {
        var out: [Entry] = []
        for p in q.peers {
            let taken = p.removeAll()
            p.job.selectedEntries += taken.count
            out += taken
        }
        q.todoCount = 0
        return out
    }

    /// qmgr_entry_done, the scheduler's part: the peer, and the job when its message is
    /// gone, let go of the entry.
    func entryDone(_ e: Entry) {
        let p = e.peer
        p.refcount -= 1
        if p.refcount == 0 {
            p.job.peerByQueue.removeValue(forKey: ObjectIdentifier(p.queue))
            if let i = p.job.peers.firstIndex(where: { $0 === p }) {
                p.job.peers.remove(at: i)
                if p.job.nextPeer > i { p.job.nextPeer -= 1 }
                if p.job.nextPeer >= p.job.peers.count { p.job.nextPeer = 0 }
            }
            if let i = p.queue.peers.firstIndex(where: { $0 === p }) { p.queue.peers.remove(at: i) }
        }
    }

    // MARK: Jobs (qmgr_job.c)

    private func resetCandidateCache() { candidateCacheCurrent = nil }

    /// qmgr_job_obtain: the job of `m` on this transport, on the job list.
    func obtainJob(_ m: Message) -> Job {
        let job: Job
        if let j = m.jobs.first(where: { $0.transport === self }) {
            job = j
        } else {
            job = Job(message: m, transport: self)
            m.jobs.append(job)
        }
        if job.stackLevel < 0 { link(job) }
        resetCandidateCache()
        if job.blockerTag == blockerTag {
            job.blockerTag = 0
            jobCurrent = jobHead
        }
        return job
    }

    /// qmgr_job_link: into the job list by the time its message entered the active
    /// queue; preempting jobs stay where they are.
    private func link(_ job: Job) {
        let queued = job.message.activeArrival.tv_sec
        var current = jobCurrent
        var next: Job?
        var prev = jobTail
        while let p = prev {
            if p.stackParent == nil && queued >= p.message.activeArrival.tv_sec { break }
            if current === p { current = nil }
            next = p
            prev = p.prev
        }
        job.stackLevel = 0
        insert(job, after: prev, before: next)
        if current == nil { jobCurrent = job }
    }

    private func insert(_ job: Job, after prev: Job?, before next: Job?) {
        job.prev = prev
        job.next = next
        if let p = prev { p.next = job } else { jobHead = job }
        if let n = next { n.prev = job } else { jobTail = job }
    }

    private func remove(_ job: Job) {
        let prev = job.prev, next = job.next
        if let p = prev { p.next = next } else { jobHead = next }
        if let n = next { n.prev = prev } else { jobTail = prev }
        job.prev = nil
        job.next = nil
    }

    /// Hands the preemption children of `job` to `parent` (or orphans them).
    private func parentGone(_ job: Job, _ parent: Job?) {
        for child in job.stackChildren {
            parent?.stackChildren.append(child)
            child.stackParent = parent
        }
        job.stackChildren = []
    }

    private func unlink(_ job: Job) {
        parentGone(job, nil)
        if jobCurrent === job { jobCurrent = job.next }
        if job === candidateCache || job === candidateCacheCurrent { resetCandidateCache() }
        remove(job)
        job.stackLevel = -1
    }

    /// Off the job list until the message has more recipients for this transport.
    private func retireJob(_ job: Job) {
        if job.stackLevel > 0 { pop(job) }
        unlink(job)
    }

    /// qmgr_job_free: the message has left the active queue.
    func freeJob(_ job: Job) {
        if job.stackLevel > 0 { pop(job) }
        if job.stackLevel >= 0 { unlink(job) }
    }

    /// qmgr_job_pop: the job leaves its preemption stack; the parent gets back the slots
    /// it reserved for the job and did not use.
    private func pop(_ job: Job) {
        let parent = job.stackParent
        if let parent, job.stackLevel == parent.stackLevel + 1 {
            parent.slotsAvailable -= job.slotsUsed * slotCost
        }
        if let parent {
            parent.stackChildren.removeAll { $0 === job }
            job.stackParent = nil
        }
        parentGone(job, parent)
        job.stackLevel = 0
        resetCandidateCache()
    }

    private func countSlots(_ job: Job) {
        job.slotsAvailable += 1
        job.slotsUsed += 1
        if job !== candidateCacheCurrent { resetCandidateCache() }
    }

    /// qmgr_job_candidate: the job with the best time-waiting per recipient score that
    /// fits in the slots `current` can still accumulate.
    func candidate(for current: Job, now: time_t) -> Job? {
        if candidateCacheCurrent === current && (candidateCacheTime == now || candidateCache == nil) {
            return candidateCache
        }
        var best: Job?
        var bestScore = 0.0
        let maxSlots = (current.readEntries - current.selectedEntries + current.slotsAvailable) / slotCost
        if maxSlots > 0 {
            var j = current.next
            while let job = j {
                j = job.next
                if !job.stackChildren.isEmpty || job.blockerTag == blockerTag { continue }
                let total = job.maxEntries
                let needed = total - job.selectedEntries
                let delay = Int(now - job.message.activeArrival.tv_sec) + 1
                if needed > 0 && needed <= maxSlots {
                    let score = Double(delay) / Double(total)
                    if score > bestScore {
                        bestScore = score
                        best = job
                    }
                }
                if Double(delay) <= bestScore && job.stackLevel == 0 { break }
            }
        }
        candidateCache = best
        candidateCacheCurrent = current
        candidateCacheTime = now
        return best
    }

    /// qmgr_job_preempt: lets a smaller job go ahead of `current` once `current` has
    /// earned enough delivery slots (less a loan, at the discount).
    func preempt(_ current: Job, now: time_t) -> Job {
        if current.slotsAvailable <= 0 || current.maxEntries < minSlots * slotCost { return current }
        guard let job = candidate(for: current, now: now) else { return current }
        let expected = job.maxEntries - job.selectedEntries
        if Double(current.slotsAvailable / slotCost + slotLoan) < Double(expected * slotLoanFactor) / 100.0 {
            return current
        }
        if job.stackLevel > 0 { pop(job) }
        remove(job)
        insert(job, after: current.prev, before: current)
        job.stackParent = current
        current.stackChildren.append(job)
        job.stackLevel = current.stackLevel + 1
        jobCurrent = job
        resetCandidateCache()
        current.slotsAvailable -= expected * slotCost
        job.slotsUsed = -expected
        return job
    }

    /// qmgr_job_blocker_update for the queues that blocked jobs: once one has room
    /// again, every blocked job is looked at anew.
    private func updateBlockers(now: UInt64) {
        guard !blockedQueues.isEmpty else { return }
        for q in blockedQueues where q.blockerTag == blockerTag {
            let room = q.ready && q.nextStart <= now
            if room && q.todoCount > 0 {
                blockerTag += 2
                jobCurrent = jobHead
                resetCandidateCache()
            }
            if room || q.throttled { q.blockerTag = 0 }
        }
        blockedQueues.removeAll { $0.blockerTag != blockerTag }
    }

    /// qmgr_job_entry_select: the next entry to deliver, from the current job or one
    /// that preempts it, passing over jobs whose destinations are all busy.
    func selectEntry(now: UInt64) -> Entry? {
        guard !throttled else { return nil }
        updateBlockers(now: now)
        guard var first = jobCurrent else { return nil }
        if slotCost >= 2 { first = preempt(first, now: time(nil)) }
        var j: Job? = first
        while let job = j {
            j = job.next
            if job.blockerTag == blockerTag { continue }
            if let p = job.selectPeer(now: now) {
                let e = select(p, now: now)
                countSlots(job)
                jobCurrent = job
                if !job.hasEntries && job.message.resumeOffset == 0 { retireJob(job) }
                return e
            } else if job.hasEntries {
                job.blockerTag = blockerTag
                for p in job.peers where !p.isEmpty && p.queue.blockerTag != blockerTag {
                    p.queue.blockerTag = blockerTag
                    blockedQueues.append(p.queue)
                }
            } else {
                retireJob(job)
            }
        }
        jobCurrent = nil
        return nil
    }

    // MARK: Feedback

    /// After a delivery without trouble at the destination (qmgr_queue_unthrottle).
    func positiveFeedback(_ q: DestQueue, loop: EventLoop) {
        q.failCohorts = 0
        if q.throttled {
            if let t = q.unthrottleTimer { loop.cancel(t) }
            q.unthrottleTimer = nil
            q.deadReason = nil
            q.window = q.busy > 0 ? q.busy : initialConcurrency
            q.success = 0
            q.failure = 0
            return
        }
        if destinationConcurrencyLimit == 0 || destinationConcurrencyLimit > q.window {
            if q.window < q.busy + initialConcurrency {
                let f = positive.amount(window: q.window)
                q.success += f
                while q.success + f / 2 >= positive.hysteresis {
                    q.window += 1
                    q.success -= positive.hysteresis
                    q.failure = 0
                }
                if destinationConcurrencyLimit > 0 && q.window > destinationConcurrencyLimit {
                    q.window = destinationConcurrencyLimit
                }
            }
        }
    }

    /// After a delivery that ran into trouble with the destination (qmgr_queue_throttle);
    /// true when the destination is now dead.
    func negativeFeedback(_ q: DestQueue, _ why: DeliveryStatus, minimalBackoff: Int, loop: EventLoop,
                          unthrottle: @escaping () -> Void) -> Bool {
        guard !q.throttled else { return true }
        q.failCohorts += 1.0 / Double(max(q.window, 1))
        var dead = false
        if failCohortLimit > 0 && q.failCohorts >= failCohortLimit { dead = true }
        if !dead {
            let f = negative.amount(window: q.window)
            q.failure -= f
            while q.failure - f / 2 < 0 {
                q.window -= 1
                q.success = 0
                q.failure += negative.hysteresis
            }
            if q.window < 1 { q.window = 1 }
            return false
        }
        q.window = 0
        q.deadReason = why
        q.unthrottleTimer = loop.after(Double(minimalBackoff)) { unthrottle() }
        return true
    }
}
