// PostfixScript: the postfix subcommands: start, start-fg, stop, abort, drain, reload,
// status, flush, check, set-permissions, upgrade-configuration, logrotate.
// Mirrors Postfix conf/postfix-script (as Debian ships 3.7), run natively: the same
// checks, messages ("postfix/postfix-script: the Postfix mail system is running: PID: 1234"),
// order and exit statuses. Where the script has a bug (a forced "stop" that never kills),
// we do what it means to do.
import Glibc
import CShim
import MailUtil
import MailGlobal

final class PostfixScript {
    let config: MailConfig
    let tag: String

    init(config: MailConfig, tty: Bool) {
        self.config = config
        tag = config.string("syslog_name") + "/postfix-script"
        MailLog.setup(config, program: "postfix-script", tag: tag, stderrTag: tty ? tag : nil, fileFallback: true)
    }

    var queue: String { config.string("queue_directory") }
    var daemonDirectory: String { config.string("daemon_directory") }
    var commandDirectory: String { config.string("command_directory") }
    var masterProgram: String { daemonDirectory + "/master" }

    func info(_ text: String) { Msg.info(text) }
    func warn(_ text: String) { Msg.warn(text) }
    func fatal(_ text: String) -> Never { Msg.fatal(text) }

    static let usage = "Usage: postfix start (or stop, reload, abort, flush, check, status, set-permissions, upgrade-configuration, logrotate)"

    /// Runs a subcommand; returns the exit status.
    func dispatch(_ command: String, _ args: [String]) -> Int32 {
        preamble()
        switch command {
        case "start", "start-fg": return start(foreground: command == "start-fg")
        case "stop": return stop()
        case "quick-stop":
            let status = stop()
            if status == 0 {
                let fd = creat(queue + "/quick-start", 0o644)
                if fd >= 0 { close(fd) }
            }
            return status
        case "abort": return signalMaster(SIGTERM, "aborting the Postfix mail system")
        case "drain": return signalMaster(SIGKILL, "stopping the Postfix mail system")
        case "reload": return reload()
        case "status": return status()
        case "flush": return flush()
        case "check": return checkFatal() ? { checkWarn(); return 0 }() : 1
        case "check-fatal": return checkFatal() ? 0 : 1
        case "check-warn": checkWarn(); return 0
        case "set-permissions", "set-perm": return setPermissions(args)
        case "upgrade-configuration", "upgrade-conf": return upgradeConfiguration(args)
        case "logrotate": return logrotate(args)
        case "start_msg": writeAll(1, Array("Start postfix\n".utf8)); return 0
        case "stop_msg": writeAll(1, Array("Stop postfix\n".utf8)); return 0
        default: fatal("unknown command: '\(command)'. \(Self.usage)")
        }
    }

    // MARK: Checks every command makes first

    func preamble() {
        func directory(_ name: String, _ what: String) {
            let dir = config.string(name)
            var st = stat()
            if stat(dir, &st) != 0 || st.st_mode & S_IFMT != S_IFDIR || access(dir, X_OK) != 0 {
                fatal("no Postfix \(what) directory \(dir)!")
            }
        }
        directory("command_directory", "command")
        directory("daemon_directory", "daemon")
        if access(masterProgram, F_OK) != 0 { fatal("no Postfix master program \(masterProgram)!") }
        directory("config_directory", "configuration")
        if config.string("shlib_directory") != "no" { directory("shlib_directory", "shared-library") }
        directory("meta_directory", "meta")
        directory("queue_directory", "queue")
        // postconf reads main.cf and master.cf: a configuration it rejects stops everything.
        let postconf = commandDirectory + "/postconf"
        if execute(postconf, ["-dh", "config_directory"], stdout: open("/dev/null", O_WRONLY | O_CLOEXEC)) != 0 {
            fatal("cannot execute \(postconf)!")
        }
    }

    // MARK: Subcommands

    var running: Bool { MasterLock.isRunning(queueDirectory: queue) }

    func start(foreground: Bool) -> Int32 {
        if running { fatal("the Postfix mail system is already running") }
        let quick = queue + "/quick-start"
        if access(quick, F_OK) == 0 {
            unlink(quick)
        } else {
            if !checkFatal() { fatal("Postfix integrity check failed!") }
            checkWarn()
        }
        info("starting the Postfix mail system")
        if !foreground {
            if execute(masterProgram, ["-w"]) != 0 { fatal("mail system startup failed") }
            return 0
        }
        if !config.string("multi_instance_directories").isEmpty {
            fatal("start-fg does not support multi_instance_directories")
        }
        if getpid() == 1 {
            var argv: [UnsafeMutablePointer<CChar>?] = [strdup(masterProgram), strdup("-i"), nil]
            execv(masterProgram, &argv)
            fatal("cannot start-fg the master daemon")
        }
        return runForeground(masterProgram, ["-s"])
    }

