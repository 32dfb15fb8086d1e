// Killing qmgr and local processes in the middle of a run (DeliveryScenarios/crashes.py):
// every message is delivered exactly once, nothing is left in the queue, and pflogsumm
// reads the log.
import Foundation
import Testing

@Suite struct CrashTests {
    @Test func killedDaemonsLoseNothingAndDeliverNothingTwice() throws {
        guard geteuid() == 0 else {
            print("skipped: the crash test needs root (the postfix user, delivery as other users)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("DeliveryScenarios")
        let r = Instance.run("/usr/bin/python3", [here.path + "/crashes.py", Instance.buildDirectory])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.hasSuffix("ok\n"), "\(r.stdout)")
    }
}
