// MailFlow: the master's flow pipe (fds 3 and 4), tokens that the queue manager puts
// in as it takes mail from the incoming queue and that cleanup takes out, one per
// connection; a cleanup that finds none waits in_flow_delay before it serves, so that
// mail arriving faster than it is delivered is slowed down but never refused.
// Mirrors Postfix global/mail_flow.c.
import Glibc
import MailUtil

public enum MailFlow {
    /// Takes `count` tokens; false when fewer were there (those are taken anyway).
    @discardableResult
    public static func get(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        var buf = [UInt8](repeating: 0, count: min(count, 1024))
        var got = 0
        while got < count {
            let n = buf.withUnsafeMutableBytes { read(MasterStatus.flowReadFD, $0.baseAddress, min(count - got, $0.count)) }
            if n <= 0 { break }
            got += n
        }
        return got == count
    }

    /// Adds `count` tokens; false when the pipe would not take them all.
    @discardableResult
    public static func put(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        let buf = [UInt8](repeating: 0, count: min(count, 1024))
        var done = 0
        while done < count {
            let n = buf.withUnsafeBytes { write(MasterStatus.flowWriteFD, $0.baseAddress, min(count - done, $0.count)) }
            if n <= 0 { break }
            done += n
        }
        return done == count
    }

    /// The tokens in the pipe, or -1 when there is no flow pipe.
    public static func count() -> Int {
        var n: Int32 = 0
        return ioctl(MasterStatus.flowReadFD, UInt(FIONREAD), &n) < 0 ? -1 : Int(n)
    }
}
