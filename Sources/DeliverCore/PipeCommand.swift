// PipeCommand: running a delivery command with the message on its standard input, as a
// given user, with a time limit; and what its exit status means for the recipient.
// Mirrors Postfix global/pipe_command.c and util/sys_exits.c. The command is started
// with posix_spawn through this same program in "--swallow-exec" mode, which sets the
// user and group, changes directory and execs the command: no fork in a Swift process.
import Glibc
import CShim
import MailUtil
import MailGlobal

public enum ExecHelper {
    public static let flag = "--swallow-exec"

    /// When argv says so, becomes the command (never returns); else returns at once.
    /// argv: PROGRAM --swallow-exec UID GID DIRECTORY -- COMMAND ARGS...
    static func say(_ text: String) {
        let b = Array((text + "\n").utf8)
        _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    public static func runIfRequested(_ argv: [String]) {
        guard argv.count >= 7, argv[1] == flag, argv[5] == "--" else { return }
        guard let uid = uid_t(argv[2]), let gid = gid_t(argv[3]) else { _exit(75) }
        var g = gid
        if getuid() == 0 || geteuid() == 0 {
            if setgroups(1, &g) < 0 || setgid(gid) < 0 || setuid(uid) < 0 {
                say("set user and group: \(String(cString: strerror(errno)))")
                _exit(75)
            }
        }
        if !argv[4].isEmpty && chdir(argv[4]) < 0 {
            say("chdir \(argv[4]): \(String(cString: strerror(errno)))")
            _exit(75)
        }
        let args = Array(argv[6...])
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        execv(args[0], &cargs)
        say("execvp \(args[0]): \(String(cString: strerror(errno)))")
        _exit(69)
    }
}

public enum PipeStatus {
    case ok, bounce, `defer`, corrupt
}

public enum SysExits {
    /// sys_exits_detail: DSN code and text of sendmail-compatible exit codes (64-78).
    public static let table: [Int32: (dsn: String, text: String)] = [
        64: ("5.3.0", "command line usage error"),
        65: ("5.6.0", "data format error"),
        66: ("5.3.0", "cannot open input"),
        67: ("5.1.1", "user unknown"),
        68: ("5.1.2", "host name unknown"),
        69: ("5.3.0", "service unavailable"),
        70: ("5.3.0", "internal software error"),
        71: ("4.3.0", "system resource problem"),
        72: ("5.3.0", "critical OS file missing"),
        73: ("5.2.0", "can't create user output file"),
        74: ("5.3.0", "input/output error"),
        75: ("4.3.0", "temporary failure"),
        76: ("5.5.0", "remote error in protocol"),
        77: ("5.7.0", "permission denied"),
        78: ("5.3.5", "local configuration error"),
    ]
}

public struct PipeCommand {
    public var argv: [String]
    /// The command as logged ("delivered to command: ...").
    public var display: String
    public var uid: uid_t
    public var gid: gid_t
    public var directory: String
    public var environment: [String]
    public var timeLimit: Int
    public var copyFlags: CopyFlags
    public var eol = "\n"

    public init(argv: [String], display: String, uid: uid_t, gid: gid_t, directory: String, environment: [String],
                timeLimit: Int, copyFlags: CopyFlags) {
        self.argv = argv
        self.display = display
        self.uid = uid
        self.gid = gid
        self.directory = directory
        self.environment = environment
        self.timeLimit = timeLimit
        self.copyFlags = copyFlags
    }

