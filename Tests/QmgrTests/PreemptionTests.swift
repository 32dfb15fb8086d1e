// The nqmgr job scheduler (qmgr_job.c): jobs in the order their messages entered the
// active queue, a small message preempting a big one once the big one has earned
// delivery slots, jobs whose destinations are busy passed over as blockers.
import Glibc
import Testing
import MailGlobal
@testable import QmgrCore

@Suite struct PreemptionTests {
    final class World {
        let transport: Transport
        var messages: [Message] = []

        init(_ settings: [String: String] = [:]) {
            var entries = ConfigEntries()
            for (k, v) in settings { entries[k] = v }
            let config = MailConfig(configDirectory: "/etc/postfix", entries: entries, processName: "qmgr")
            transport = Transport(name: "smtp", config: config)
        }

        /// A message that entered the active queue at `arrived`, with `entries` entries
        /// (one recipient each) for `destination`.
        @discardableResult
        func message(_ name: String, arrived: Int, entries: Int, destination: String = "example.com",
                     unread: Int = 0) -> Message {
            var info = QueueMessage()
            info.recipientCount = entries + unread
            let m = Message(queueID: name, qid: QueueID("1E24012D687")!, fromQueue: "incoming", info: info)
            m.activeArrival.tv_sec = time_t(arrived)
            if unread > 0 { m.resumeOffset = 1 }
            let q = transport.queue(named: destination, nexthop: destination)
            for i in 0..<entries {
                let e = transport.makeEntry(m, q)
                e.recipients.append(QueueRecipient(offset: i, address: "r\(i)@\(destination)"))
                m.refcount += 1
            }
            m.recipientsRead = entries
            messages.append(m)
            return m
        }

        func queue(_ name: String = "example.com") -> DestQueue {
            transport.queue(named: name, nexthop: name)
        }

        /// Selects up to `n` entries and names the message of each; entries do not finish.
        func select(_ n: Int) -> [String] {
            var out: [String] = []
            for _ in 0..<n {
                guard let e = transport.selectEntry(now: 0) else { break }
                out.append(e.message.queueID)
            }
            return out
        }

        /// The entry finishes: its destination has room again.
        func finish(_ e: Entry) {
            e.queue.busy -= 1
            e.message.refcount -= 1
            transport.entryDone(e)
        }
    }

    @Test func withoutCompetitionJobsGoInArrivalOrder() {
        let w = World()
        w.queue().window = 1000
        w.message("A", arrived: 100, entries: 3)
        w.message("B", arrived: 90, entries: 2)
        // B entered the active queue first, so its job comes first.
        #expect(w.select(10) == ["B", "B", "A", "A", "A"])
    }

    @Test func aSmallMessagePreemptsABigOne() {
        let w = World()
        w.queue().window = 1000
        w.message("BIG", arrived: 100, entries: 100)
        w.message("SMALL", arrived: time(nil) - 10, entries: 1)
        let order = w.select(6)
        // BIG earns one slot with its first delivery; with the slot loan that is enough
        // for a one-recipient job.
        #expect(order == ["BIG", "SMALL", "BIG", "BIG", "BIG", "BIG"])
    }

    @Test func preemptionCostsTheBigJobItsSlots() {
        let w = World()
        w.queue().window = 1000
        let big = w.message("BIG", arrived: 100, entries: 100)
        // Three 5-entry jobs: each needs 5 entries, so 5 * 50% = 2.5 slots with the loan
        // of 3 covers the first; after paying 25 slots BIG must earn them back first.
        w.message("S1", arrived: 200, entries: 5)
        w.message("S2", arrived: 201, entries: 5)
        w.message("S3", arrived: 202, entries: 5)
        let order = w.select(40)
        #expect(order.count == 40)
        let firstSmall = order.firstIndex { $0 != "BIG" }!
        #expect(firstSmall == 1)
        #expect(Array(order[1...5]) == Array(repeating: order[1], count: 5))
        // After the first preemption BIG is in debt: the second small job must wait
        // until BIG has delivered enough entries to pay for it.
        let secondSmall = order[6...].firstIndex { $0 != "BIG" && $0 != order[1] }!
        #expect(secondSmall > 6)
        #expect(big.jobs.first!.slotsUsed > 0)
    }

