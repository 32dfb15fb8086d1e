// Instance: a whole mail system in a temporary directory for integration tests: its own
// main.cf and master.cf, queue, data directory and log file, our freshly built programs
// (linked into a small program directory), and master started and stopped the way a user
// would.
import Foundation
import Glibc
import Testing
import MailUtil
import CShim

final class Instance {
    let root: String
    var configDirectory: String { root + "/etc" }
    var queueDirectory: String { root + "/queue" }
    var dataDirectory: String { root + "/data" }
    var programDirectory: String { root + "/libexec" }
    var logFile: String { root + "/maillog" }
    let owner: String
    let group: String
    var masterPID: pid_t?
    /// Runs programs as the instance's user (single-user mode as root: setpriv).
    var userPrefix: [String] = []

    /// Where the test binaries were built.
    static var buildDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().path
    }

    /// The reference Postfix (SWALLOW_REF_DIR, default .ref/postfix), when unpacked.
    static var reference: String? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let dir = ProcessInfo.processInfo.environment["SWALLOW_REF_DIR"] ?? root + "/.ref/postfix"
        return FileManager.default.isExecutableFile(atPath: dir + "/usr/lib/postfix/sbin/anvil") ? dir : nil
    }

    static let programs = ["master", "postlogd", "postfix", "postconf", "postlog", "swallow-testd",
                           "postmap", "postalias", "proxymap", "trivial-rewrite", "cleanup", "smtpd", "qmgr", "tlsmgr"]

    /// `owner`: the mail_owner account; as root "postfix", otherwise the current user.
    init(main extra: String = "", master: String, owner: String? = nil) throws {
        root = "/tmp/swallow-it-\(getpid())-\(UUID().uuidString.prefix(8))"
        let me = String(cString: getpwuid(geteuid())!.pointee.pw_name)
        self.owner = owner ?? (geteuid() == 0 ? "postfix" : me)
        group = geteuid() == 0 && owner == nil ? "postdrop" : String(cString: getgrgid(getpwnam(self.owner)!.pointee.pw_gid)!.pointee.gr_name)
        let fm = FileManager.default
        for d in [configDirectory, dataDirectory, programDirectory, queueDirectory + "/pid"] {
            try fm.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        for p in Instance.programs {
            try fm.createSymbolicLink(atPath: programDirectory + "/" + p, withDestinationPath: Instance.buildDirectory + "/" + p)
        }
        let main = """
        queue_directory = \(queueDirectory)
        data_directory = \(dataDirectory)
        daemon_directory = \(programDirectory)
        command_directory = \(programDirectory)
        meta_directory = \(configDirectory)
        mail_owner = \(self.owner)
        setgid_group = \(group)
        inet_interfaces = loopback-only
        inet_protocols = ipv4
        maillog_file = \(logFile)
        maillog_file_prefixes = /tmp
        myhostname = test.example.com
        compatibility_level = 3.7
        # No queue manager here hands out flow tokens: cleanup must not wait for them.
        in_flow_delay = 0

        """ + extra
        try main.write(toFile: configDirectory + "/main.cf", atomically: true, encoding: .utf8)
        try master.write(toFile: configDirectory + "/master.cf", atomically: true, encoding: .utf8)
        if let pw = getpwnam(self.owner), geteuid() == 0 {
            chown(dataDirectory, pw.pointee.pw_uid, pw.pointee.pw_gid)
            if owner != nil {
                // Single-user mode: the whole instance belongs to that user, who runs it.
                for d in [root, configDirectory, queueDirectory, queueDirectory + "/pid", programDirectory] {
                    chown(d, pw.pointee.pw_uid, pw.pointee.pw_gid)
                }
                userPrefix = ["/usr/bin/setpriv", "--reuid=\(self.owner)", "--regid=\(group)", "--clear-groups"]
            }
        }
        // The queue subdirectories are made the way an administrator makes them.
        let check = postfix("check")
        #expect(check.status == 0, "postfix check: \(check.stderr)")
    }

    func writeMaster(_ text: String) throws {
        try text.write(toFile: configDirectory + "/master.cf", atomically: true, encoding: .utf8)
    }

    /// Starts master in the foreground (-d) as a child of the test.
    func startMaster(_ extraArgs: [String] = []) throws {
        let argv = userPrefix + [programDirectory + "/master", "-c", configDirectory, "-d"] + extraArgs
        let null = open("/dev/null", O_RDWR)
        defer { close(null) }
        masterPID = try Spawn.run(argv[0], argv: argv, environment: ["PATH=/usr/bin:/bin"],
                                  descriptors: [0: null, 1: null, 2: null])
        try waitFor("master to start") { self.logContains("daemon started") }
    }

    func stopMaster() {
        guard let pid = masterPID else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<200 {
            if waitpid(pid, &status, WNOHANG) == pid { break }
            usleep(25_000)
        }
        masterPID = nil
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    func logContains(_ s: String) -> Bool { log.contains(s) }

    func logCount(_ s: String) -> Int { log.components(separatedBy: s).count - 1 }

    /// Expects `s` in the log within a few seconds (postlogd writes records a moment
    /// after the program that sent them went on).
    func expectLog(_ s: String, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if logContains(s) { return }
            usleep(25_000)
        }
        Issue.record("not in the log: \(s)\n\(log)", sourceLocation: sourceLocation)
    }

    /// Polls `cond` every 25 ms for up to `seconds`.
    func waitFor(_ what: String, seconds: Double = 10, _ cond: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if cond() { return }
            usleep(25_000)
        }
        Issue.record("timed out waiting for \(what); log:\n\(log)")
        throw InstanceError.timeout(what)
    }

    /// Live processes (not zombies) whose argv[0] is `program` and whose environment
    /// names this instance (master passes MAIL_CONFIG on).
    func processes(named program: String) -> [pid_t] {
        var out: [pid_t] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry) else { continue }
            guard let cmd = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
                  let env = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")) else { continue }
            let args = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let first = args.first, URL(fileURLWithPath: first).lastPathComponent == program else { continue }
            let e = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if e.contains("MAIL_CONFIG=\(configDirectory)") || args.contains(configDirectory) { out.append(pid) }
        }
        return out.sorted()
    }

    /// Every live process that belongs to this instance.
    var allProcesses: [pid_t] { Instance.programs.flatMap { processes(named: $0) } }

    /// argv of a process.
    func commandLine(_ pid: pid_t) -> [String] {
        let cmd = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        return cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    func environment(_ pid: pid_t) -> [String] {
        let env = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
        return env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    struct Result {
        var stdout: String
        var stderr: String
        var status: Int32
    }

    /// Runs a program to completion (stdin /dev/null, not a terminal).
    func run(_ program: String, _ args: [String], env: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], prefix: [String] = []) -> Result {
        Instance.run(program, args, env: env, prefix: prefix)
    }

    static func run(_ program: String, _ args: [String], env: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], prefix: [String] = []) -> Result {
        let dir = "/tmp/swallow-it-out-\(getpid())-\(UUID().uuidString.prefix(8))"
        let out = open(dir + ".out", O_RDWR | O_CREAT | O_TRUNC, 0o600)
        let err = open(dir + ".err", O_RDWR | O_CREAT | O_TRUNC, 0o600)
        let null = open("/dev/null", O_RDWR)
        defer {
            close(out); close(err); close(null)
            unlink(dir + ".out"); unlink(dir + ".err")
        }
        let argv = prefix + [program] + args
        guard let pid = try? Spawn.run(argv[0], argv: argv, environment: env, descriptors: [0: null, 1: out, 2: err]) else {
            return Result(stdout: "", stderr: "cannot run \(program)", status: 127)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        let o = (try? String(contentsOfFile: dir + ".out", encoding: .utf8)) ?? ""
        let e = (try? String(contentsOfFile: dir + ".err", encoding: .utf8)) ?? ""
        return Result(stdout: o, stderr: e, status: code)
    }

    /// Runs `postfix -c CONFIG args...`.
    func postfix(_ args: String...) -> Result {
        run(programDirectory + "/postfix", ["-c", configDirectory] + args, prefix: userPrefix)
    }

    /// File systems mounted inside the instance, unmounted when it goes away.
    var mounts: [String] = []

    /// Puts the queue on a tmpfs of its own of `size` (as mount(8) takes it: "4m"), with
    /// its subdirectories made again; before master starts. Needs root.
    func mountQueueTmpfs(size: String) throws {
        let r = run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=755", "tmpfs", queueDirectory])
        try #require(r.status == 0, "mount: \(r.stderr)")
        mounts.append(queueDirectory)
        let check = postfix("check")
        try #require(check.status == 0, "postfix check: \(check.stderr)")
    }

    deinit {
        stopMaster()
        // Children that outlive master (it died by a signal in a test) are ours to end.
        for pid in allProcesses { kill(pid, SIGKILL) }
        for m in mounts.reversed() { umount2(m, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(atPath: root)
    }

    enum InstanceError: Error { case timeout(String) }
}

/// A loopback TCP port nobody listens on, below the kernel's ephemeral range (32768 and up)
/// so no outgoing connection holds it; the Python harnesses take 20000-26000.
func freePort() -> UInt16 {
    for _ in 0..<100 {
        let port = UInt16.random(in: 26001...32000)
        if let fd = try? InetSocket.listen(SocketAddress(family: AF_INET, address: [127, 0, 0, 1], port: port), backlog: 1) {
            close(fd)
            return port
        }
    }
    return 0
}

/// A line-oriented client of a UNIX or TCP socket.
final class LineClient {
    let stream: FDStream

    init(unix path: String) throws {
        stream = FDStream(fd: try UnixSocket.connect(path, timeout: 5), timeout: 10, closeOnDeinit: true)
    }

    /// A connection handed to a "pass" service: one end of a socket pair goes over the
    /// service's socket, the test talks on the other.
    init(pass path: String) throws {
        let fd = try UnixSocket.connect(path, timeout: 5)
        defer { close(fd) }
        var pair: [Int32] = [0, 0]
        guard cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), &pair) == 0 else {
            throw SystemError.current("socketpair")
        }
        defer { close(pair[1]) }
        if cshim_send_fd(fd, pair[1]) < 0 { throw SystemError.current("send descriptor") }
        stream = FDStream(fd: pair[0], timeout: 10, closeOnDeinit: true)
    }

    init(port: UInt16, host: [UInt8] = [127, 0, 0, 1]) throws {
        let fd = try InetSocket.connect(SocketAddress(family: host.count == 16 ? AF_INET6 : AF_INET, address: host, port: port), timeout: 5)
        stream = FDStream(fd: fd, timeout: 10, closeOnDeinit: true)
    }

    func readLine() throws -> String? {
        guard let l = try stream.readLine(limit: 4096) else { return nil }
        return String(decoding: l.bytes, as: UTF8.self)
    }

    func send(_ line: String) throws {
        try stream.write(line + "\n")
        try stream.flush()
    }

    /// Sends a line and reads the answer.
    func ask(_ line: String) throws -> String? {
        try send(line)
        return try readLine()
    }
}