    /// Runs the command with the message; returns the outcome and its DSN.
    public func run(queueFD: Int32, offset: Int, sender: String, originalRecipient: String,
                    delivered: String) -> (PipeStatus, DeliveryStatus) {
        var inPipe: [Int32] = [-1, -1]
        var outPipe: [Int32] = [-1, -1]
        if cshim_pipe2_cloexec(&inPipe) < 0 || cshim_pipe2_cloexec(&outPipe) < 0 {
            return (.defer, DeliveryStatus(status: "4.3.0", reason: "pipe: \(errnoText(errno))"))
        }
        let helperArgv = ["/proc/self/exe", ExecHelper.flag, String(uid), String(gid), directory, "--"] + argv
        let pid: pid_t
        do {
            pid = try Spawn.run("/proc/self/exe", argv: helperArgv, environment: environment,
                                descriptors: [0: inPipe[0], 1: outPipe[1], 2: outPipe[1]], newSession: true)
        } catch {
            for fd in inPipe + outPipe { close(fd) }
            return (.defer, DeliveryStatus(status: "4.3.0", reason: "\(error)"))
        }
        close(inPipe[0])
        close(outPipe[1])
        let input = inPipe[1], output = outPipe[0]
        _ = fcntl(input, F_SETFL, fcntl(input, F_GETFL) | O_NONBLOCK)
        _ = fcntl(output, F_SETFL, fcntl(output, F_GETFL) | O_NONBLOCK)
        // The message, produced as it is written.
        var pending: [UInt8] = Array(MessageCopy.prefix(sender: sender, originalRecipient: originalRecipient,
                                                      delivered: delivered, flags: copyFlags, eol: eol).utf8)
        var chunks: [[UInt8]] = []
        var readError: String?
        var corrupt = false
        do {
            corrupt = !(try MessageCopy.content(fd: queueFD, offset: offset, flags: copyFlags, eol: eol) { chunks.append($0) })
        } catch {
            readError = "\(error)"
        }
        var chunkIndex = 0
        var log: [UInt8] = []
        let logLimit = 2000
        var inputOpen = true
        var outputOpen = true
        let deadline = monotonicNanos() + UInt64(max(timeLimit, 1)) * 1_000_000_000
        var timedOut = false
        while outputOpen {
            if inputOpen && pending.isEmpty {
                if chunkIndex < chunks.count {
                    pending = chunks[chunkIndex]
                    chunkIndex += 1
                } else {
                    close(input)
                    inputOpen = false
                }
            }
            var fds = [pollfd(fd: output, events: Int16(POLLIN), revents: 0)]
            if inputOpen { fds.append(pollfd(fd: input, events: Int16(POLLOUT), revents: 0)) }
            let now = monotonicNanos()
            if now >= deadline {
                timedOut = true
                break
            }
            let r = poll(&fds, nfds_t(fds.count), Int32(clamping: (deadline - now) / 1_000_000 + 1))
            if r < 0 && errno != EINTR { break }
            if fds[0].revents != 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(output, &buf, buf.count)
                if n > 0 {
                    if log.count < logLimit { log += buf[0..<min(n, logLimit - log.count)] }
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    outputOpen = false
                }
            }
            if inputOpen && fds.count > 1 && fds[1].revents != 0 {
                let n = pending.withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
                if n > 0 {
                    pending.removeFirst(n)
                } else if n < 0 && errno != EAGAIN && errno != EINTR {
                    // The command stopped reading (EPIPE): what it says decides.
                    close(input)
                    inputOpen = false
                }
            }
        }
        if inputOpen { close(input) }
        close(output)
        if timedOut { kill(-pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        var text = String(decoding: log, as: UTF8.self)
        text = Msg.printable(String(text.map { $0 == "\n" || $0 == "\t" || $0 == "\r\n" ? " " : $0 }))
        let more = text.isEmpty ? "" : ". Command output: \(text)"
        var trimmed = text
        while trimmed.hasSuffix(" ") { trimmed.removeLast() }
        /// dsb_unix: the remote diagnostic is the command's output, else the sysexits text.
        func unix(_ status: String, _ sysText: String, _ reason: String) -> DeliveryStatus {
            DeliveryStatus(status: status, reason: reason, diagnosticType: "x-unix",
                           diagnosticText: trimmed.isEmpty ? sysText : trimmed)
        }
        if timedOut {
            return (.bounce, unix("5.3.0", "internal software error", "Command time limit exceeded: \"\(display)\"\(more)"))
        }
        let exited = status & 0x7f == 0
        if !exited {
            return (.defer, unix("4.3.0", "internal software error", "Command died with signal \(status & 0x7f): \"\(display)\"\(more)"))
        }
        let code = (status >> 8) & 0xff
        if code != 0 {
            if let d = SysExits.table[code] {
                return (d.dsn.first == "4" ? .defer : .bounce, unix(d.dsn, d.text, "\(d.text)\(more)"))
            }
            return (.bounce, unix("5.3.0", "internal software error", "Command died with status \(code): \"\(display)\"\(more)"))
        }
        if let readError { return (.defer, DeliveryStatus(status: "4.3.0", reason: "error reading message: \(readError)")) }
        if corrupt { return (.corrupt, DeliveryStatus(status: "4.3.0", reason: "queue file write error")) }
        return (.ok, DeliveryStatus(status: "2.0.0", reason: ""))
    }
}