    @Test func aJobTooSmallToEarnSlotsIsNotPreempted() {
        let w = World()
        w.queue().window = 1000
        // 10 entries < minimum_delivery_slots (3) * delivery_slot_cost (5).
        w.message("MID", arrived: 100, entries: 10)
        w.message("SMALL", arrived: time(nil), entries: 1)
        #expect(w.select(11) == Array(repeating: "MID", count: 10) + ["SMALL"])
    }

    @Test func unreadRecipientsCountTowardsTheSize() {
        let w = World()
        w.queue().window = 1000
        // Only 10 entries in memory, but 990 more recipients in the file.
        w.message("BIG", arrived: 100, entries: 10, unread: 990)
        w.message("SMALL", arrived: time(nil), entries: 1)
        #expect(w.select(3) == ["BIG", "SMALL", "BIG"])
    }

    @Test func slotCostOneTurnsPreemptionOff() {
        let w = World(["default_delivery_slot_cost": "1"])
        w.queue().window = 1000
        w.message("BIG", arrived: 100, entries: 100)
        w.message("SMALL", arrived: time(nil), entries: 1)
        let order = w.select(101)
        #expect(order.last == "SMALL")
        #expect(order.dropLast().allSatisfy { $0 == "BIG" })
    }

    @Test func aPerTransportSlotCostIsHonoured() {
        let w = World(["smtp_delivery_slot_cost": "1"])
        w.queue().window = 1000
        w.message("BIG", arrived: 100, entries: 30)
        w.message("SMALL", arrived: time(nil), entries: 1)
        #expect(w.select(31).last == "SMALL")
    }

    @Test func aJobWhoseDestinationIsBusyIsPassedOver() {
        let w = World()
        w.queue("slow.example").window = 1
        w.queue("fast.example").window = 10
        w.message("A", arrived: 100, entries: 3, destination: "slow.example")
        w.message("B", arrived: 101, entries: 2, destination: "fast.example")
        var picked: [Entry] = []
        for _ in 0..<4 {
            if let e = w.transport.selectEntry(now: 0) { picked.append(e) }
        }
        // A gets one delivery (its destination's window is 1); B is not held up by it.
        #expect(picked.map { $0.message.queueID } == ["A", "B", "B"])
        // When A's delivery ends, the blocked job is looked at again.
        w.finish(picked[0])
        #expect(w.transport.selectEntry(now: 0)?.message.queueID == "A")
    }

    @Test func aJobRoundRobinsOverItsDestinations() {
        let w = World()
        w.queue("one.example").window = 10
        w.queue("two.example").window = 10
        let m = w.message("A", arrived: 100, entries: 2, destination: "one.example")
        let q2 = w.queue("two.example")
        for i in 0..<2 {
            let e = w.transport.makeEntry(m, q2)
            e.recipients.append(QueueRecipient(offset: 10 + i, address: "r\(i)@two.example"))
        }
        var names: [String] = []
        for _ in 0..<4 {
            if let e = w.transport.selectEntry(now: 0) { names.append(e.queue.name) }
        }
        #expect(names == ["one.example", "two.example", "one.example", "two.example"])
    }

    @Test func aFinishedJobLeavesTheListAndTheStack() {
        let w = World()
        w.queue().window = 1000
        let big = w.message("BIG", arrived: 100, entries: 20)
        let small = w.message("SMALL", arrived: time(nil), entries: 1)
        #expect(w.select(2) == ["BIG", "SMALL"])
        // SMALL's only entry was selected: its job is retired and off BIG's stack.
        let sj = small.jobs.first!
        #expect(sj.stackLevel == -1)
        #expect(big.jobs.first!.stackChildren.isEmpty)
        #expect(w.transport.jobHead === big.jobs.first!)
        #expect(w.select(100).count == 19)
    }
}
