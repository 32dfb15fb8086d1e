import Testing
import Glibc
@testable import MailUtil

@Suite struct MsgTests {
    @Test func levelPrefixes() {
        #expect(MsgLevel.info.prefix == "")
        #expect(MsgLevel.warn.prefix == "warning: ")
        #expect(MsgLevel.error.prefix == "error: ")
        #expect(MsgLevel.fatal.prefix == "fatal: ")
        #expect(MsgLevel.panic.prefix == "panic: ")
    }

    @Test func fileOutputLineFormat() throws {
        let path = "/tmp/swallow-msg-\(getpid()).log"
        defer { unlink(path) }
        let out = try FileMsgOutput(path: path, tag: "postfix/smtpd", host: "mail")
        out.emit(.warn, "hello world")
        out.emit(.info, "connect from x[1.2.3.4]")
        let text = String(decoding: try SafeFile.read(path), as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        // "Mmm dd hh:mm:ss mail postfix/smtpd[PID]: warning: hello world"
        let stamp = lines[0].prefix(15)
        #expect(stamp.count == 15 && stamp.dropFirst(3).first == " " && stamp.dropFirst(9).first == ":")
        #expect(lines[0].dropFirst(16) == "mail postfix/smtpd[\(getpid())]: warning: hello world")
        #expect(lines[1].hasSuffix("]: connect from x[1.2.3.4]"))
    }

    @Test func syslogFacilityNames() {
        #expect(SyslogMsgOutput.facility(named: "mail") == LOG_MAIL)
        #expect(SyslogMsgOutput.facility(named: "LOCAL3") == LOG_LOCAL3)
        #expect(SyslogMsgOutput.facility(named: "nonsense") == nil)
    }
}
