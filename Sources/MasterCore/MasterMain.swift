// MasterMain: the master(8) command line and start-up: options, session, locks.
// Mirrors Postfix master/master.c main() and master_monitor.c. master stays in the
// foreground of whoever started it (it only leaves the terminal: standard descriptors to
// /dev/null, new session), unless -w asks for a daemon: then a second copy of this program
// runs as the daemon while the first waits until it has initialised (Postfix forks; a
// Swift process must not fork without exec, so we spawn). "-t" tests whether a master runs
// (exit 0: none). The pid file pid/master.pid and $data_directory/master.lock stay locked
// while master runs.
//
// Single-user mode (beyond Postfix): run by a user other than root, master accepts to
// run when that user is mail_owner; every service then runs as that user.
import Glibc
import CShim
import MailUtil
import MailGlobal

public struct MasterOptions {
    public var configDirectory: String?
    public var foreground = false
    public var debugger = false
    public var exitAfter: Int?
    public var initMode = false
    public var keepStdout = false
    public var test = false
    public var verbose = 0
    public var wait = false
}

public enum MasterMain {
    /// Marks the daemon copy started by "master -w"; its value is the ready pipe's fd.
    static let daemonMarker = "SWALLOW_MASTER_READY_FD"

    public static func main(_ arguments: [String]) -> Never {
        let argv0 = arguments.first ?? "master"
        let startTime = monotonicNanos()
        umask(0o077)
        signal(SIGPIPE, SIG_IGN)
        var readyFD: Int32 = -1
        if let m = getenv(daemonMarker) {
            readyFD = Int32(String(cString: m)) ?? -1
            unsetenv(daemonMarker)
        }
        cshim_closefrom(readyFD >= 3 ? readyFD + 1 : 3)
        MailLog.setupEarly(program: "master")
        Msg.sleepBeforeFatalExit = false

        if getuid() != geteuid() || getgid() != getegid() {
            Msg.fatal("the master command must not run as a set-uid process")
        }
        let o = parseOptions(arguments, argv0: argv0)
        if getenv("MAIL_VERBOSE") != nil { Msg.verbose += 1 }
        Msg.verbose += o.verbose
        if o.initMode {
            if getpid() != 1 { Msg.fatal("-i is allowed only for PID 1 process") }
            if o.debugger || o.foreground || o.wait { Msg.fatal("the -i option cannot be used with -D, -d, or -w") }
        }
        if o.test && o.wait { Msg.fatal("the -t and -w options cannot be used together") }
        if let dir = o.configDirectory { setenv(MailConfig.configEnvironment, dir, 1) }

        if o.wait && readyFD < 0 { monitor(arguments) }
        if !o.foreground && !o.initMode {
            let null = open("/dev/null", O_RDWR)
            if null < 0 { Msg.fatal("open /dev/null: \(errnoText(errno))") }
            for fd in Int32(0)...2 where !(fd == 1 && o.keepStdout) { dup2(null, fd) }
            if null > 2 { close(null) }
        }
        if !o.foreground && !o.debugger && !o.initMode && setsid() < 0 && getsid(0) != getpid() {
            Msg.fatal("unable to set session and process group ID: \(errnoText(errno))")
        }

        let config = MailConfig.load(processName: "master")
        // Beyond Postfix, which logs through the environment's postlog socket (or syslog)
        // until its services run: log as configured from here on, writing maillog_file
        // directly while postlogd is not up, so that master.cf errors are not lost.
        MailLog.setup(config, program: "master", fileFallback: true)
        let accounts = MailParams.check(config)
        if getuid() != 0 && accounts.ownerUID != getuid() {
            Msg.fatal("the master command is reserved for the superuser")
        }
        let queueDirectory = config.string("queue_directory")
        if chdir(queueDirectory) < 0 { Msg.fatal("chdir \(queueDirectory): \(errnoText(errno))") }

        if o.test { exit(testRunning()) }

        let pidText = Array((String(repeating: " ", count: max(0, 32 - String(getpid()).count)) + "\(getpid())\n").utf8)
        lockFile("pid/master.pid", contents: pidText)
        let lockPath = config.string("data_directory") + "/master.lock"
        if getuid() == 0 {
            Privileges(uid: accounts.ownerUID, gid: accounts.ownerGID).asOwner {
                lockFile(lockPath, contents: pidText)
            }
        } else {
            lockFile(lockPath, contents: pidText)
        }
        if o.debugger || getenv("MAIL_DEBUG") != nil { runDebugger(config) }

        let master = Master(config: config, options: o)
        if let e = o.exitAfter {
            let remaining = max(0, Double(e) - Double(monotonicNanos() - startTime) / 1e9)
            _ = master.loop.after(remaining) {
                master.exitNow("master exit time has arrived")
            }
        }
        if readyFD >= 0 {
            master.onReady = {
                var ok: UInt8 = 0
                _ = write(readyFD, &ok, 1)
                close(readyFD)
            }
        }
        master.run()
        exit(0)
    }

