// Logrotate: "postfix logrotate": rename maillog_file with a time suffix, make postlogd
// reopen it, and compress the old file.
// Mirrors the logrotate part of Postfix conf/postfix-script: mv, reload (which starts a
// new postlogd), a second's pause, then maillog_file_compressor; any failing step is
// fatal with what the step said.
import Glibc
import MailUtil
import CShim
import MailGlobal

extension PostfixScript {
    func logrotate(_ args: [String]) -> Int32 {
        if !args.isEmpty { fatal("usage postfix logrotate (no arguments)") }
        for name in ["maillog_file", "maillog_file_compressor", "maillog_file_rotate_suffix"]
        where config.string(name).isEmpty {
            fatal("empty '\(name)' parameter value - logfile rotation failed")
        }
        let file = config.string("maillog_file")
        if file.hasPrefix("/dev/") { fatal("not rotating '\(file)'") }
        var now = time(nil)
        var tmv = tm()
        localtime_r(&now, &tmv)
        var buf = [CChar](repeating: 0, count: 256)
        let n = strftime(&buf, buf.count, config.string("maillog_file_rotate_suffix"), &tmv)
        let suffix = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let rotated = "\(file).\(suffix)"
        if rename(file, rotated) < 0 {
            fatal("logfile '\(file)' rotation failed: mv: cannot stat '\(file)': \(errnoText(errno))")
        }
        if running, let pid = MasterLock.pid(queueDirectory: queue) { kill(pid, SIGHUP) }
        sleep(1)
        let compressor = config.string("maillog_file_compressor")
        let (status, errors) = runCapturingErrors(compressor, [rotated])
        if status != 0 { fatal("logfile '\(file)' rotation failed: \(errors)") }
        return 0
    }

    /// Runs a program found on $PATH; returns its status and what it wrote to stderr.
    func runCapturingErrors(_ program: String, _ args: [String]) -> (Int32, String) {
        var fds: [Int32] = [-1, -1]
        guard cshim_pipe2_cloexec(&fds) == 0 else { return (1, errnoText(errno)) }
        let path = program.contains("/") ? program
            : ["/bin", "/usr/bin", "/sbin", "/usr/sbin"].map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 }
        guard let path else {
            close(fds[0]); close(fds[1])
            return (127, "\(program): not found")
        }
        let pid = try? Spawn.run(path, argv: [program] + args, environment: Spawn.currentEnvironment,
                                 descriptors: [0: 0, 1: 1, 2: fds[1]])
        close(fds[1])
        let err = (try? SafeFile.readAll(fd: fds[0])) ?? []
        close(fds[0])
        guard let pid else { return (127, "\(program): cannot execute") }
        var text = String(decoding: err, as: UTF8.self)
        while text.hasSuffix("\n") { text.removeLast() }
        return (wait(pid), text)
    }
}
