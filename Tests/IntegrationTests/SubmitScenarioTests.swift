// The submission cases (SubmitScenarios/submit.py): our sendmail and postdrop against
// the recording made from the reference Postfix 3.7's (arguments, record streams,
// maildrop files, messages and exit codes); when the reference is unpacked it runs too
// and must still match the recording.
import Foundation
import Testing

@Suite struct SubmitScenarioTests {
    @Test func sendmailAndPostdropMatchTheReference() throws {
        guard geteuid() == 0 else {
            print("skipped: the submission cases need root (queue directories owned by postfix)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("SubmitScenarios")
        var args = [here.path + "/submit.py", Instance.buildDirectory]
        if let ref = Instance.reference { args += ["--reference", ref] }
        let r = Instance.run("/usr/bin/python3", args)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(" cases, 0 differences"), "\(r.stdout)")
    }
}
