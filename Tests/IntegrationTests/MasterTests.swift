// Integration tests of master, the server skeletons, postlogd and the postfix command on
// real temporary instances. Child processes are the test daemon swallow-testd (see
// Sources/Programs/swallow-testd), which runs on the real skeletons.
import Foundation
import Glibc
import Testing
import MailUtil
import MailGlobal

@Suite(.serialized)
struct MasterTests {
    static let testd = "swallow-testd"

    @Test func listenersAppearAndChildrenStartOnDemand() throws {
        let port = freePort()
        let inst = try Instance(master: """
        echo      unix  -  n  n  -  -  swallow-testd single
        fifosvc   fifo  -  n  n  -  1  swallow-testd trigger /dev/null
        \(port)   inet  n  -  n  -  2  swallow-testd single
        postlog   unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }

        // Endpoints, with Postfix's modes, owned by mail_owner.
        var st = stat()
        #expect(lstat(inst.queueDirectory + "/private/echo", &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFSOCK && st.st_mode & 0o777 == 0o666)
        #expect(st.st_uid == getpwnam(inst.owner)!.pointee.pw_uid)
        #expect(lstat(inst.queueDirectory + "/private/fifosvc", &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFIFO && st.st_mode & 0o777 == 0o622)
        #expect(lstat(inst.queueDirectory + "/public/postlog", &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK)
        let pidText = try String(contentsOfFile: inst.queueDirectory + "/pid/master.pid", encoding: .utf8)
        #expect(pidText == String(repeating: " ", count: 32 - String(inst.masterPID!).count) + "\(inst.masterPID!)\n")

        // Nothing runs before a client comes.
        #expect(inst.processes(named: Self.testd).isEmpty)
        let c = try LineClient(unix: inst.queueDirectory + "/private/echo")
        let hello = try #require(try c.readLine())
        #expect(hello.hasPrefix("hello ") && hello.hasSuffix(" echo"))
        #expect(try c.ask("ping") == "echo ping")
        let pids = inst.processes(named: Self.testd)
        #expect(pids.count == 1)
        if let pid = pids.first {
            // Postfix's command line and environment.
            #expect(inst.commandLine(pid) == ["swallow-testd", "-n", "echo", "-t", "unix", "-d", "single"])
            #expect(inst.environment(pid).contains { $0.hasPrefix("GENERATION=") })
            #expect(inst.environment(pid).contains("MAIL_CONFIG=\(inst.configDirectory)"))
            #expect(!inst.environment(pid).contains { $0.hasPrefix("PATH=") })
        }

        // inet: loopback only (no stress option), two processes at most.
        let t = try LineClient(port: port)
        let h2 = try #require(try t.readLine())
        #expect(h2.hasSuffix(" \(port)"))
        let inetChild = inst.processes(named: Self.testd).first { inst.commandLine($0).contains("inet") }
        #expect(inetChild.map { inst.commandLine($0) } == ["swallow-testd", "-n", "\(port)", "-t", "inet", "-d", "-u", "single"])
        try c.send("quit")
        try t.send("quit")
    }

    @Test func passServicesAndStress() throws {
        let inst = try Instance(master: """
        relay   pass - n n - 2 swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }
        // A pass service serves remote clients: it gets stress options and busy warnings.
        let a = try LineClient(pass: inst.queueDirectory + "/private/relay")
        #expect(try a.readLine()?.hasSuffix(" relay") == true)
        let b = try LineClient(pass: inst.queueDirectory + "/private/relay")
        #expect(try b.readLine()?.hasSuffix(" relay") == true)
        let args = inst.processes(named: Self.testd).map { inst.commandLine($0) }
        #expect(args.count == 2)
        #expect(args.contains(["swallow-testd", "-n", "relay", "-t", "pass", "-d", "-o", "stress=", "single"]))
        #expect(args.contains(["swallow-testd", "-n", "relay", "-t", "pass", "-d", "-o", "stress=yes", "single"]))
        try inst.waitFor("busy warning") {
            inst.logContains("warning: service \"relay\" (private/relay) has reached its process limit \"2\": new clients may experience noticeable delays")
        }
        inst.expectLog("see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings")
        try a.send("quit")
        try b.send("quit")
    }

