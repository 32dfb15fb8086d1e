// Master: the resident supervisor: listens for every service, starts children on demand,
// tracks them through the status channel, and reloads or stops on signals.
// Mirrors Postfix master/master.c, master_avail.c, master_spawn.c, master_status.c,
// master_wakeup.c, master_sig.c, master_service.c and master_conf.c. Master never accepts
// a connection: when a listen socket becomes readable and no child is idle, it starts one,
// and the child accepts. Children start with posix_spawn, with fds 3/4 (flow pipe),
// 5 (status) and 6.. (listen sockets) at fixed numbers, as Postfix's do.
import Glibc
import CShim
import MailUtil
import MailGlobal

final class Master {
    let loop = EventLoop()
    var config: MailConfig
    let options: MasterOptions
    var services: [ServiceState] = []
    /// Children by pid, with their service (a child of a removed service is not here).
    var childService: [pid_t: ServiceState] = [:]
    var flowRead: Int32 = -1
    var flowWrite: Int32 = -1
    /// One counter over every spawn; children get it in $GENERATION (octal).
    var generation: UInt32 = 0
    var childEnvironment: [String] = []
    var privileges: Privileges?
    var throttleTime = 60
    /// Values fixed at start-up: changing them needs a restart.
    let startupQueueDirectory: String
    let startupProtocols: String
    let startupInterfaces: String
    /// Runs once the services are up and "daemon started" is logged (-w).
    var onReady: (() -> Void)?

    init(config: MailConfig, options: MasterOptions) {
        self.config = config
        self.options = options
        startupQueueDirectory = config.string("queue_directory")
        startupProtocols = config.string("inet_protocols")
        startupInterfaces = config.string("inet_interfaces")
    }

    static func now() -> Double { Double(monotonicNanos()) / 1e9 }

    // MARK: Configuration

