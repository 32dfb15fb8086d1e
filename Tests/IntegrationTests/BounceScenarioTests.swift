// The bounce scenarios (BounceScenarios/*.scenario): requests to our bounce, defer and
// trace services for a message received over SMTP, and their transcripts (logfiles,
// replies, every notification posted, the queue file's recipients, the log) must equal
// the ones recorded from the reference Postfix 3.7 bounce daemon. When the reference is
// unpacked, it runs too and must still match the recording.
import Foundation
import Testing

@Suite struct BounceScenarioTests {
    @Test func bounceNoticesMatchTheReference() throws {
        guard geteuid() == 0 else {
            print("skipped: the bounce scenarios need root (the postfix user, the queue's private sockets)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("BounceScenarios")
        var args = [here.path + "/bounces.py", Instance.buildDirectory]
        if let ref = Instance.reference { args += ["--reference", ref] }
        let r = Instance.run("/usr/bin/python3", args)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(" scenarios, 0 differences"), "\(r.stdout)")
    }
}
