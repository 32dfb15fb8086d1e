// MailServer: what every daemon does before it serves: options, configuration, logging,
// start-up checks, the queue directory, chroot and privilege drop.
// Mirrors the common part of Postfix master/single_server.c, multi_server.c,
// trigger_server.c, event_server.c and dgram_server.c. Privileges are dropped in one place,
// after the pre-init hook and before any client is served; a failure is fatal.
import Glibc
import CShim
import MailUtil
import MailGlobal
import MailDict

/// What a daemon declares about itself.
public struct ServerDescription {
    /// The program name (basename of argv[0] when empty).
    public var program: String = ""
    /// Must run with a process limit of 1 (-l): qmgr, pickup, anvil, scache, verify, ...
    public var solitary = false
    /// The program is postlogd, which writes the log itself.
    public var writesLog = false
    /// Must run with no process limit (-z): cleanup, bounce, flush, ...
    public var unlimited = false
    /// Must run as root (no -u): local, virtual, pipe, spawn.
    public var privileged = false
    /// Takes a flow token per client and waits in_flow_delay without one (cleanup).
    public var inFlowDelay = false
    /// Overrides of max_use / max_idle (0 = never); nil takes the parameters.
    public var maxUse: Int?
    public var maxIdle: Int?
    /// Runs before chroot and privilege drop (open files that need root here).
    public var preInit: ((ServerContext) -> Void)?
    /// Runs after the privilege drop, before the first client.
    public var postInit: ((ServerContext) -> Void)?
    /// Runs before each accept; may exit (e.g. when a lookup table changed).
    public var preAccept: ((ServerContext) -> Void)?
    /// Runs when the server exits voluntarily.
    public var onExit: ((ServerContext) -> Void)?

    public init() {}
}

/// A running daemon's environment.
public final class ServerContext {
    public let program: String
    public let options: ServerOptions
    public let config: MailConfig
    public let serviceName: String
    public let transport: String
    public let queueDirectory: String
    public let accounts: MailAccounts
    public let loop = EventLoop()
    /// Listen descriptors (fd 6 and up), empty in stand-alone mode.
    public let listenFDs: [Int32]
    public var maxUse: Int
    public var maxIdle: Int
    /// Units of work served (connections, requests or triggers, by skeleton).
    public var useCount = 0
    /// The descriptor of the pid/<type>.<service> lock, or -1.
    var lockFD: Int32 = -1
    let description: ServerDescription

    init(program: String, options: ServerOptions, config: MailConfig, serviceName: String, transport: String,
         queueDirectory: String, accounts: MailAccounts, listenFDs: [Int32], maxUse: Int, maxIdle: Int,
         description: ServerDescription) {
        self.program = program
        self.options = options
        self.config = config
        self.serviceName = serviceName
        self.transport = transport
        self.queueDirectory = queueDirectory
        self.accounts = accounts
        self.listenFDs = listenFDs
        self.maxUse = maxUse
        self.maxIdle = maxIdle
        self.description = description
    }

    /// Ends the process after the hook, as a daemon leaving on its own does.
    public func exit(_ status: Int32 = 0) -> Never {
        description.onExit?(self)
        Glibc.exit(status)
    }

    /// True when master has closed its end of the status channel.
    public var masterGone: Bool {
        !options.standalone && FileDescriptor.waitReadable(MasterStatus.statusFD, milliseconds: 0)
    }
}