    func stop() -> Int32 {
        guard running, let pid = MasterLock.pid(queueDirectory: queue) else {
            fatal("the Postfix mail system is not running")
        }
        info("stopping the Postfix mail system")
        kill(pid, SIGTERM)
        for _ in 0..<5 {
            // master usually goes within milliseconds; look often before saying we wait.
            for _ in 0..<200 {
                if !running { return 0 }
                usleep(5_000)
            }
            info("waiting for the Postfix mail system to terminate")
        }
        warn("stopping the Postfix mail system with force")
        return kill(-pid, SIGKILL) == 0 ? 0 : 1
    }

    func signalMaster(_ sig: Int32, _ message: String) -> Int32 {
        guard running, let pid = MasterLock.pid(queueDirectory: queue) else {
            fatal("the Postfix mail system is not running")
        }
        info(message)
        kill(pid, sig)
        return 0
    }

    func reload() -> Int32 {
        guard running, let pid = MasterLock.pid(queueDirectory: queue) else {
            fatal("the Postfix mail system is not running")
        }
        info("refreshing the Postfix mail system")
        // Mail stuck in the active queue goes back for the new configuration.
        let postsuper = commandDirectory + "/postsuper"
        let havePostsuper = access(postsuper, X_OK) == 0
        if havePostsuper && execute(postsuper, ["active"]) != 0 { return 1 }
        kill(pid, SIGHUP)
        if havePostsuper { _ = try? Spawn.run(postsuper, argv: [postsuper], environment: Spawn.currentEnvironment) }
        return 0
    }

    func status() -> Int32 {
        if running, let pid = MasterLock.pid(queueDirectory: queue) {
            info("the Postfix mail system is running: PID: \(pid)")
            return 0
        }
        info("the Postfix mail system is not running")
        return 1
    }

    func flush() -> Int32 {
        let postqueue = commandDirectory + "/postqueue"
        if access(postqueue, X_OK) != 0 { fatal("cannot execute \(postqueue)!") }
        return execute(postqueue, ["-f"])
    }

    func setPermissions(_ args: [String]) -> Int32 {
        applyOverrides(args)
        if !PostfixFiles.createMissing(config) { return 1 }
        return PostfixFiles.setPermissions(config) ? 0 : 1
    }

    func upgradeConfiguration(_ args: [String]) -> Int32 {
        applyOverrides(args)
        if !PostfixFiles.createMissing(config) { return 1 }
        return Upgrade.masterCF(config) ? 0 : 1
    }

    /// "name=value" arguments of set-permissions and upgrade-configuration.
    func applyOverrides(_ args: [String]) {
        for a in args {
            guard let (name, value) = MailConfig.splitOverride(a) else {
                fatal("bad parameter setting: \(a)")
            }
            config.set(name, value)
        }
    }

    // MARK: Running programs

    /// Runs a program with this process's environment and waits; returns its exit status
    /// (128 + signal when killed).
    func execute(_ path: String, _ args: [String], stdout: Int32? = nil) -> Int32 {
        var fds: [Int32: Int32] = [0: 0, 1: 1, 2: 2]
        if let o = stdout, o >= 0 { fds[1] = o }
        defer { if let o = stdout, o >= 0 { close(o) } }
        guard let pid = try? Spawn.run(path, argv: [path] + args, environment: Spawn.currentEnvironment,
                                       descriptors: fds) else { return 127 }
        return wait(pid)
    }

    func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 1 }
        }
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// start-fg: master in the foreground. Interrupt, termination and hangup signals are
    /// passed on to it (as SIGTERM, SIGTERM, SIGHUP), so Ctrl-C stops the mail system;
    /// the exit status is master's.
    func runForeground(_ path: String, _ args: [String]) -> Int32 {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&set, s) }
        sigprocmask(SIG_BLOCK, &set, nil)
        guard let pid = try? Spawn.run(path, argv: [path] + args, environment: Spawn.currentEnvironment) else {
            fatal("cannot start-fg the master daemon")
        }
        while true {
            var sig: Int32 = 0
            if sigwait(&set, &sig) != 0 { continue }
            switch sig {
            case SIGCHLD:
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                }
            case SIGHUP:
                kill(pid, SIGHUP)
            default:
                kill(pid, SIGTERM)
            }
        }
    }
}
