// Msg: diagnostics with Postfix's vocabulary (info, warn, error, fatal, panic).
// Mirrors Postfix util/msg.c, msg_output.c, msg_vstream.c, msg_syslog.c and msg_logger.c.
// Every line goes to each configured output: standard error ("prog: warning: text"), syslog
// through /dev/log (tag "postfix/smtpd", LOG_PID), or a log file in the format Postfix's
// postlogd writes ("Mmm dd hh:mm:ss host postfix/smtpd[pid]: text").
import Glibc
import CShim

/// Severity of a diagnostic; the raw value orders them.
public enum MsgLevel: Int, Sendable, Comparable {
    case info, warn, error, fatal, panic

    /// The text Postfix puts before the message ("warning: " ...).
    public var prefix: String {
        switch self {
        case .info: return ""
        case .warn: return "warning: "
        case .error: return "error: "
        case .fatal: return "fatal: "
        case .panic: return "panic: "
        }
    }

    var syslogPriority: Int32 {
        switch self {
        case .info: return LOG_INFO
        case .warn: return LOG_WARNING
        case .error: return LOG_ERR
        case .fatal, .panic: return LOG_CRIT
        }
    }

    public static func < (a: MsgLevel, b: MsgLevel) -> Bool { a.rawValue < b.rawValue }
}

/// Where diagnostics go. Implementations must not call `Msg` themselves.
public protocol MsgOutput: AnyObject {
    func emit(_ level: MsgLevel, _ text: String)
}

/// Standard error, as Postfix's msg_vstream: "tag: warning: text".
public final class StderrMsgOutput: MsgOutput {
    public let tag: String
    public init(tag: String) { self.tag = tag }
    public func emit(_ level: MsgLevel, _ text: String) {
        writeAll(2, Array("\(tag): \(level.prefix)\(text)\n".utf8))
    }
}

/// syslog(3) through /dev/log with the given tag, as Postfix's msg_syslog.
public final class SyslogMsgOutput: MsgOutput {
    private let ident: UnsafeMutablePointer<CChar>     // openlog keeps the pointer
    private let facility: Int32

    /// The identity openlog(3) currently has, restored after a relayed record.
    nonisolated(unsafe) static var current: (ident: UnsafeMutablePointer<CChar>, facility: Int32)?

    public init(tag: String, facility: Int32 = LOG_MAIL) {
        ident = strdup(tag)
        self.facility = facility
        cshim_openlog(ident, LOG_PID | LOG_NDELAY, facility)
        SyslogMsgOutput.current = (ident, facility)
    }

    /// Logs `text` under a foreign tag that already carries its pid ("postfix/smtpd[123]"),
    /// as postlogd does when it passes records on to syslog.
    public static func relay(tag: String, _ text: String, facility: Int32 = LOG_MAIL) {
        let id = strdup(tag)
        cshim_openlog(id, LOG_NDELAY, facility)
        cshim_syslog(LOG_INFO | facility, text)
        if let c = current {
            cshim_openlog(c.ident, LOG_PID | LOG_NDELAY, c.facility)
        } else {
            closelog()
        }
        free(id)
    }

    /// Maps a `syslog_facility` name ("mail", "local0", ...) to its value.
    public static func facility(named name: String) -> Int32? {
        let table: [String: Int32] = [
            "auth": LOG_AUTH, "authpriv": LOG_AUTHPRIV, "cron": LOG_CRON, "daemon": LOG_DAEMON,
            "ftp": LOG_FTP, "kern": LOG_KERN, "lpr": LOG_LPR, "mail": LOG_MAIL, "news": LOG_NEWS,
            "security": LOG_AUTH, "syslog": LOG_SYSLOG, "user": LOG_USER, "uucp": LOG_UUCP,
            "local0": LOG_LOCAL0, "local1": LOG_LOCAL1, "local2": LOG_LOCAL2, "local3": LOG_LOCAL3,
            "local4": LOG_LOCAL4, "local5": LOG_LOCAL5, "local6": LOG_LOCAL6, "local7": LOG_LOCAL7,
        ]
        return table[name.lowercased()]
    }

    public func emit(_ level: MsgLevel, _ text: String) {
        cshim_syslog(level.syslogPriority | facility, level.prefix + text)
    }
}

/// A log file written directly, one line per message, in the format of Postfix's
/// `maillog_file`: "Mmm dd hh:mm:ss host tag[pid]: text" (local time, no year).
/// Lines are appended with O_APPEND in a single write(2), so concurrent writers interleave
/// only whole lines.
public final class FileMsgOutput: MsgOutput {
    private let fd: Int32
    private let tag: String
    private let host: String

