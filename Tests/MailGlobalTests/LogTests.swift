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
}
