// MailLog: where a mail program's diagnostics go.
// Mirrors Postfix global/maillog_client.c, mail_task.c and util/msg_logger.c. A program is
// in one of two modes: syslog (tag "<syslog_name>/<program>", syslog_facility), or, when
// maillog_file is set, postlog mode: each record is formatted here and sent as one
// datagram to the postlog service, whose postlogd appends it to the file. Before main.cf is
// read the mode comes from the environment ($POSTLOG_SERVICE, $POSTLOG_HOSTNAME, which a
// program in postlog mode exports for its children). master, postfix and postlog append
// to the file themselves when the service cannot be reached; daemons do not.
import Glibc
import CShim
import MailUtil

public enum MailLog {
    public static let serviceEnvironment = "POSTLOG_SERVICE"
    public static let hostnameEnvironment = "POSTLOG_HOSTNAME"
    /// The host name in records written before myhostname is known.
    public static let unknownHost = "amnesiac"

    /// The tag used before main.cf is read: $MAIL_LOGTAG (or "postfix") + "/" + program.
    public static func earlyTag(program: String) -> String {
        let base = getenv("MAIL_LOGTAG").map { String(cString: $0) } ?? "postfix"
        return base + "/" + program
    }

    /// A set-gid (or set-uid) program does not take the logging service, host name or time
    /// zone from its caller's environment.
    public static func dropCallerLoggingEnvironment() {
        guard getgid() != getegid() || getuid() != geteuid() else { return }
        for name in [serviceEnvironment, hostnameEnvironment, "TZ"] { unsetenv(name) }
    }

    /// Logging before the configuration is known: the postlog socket named by
    /// $POSTLOG_SERVICE, else syslog, under `tag` (default: the early tag), plus standard
    /// error when `stderrTag` is given.
    public static func setupEarly(program: String, tag: String? = nil, stderrTag: String? = nil) {
        let tag = tag ?? earlyTag(program: program)
        var outs: [MsgOutput] = []
        if let t = stderrTag { outs.append(StderrMsgOutput(tag: t)) }
        if let service = environment(serviceEnvironment), !service.isEmpty {
            let host = environment(hostnameEnvironment).map(shortHostname) ?? unknownHost
            outs.append(PostlogMsgOutput(socketPath: service, tag: tag, host: host))
        } else {
            outs.append(SyslogMsgOutput(tag: tag))
        }
        Msg.outputs = outs
    }

    /// Logging as configured: syslog_name, syslog_facility and maillog_file.
    /// `tag` replaces "<syslog_name>/<program>" (postfix logs as "postfix", postlog -t).
    /// `fileFallback`: when postlogd cannot be reached, append to maillog_file directly.
    public static func setup(_ config: MailConfig, program: String, tag: String? = nil, stderrTag: String? = nil,
                             fileFallback: Bool = false) {
        let tag = tag ?? (config.string("syslog_name") + "/" + program)
        var outs: [MsgOutput] = []
        if let t = stderrTag { outs.append(StderrMsgOutput(tag: t)) }
        let file = config.string("maillog_file")
        if file.isEmpty {
            unsetenv(serviceEnvironment)
            unsetenv(hostnameEnvironment)
            let facility = SyslogMsgOutput.facility(named: config.string("syslog_facility")) ?? LOG_MAIL
            outs.append(SyslogMsgOutput(tag: tag, facility: facility))
            Msg.outputs = outs
            return
        }
        // A root process writes the file: only names under the allowed prefixes.
        let prefixes = config.list("maillog_file_prefixes")
        if !prefixes.contains(where: { file.hasPrefix($0) }) {
            Msg.fatal("maillog_file value '\(file)' does not match any prefix in maillog_file_prefixes")
        }
        let socket = config.string("queue_directory") + "/public/" + config.string("postlog_service_name")
        let hostname = config.string("myhostname")
        setenv(serviceEnvironment, socket, 1)
        setenv(hostnameEnvironment, hostname, 1)
        outs.append(PostlogMsgOutput(socketPath: socket, tag: tag, host: shortHostname(hostname),
                                     fallbackFile: fileFallback ? file : nil))
        Msg.outputs = outs
    }

