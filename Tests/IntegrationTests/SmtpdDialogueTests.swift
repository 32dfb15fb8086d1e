// The smtpd dialogue scenarios (SmtpdDialogues/*.dialogue): each runs against our smtpd,
// with DNS answers from a loopback server of the test's own, and its transcript (replies
// and smtpd's log lines) must equal the one recorded from the reference Postfix 3.7
// smtpd. When the reference is unpacked, it runs beside ours and must still match the
// recording, so a stale recording cannot pass unnoticed.
import Foundation
import Testing

@Suite struct SmtpdDialogueTests {
    @Test func dialoguesMatchTheReference() throws {
        guard geteuid() == 0 else {
            print("skipped: the dialogue scenarios need root (port 53 on loopback, mount namespaces, the postfix user)")
            return
        }
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("SmtpdDialogues")
        var args = [here.path + "/dialogues.py", Instance.buildDirectory]
        if let ref = Instance.reference { args += ["--reference", ref] }
        let r = Instance.run("/usr/bin/python3", args)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(" scenarios, 0 differences"), "\(r.stdout)")
    }
}
