import Testing
import TestSupport
import Glibc
@testable import MailGlobal
@testable import MailUtil

@Suite struct ConfigFileTests {
    @Test func logicalLines() {
        let text = "a = 1\n\n# c\nb = x\n  y\n# inner\n\tz\n   \nc=\r\n"
        let lines = ConfigFile.logicalLines(bytes(text), path: "main.cf")
        #expect(lines.map(\.string) == ["a = 1", "b = x  y\tz", "c=\r"])
        #expect(lines.map(\.firstLine) == [1, 4, 9])
    }

    @Test func nulEndsTheLine() {
        let lines = ConfigFile.logicalLines([0x61, 0x3D, 0x62, 0, 0x63, 0x0A], path: "x")
        #expect(lines.map(\.string) == ["a=b"])
    }

    @Test(arguments: [
        ("name = value", "name", "value"),
        ("name=value", "name", "value"),
        ("  name\t =\t a b  \r", "name", "a b"),
        ("name =", "name", ""),
    ])
    func nameValue(line: String, name: String, value: String) throws {
        let nv = try ConfigFile.splitNameValue(bytes(line)).get()
        #expect(nv.name == name && nv.value == value)
    }

    @Test func nameValueErrors() {
        #expect(throws: ConfigFile.NameValueError.missingEquals) { try ConfigFile.splitNameValue(bytes("foo bar")).get() }
        #expect(throws: ConfigFile.NameValueError.missingEquals) { try ConfigFile.splitNameValue(bytes("a b = c")).get() }
        #expect(throws: ConfigFile.NameValueError.missingName) { try ConfigFile.splitNameValue(bytes("= c")).get() }
        #expect("\(ConfigFile.NameValueError.missingEquals)" == "missing '=' after attribute name")
    }
}

@Suite struct MailConfigTests {
    func config(_ settings: [String: String]) -> MailConfig {
        var e = ConfigEntries()
        for (k, v) in settings.sorted(by: { $0.key < $1.key }) { e[k] = v }
        return MailConfig(configDirectory: "/etc/postfix", entries: e, processName: "test")
    }

    @Test func tableHasEveryBuiltin() {
        #expect(ParamTable.all.count == 831)
        #expect(ParamTable.definition("smtpd_timeout")?.kind == .time(unit: UInt8(ascii: "s")))
        #expect(ParamTable.definition("message_size_limit")?.kind == .long)
        #expect(ParamTable.definition("forward_path")?.kind == .raw)
        #expect(ParamTable.definition("myhostname")?.defaultValue == nil)
        #expect(ParamTable.definition("mail_name")?.defaultValue == "Swallow")
    }

    @Test func defaultsExpandLazily() {
        let c = config(["myhostname": "mx.example.org"])
        #expect(c.value("mydomain") == "example.org")
        #expect(c.value("myorigin") == "mx.example.org")
        #expect(c.value("mydestination") == "mx.example.org, localhost.example.org, localhost")
        #expect(c.value("smtpd_banner") == "mx.example.org ESMTP Swallow")
        #expect(c.time("smtpd_timeout") == 300)
        #expect(c.int("smtpd_hard_error_limit") == 20)
        #expect(c.bool("append_dot_mydomain") == true)
        #expect(c.value("mynetworks_style") == "subnet")
    }

    @Test func stressAndCompatibilityLevelChangeDefaults() {
        let c = config(["stress": "yes", "compatibility_level": "3.7", "myhostname": "h.example"])
        #expect(c.time("smtpd_timeout") == 10)
        #expect(c.int("smtpd_hard_error_limit") == 1)
        #expect(c.bool("append_dot_mydomain") == false)
        #expect(c.value("smtpd_relay_restrictions") == "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination")
        #expect(c.value("relay_domains") == "")
    }

    @Test func rawParametersAreNotExpanded() {
        let c = config([:])
        #expect(c.value("forward_path") == "$home/.forward${recipient_delimiter}${extension}, $home/.forward")
    }

    @Test func unqualifiedHostGetsDomain() {
        #expect(HostDefaults.mydomain(myhostname: "vm") == "localdomain")
        #expect(HostDefaults.mydomain(myhostname: "a.b.c") == "b.c")
        #expect(HostDefaults.mydomain(myhostname: "x.y") == "y")
        #expect(HostDefaults.mydomain(myhostname: "a.") == "")
        let c = config(["mydomain": "corp.example"])
        let host = HostDefaults.hostname()
        #expect(c.value("myhostname") == (host.contains(".") ? host : host + ".corp.example"))
    }

    @Test func mynetworksStyles() throws {
        let addrs = [
            HostDefaults.InterfaceAddress(family: AF_INET, address: [127, 0, 0, 1], mask: [255, 0, 0, 0]),
            HostDefaults.InterfaceAddress(family: AF_INET, address: [192, 0, 2, 2], mask: [255, 255, 255, 0]),
            HostDefaults.InterfaceAddress(family: AF_INET6, address: [0xfd] + [UInt8](repeating: 0, count: 14) + [2],
                                          mask: [UInt8](repeating: 0xFF, count: 8) + [UInt8](repeating: 0, count: 8)),
        ]
        #expect(try HostDefaults.mynetworks(style: "subnet", addresses: addrs).get() == "127.0.0.0/8 192.0.2.0/24 [fd00::]/64")
        #expect(try HostDefaults.mynetworks(style: "host", addresses: addrs).get() == "127.0.0.1/32 192.0.2.2/32 [fd00::2]/128")
        #expect(try HostDefaults.mynetworks(style: "class", addresses: addrs + addrs).get() == "127.0.0.0/8 192.0.2.0/24 [fd00::]/64")
        #expect(throws: ConfigError.self) { try HostDefaults.mynetworksStyle("host,class").get() }
        #expect(throws: ConfigError("unknown mynetworks mask style value \"HOST\" in \"HOST\"")) { try HostDefaults.mynetworksStyle("HOST").get() }
        #expect(try HostDefaults.mynetworksStyle("host host").get() == "host")
        #expect(throws: ConfigError("unknown inet_protocols value \"IPv4\" in \"IPv4\"")) { try HostDefaults.families(inetProtocols: "IPv4").get() }
        let classD = HostDefaults.InterfaceAddress(family: AF_INET, address: [224, 1, 2, 3], mask: [255, 255, 255, 0])
        #expect(try HostDefaults.mynetworks(style: "class", addresses: [classD]).get() == "224.0.0.0/4")
    }

    @Test func transportSettingsFallBack() {
        let c = config(["relay_destination_concurrency_limit": "3"])
        #expect(c.transportInt("relay", "_destination_concurrency_limit", fallback: "default_destination_concurrency_limit") == 3)
        #expect(c.transportInt("smtp", "_destination_concurrency_limit", fallback: "default_destination_concurrency_limit") == 20)
    }

    @Test func loadsMainCFWithOverrides() throws {
        let dir = "/tmp/swallow-cfg-\(getpid())"
        mkdir(dir, 0o755)
        defer { unlink(dir + "/main.cf"); rmdir(dir) }
        try SafeFile.atomicWrite(dir + "/main.cf", bytes("myhostname = a.example\nrelayhost = [x]\n"))
        let c = MailConfig.load(configDirectory: dir, overrides: ["relayhost=[y]:25"], processName: "t")
        #expect(c.value("myhostname") == "a.example")
        #expect(c.value("relayhost") == "[y]:25")
        #expect(c.value("config_directory") == dir)
        #expect(c.value("process_name") == "t")
    }
}
