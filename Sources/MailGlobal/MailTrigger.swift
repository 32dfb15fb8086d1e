// MailTrigger: fire-and-forget wakeups of trigger servers (qmgr, pickup, flush).
// Mirrors Postfix global/mail_trigger.c with util/unix_trigger.c: connect, write the
// request bytes, close; a server that is not running is not an error for the caller.
import Glibc
import MailUtil

public enum MailTrigger {
    public static let wakeup: UInt8 = UInt8(ascii: "W")

    /// Sends `bytes` to CLASS/SERVICE (relative to the queue directory); false when the
    /// service could not be reached.
    @discardableResult
    public static func send(serviceClass: String, service: String, _ bytes: [UInt8] = [wakeup],
                            timeout: Int = 10) -> Bool {
        let path = "\(serviceClass)/\(service)"
        guard let fd = try? UnixSocket.connect(path, timeout: timeout) else {
            Msg.debug("trigger \(path): cannot connect")
            return false
        }
        defer { close(fd) }
        return writeAll(fd, bytes)
    }
}
