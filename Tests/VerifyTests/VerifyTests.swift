// The verify server's cache policy (verify.c): what a query answers, when it sends a
// probe, what an update stores, and what the cleanup sweep drops.
import Testing
import MailGlobal
@testable import VerifyCore

@Suite struct VerifyTests {
    final class World {
        let verify: Verify
        var probes: [String] = []
        var clock = 1_000_000

        init(_ settings: [String: String] = [:]) {
            var entries = ConfigEntries()
            for (k, v) in settings { entries[k] = v }
            let config = MailConfig(configDirectory: "/etc/postfix", entries: entries, processName: "verify")
            verify = Verify(config: config, cache: VerifyCache(dict: nil))
            verify.post = { [unowned self] a in self.probes.append(a); return true }
            verify.now = { [unowned self] in self.clock }
        }
        var cache: [String: String] { verify.cache.memory }
    }

    @Test func anUnknownAddressIsProbedOnce() {
        let w = World()
        let e = w.verify.query("bob@example.com")
        #expect(e.status == VerifyStatus.todo.rawValue)
        #expect(e.text == "Address verification in progress")
        #expect(w.probes == ["bob@example.com"])
        #expect(w.cache["bob@example.com"] == "3:1000000:0:Address verification in progress")
        // Asked again while the probe is out: no second probe.
        w.clock += 10
        #expect(w.verify.query("bob@example.com").status == VerifyStatus.todo.rawValue)
        #expect(w.probes.count == 1)
        // After PROBE_TTL (1000 s) without an answer, another probe goes.
        w.clock += 1000
        _ = w.verify.query("bob@example.com")
        #expect(w.probes.count == 2)
    }

    @Test func withoutNegativeCachingNothingIsStoredForAProbe() {
        let w = World(["address_verify_negative_cache": "no"])
        _ = w.verify.query("bob@example.com")
        #expect(w.probes == ["bob@example.com"])
        #expect(w.cache.isEmpty)
    }

    @Test func anUpdateIsTheNextAnswer() {
        let w = World()
        _ = w.verify.query("bob@example.com")
        w.clock += 5
        w.verify.update("bob@example.com", status: VerifyStatus.ok.rawValue, text: "delivers to mailbox")
        #expect(w.cache["bob@example.com"] == "0:0:1000005:delivers to mailbox")
        let e = w.verify.query("bob@example.com")
        #expect(e.status == 0 && e.text == "delivers to mailbox")
        #expect(w.probes.count == 1)
    }

    @Test func aFailureDoesNotReplaceAGoodAddress() {
        let w = World()
        w.verify.update("bob@example.com", status: VerifyStatus.ok.rawValue, text: "ok")
        w.verify.update("bob@example.com", status: VerifyStatus.bounced.rawValue, text: "unknown user")
        #expect(w.verify.query("bob@example.com").status == VerifyStatus.ok.rawValue)
        // A bad address can become good.
        w.verify.update("carol@example.com", status: VerifyStatus.bounced.rawValue, text: "unknown user")
        w.verify.update("carol@example.com", status: VerifyStatus.ok.rawValue, text: "ok")
        #expect(w.verify.query("carol@example.com").status == VerifyStatus.ok.rawValue)
    }

    @Test func refreshAndExpiry() {
        let w = World(["address_verify_negative_refresh_time": "1h", "address_verify_negative_expire_time": "1d",
                       "address_verify_positive_refresh_time": "2d", "address_verify_positive_expire_time": "5d"])
        w.verify.update("bad@example.com", status: VerifyStatus.bounced.rawValue, text: "unknown user")
        w.verify.update("good@example.com", status: VerifyStatus.ok.rawValue, text: "ok")
        // Fresh: answered from the cache, no probe.
        w.clock += 3000
        #expect(w.verify.query("bad@example.com").status == VerifyStatus.bounced.rawValue)
        #expect(w.probes.isEmpty)
        // Past the refresh time: still the cached answer, and a probe.
        w.clock += 1000
        #expect(w.verify.query("bad@example.com").status == VerifyStatus.bounced.rawValue)
        #expect(w.probes == ["bad@example.com"])
        w.clock += 2 * 86400 + 10
        #expect(w.verify.query("good@example.com").status == VerifyStatus.ok.rawValue)
        #expect(w.probes == ["bad@example.com", "good@example.com"])
        // Past the expiry: unknown again.
        #expect(w.verify.query("bad@example.com").status == VerifyStatus.todo.rawValue)
        w.clock += 3 * 86400
        #expect(w.verify.query("good@example.com").status == VerifyStatus.todo.rawValue)
    }

    @Test func theSweepDropsExpiredAndMalformedEntries() {
        let w = World(["address_verify_negative_expire_time": "1d"])
        w.verify.update("old@example.com", status: VerifyStatus.bounced.rawValue, text: "unknown user")
        w.clock += 86400 + 1
        w.verify.update("new@example.com", status: VerifyStatus.bounced.rawValue, text: "unknown user")
        w.verify.cache.update("junk@example.com", "not an entry")
        let r = w.verify.sweep()
        #expect(r.retained == 1 && r.dropped == 2)
        #expect(Array(w.cache.keys) == ["new@example.com"])
    }

    @Test func entriesParseAsPostfixWritesThem() {
        #expect(VerifyEntry("0:0:1700000000:250 2.1.5 Ok: a:b") ==
                VerifyEntry(status: 0, probed: 0, updated: 1_700_000_000, text: "250 2.1.5 Ok: a:b"))
        #expect(VerifyEntry("4:0:0:x") == nil)
        #expect(VerifyEntry("0:0:x") == nil)
    }
}
