// PostfixCommand: the postfix(1) front end: options, configuration, environment, and the
// hand-over to the subcommand.
// Mirrors Postfix postfix/postfix.c. Messages are tagged "postfix" and appear on standard
// error only when it is a terminal (scripts must use the exit status), as in Postfix. The
// subcommands, which Postfix runs as the shell script postfix-script, run here natively
// (see PostfixScript) with the same messages, tag and environment.
//
// Single-user mode (beyond Postfix): the mail_owner account may also run postfix, for an
// instance that needs no root.
import Glibc
import CShim
import MailUtil
import MailGlobal

public enum PostfixCommand {
    static let usageText = "usage: postfix [-c config_dir] [-Dv] command"
    /// Parameters exported for postfix-script and the programs it runs.
    static let exported = ["command_directory", "daemon_directory", "data_directory", "meta_directory",
                           "queue_directory", "config_directory", "shlib_directory", "mail_owner", "setgid_group",
                           "sendmail_path", "mailq_path", "newaliases_path", "manpage_directory",
                           "sample_directory", "readme_directory", "html_directory"]

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        openStandardDescriptors()
        let program = basename(of: arguments.first ?? "postfix")
        let tty = isatty(2) != 0
        MailLog.setupEarly(program: program, tag: program, stderrTag: tty ? program : nil)
        Msg.sleepBeforeFatalExit = false
        if getuid() != geteuid() || getgid() != getegid() {
            Msg.fatal("the postfix command must not run as a set-uid process")
        }

        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:Dv") { c, v in
            switch c {
            case "c":
                var value = v ?? ""
                if !value.hasPrefix("/") { Msg.fatal("-c requires absolute pathname") }
                while value.count > 1 && value.hasSuffix("/") { value.removeLast() }
                setenv(MailConfig.configEnvironment, value, 1)
            case "D":
                setenv("MAIL_DEBUG", "", 1)
            default:
                Msg.verbose += 1
                setenv("MAIL_VERBOSE", "", 1)
            }
        }
        if let problem {
            writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal(usageText)
        }

        let config = MailConfig.load(processName: program)
        let accounts = MailParams.check(config)
        ImportEnvironment.apply(config)
        MailLog.setup(config, program: program, tag: program, stderrTag: tty ? program : nil, fileFallback: true)
        if getuid() != 0 && getuid() != accounts.ownerUID {
            Msg.error("to submit mail, use the Postfix sendmail command")
            Msg.fatal("the postfix command is reserved for the superuser")
        }
        let compat = CompatLevel.parse(config.string("compatibility_level"), warn: { Msg.warn($0) })
        if let c = compat, c < CompatLevel.current {
            Msg.info("Postfix is using backwards-compatible default settings")
            Msg.info("See http://www.postfix.org/COMPATIBILITY_README.html for details")
            Msg.info("To disable backwards compatibility use \"postconf compatibility_level=\(CompatLevel.current)\" and \"postfix reload\"")
        }

        setenv("PATH", "/bin:/usr/bin:/sbin:/usr/sbin", 1)
        setenv(MailConfig.configEnvironment, config.configDirectory, 1)
        setenv("MAIL_LOGTAG", config.string("syslog_name"), 1)
        for name in exported { setenv(name, config.string(name), 1) }
        for name in ["command_directory", "daemon_directory", "queue_directory"] {
            let dir = config.string(name)
            if chdir(dir) < 0 { Msg.fatal("chdir(\(dir)): \(errnoText(errno))") }
        }

        let script = PostfixScript(config: config, tty: tty)
        exit(script.dispatch(operands.first ?? "", Array(operands.dropFirst())))
    }
}