public enum MailServer {
    /// Common start-up of every skeleton, in Postfix's order. Returns with privileges
    /// dropped, the working directory at the queue, and logging set up.
    static func start(_ arguments: [String], _ desc: ServerDescription, kind: ServerKind) -> ServerContext {
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
        openStandardDescriptors()
        let program = desc.program.isEmpty ? basename(of: arguments.first ?? "daemon") : desc.program
        // A daemon started from a terminal by mistake says so there, too.
        let stderrTag: String? = isatty(2) != 0 ? program : nil
        // postlogd must not log through its own socket: when the socket is full (a burst
        // of warnings from every program reading a main.cf with duplicate entries) a
        // blocking send would wait for itself. It logs to syslog until its preInit
        // writes to the file directly.
        if desc.writesLog {
            unsetenv(MailLog.serviceEnvironment)
            unsetenv(MailLog.hostnameEnvironment)
        }
        MailLog.setupEarly(program: program, stderrTag: stderrTag)
        if getenv("MAIL_VERBOSE") != nil {
            Msg.verbose = 1
            Msg.info("daemon started")
        }

        let config = MailConfig.load(processName: program)
        let options = ServerOptions.parse(Array(arguments.dropFirst()), kind: kind)
        for (name, value) in options.overrides { config.set(name, value) }
        Msg.verbose += options.verbose
        let serviceName = options.serviceName ?? program
        config.serviceName = serviceName
        if !desc.writesLog {
            MailLog.setup(config, program: program,
                          stderrTag: options.logToStderr || stderrTag != nil ? program : nil)
        }
        let accounts = MailParams.check(config)
        // A table that cannot be opened defers the mail that needs it; it does not stop
        // the daemon.
        DictRegistry.allowSurrogate = true
        MailDictSetup.registerGlobalTypes(config)

        if !options.foreground && !options.standalone && isatty(0) != 0 {
            Msg.fatal("do not run this command by hand")
        }
        let checkLimits = !options.standalone || kind == .dgram
        if desc.solitary && !options.solitary && checkLimits {
            Msg.fatal("service \(serviceName) requires a process limit of 1")
        }
        if desc.unlimited && !options.unlimited && checkLimits {
            Msg.fatal("service \(serviceName) requires a process limit of 0")
        }
        if desc.privileged && options.unprivileged {
            Msg.fatal("service \(serviceName) requires privileged operation")
        }
        var transport = options.transport ?? ""
        if !options.standalone {
            guard let t = options.transport else { Msg.fatal("no transport type specified") }
            guard let known = kind.transports.first(where: { $0 == t.lowercased() }) else {
                Msg.fatal("unsupported transport type: \(t)")
            }
            transport = known
        }
        if let g = getenv("GENERATION") {
            let text = String(cString: g)
            guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                Msg.fatal("bad generation: \(text)")
            }
            MasterStatus.generation = text.utf8.reduce(UInt32(0)) { $0 &* 8 &+ UInt32($1 - 0x30) }
            Msg.debug("process generation: \(text) (\(String(MasterStatus.generation, radix: 8)))")
        }
        if options.debugger { MailServer.runDebugger(config) }

        let listenFDs: [Int32] = options.standalone ? [] : (0..<options.socketCount).map { MasterStatus.firstListenFD + Int32($0) }
        let queueDirectory = config.string("queue_directory")
        let ctx = ServerContext(program: program, options: options, config: config, serviceName: serviceName,
                                transport: transport, queueDirectory: queueDirectory, accounts: accounts,
                                listenFDs: listenFDs,
                                maxUse: desc.maxUse ?? config.int("max_use"),
                                maxIdle: desc.maxIdle ?? config.time("max_idle"),
                                description: desc)
        for fd in listenFDs + [MasterStatus.statusFD, MasterStatus.flowReadFD, MasterStatus.flowWriteFD] {
            FileDescriptor.setCloseOnExec(fd)
        }
        // A process that waits for a service that is gone with master leaves instead.
        ClientStream.beforeRetry = {
            if ctx.masterGone {
                Msg.info("master disconnect -- exiting")
                ctx.exit()
            }
        }