    /// Opens (creating with mode 0600) the file; throws when it cannot.
    public init(path: String, tag: String, host: String) throws {
        let fd = retryingEINTR { open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600) }
        if fd < 0 { throw SystemError.current("open \(path)") }
        self.fd = fd
        self.tag = tag
        self.host = host
    }

    deinit { close(fd) }

    public func emit(_ level: MsgLevel, _ text: String) {
        let line = "\(FileMsgOutput.timestamp(time(nil))) \(host) \(tag)[\(getpid())]: \(level.prefix)\(text)\n"
        writeAll(fd, Array(line.utf8))
    }

    /// "%b %d %H:%M:%S" in local time.
    public static func timestamp(_ t: time_t) -> String {
        var when = t
        var tmv = tm()
        localtime_r(&when, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        let n = strftime(&buf, buf.count, "%b %d %H:%M:%S", &tmv)
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Writes all bytes, retrying short writes and EINTR; false (errno set) on error,
/// which diagnostics ignore (a message about a failing diagnostic channel would have
/// nowhere to go).
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { raw in
        var off = 0
        while off < raw.count {
            let n = write(fd, raw.baseAddress! + off, raw.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            off += n
        }
        return true
    }
}

/// The process-wide diagnostics facility. Configure once at start-up; not thread-safe,
/// as daemons are single-threaded.
public enum Msg {
    nonisolated(unsafe) public static var outputs: [MsgOutput] = []
    /// Verbosity from -v flags (0 = quiet).
    nonisolated(unsafe) public static var verbose = 0
    /// After this many `error` calls the process gives up, as Postfix's msg_error_limit.
    nonisolated(unsafe) public static var errorLimit = 13
    nonisolated(unsafe) public private(set) static var errorCount = 0
    /// Called once before a fatal exit (e.g. to remove a half-written queue file).
    nonisolated(unsafe) public static var cleanup: (() -> Void)?
    /// Postfix sleeps a second before a fatal exit so that a crashing daemon cannot spin;
    /// daemons keep that, command-line tools turn it off.
    nonisolated(unsafe) public static var sleepBeforeFatalExit = true
    nonisolated(unsafe) private static var exiting = false

    /// Replaces all outputs with standard error, tagged as Postfix tags it (argv[0]).
    public static func initStderr(tag: String) {
        outputs = [StderrMsgOutput(tag: tag)]
    }

    public static func info(_ text: @autoclosure () -> String) { emit(.info, text()) }
    public static func warn(_ text: @autoclosure () -> String) { emit(.warn, text()) }

    public static func error(_ text: @autoclosure () -> String) {
        emit(.error, text())
        errorCount += 1
        if errorCount >= errorLimit {
            fatal("too many errors - program terminated")
        }
    }

    public static func fatal(_ text: @autoclosure () -> String) -> Never {
        exit(status: 1, level: .fatal, text())
    }

    /// Like `fatal` but with a chosen exit status (Postfix's msg_fatal_status).
    public static func fatal(status: Int32, _ text: @autoclosure () -> String) -> Never {
        exit(status: status, level: .fatal, text())
    }

    public static func panic(_ text: @autoclosure () -> String) -> Never {
        if !exiting {
            exiting = true
            emit(.panic, text())
        }
        abort()
    }

    /// Emits a record of any severity without the side effects (a "fatal" record does
    /// not end the process), as postlog -p does.
    public static func record(_ level: MsgLevel, _ text: String) { emit(level, text) }

    /// Logs only when running verbosely (-v).
    public static func debug(_ text: @autoclosure () -> String) {
        if verbose > 0 { emit(.info, text()) }
    }

    private static func exit(status: Int32, level: MsgLevel, _ text: String) -> Never {
        if !exiting {
            exiting = true
            emit(level, text)
            cleanup?()
        }
        if sleepBeforeFatalExit { sleep(1) }
        _exit(status)
    }

    private static func emit(_ level: MsgLevel, _ text: String) {
        let clean = printable(text)
        for out in outputs { out.emit(level, clean) }
    }

    /// Replaces control characters and undecodable bytes with "?", as Postfix's
    /// msg_vprintf does before any output sees the text.
    public static func printable(_ text: String) -> String {
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return text }
        var out = String.UnicodeScalarView()
        for u in text.unicodeScalars {
            if u.value < 0x20 || u.value == 0x7F || (u.value >= 0x80 && u.value < 0xA0) || u == "\u{FFFD}" {
                out.append("?")
            } else {
                out.append(u)
            }
        }
        return String(out)
    }
}
