// On-demand connection caching as the queue manager asks for it (qmgr_entry_select):
// turned on by back-to-back deliveries to a destination, kept while deliveries are
// concurrent or back to back, and then reduced to "use what is cached, store nothing".
import Glibc
import Testing
import MailGlobal
@testable import QmgrCore

@Suite struct CacheFlagsTests {
    func queue() -> DestQueue {
        let config = MailConfig(configDirectory: "/etc/postfix", entries: ConfigEntries(), processName: "qmgr")
        return DestQueue(name: "example.com", nexthop: "example.com", transport: Transport(name: "smtp", config: config))
    }

    @Test func firstDeliveryAsksForNothing() {
        let q = queue()
        q.busy = 1
        q.updateCacheFlags(now: 1000)
        #expect(q.cacheFlags.isEmpty)
    }

    @Test func concurrencyAloneDoesNotTurnCachingOn() {
        let q = queue()
        q.lastDone = 900
        q.busy = 5
        q.updateCacheFlags(now: 1000)
        #expect(q.cacheFlags.isEmpty)
    }

    @Test func backToBackTurnsItOnAndItFadesToLoadOnly() {
        let q = queue()
        q.lastDone = 1000
        q.busy = 1
        q.updateCacheFlags(now: 1001)
        #expect(q.cacheFlags == [.connLoad, .connStore])
        // Still concurrent: stays on.
        q.busy = 2
        q.updateCacheFlags(now: 1010)
        #expect(q.cacheFlags == [.connLoad, .connStore])
        // Neither concurrent nor back to back: cached sessions are used, none stored.
        q.busy = 1
        q.updateCacheFlags(now: 1010)
        #expect(q.cacheFlags == [.connLoad])
        // Back to back again: storing resumes.
        q.lastDone = 1020
        q.updateCacheFlags(now: 1020)
        #expect(q.cacheFlags == [.connLoad, .connStore])
    }
}
