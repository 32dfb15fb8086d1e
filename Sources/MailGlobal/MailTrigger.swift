// MailTrigger: fire-and-forget wakeups of trigger servers (qmgr, pickup, flush).
// Mirrors Postfix global/mail_trigger.c with util/unix_trigger.c and fifo_trigger.c:
// the service is looked up first (a FIFO or a UNIX socket), the request bytes are
// written, and the connection is closed; a service that is not running is reported but
// is not an error for the caller.
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
        var st = stat()
        if stat(path, &st) < 0 {
            Msg.warn("unable to look up \(path): \(errnoText(errno))")
            return false
        }
        switch st.st_mode & S_IFMT {
        case S_IFIFO:
            let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if fd < 0 {
                Msg.debug("trigger \(path): \(errnoText(errno))")
                return false
            }
            defer { close(fd) }
            return writeAll(fd, bytes)
        case S_IFSOCK:
            guard let fd = try? UnixSocket.connect(path, timeout: timeout) else {
                Msg.debug("trigger \(path): cannot connect")
                return false
            }
            defer { close(fd) }
            return writeAll(fd, bytes)
        default:
            Msg.warn("\(path) is not a socket or a fifo")
            return false
        }
    }
}