    static func usage(_ argv0: String) -> String {
        "usage: \(argv0) [-c config_dir] [-D (debug)] [-d (don't detach from terminal)] [-e exit_time] [-t (test)] [-v] [-w (wait for initialization)]"
    }

    /// getopt "+c:Dde:istvw"; getopt's own complaint goes to standard error, the usage to
    /// the log.
    static func parseOptions(_ arguments: [String], argv0: String) -> MasterOptions {
        var o = MasterOptions()
        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:Dde:istvw") { c, v in
            switch c {
            case "c": o.configDirectory = v
            case "D": o.debugger = true
            case "d": o.foreground = true
            case "e": o.exitAfter = Int((v ?? "").prefix { $0.isASCII && $0.isNumber }) ?? 0
            case "i": o.initMode = true
            case "s": o.keepStdout = true
            case "t": o.test = true
            case "v": o.verbose += 1
            default: o.wait = true
            }
        }
        if let problem { writeAll(2, Array((GetOpt.message(problem, program: argv0) + "\n").utf8)) }
        if problem != nil || !operands.isEmpty { Msg.fatal(usage(argv0)) }
        return o
    }

    /// master -t: 0 when no master holds pid/master.pid (or there is none), else 1.
    static func testRunning() -> Int32 {
        let fd = open("pid/master.pid", O_RDWR | O_CLOEXEC)
        if fd < 0 { return errno == ENOENT ? 0 : 1 }
        return flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1
    }

    /// Opens (or creates exclusively), locks and fills a lock file that stays open for
    /// master's life.
    static func lockFile(_ path: String, contents: [UInt8]) {
        var fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            guard errno == ENOENT else { Msg.fatal("open lock file \(path): cannot open file: \(errnoText(errno))") }
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd < 0 { Msg.fatal("open lock file \(path): cannot create file exclusively: \(errnoText(errno))") }
        }
        if flock(fd, LOCK_EX | LOCK_NB) < 0 {
            Msg.fatal("open lock file \(path): unable to set exclusive lock: \(errnoText(errno))")
        }
        let n = contents.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        if n != contents.count { Msg.fatal("cannot update lock file \(path): \(errnoText(errno))") }
    }

    /// -D: runs debugger_command (with $process_name and $process_id) and gives it time
    /// to attach.
    static func runDebugger(_ config: MailConfig) {
        let command = config.string("debugger_command")
        if command.isEmpty { Msg.fatal("no debugger_command variable set up") }
        Msg.info("running: \(command)")
        _ = system(command)
        sleep(1)
    }

    /// master -w: start the daemon copy (in its own session) and wait up to 100 seconds
    /// for it to say it has initialised; exit 0 then, 1 when it died first.
    static func monitor(_ arguments: [String]) -> Never {
        var fds: [Int32] = [-1, -1]
        if cshim_pipe2_cloexec(&fds) < 0 { Msg.fatal("pipe: \(errnoText(errno))") }
        let exe = (try? readLink("/proc/self/exe")) ?? arguments[0]
        let readyFD: Int32 = 3
        do {
            _ = try Spawn.run(exe, argv: arguments,
                              environment: Spawn.currentEnvironment + ["\(daemonMarker)=\(readyFD)"],
                              descriptors: [0: 0, 1: 1, 2: 2, readyFD: fds[1]], newSession: true)
        } catch {
            Msg.fatal("fork: \(error)")
        }
        close(fds[1])
        var pfd = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        let r = retryingEINTR { poll(&pfd, 1, 100_000) }
        if r == 0 { Msg.fatal("\(errnoText(ETIMEDOUT)) while waiting for daemon initialization") }
        var b: UInt8 = 0
        let n = read(fds[0], &b, 1)
        if n == 1 { exit(0) }
        if n < 0 { Msg.fatal("\(errnoText(errno)) while waiting for daemon initialization") }
        Msg.fatal("daemon initialization failure -- see logs for details")
    }

    static func readLink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        if n < 0 { throw SystemError.current("readlink \(path)") }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