        // Single and datagram servers take turns at accept(2) under a lock file.
        if (kind == .single || kind == .dgram) && !options.solitary && !options.standalone {
            let lockPath = "\(queueDirectory)/pid/\(transport).\(serviceName)"
            ctx.lockFD = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
            if ctx.lockFD < 0 { Msg.fatal("open lock file \(lockPath): \(errnoText(errno))") }
        }
        if chdir(queueDirectory) < 0 {
            Msg.fatal("chdir(\"\(queueDirectory)\"): \(errnoText(errno))")
        }
        desc.preInit?(ctx)
        tzset()
        dropPrivileges(ctx)
        desc.postInit?(ctx)
        return ctx
    }

    /// -D: runs debugger_command with $process_name and $process_id, as Postfix's
    /// debug_process() does.
    static func runDebugger(_ config: MailConfig) {
        let command = config.string("debugger_command")
        if command.isEmpty { Msg.fatal("no debugger_command variable set up") }
        Msg.info("running: \(command)")
        if system(command) != 0 { Msg.fatal("\(command): \(errnoText(errno))") }
        sleep(1)
    }

    /// chroot(queue_directory) with -c, and become mail_owner with -u; done as root only
    /// (single-user mode keeps the invoking user).
    static func dropPrivileges(_ ctx: ServerContext) {
        guard geteuid() == 0 else { return }
        if ctx.options.chroot {
            if chroot(ctx.queueDirectory) < 0 { Msg.fatal("chroot(\(ctx.queueDirectory)): \(errnoText(errno))") }
            if chdir("/") < 0 { Msg.fatal("chdir(/): \(errnoText(errno))") }
        }
        if ctx.options.unprivileged {
            setUserAndGroup(uid: ctx.accounts.ownerUID, gid: ctx.accounts.ownerGID)
        }
    }

    /// Becomes uid/gid with no supplementary groups; fatal on failure.
    public static func setUserAndGroup(uid: uid_t, gid: gid_t) {
        var g = gid
        if setgroups(1, &g) < 0 { Msg.fatal("setgroups(1, &\(gid)): \(errnoText(errno))") }
        if setgid(gid) < 0 { Msg.fatal("setgid(\(gid)): \(errnoText(errno))") }
        if setuid(uid) < 0 { Msg.fatal("setuid(\(uid)): \(errnoText(errno))") }
        if uid != 0 && (setuid(0) == 0 || geteuid() == 0) { Msg.fatal("unable to drop privileges") }
    }

    /// The serialised-accept lock (pid/<type>.<service>), waiting until `deadline`
    /// (monotonic nanoseconds; nil = forever); false on timeout.
    static func lock(_ ctx: ServerContext, until deadline: UInt64?) -> Bool {
        guard ctx.lockFD >= 0 else { return true }
        installAlarmInterrupt()
        while true {
            if let d = deadline {
                let now = monotonicNanos()
                if now >= d { return false }
                alarm(UInt32(max(1, (d - now) / 1_000_000_000)))
            }
            let r = flock(ctx.lockFD, LOCK_EX)
            alarm(0)
            if r == 0 { return true }
            if errno != EINTR { Msg.fatal("select lock: \(errnoText(errno))") }
        }
    }

    static func unlock(_ ctx: ServerContext) {
        if ctx.lockFD >= 0 && flock(ctx.lockFD, LOCK_UN) < 0 {
            Msg.fatal("select unlock: \(errnoText(errno))")
        }
    }

    nonisolated(unsafe) private static var alarmInstalled = false

    /// SIGALRM that interrupts a blocking call instead of killing the process.
    static func installAlarmInterrupt() {
        guard !alarmInstalled else { return }
        alarmInstalled = true
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(SIGALRM, &sa, nil)
    }

    /// Accepts one connection on a non-blocking listen socket; nil when another process
    /// was faster. For "pass" services the connection carries the client's descriptor.
    static func accept(_ ctx: ServerContext, _ listenFD: Int32) -> Int32? {
        let fd = cshim_accept4_cloexec(listenFD, nil, nil)
        if fd < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED { return nil }
            Msg.fatal("accept connection: \(errnoText(errno))")
        }
        FileDescriptor.setNonBlocking(fd, false)
        if ctx.transport == "pass" {
            defer { close(fd) }
            let passed = cshim_recv_fd(fd)
            if passed < 0 {
                Msg.warn("receive connection: \(errnoText(errno))")
                return nil
            }
            return passed
        }
        return fd
    }

    /// Waits for a listen socket or master's status channel; returns the readable listen
    /// descriptor, or nil at `deadline` (monotonic nanoseconds; nil = never). Exits when
    /// master is gone.
    static func waitForClient(_ ctx: ServerContext, until deadline: UInt64?) -> Int32? {
        var pfds = ctx.listenFDs.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        pfds.append(pollfd(fd: MasterStatus.statusFD, events: Int16(POLLIN), revents: 0))
        while true {
            var ms: Int32 = -1
            if let d = deadline {
                let now = monotonicNanos()
                if now >= d { return nil }
                ms = Int32(clamping: (d - now) / 1_000_000 + 1)
            }
            let n = poll(&pfds, nfds_t(pfds.count), ms)
            if n < 0 {
                if errno == EINTR { continue }
                Msg.fatal("poll: \(errnoText(errno))")
            }
            if n == 0 { continue }
            if pfds.last!.revents != 0 {
                Msg.debug("master disconnect -- exiting")
                ctx.exit()
            }
            if let ready = pfds.dropLast().first(where: { $0.revents != 0 }) { return ready.fd }
        }
    }
}
