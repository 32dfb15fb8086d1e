// The queue administration cases (QueueScenarios/queue.py): showq, postqueue, postsuper and
// postcat on a queue with mail in every state, ours against the reference Postfix 3.7's on
// the same files when it is unpacked, our programs alone (with checks of their output)
// when it is not.
import Foundation
import Testing

@Suite struct QueueScenarioTests {
    @Test func queueToolsMatchTheReference() throws {
        guard geteuid() == 0 else {
            print("skipped: the queue cases need root (queue directories owned by postfix, users switched)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("QueueScenarios")
        var args = [here.path + "/queue.py", Instance.buildDirectory]
        if let ref = Instance.reference { args += ["--reference", ref] } else {
            print("note: reference Postfix unavailable; the queue cases run our programs only")
        }
        let r = Instance.run("/usr/bin/python3", args)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(" differences") && r.stdout.contains(", 0 differences"), "\(r.stdout)")
    }
}
