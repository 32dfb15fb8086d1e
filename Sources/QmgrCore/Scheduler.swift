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
    var recipients: [QueueRecipient] = []

    init(message: Message, queue: DestQueue) {
        self.message = message
        self.queue = queue
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
    var todo: [Entry] = []
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
    /// Destination names in the order they were made (round-robin over ready queues).
    var queueOrder: [String] = []
    var nextQueue = 0
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
    }

    var throttled: Bool { deadReason != nil }

    func queue(named qname: String, nexthop: String) -> DestQueue {
        if let q = queues[qname] { return q }
        let q = DestQueue(name: qname, nexthop: nexthop, transport: self)
        queues[qname] = q
        queueOrder.append(qname)
        return q
    }

    /// Forgets a destination that has nothing to do and is not dead.
    func retire(_ q: DestQueue) {
        guard q.todo.isEmpty, q.busy == 0, !q.throttled else { return }
        queues.removeValue(forKey: q.name)
        if let i = queueOrder.firstIndex(of: q.name) {
            queueOrder.remove(at: i)
            if nextQueue > i { nextQueue -= 1 }
        }
    }

    /// How many more deliveries could start now (ready destinations' free slots).
    func wantedConnections(now: UInt64) -> Int {
        if throttled { return 0 }
        var n = 0
        for q in queues.values where q.ready && !q.todo.isEmpty && q.nextStart <= now {
            n += min(q.window - q.busy, q.todo.count)
        }
        return n
    }

    /// The next entry to deliver, round-robin over ready destinations.
    func selectEntry(now: UInt64) -> Entry? {
        guard !throttled, !queueOrder.isEmpty else { return nil }
        for k in 0..<queueOrder.count {
            let i = (nextQueue + k) % queueOrder.count
            guard let q = queues[queueOrder[i]], q.ready, q.nextStart <= now, !q.todo.isEmpty else { continue }
            nextQueue = (i + 1) % max(queueOrder.count, 1)
            let e = q.todo.removeFirst()
            q.busy += 1
            q.updateCacheFlags(now: time(nil))
            if rateDelay > 0 { q.nextStart = now + UInt64(rateDelay) * 1_000_000_000 }
            return e
        }
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