    func applyConfig(_ config: MailConfig) {
        self.config = config
        throttleTime = config.time("service_throttle_time")
        childEnvironment = Master.importEnvironment(config)
        if geteuid() == 0, let pw = getpwnam(config.string("mail_owner")) {
            privileges = Privileges(uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
        } else {
            privileges = nil
        }
    }

    /// The environment children get (import_environment).
    static func importEnvironment(_ config: MailConfig) -> [String] {
        ImportEnvironment.filtered(config)
    }

    // MARK: Services (master_service.c)

    /// Opens a service's endpoints and status channel; master cannot run without its
    /// sockets, so a failure is fatal.
    func startService(_ s: ServiceState) {
        let backlog = Int32(max(s.svc.maxProcesses, config.int("default_process_limit")))
        do {
            s.listenFDs = try Listeners.open(s.svc, backlog: backlog, privileges: privileges)
        } catch {
            Msg.fatal("\(error)")
        }
        openStatusChannel(s)
        s.wakeupPending = s.svc.wakeupConditional
        startWakeup(s)
        updateListening(s)
    }

    /// The status channel: a socket pair; children write to their end as fd 5 and see it
    /// readable when master closes its end.
    func openStatusChannel(_ s: ServiceState) {
        var fds: [Int32] = [0, 0]
        if cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), &fds) < 0 {
            Msg.fatal("pipe: \(errnoText(errno))")
        }
        FileDescriptor.setNonBlocking(fds[0])
        s.statusMaster = fds[0]
        s.statusChild = fds[1]
        loop.onReadable(fds[0]) { [unowned self] in self.readStatus(s) }
    }

    func closeStatusChannel(_ s: ServiceState) {
        if s.statusMaster >= 0 {
            loop.remove(s.statusMaster)
            close(s.statusMaster)
        }
        if s.statusChild >= 0 { close(s.statusChild) }
        s.statusMaster = -1
        s.statusChild = -1
    }

    /// New status channel and wakeup timer (master_restart_service): the running children
    /// see end-of-file, finish what they do and exit; later clients get new children.
    /// They no longer count as idle, so the next client does not wait for them to go.
    func restartService(_ s: ServiceState) {
        cancelWakeup(s)
        closeStatusChannel(s)
        for child in s.children.values where child.available {
            child.available = false
            s.availableCount -= 1
        }
        openStatusChannel(s)
        startWakeup(s)
        updateListening(s)
    }

    /// A service that left master.cf: listeners closed (the socket file stays, as in
    /// Postfix), children terminated without further notice.
    func stopService(_ s: ServiceState) {
        cancelWakeup(s)
        if let t = s.throttleTimer { loop.cancel(t) }
        for fd in s.listenFDs {
            loop.remove(fd)
            close(fd)
        }
        s.listenFDs = []
        s.listening = false
        closeStatusChannel(s)
        for pid in s.children.keys {
            kill(pid, SIGTERM)
            childService.removeValue(forKey: pid)
        }
        s.children = [:]
        s.availableCount = 0
    }

    // MARK: Demand-driven process creation (master_avail.c)

    /// Master watches a service's listen sockets only while no child is idle, the service
    /// is not throttled and the process limit allows one more.
    func updateListening(_ s: ServiceState) {
        var want = false
        if s.availableCount < 1 && !s.throttled {
            if s.limitAllowsOneMore {
                want = true
            } else if s.stressCapable && Master.now() - s.lastBusyWarning > 1000 {
                s.lastBusyWarning = Master.now()
                Msg.warn("service \"\(s.svc.name)\" (\(s.svc.identity)) has reached its process limit \"\(s.svc.maxProcesses)\": new clients may experience noticeable delays")
                Msg.warn("to avoid this condition, increase the process count in master.cf or reduce the service time per client")
                Msg.warn("see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings")
            }
        }
        if want == s.listening { return }
        s.listening = want
        for fd in s.listenFDs {
            if want {
                loop.onReadable(fd) { [unowned self] in self.demand(s) }
            } else {
                loop.removeReadable(fd)
            }
        }
    }

    /// A client is waiting and nobody is idle: start a child. The child that fills the
    /// last slot of a public service starts a stress period of 1000 seconds; entering one
    /// retires the current children so that all run with stress settings.
    func demand(_ s: ServiceState) {
        guard s.limitAllowsOneMore && !s.throttled else {
            updateListening(s)
            return
        }
        if s.stressCapable && s.svc.maxProcesses > 0 && s.total + 1 >= s.svc.maxProcesses {
            let now = Master.now()
            if s.stressExpires < now { restartService(s) }
            s.stressExpires = now + 1000
        }
        spawn(s)
    }

    // MARK: Spawning (master_spawn.c)

    /// The child's command line, in Postfix's order (master_ent.c).
    func childArguments(_ s: ServiceState) -> [String] {
        var argv = [s.svc.command]
        if s.svc.maxProcesses == 1 { argv.append("-l") }
        if s.svc.maxProcesses == 0 { argv.append("-z") }
        if basename(of: s.svc.command) != s.svc.name { argv += ["-n", s.svc.name] }
        argv += ["-t", s.svc.type.rawValue]
        if options.foreground { argv.append("-d") }
        if Msg.verbose > 0 { argv.append("-v") }
        if s.svc.unprivileged { argv.append("-u") }
        if s.svc.chroot { argv.append("-c") }
        if s.stressCapable {
            argv += ["-o", s.stressExpires > Master.now() ? "stress=yes" : "stress="]
        }
        if s.listenFDs.count > 1 { argv += ["-s", String(s.listenFDs.count)] }
        return argv + s.svc.arguments
    }

    func spawn(_ s: ServiceState) {
        generation &+= 1
        var fds: [Int32: Int32] = [0: 0, 1: 1, 2: 2, 3: flowRead, 4: flowWrite, 5: s.statusChild]
        for (i, fd) in s.listenFDs.enumerated() { fds[6 + Int32(i)] = fd }
        let env = childEnvironment + ["GENERATION=\(String(generation, radix: 8))"]
        do {
            let pid = try Spawn.run(s.svc.path, argv: childArguments(s), environment: env, descriptors: fds)
            Msg.debug("spawn command \(s.svc.path); pid \(pid)")
            s.children[pid] = ChildProcess(pid: pid, generation: generation)
            childService[pid] = s
            s.availableCount += 1
            if s.wakeupPending {
                Msg.debug("start conditional timer for \(s.svc.name)")
                s.wakeupPending = false
                startWakeup(s)
            }
        } catch let e as SystemError {
            Msg.warn("master_spawn: exec \(s.svc.path): \(e.reason)")
            throttle(s)
        } catch {
            Msg.warn("master_spawn: exec \(s.svc.path): \(error)")
            throttle(s)
        }
        updateListening(s)
    }

    // MARK: Status reports (master_status.c)

    func readStatus(_ s: ServiceState) {
        var buf = [UInt8](repeating: 0, count: 12)
        while s.statusMaster >= 0 {
            let n = read(s.statusMaster, &buf, 12)
            if n <= 0 { return }
            guard n == 12, let m = MasterStatusMessage(buf) else {
                let pid = buf.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                Msg.warn("service \(s.svc.name)(\(s.svc.identity)): child (pid \(pid)) sent partial status update (\(n) bytes)")
                continue
            }
            guard let child = s.children[m.pid] else {
                Msg.debug("master_status_event: process id not found: \(m.pid)")
                continue
            }
            if child.generation != m.generation {
                Msg.info("ignoring status update from child pid \(m.pid) generation \(m.generation)")
                continue
            }
            if m.available == child.available { continue }
            if m.available {
                child.available = true
                child.useCount += 1
                s.availableCount += 1
            } else {
                child.available = false
                s.availableCount -= 1
            }
            updateListening(s)
        }
    }

    // MARK: Children that exit (master_spawn.c master_reap_child)

    func reapChildren() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            Msg.debug("master_reap_child: pid \(pid)")
            guard let s = childService.removeValue(forKey: pid), let child = s.children.removeValue(forKey: pid) else {
                continue
            }
            if child.available { s.availableCount -= 1 }
            let exited = status & 0x7F == 0
            if !(exited && (status >> 8) & 0xFF == 0) {
                if exited {
                    Msg.warn("process \(s.svc.path) pid \(pid) exit status \((status >> 8) & 0xFF)")
                } else {
                    Msg.warn("process \(s.svc.path) pid \(pid) killed by signal \(status & 0x7F)")
                }
                if child.useCount == 0 && !s.throttled {
                    throttle(s, reason: "bad command startup")
                }
            }
            updateListening(s)
        }
    }

    /// No new children for service_throttle_time: the command fails before serving.
    func throttle(_ s: ServiceState, reason: String = "bad command startup") {
        guard !s.throttled else { return }
        if reason == "bad command startup" { Msg.warn("\(s.svc.path): bad command startup -- throttling") }
        Msg.debug("throttling command \(s.svc.path)")
        s.throttled = true
        s.throttleTimer = loop.after(Double(throttleTime)) { [unowned self] in
            Msg.debug("throttle released for command \(s.svc.path)")
            s.throttled = false
            s.throttleTimer = nil
            self.updateListening(s)
        }
        updateListening(s)
    }

    // MARK: Wakeup triggers (master_wakeup.c)

    /// Sends a trigger now and then every `wakeup` seconds; a conditional timer waits for
    /// the first child (see spawn).
    func startWakeup(_ s: ServiceState) {
        cancelWakeup(s)
        guard s.svc.wakeup > 0, !s.wakeupPending, s.svc.type != .unixDgram else { return }
        fireWakeup(s)
    }

    func fireWakeup(_ s: ServiceState) {
        if !s.throttled { Listeners.wakeup(s.svc, privileges: privileges) }
        s.wakeupTimer = loop.after(Double(s.svc.wakeup)) { [unowned self] in self.fireWakeup(s) }
    }

    func cancelWakeup(_ s: ServiceState) {
        if let t = s.wakeupTimer { loop.cancel(t) }
        s.wakeupTimer = nil
    }

    // MARK: Reload (master.c master_refresh, master_conf.c)

    func reload() {
        // postlogd first: the one running may write a file that "postfix logrotate" just
        // renamed; from the reload record on, records go to the new file.
        if let s = postlogService { restartService(s) }
        Msg.info("reload -- version \(config.string("mail_version")), configuration \(config.configDirectory)")
        let fresh = MailConfig.load(processName: "master")
        for (name, old) in [("queue_directory", startupQueueDirectory), ("inet_protocols", startupProtocols)] {
            let new = fresh.string(name)
            if new != old {
                Msg.warn("ignoring \(name) parameter value change")
                Msg.warn("old value: \"\(old)\", new value: \"\(new)\"")
                Msg.warn("to change \(name), stop and start Postfix")
                fresh.set(name, old)
            }
        }
        MailLog.setup(fresh, program: "master", fileFallback: true)
        applyConfig(fresh)
        let wanted = MasterConfig.load(config, startupInterfaces: startupInterfaces)
        var byKey: [String: ServiceState] = [:]
        for s in services { byKey[s.svc.identity + "/" + s.svc.type.rawValue] = s }
        var keep: [ServiceState] = []
        for svc in wanted {
            if let s = byKey.removeValue(forKey: svc.identity + "/" + svc.type.rawValue) {
                // Sockets stay as they are: they cannot move without a restart.
                var updated = svc
                updated.inetAddresses = s.svc.inetAddresses
                s.svc = updated
                // As in Postfix, a conditional timer waits for the next child again.
                s.wakeupPending = svc.wakeupConditional
                restartService(s)
                keep.append(s)
            } else {
                let s = ServiceState(svc)
                startService(s)
                keep.append(s)
            }
        }
        for gone in byKey.values { stopService(gone) }
        services = keep
    }

    // MARK: Termination (master_sig.c)

    /// Stops every process of the group and dies by the same signal, as Postfix does, so
    /// that a parent (postfix start-fg) sees how master ended.
    /// The record goes out before the signal, so that postlogd, which drains its socket
    /// when told to stop, still writes it.
    func terminate(_ sig: Int32) -> Never {
        Msg.info("terminating on signal \(sig)")
        signal(SIGTERM, SIG_IGN)
        if getpgrp() == getpid() {
            kill(-getpid(), SIGTERM)
        } else {
            for pid in childService.keys { kill(pid, SIGTERM) }
        }
        flushPostlog()
        signal(sig, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, sig)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        raise(sig)
        _exit(128 + sig)
    }

    /// The postlog service (postlogd), when master.cf has it.
    var postlogService: ServiceState? {
        services.first { $0.svc.type == .unixDgram && $0.svc.name == config.string("postlog_service_name") }
    }

    /// Records still queued on the postlog socket when the mail system stops (often the
    /// ones that say why) are written by master itself once postlogd has had its chance.
    /// Leaves on master's own initiative (-e): children see the status channel close
    /// and retire; the last record is written even when postlogd has already gone.
    func exitNow(_ why: String) -> Never {
        Msg.info(why)
        flushPostlog()
        exit(0)
    }

    func flushPostlog() {
        let file = config.string("maillog_file")
        guard !file.isEmpty, file != "/dev/stdout", let s = postlogService, let fd = s.listenFDs.first else { return }
        let deadline = monotonicNanos() + 300_000_000
        var pending = Set(s.children.keys)
        while !pending.isEmpty && monotonicNanos() < deadline {
            for pid in pending where waitpid(pid, nil, WNOHANG) == pid { pending.remove(pid) }
            if !pending.isEmpty { usleep(5_000) }
        }
        var buf = [UInt8](repeating: 0, count: 4096)
        var out: [UInt8] = []
        while true {
            let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            if n < 0 { break }
            out += buf[0..<n] + [0x0A]
        }
        if !out.isEmpty, let logFD = try? SafeFile.openAppend(file, mode: 0o644) {
            writeAll(logFD, out)
            close(logFD)
        }
    }

    // MARK: Main loop

    func run() {
        var fds: [Int32] = [0, 0]
        if cshim_pipe2_cloexec(&fds) < 0 { Msg.fatal("pipe: \(errnoText(errno))") }
        flowRead = fds[0]
        flowWrite = fds[1]
        FileDescriptor.setNonBlocking(flowRead)
        FileDescriptor.setNonBlocking(flowWrite)
        applyConfig(config)
        for svc in MasterConfig.load(config, startupInterfaces: startupInterfaces) {
            let s = ServiceState(svc)
            startService(s)
            services.append(s)
        }
        SignalPipe.install([SIGHUP, SIGCHLD, SIGTERM, SIGINT, SIGQUIT], loop: loop) { [unowned self] sig in
            switch sig {
            case SIGHUP: self.reload()
            case SIGCHLD: self.reapChildren()
            default: self.terminate(sig)
            }
        }
        MailLog.setup(config, program: "master", fileFallback: true)
        childEnvironment = Master.importEnvironment(config)
        Msg.info("daemon started -- version \(config.string("mail_version")), configuration \(config.configDirectory)")
        onReady?()
        reapChildren()
        loop.run()
    }
}

/// A status report from a child (see MailServer.MasterStatus for the writer).
struct MasterStatusMessage {
    let pid: Int32
    let generation: UInt32
    let available: Bool

    init?(_ b: [UInt8]) {
        guard b.count == 12 else { return nil }
        pid = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: Int32.self) }
        generation = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
        let avail = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: Int32.self) }
        guard avail == 0 || avail == 1 else { return nil }
        available = avail == 1
    }
}
