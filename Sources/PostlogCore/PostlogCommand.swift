// PostlogCommand: postlog(1): log a record (or each line of standard input) the way Postfix
// programs log: to syslog, or to the postlog service when maillog_file is set (appending
// to the file directly when the service is not there), and to standard error when that is
// a terminal. Mirrors Postfix postlog/postlog.c (3.7): a "fatal" or "panic" record is
// logged with that severity, then postlog pauses a second and still exits 0.
import Glibc
import MailUtil
import MailGlobal

public enum PostlogCommand {
    static let usageText = "usage: postlog [-c config_dir] [-i] [-p priority] [-t tag] [-v] [text]"

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        openStandardDescriptors()
        let program = basename(of: arguments.first ?? "postlog")
        // Installed set-gid: the caller's environment must not choose where records go.
        if getgid() != getegid() || getuid() != geteuid() {
            for name in [MailLog.serviceEnvironment, MailLog.hostnameEnvironment, "TZ"] { unsetenv(name) }
        }
        let tty = isatty(2) != 0
        MailLog.setupEarly(program: program, stderrTag: tty ? program : nil)
        Msg.sleepBeforeFatalExit = false

        var level = MsgLevel.info
        var tag: String?
        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:ip:t:v") { c, v in
            switch c {
            case "c": setenv(MailConfig.configEnvironment, v ?? "", 1)
            case "p":
                guard let l = severity(v ?? "") else { Msg.fatal("bad severity: \"\(v ?? "")\"") }
                level = l
            case "t": tag = v
            case "v": Msg.verbose += 1
            default: break
            }
        }
        if let problem {
            writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal(usageText)
        }
        let config = MailConfig.load(processName: program)
        MailParams.check(config)
        let recordTag = tag ?? (config.string("syslog_name") + "/" + program)
        MailLog.setup(config, program: program, tag: recordTag, stderrTag: tty ? recordTag : nil, fileFallback: true)

        if !operands.isEmpty {
            Msg.record(level, operands.joined(separator: " "))
        } else {
            let input = FDStream(fd: 0)
            // Records are cut at 2000 bytes anyway; only the newline is removed (a CR
            // before it shows as "?", as in Postfix).
            while let line = try? input.readLine(limit: 65536, overflow: .truncate) {
                Msg.record(level, String(decoding: line.ending == .crlf ? line.bytes + [0x0D] : line.bytes, as: UTF8.self))
            }
        }
        if level >= .fatal { sleep(1) }
        exit(0)
    }

    /// -p values, without regard to case.
    static func severity(_ text: String) -> MsgLevel? {
        switch text.lowercased() {
        case "info": return .info
        case "warn", "warning": return .warn
        case "error", "err": return .error
        case "fatal", "crit": return .fatal
        case "panic": return .panic
        default: return nil
        }
    }
}
