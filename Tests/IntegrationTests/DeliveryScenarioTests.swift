// The delivery scenarios (DeliveryScenarios/*.scenario): mail submitted over SMTP and
// delivered by our qmgr, local, bounce, error and discard (mailboxes, Maildirs, aliases,
// .forward, files, commands, bounces, retries and expiry); the log lines and the mail
// that arrived must equal what the reference Postfix 3.7 programs produced. When the
// reference is unpacked, it runs too and must still match the recording.
import Foundation
import Testing

@Suite struct DeliveryScenarioTests {
    @Test func deliveriesMatchTheReference() throws {
        guard geteuid() == 0 else {
            print("skipped: the delivery scenarios need root (test accounts, delivery as their users)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("DeliveryScenarios")
        var args = [here.path + "/deliveries.py", Instance.buildDirectory]
        if let ref = Instance.reference { args += ["--reference", ref] }
        let r = Instance.run("/usr/bin/python3", args)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(" scenarios, 0 differences"), "\(r.stdout)")
    }
}