    @Test func ipv6AndServiceNames() throws {
        let port = freePort()
        let inst = try Instance(main: "inet_protocols = ipv4, ipv6\n", master: """
        [::1]:\(port) inet n - n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }
        let c = try LineClient(port: port, host: [UInt8](repeating: 0, count: 15) + [1])
        #expect(try c.readLine()?.hasSuffix(" [::1]:\(port)") == true)
        try c.send("quit")
    }

    @Test func standAloneModeServesStandardInput() throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        let r = inst.run("/bin/sh", ["-c", "printf 'ping\\nquit\\n' | MAIL_CONFIG=\(inst.configDirectory) \(inst.programDirectory)/swallow-testd -S single"])
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix("hello \(r.stdout.split(separator: " ")[1]) swallow-testd\necho ping\n"), "\(r.stdout) \(r.stderr)")
    }

    @Test func childrenRetireAfterMaxUseAndMaxIdle() throws {
        let inst = try Instance(master: """
        used   unix - n n - - swallow-testd -o max_use=2 single
        idle   unix - n n - - swallow-testd -o max_idle=1 single
        multi  unix - n n - 1 swallow-testd -o max_idle=1 multi
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }

        var servers: [String] = []
        for _ in 0..<3 {
            let c = try LineClient(unix: inst.queueDirectory + "/private/used")
            servers.append(try #require(try c.readLine()))
            try c.send("quit")
            // Wait for the child to report itself idle again.
            _ = try c.readLine()
            usleep(100_000)
        }
        #expect(servers[0] == servers[1], "one process serves max_use clients")
        #expect(servers[1] != servers[2], "then a new one takes over")

        let c = try LineClient(unix: inst.queueDirectory + "/private/idle")
        _ = try c.readLine()
        try c.send("quit")
        _ = try c.readLine()
        try inst.waitFor("idle child to leave", seconds: 5) {
            inst.processes(named: Self.testd).allSatisfy { !inst.commandLine($0).contains("idle") }
        }

        let m = try LineClient(unix: inst.queueDirectory + "/private/multi")
        let first = try #require(try m.ask("a"))
        let m2 = try LineClient(unix: inst.queueDirectory + "/private/multi")
        let second = try #require(try m2.ask("b"))
        #expect(first.split(separator: " ").first == second.split(separator: " ").first, "one multi server, two clients")
        #expect(inst.logCount("exit status") == 0)
    }

    @Test func reloadKeepsConnectionsAndAppliesChanges() throws {
        let inst = try Instance(master: """
        echo    unix - n n - - swallow-testd single
        gone    unix - n n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }

        let old = try LineClient(unix: inst.queueDirectory + "/private/echo")
        let oldHello = try #require(try old.readLine())
        let g = try LineClient(unix: inst.queueDirectory + "/private/gone")
        _ = try g.readLine()

        try inst.writeMaster("""
        echo    unix - n n - - swallow-testd -o max_use=5 single
        added   unix - n n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        kill(inst.masterPID!, SIGHUP)
        try inst.waitFor("reload") { inst.logContains("reload -- version") }
        try inst.waitFor("new service socket") { access(inst.queueDirectory + "/private/added", F_OK) == 0 }

        // The connection in progress goes on, served by the old process.
        #expect(try old.ask("still there") == "echo still there")
        // A new client gets a process of the new configuration.
        let fresh = try LineClient(unix: inst.queueDirectory + "/private/echo")
        let freshHello = try #require(try fresh.readLine())
        #expect(freshHello != oldHello)
        let pid = Int32(freshHello.split(separator: " ")[1])!
        #expect(inst.commandLine(pid).contains("max_use=5"))
        // The old process leaves once its client is done.
        let oldPID = Int32(oldHello.split(separator: " ")[1])!
        try old.send("quit")
        try inst.waitFor("old child to exit") { !inst.processes(named: Self.testd).contains(oldPID) }
        // The removed service's child was stopped, quietly.
        #expect(try g.readLine() == nil)
        #expect(!inst.logContains("killed by signal"))
        let a = try LineClient(unix: inst.queueDirectory + "/private/added")
        #expect(try a.readLine()?.hasSuffix(" added") == true)
        try fresh.send("quit")
        try a.send("quit")
    }

    @Test func crashingServiceIsThrottled() throws {
        let inst = try Instance(main: "service_throttle_time = 2s\n", master: """
        crash   unix - n n - - swallow-testd crash
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }

        let path = inst.programDirectory + "/swallow-testd"
        let c1 = try LineClient(unix: inst.queueDirectory + "/private/crash")
        try inst.waitFor("throttling") { inst.logContains("warning: \(path): bad command startup -- throttling") }
        inst.expectLog("warning: process \(path) pid ")
        inst.expectLog(" exit status 3")
        // While throttled nothing new starts, though a client waits.
        usleep(500_000)
        #expect(inst.logCount("exit status 3") == 1)
        // Afterwards master tries again.
        try inst.waitFor("retry after the throttle time", seconds: 6) { inst.logCount("exit status 3") >= 2 }
        _ = c1
    }

    @Test func wakeupTimersSendTriggers() throws {
        let file = "/tmp/swallow-it-trig-\(getpid())-\(UUID().uuidString.prefix(6))"
        defer { unlink(file) }
        let inst = try Instance(master: """
        trig    unix - n n 1 1 swallow-testd trigger \(file)
        ftrig   fifo - n n 1 1 swallow-testd trigger \(file).fifo
        postlog unix-dgram n - n - 1 postlogd
        """)
        defer { unlink(file + ".fifo") }
        try inst.startMaster()
        defer { inst.stopMaster() }
        try inst.waitFor("two wakeups", seconds: 5) {
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").components(separatedBy: "W\0").count >= 3
        }
        // Over a UNIX socket the request is "W" and a null byte; into a FIFO, "W" alone.
        try inst.waitFor("fifo wakeup", seconds: 5) {
            let text = (try? String(contentsOfFile: file + ".fifo", encoding: .utf8)) ?? ""
            return text.contains(" W\n") && !text.contains("\0")
        }
    }

    /// A trigger client that waits for the server to close (Postfix's unix_trigger(), as in
    /// the reference cleanup and postkick) is served at once: one read, then close. Reading
    /// on until end of input once stalled qmgr for trigger_timeout per message.
    @Test func triggerServerClosesAfterOneRead() throws {
        let file = "/tmp/swallow-it-trig1-\(getpid())-\(UUID().uuidString.prefix(6))"
        defer { unlink(file) }
        let inst = try Instance(master: """
        trig    unix - n n - 1 swallow-testd trigger \(file)
        postlog unix-dgram n - n - 1 postlogd
        """)
        try inst.startMaster()
        defer { inst.stopMaster() }
        for request in ["I", "D"] {
            let fd = try UnixSocket.connect(inst.queueDirectory + "/private/trig", timeout: 5)
            defer { close(fd) }
            let t0 = monotonicNanos()
            #expect(writeAll(fd, Array(request.utf8)))
            // The client keeps its end open and waits for the server's close.
            #expect(FileDescriptor.waitReadable(fd, milliseconds: 5000))
            var b: UInt8 = 0
            #expect(read(fd, &b, 1) == 0)
            let took = Double(monotonicNanos() - t0) / 1e9
            #expect(took < 2, "\(took) s")
            try inst.waitFor("trigger \(request)", seconds: 5) {
                ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").contains(request)
            }
        }
    }

    @Test func masterCommandLineAndLocks() throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        let master = inst.programDirectory + "/master"
        #expect(inst.run(master, ["-c", inst.configDirectory, "-t"]).status == 0, "-t: not running")
        try inst.startMaster()
        defer { inst.stopMaster() }
        #expect(inst.run(master, ["-c", inst.configDirectory, "-t"]).status == 1, "-t: running")
        #expect(inst.run(master, ["-c", inst.configDirectory, "-t", "-w"]).status == 1)

        // A second master gives up with Postfix's message.
        let second = inst.run(master, ["-c", inst.configDirectory, "-d"])
        #expect(second.status == 1)
        // (postlogd writes the record a moment later.)
        try inst.waitFor("the second master's message") {
            inst.logContains("fatal: open lock file pid/master.pid: unable to set exclusive lock: Resource temporarily unavailable")
        }
        let bad = inst.run(master, ["-x"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("invalid option -- 'x'"))

        var st = stat()
        #expect(stat(inst.dataDirectory + "/master.lock", &st) == 0)
        #expect(st.st_uid == getpwnam(inst.owner)!.pointee.pw_uid && st.st_mode & 0o777 == 0o600)
    }

    @Test(arguments: [
        ("x", "missing \"transport type\" field"),
        ("x inet", "missing \"private\" field"),
        ("x bogus n - n - - smtpd", "bad transport type: bogus"),
        ("x inet y - n - - smtpd", "inet service cannot be private"),
        ("x unix q - n - - smtpd", "field \"private\": bad value: \"q\""),
        ("x unix - - n - -1 smtpd", "field \"max_proc\": bad value: \"-1\""),
        ("x unix - - n - - -", "field \"command\" has no default value"),
        ("x unix - - n - -", "missing \"command\" field"),
        ("x unix - - n - - smtpd { -o a=b", "missing '}' in \"{ -o a=b\""),
        ("[::1]:10027 inet n - n - - smtpd", "bad hostname or network address: [::1]:10027"),
    ])
    func masterCFErrorsAreFatal(line: String, message: String) throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        try inst.writeMaster("postlog unix-dgram n - n - 1 postlogd\n\(line)\n")
        let r = inst.run(inst.programDirectory + "/master", ["-c", inst.configDirectory, "-d"],
                         prefix: ["/usr/bin/timeout", "20"])
        #expect(r.status == 1)
        inst.expectLog("fatal: \(inst.configDirectory)/master.cf: line 2: \(message)")
    }

    @Test func exitTimeEndsMaster() throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        let start = Date()
        let r = inst.run(inst.programDirectory + "/master", ["-c", inst.configDirectory, "-d", "-e", "1"])
        #expect(r.status == 0)
        #expect(Date().timeIntervalSince(start) >= 0.9)
        inst.expectLog("master exit time has arrived")
    }

    @Test func postfixStartStatusStop() throws {
        let inst = try Instance(master: """
        echo    unix - n n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        var r = inst.postfix("status")
        #expect(r.status == 1 && r.stdout.isEmpty && r.stderr.isEmpty, "quiet when not on a terminal")
        inst.expectLog("postfix/postfix-script[")
        inst.expectLog("]: the Postfix mail system is not running")
        #expect(inst.postfix("stop").status == 1)
        inst.expectLog("]: fatal: the Postfix mail system is not running")

        r = inst.postfix("start")
        #expect(r.status == 0, "\(r.stderr)")
        inst.expectLog("starting the Postfix mail system")
        try inst.waitFor("master's first record") { inst.logContains("postfix/master[") }
        let pid = try #require(MasterLock.pid(queueDirectory: inst.queueDirectory))
        #expect(inst.postfix("status").status == 0)
        inst.expectLog("the Postfix mail system is running: PID: \(pid)")
        #expect(inst.postfix("start").status == 1)
        inst.expectLog("fatal: the Postfix mail system is already running")

        // The daemon is its own session; its children are in its process group.
        let c = try LineClient(unix: inst.queueDirectory + "/private/echo")
        _ = try c.readLine()
        #expect(getsid(pid) == pid && getpgid(pid) == pid)
        for child in inst.processes(named: Self.testd) { #expect(getpgid(child) == pid) }

        #expect(inst.postfix("reload").status == 0)
        try inst.waitFor("reload") { inst.logContains("refreshing the Postfix mail system") && inst.logContains("reload -- version") }

        r = inst.postfix("stop")
        #expect(r.status == 0)
        try inst.waitFor("every process to leave") { inst.allProcesses.isEmpty }
        inst.expectLog("stopping the Postfix mail system")
        inst.expectLog("terminating on signal 15")
        #expect(inst.postfix("status").status == 1)

        r = inst.postfix("bogus")
        #expect(r.status == 1)
        inst.expectLog("fatal: unknown command: 'bogus'. Usage: postfix start (or stop, reload, abort, flush, check, status, set-permissions, upgrade-configuration, logrotate)")
    }

    @Test func startInForegroundAndDrain() throws {
        let inst = try Instance(master: """
        echo    unix - n n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """)
        let null = open("/dev/null", O_RDWR)
        defer { close(null) }
        let argv = [inst.programDirectory + "/postfix", "-c", inst.configDirectory, "start-fg"]
        let pid = try Spawn.run(argv[0], argv: argv, environment: ["PATH=/usr/bin:/bin"], descriptors: [0: null, 1: null, 2: null])
        try inst.waitFor("master") { inst.logContains("daemon started") }
        let masterPID = try #require(MasterLock.pid(queueDirectory: inst.queueDirectory))
        #expect(inst.commandLine(masterPID) == [inst.programDirectory + "/master", "-s"])
        // Ctrl-C (or a TERM) to postfix start-fg stops the mail system; its status is master's.
        kill(pid, SIGINT)
        var status: Int32 = 0
        try inst.waitFor("start-fg to end") { waitpid(pid, &status, WNOHANG) == pid }
        #expect((status >> 8) & 0xFF == 128 + SIGTERM)
        try inst.waitFor("every process to leave") { inst.allProcesses.isEmpty }

        // drain: master is killed outright; its children notice and go.
        #expect(inst.postfix("start").status == 0)
        let c = try LineClient(unix: inst.queueDirectory + "/private/echo")
        _ = try c.readLine()
        #expect(inst.postfix("drain").status == 0)
        try c.send("quit")
        try inst.waitFor("children to leave after master") { inst.allProcesses.isEmpty }
    }

    @Test func logrotateStartsANewFile() throws {
        let inst = try Instance(main: "maillog_file_rotate_suffix = rotated\n", master: "postlog unix-dgram n - n - 1 postlogd\n")
        #expect(inst.postfix("start").status == 0)
        defer { _ = inst.postfix("stop") }
        try inst.waitFor("start-up record") { inst.logContains("daemon started") }
        let r = inst.postfix("logrotate")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(access(inst.logFile + ".rotated.gz", F_OK) == 0)
        try inst.waitFor("the new file") { inst.logContains("reload -- version") }
        #expect(inst.log.split(separator: "\n").first?.contains("postfix/master[") == true)
        #expect(inst.postfix("logrotate", "extra").status == 1)
    }

    @Test func postfixCheckCreatesDirectoriesAndWarns() throws {
        let inst = try Instance(main: "mydomian = example.com\n", master: "postlog unix-dgram n - n - 1 postlogd\n")
        rmdir(inst.queueDirectory + "/flush")
        #expect(inst.postfix("check").status == 0)
        var st = stat()
        #expect(stat(inst.queueDirectory + "/flush", &st) == 0)
        #expect(st.st_mode & 0o777 == 0o700 && st.st_uid == getpwnam(inst.owner)!.pointee.pw_uid)
        inst.expectLog("warning: \(inst.configDirectory)/main.cf: unused parameter: mydomian=example.com (did you mean \"mydomain\"?)")

        try inst.writeMaster("postlog unix-dgram n - n - 1 postlogd\nsmtp inet n - n - - nosuchd\n")
        _ = inst.postfix("check")
        inst.expectLog("warning: \(inst.configDirectory)/master.cf: line 2: service smtp/inet: program \(inst.programDirectory)/nosuchd is missing")

        chmod(inst.configDirectory, 0o777)
        _ = inst.postfix("check")
        inst.expectLog("warning: group or other writable: \(inst.configDirectory)/.")
        chmod(inst.configDirectory, 0o755)

        try FileManager.default.removeItem(atPath: inst.configDirectory + "/master.cf")
        try "# empty\n".write(toFile: inst.configDirectory + "/master.cf", atomically: true, encoding: .utf8)
        #expect(inst.postfix("check").status == 1)
        inst.expectLog("fatal: missing 'postlog' service in master.cf - run 'postfix upgrade-configuration'")
        let up = inst.postfix("upgrade-configuration")
        #expect(up.status == 0)
        #expect(up.stdout.contains("Editing \(inst.configDirectory)/master.cf, adding missing entry for postlog unix-domain datagram service"))
        #expect(inst.postfix("check").status == 0)
    }

    @Test func postlogWritesThroughPostlogd() throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        let postlog = inst.programDirectory + "/postlog"
        // Without postlogd, postlog appends to the file itself.
        var r = inst.run(postlog, ["-c", inst.configDirectory, "-p", "warn", "direct", "record"])
        #expect(r.status == 0)
        inst.expectLog(" test postfix/postlog[")
        inst.expectLog("]: warning: direct record\n")

        try inst.startMaster()
        defer { inst.stopMaster() }
        r = inst.run("/bin/sh", ["-c", "printf 'one\\ntwo\\tx\\n' | \(postlog) -c \(inst.configDirectory) -t mytag"])
        #expect(r.status == 0)
        try inst.waitFor("records from postlogd") { inst.logContains("mytag[") && inst.logContains("]: two?x\n") }
        #expect(inst.run(postlog, ["-c", inst.configDirectory, "-p", "bogus", "x"]).status == 1)

        // A record line has Postfix's shape.
        let line = try #require(inst.log.split(separator: "\n").first { $0.contains("]: one") })
        let pattern = try NSRegularExpression(pattern: #"^[A-Z][a-z]{2} [0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} test mytag\[[0-9]+\]: one$"#)
        #expect(pattern.firstMatch(in: String(line), range: NSRange(line.startIndex..., in: line)) != nil, "\(line)")

        // The reference Postfix's postlog talks to our postlogd.
        if let ref = Instance.reference {
            r = inst.run(ref + "/usr/sbin/postlog", ["-c", inst.configDirectory, "-t", "reftag", "from the reference"],
                         env: ["PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=\(ref)/usr/lib/postfix"])
            #expect(r.status == 0, "\(r.stderr)")
            try inst.waitFor("reference record") { inst.logContains("reftag[") && inst.logContains("]: from the reference\n") }
        }
    }

    @Test func referenceDaemonRunsUnderOurMaster() throws {
        guard let ref = Instance.reference else {
            print("skipped: the reference Postfix is not unpacked (make test fetches it)")
            return
        }
        let inst = try Instance(main: """
        import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=\(ref)/usr/lib/postfix

        """, master: """
        anvil   unix - - n - 1 ref-anvil
        postlog unix-dgram n - n - 1 postlogd
        """)
        try FileManager.default.createSymbolicLink(atPath: inst.programDirectory + "/ref-anvil",
                                                   withDestinationPath: ref + "/usr/lib/postfix/sbin/anvil")
        try inst.startMaster()
        defer { inst.stopMaster() }
        let client = try AttrClient(path: inst.queueDirectory + "/private/anvil", encoding: .plain, timeout: 10)
        _ = try client.expectProtocol("anvil_protocol")
        var req = AttrList()
        req.append("request", "connect")
        req.append("ident", "smtp:192.0.2.1")
        var reply = try client.request(req).scanner()
        #expect(try reply.int("status") == 0)
        #expect(try reply.int("count") == 1)
        let pids = inst.processes(named: "ref-anvil")
        #expect(pids.count == 1)
        if let p = pids.first {
            #expect(inst.commandLine(p) == ["ref-anvil", "-l", "-n", "anvil", "-t", "unix", "-d", "-u"])
        }
    }

    /// When the log file cannot be written, the records and the reason go to standard
    /// error instead of vanishing.
    @Test func unwritableLogFileIsReportedOnStderr() throws {
        let inst = try Instance(master: "postlog unix-dgram n - n - 1 postlogd\n")
        // Without the postlog service master writes the file itself.
        try inst.writeMaster("echo unix - n n - - swallow-testd single\n")
        let main = inst.configDirectory + "/main.cf"
        let text = try String(contentsOfFile: main, encoding: .utf8)
        try text.replacingOccurrences(of: "maillog_file = \(inst.logFile)", with: "maillog_file = \(inst.root)/no/such/dir/maillog")
            .write(toFile: main, atomically: true, encoding: .utf8)
        let r = inst.run(inst.programDirectory + "/master", ["-c", inst.configDirectory, "-d"],
                         prefix: ["/usr/bin/timeout", "20"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("postfix/master: fatal: open logfile '\(inst.root)/no/such/dir/maillog'"), "\(r.stderr)")
        #expect(r.stderr.contains("postfix/master[") , "the record that could not be logged: \(r.stderr)")
    }

    @Test func singleUserModeNeedsNoRoot() throws {
        guard geteuid() == 0, getpwnam("nobody") != nil, access("/usr/bin/setpriv", X_OK) == 0 else {
            print("skipped: needs root, the nobody account and setpriv to switch to it")
            return
        }
        let inst = try Instance(master: """
        echo    unix - - n - - swallow-testd single
        postlog unix-dgram n - n - 1 postlogd
        """, owner: "nobody")
        try inst.startMaster()
        defer { inst.stopMaster() }
        let c = try LineClient(unix: inst.queueDirectory + "/private/echo")
        _ = try c.readLine()
        let nobody = getpwnam("nobody")!.pointee.pw_uid
        for pid in inst.allProcesses {
            var st = stat()
            #expect(stat("/proc/\(pid)", &st) == 0 && st.st_uid == nobody, "every process runs as the user")
        }
        #expect(inst.postfix("status").status == 0)
        try c.send("quit")
    }
}
