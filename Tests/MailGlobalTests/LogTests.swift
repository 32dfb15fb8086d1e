// Log records as Postfix formats them.
import Testing
import Glibc
import MailGlobal
import MailUtil

@Suite struct LogTests {
    @Test func controlCharactersBecomeQuestionMarks() {
        #expect(Msg.printable("plain text") == "plain text")
        #expect(Msg.printable("a\tb\u{1}c") == "a?b?c")
        #expect(Msg.printable("caf\u{E9} \u{FFFD}") == "caf\u{E9} ?")
    }

    @Test func recordShape() {
        let out = PostlogMsgOutput(socketPath: "/nonexistent", tag: "postfix/smtpd", host: "mail")
        let text = String(decoding: out.format(.warn, String(repeating: "x", count: 3000)), as: UTF8.self)
        #expect(text.hasSuffix(": warning: " + String(repeating: "x", count: 2000)))
        #expect(text.contains(" mail postfix/smtpd[\(getpid())]: "))
        #expect(MailLog.shortHostname("mail.example.com") == "mail")
    }

    /// A postlogd that does not read (stopped, or not started) must not hang the
    /// program that logs: after a short wait the records go to the file instead.
    @Test func fullPostlogSocketDoesNotBlock() throws {
        let dir = "/tmp/swallow-log-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        mkdir(dir, 0o755)
        defer {
            unlink(dir + "/postlog"); unlink(dir + "/maillog"); rmdir(dir)
        }
        // A datagram socket nobody reads.
        let listener = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(listener) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let path = Array((dir + "/postlog").utf8)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        let out = PostlogMsgOutput(socketPath: dir + "/postlog", tag: "postfix/master", host: "mail",
                                   fallbackFile: dir + "/maillog")
        let start = time(nil)
        for i in 0..<3000 { out.emit(.info, "record \(i)") }
        #expect(time(nil) - start < 10, "logging did not block")
        let file = (try? String(contentsOfFile: dir + "/maillog", encoding: .utf8)) ?? ""
        #expect(file.contains("record 2999"), "the records that found no room are in the file")
    }
}