    /// The first label of a host name, as log records show it.
    public static func shortHostname(_ name: String) -> String {
        String(name.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first ?? Substring(name))
    }

    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

/// Sends each record as one datagram to the postlog service. When the service cannot be
/// reached the record is appended to the log file directly if a fallback file is given
/// (failing that is fatal, as in Postfix), else it is dropped, as Postfix drops it.
public final class PostlogMsgOutput: MsgOutput {
    /// Records longer than this are cut (text part), as Postfix's msg_logger cuts them.
    public static let maxText = 2000
    /// How long a record waits for room in postlogd's socket before the fallback.
    public static let congestionWaitMillis: Int32 = 200
    private var fd: Int32 = -1
    /// After a record found postlogd's socket full: until when not to wait for room.
    private var congestedUntil: time_t = 0
    private var addr: sockaddr_un
    private let addrLen: socklen_t
    private let tag: String
    private let host: String
    private let fallbackFile: String?

    public init(socketPath: String, tag: String, host: String, fallbackFile: String? = nil) {
        self.fallbackFile = fallbackFile
        addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8.prefix(107))
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        addrLen = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        self.tag = tag
        self.host = host
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The record as sent, and as written to the file without its newline.
    public func format(_ level: MsgLevel, _ text: String) -> [UInt8] {
        Array("\(FileMsgOutput.timestamp(time(nil))) \(host) \(tag)[\(getpid())]: ".utf8)
            + Array(level.prefix.utf8) + Array(text.utf8.prefix(Self.maxText))
    }

    public func emit(_ level: MsgLevel, _ text: String) {
        let record = format(level, text)
        if fd < 0 {
            // Connected lazily at the first record, as Postfix does.
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, addrLen) }
            }
            if r < 0 {
                close(fd)
                fd = -1
            }
        }
        if fd >= 0 {
            // A program that can write the file itself (master, the commands) never
            // blocks on a postlogd that does not drain its socket (stopped, or not
            // started yet): after a short wait the record goes to the file. (Postfix
            // blocks here, so a master whose postlogd cannot run hangs for ever.)
            // Daemons wait, as in Postfix, so that no record is lost in a burst.
            var sent = record.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, fallbackFile == nil ? 0 : Int32(MSG_DONTWAIT)) }
            if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), let path = fallbackFile {
                // Wait once; while the socket stays full, later records do not wait.
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if time(nil) >= congestedUntil, poll(&pfd, 1, Self.congestionWaitMillis) > 0 {
                    sent = record.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                }
                if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    congestedUntil = time(nil) + 2
                    Self.appendOrDie(path, record + [0x0A], tag: tag)
                    return
                }
            }
            if sent >= 0 { return }
            if errno != ECONNREFUSED && errno != ENOENT { return }
            close(fd)
            fd = -1
        }
        if let path = fallbackFile { Self.appendOrDie(path, record + [0x0A], tag: tag) }
    }

    /// Appends a record to the log file (created 0644 less the umask); failing is fatal
    /// with Postfix's texts. Both the record and the failure go to standard error: the
    /// log is what failed, and a daemon's last words (often a fatal error being logged
    /// right now) must not vanish.
    static func appendOrDie(_ path: String, _ line: [UInt8], tag: String) {
        func fail(_ why: String) -> Never {
            writeAll(2, line)
            writeAll(2, Array("\(tag): fatal: \(why)\n".utf8))
            Msg.outputs = []
            Msg.fatal(why)
        }
        if path == "/dev/stdout" {
            writeAll(1, line)
            return
        }
        do {
            let fd = try SafeFile.openAppend(path, mode: 0o644)
            defer { close(fd) }
            if !writeAll(fd, line) { fail("logfile '\(path)' write error: \(errnoText(errno))") }
        } catch {
            fail("open logfile '\(path)': \(error)")
        }
    }
}
