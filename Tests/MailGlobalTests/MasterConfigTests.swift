// master.cf entries as master resolves them: defaults, internal names, lenient numbers,
// and the order in which Postfix reports problems.
import Testing
import Glibc
import MailGlobal
import MailUtil

@Suite struct MasterConfigTests {
    func resolve(_ line: String, _ settings: [String: String] = [:]) -> Result<MasterService?, ConfigError> {
        var e = ConfigEntries()
        for (k, v) in (["inet_protocols": "ipv4", "inet_interfaces": "all", "daemon_directory": "/usr/libexec/postfix"]
                       .merging(settings) { $1 }).sorted(by: { $0.key < $1.key }) {
            e[k] = v
        }
        let config = MailConfig(configDirectory: "/etc/postfix", entries: e, processName: "master")
        let entry = MasterCF.entries(Array((line + "\n").utf8), path: "master.cf")[0]
        let ctx = MasterConfig.Context(config: config, path: "/etc/postfix/master.cf", families: [AF_INET],
                                       interfaces: config.string("inet_interfaces"))
        return MasterConfig.resolve(entry, ctx, disable: config.string("master_service_disable"))
    }

    func service(_ line: String, _ settings: [String: String] = [:]) throws -> MasterService {
        try #require(try resolve(line, settings).get())
    }

    @Test func columnsAndDefaults() throws {
        let s = try service("pickup unix n - n 60 1 pickup")
        #expect(s.identity == "public/pickup" && !s.isPrivate && s.unprivileged && !s.chroot)
        #expect(s.wakeup == 60 && !s.wakeupConditional && s.maxProcesses == 1)
        #expect(s.path == "/usr/libexec/postfix/pickup")
        let d = try service("rewrite unix - - n - - trivial-rewrite")
        #expect(d.identity == "private/rewrite" && d.maxProcesses == 100)
        let t = try service("tlsmgr unix - - n 1000? 1 tlsmgr")
        #expect(t.wakeup == 1000 && t.wakeupConditional)
        // Postfix reads numbers with atoi() once the first character is a digit.
        #expect(try service("x unix - - n 10x 2y cmd").wakeup == 10)
        // Before compatibility level 1, "-" in the chroot column means y.
        #expect(try service("x unix - - - - - cmd", ["compatibility_level": "0"]).chroot)
        #expect(try !service("x unix - - - - - cmd", ["compatibility_level": "3.6"]).chroot)
    }

    @Test func argumentsKeepBracesGrouping() throws {
        let s = try service("x unix - - n - - cmd -o a=b { -o c = d e } {x y} \"q r\" { }")
        #expect(s.arguments == ["-o", "a=b", "-o c = d e", "x y", "\"q", "r\"", ""])
    }

    @Test func inetNames() throws {
        let a = try service("smtp inet n - n - - smtpd")
        #expect(a.identity == "25" && a.port == 25 && a.inetAddresses.count == 1 && !a.localOnly)
        let b = try service("127.0.0.1:submission inet n - n - - smtpd")
        #expect(b.identity == "[127.0.0.1]:587" && b.localOnly)
        let c = try service("127.0.0.1:99999 inet n - n - - smtpd")
        #expect(c.port == 34463, "ports wrap as htons(atoi()) wraps them")
        let d = try service("127.0.0.1:nosuchport inet n - n - - smtpd")
        #expect(d.port == nil, "reported when the socket is made")
    }

    @Test(arguments: [
        ("x", "missing \"transport type\" field"),
        ("x - n", "field \"transport type\" has no default value"),
        ("x inet y", "inet service cannot be private"),
        ("x unix - - n - 1 -", "field \"command\" has no default value"),
        ("x unix - - n -1 1 cmd", "field \"wakeup_time\": bad value: \"-1\""),
        ("x unix - maybe", "field \"unprivileged\": bad value: \"maybe\""),
        ("127.0.0.1: inet n - n - - smtpd", "missing service information in \"127.0.0.1:\""),
        ("[127.0.0.1 inet n - n - - smtpd", "missing \"]\" in \"[127.0.0.1\""),
    ])
    func errors(line: String, message: String) {
        guard case .failure(let e) = resolve(line) else {
            Issue.record("accepted: \(line)")
            return
        }
        #expect(e.message == "/etc/postfix/master.cf: line 1: \(message)")
    }

    @Test func disabledServicesAreSkippedBeforeTheirFieldsAreRead() throws {
        let off = ["master_service_disable": "pickup/UNIX, INET"]
        #expect(try resolve("pickup unix n - n 60 1 pickup", off).get() == nil)
        #expect(try resolve("smtp inet bad fields", off).get() == nil)
        #expect(try resolve("cleanup unix n - n - 0 cleanup", off).get() != nil)
        let keep = ["master_service_disable": "!smtp/inet, inet"]
        #expect(try resolve("smtp inet n - n - - smtpd", keep).get() != nil)
    }
}
