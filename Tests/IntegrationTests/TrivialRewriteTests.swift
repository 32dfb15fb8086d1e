// trivial-rewrite on a running instance: canonical rewriting, address classes, transport
// and relocated tables, the open-relay battery, the client library, and — when the
// reference Postfix is unpacked — every answer compared with the reference daemon's,
// which runs under our master beside ours on the same configuration.
import Foundation
import Glibc
import Testing
import MailUtil
import MailGlobal

@Suite(.serialized)
struct TrivialRewriteTests {
    typealias Pairs = [(String, String)]

    static let tables: [String: String] = [
        "transport": """
        exact@foreign.com\tsmtp:[exact.gw]
        user@t.example\trelay:
        list@t.example\t:[listhop]
        t.example\ttx:t-hop
        .sub.t.example\tsubx
        err.example\terror:5.1.2 no such domain
        errnohop.example\terror
        retry.example\tretry
        keep.example\t:
        local.example\tlocal
        "q.k."@t.example\tqx:

        """,
        "wild": "*\tstarx:starhop\n",
        "sdr": "alice@example.org\t[alice.relay]:587\n@example.net\t[net.relay]\n<>\t[null.relay]\ndunno@example.org\tDUNNO\n",
        "sdt": "alice@example.org\tsdt:\nbob@example.org\tsdt2:bobhop\n<>\tnullxport\ndunno@example.org\tDUNNO\n",
        "reloc": "moved@mx.example.com\tnew@where.example\nmoved@foreign.com\tsomewhere\n",
        "tr.re": "/^re-(.*)@foreign\\.com$/\tretrans:[$1]\n",
    ]

    /// An instance running our trivial-rewrite as "rewrite" and, when available, the
    /// reference's as "refrewrite"; `extra` is added to main.cf ($tables names the
    /// directory of the tables above).
    func instance(_ extra: String) throws -> (Instance, String) {
        let ref = Instance.reference
        let tables = "/tmp/swallow-tr-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: tables, withIntermediateDirectories: true)
        for (name, text) in Self.tables { try text.write(toFile: tables + "/" + name, atomically: true, encoding: .utf8) }
        chmod(tables, 0o755)
        var main = "myhostname = mx.example.com\nmydomain = example.com\ntables = \(tables)\n"
        if let ref {
            main += "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=\(ref)/usr/lib/postfix\n"
        }
        let inst = try Instance(main: main + extra, master: """
        rewrite    unix - - n - - trivial-rewrite
        \(ref != nil ? "refrewrite unix - - n - - ref-trivial-rewrite" : "")
        postlog    unix-dgram n - n - 1 postlogd
        """)
        // One myhostname only (the instance has its own).
        let mainPath = inst.configDirectory + "/main.cf"
        let text = try String(contentsOfFile: mainPath, encoding: .utf8)
        try text.replacingOccurrences(of: "myhostname = test.example.com\n", with: "")
            .write(toFile: mainPath, atomically: true, encoding: .utf8)
        if let ref {
            try FileManager.default.createSymbolicLink(atPath: inst.programDirectory + "/ref-trivial-rewrite",
                                                       withDestinationPath: ref + "/usr/lib/postfix/sbin/trivial-rewrite")
        }
        try inst.startMaster()
        return (inst, tables)
    }

    final class Service {
        let client: AttrClient
        init(_ inst: Instance, _ name: String) throws {
            client = try AttrClient(path: inst.queueDirectory + "/private/" + name, timeout: 10)
            try client.expectProtocol(MailProtocol.trivialRewrite)
        }
        func ask(_ pairs: Pairs) throws -> Pairs {
            var l = AttrList()
            for (n, v) in pairs { l.append(n, v) }
            return try client.request(l).items.compactMap { item in
                if case .pair(let p) = item { return (p.name, String(decoding: p.value, as: UTF8.self)) }
                return nil
            }
        }
        func rewrite(_ rule: String, _ address: String) throws -> String {
            try ask([("request", "rewrite"), ("rule", rule), ("address", address)]).last?.1 ?? "?"
        }
        /// transport, nexthop, recipient, flags.
        func resolve(_ address: String, sender: String = "", verify: Bool = false) throws -> [String] {
            try ask([("request", verify ? "verify" : "resolve"), ("sender", sender), ("address", address)]).dropFirst().map { $0.1 }
        }
    }

    @Test func rewritesToCanonicalForm() throws {
        let (inst, tables) = try instance("remote_header_rewrite_domain = remote.invalid\n")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let s = try Service(inst, "rewrite")
        #expect(try s.rewrite("local", "user") == "user@mx.example.com", "myorigin is $myhostname")
        #expect(try s.rewrite("local", "user@host") == "user@host", "append_dot_mydomain is off at compatibility level 3.7")
        #expect(try s.rewrite("local", "user@host.") == "user@host")
        #expect(try s.rewrite("local", "@a,@b:user@c.example") == "user@c.example")
        #expect(try s.rewrite("local", "host!user") == "user@host")
        #expect(try s.rewrite("local", "user%host") == "user@host")
        #expect(try s.rewrite("local", "\"first last\"@host.example") == "\"first last\"@host.example")
        #expect(try s.rewrite("local", "") == "")
        #expect(try s.rewrite("local", "@") == "\"\"")
        #expect(try s.rewrite("remote", "user") == "user@remote.invalid")
        // An unknown rule set drops the connection.
        #expect(throws: (any Error).self) { try s.rewrite("bogus", "user") }
        try inst.waitFor("the warning") { inst.logContains("warning: unknown context: bogus") }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let (inst, tables) = try instance("")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let s = try Service(inst, "rewrite")
        var both = AttrList()
        both.append("request", "rewrite"); both.append("rule", "local"); both.append("address", "one")
        var bytes = try AttrCodec.encode(both, .attr0)
        var second = AttrList()
        second.append("request", "rewrite"); second.append("rule", "local"); second.append("address", "two")
        bytes += try AttrCodec.encode(second, .attr0)
        try s.client.stream.write(bytes)
        try s.client.stream.flush()
        let first = try s.client.receive().items.last
        let next = try s.client.receive().items.last
        #expect(first == AttrItem.pair(name: "address", value: Array("one@mx.example.com".utf8)))
        #expect(next == AttrItem.pair(name: "address", value: Array("two@mx.example.com".utf8)))
    }

    @Test func malformedRequests() throws {
        let (inst, tables) = try instance("")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        // A surplus attribute is reported, and the request still answered.
        let s = try Service(inst, "rewrite")
        let r = try s.ask([("request", "rewrite"), ("rule", "local"), ("address", "u"), ("extra", "x")])
        #expect(r.last?.1 == "u@mx.example.com")
        try inst.waitFor("the warning") {
            inst.logContains("warning: unexpected attribute extra from rewrite socket (expecting: (list terminator))")
        }
        // Out of order, missing or unknown: no answer, the connection closes.
        for (request, warning) in [([("request", "resolve"), ("address", "u@x.test")], "unexpected attribute address from rewrite socket (expecting: sender)"),
                                   ([("request", "rewrite"), ("rule", "local")], "missing attribute address in input from rewrite socket"),
                                   ([("request", "bogus")], "bad command bogus")] {
            let c = try Service(inst, "rewrite")
            #expect(throws: (any Error).self) { try c.ask(request) }
            try inst.waitFor(warning) { inst.logContains("warning: " + warning) }
        }
    }

    @Test func resolvesAddressClasses() throws {
        let (inst, tables) = try instance("""
        virtual_alias_domains = valias.example
        virtual_mailbox_domains = vmbox.example
        relay_domains = relay.example
        relayhost = [gw.example]:2525
        relocated_maps = texthash:$tables/reloc

        """)
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let s = try Service(inst, "rewrite")
        #expect(try s.resolve("user@mx.example.com") == ["local", "mx.example.com", "user@mx.example.com", "256"])
        #expect(try s.resolve("user") == ["local", "mx.example.com", "user@mx.example.com", "256"])
        #expect(try s.resolve("") == ["local", "mx.example.com", "MAILER-DAEMON@mx.example.com", "256"])
        #expect(try s.resolve("user@valias.example") == ["error", "5.1.1 User unknown in virtual alias table", "user@valias.example", "512"])
        #expect(try s.resolve("user@vmbox.example") == ["virtual", "vmbox.example", "user@vmbox.example", "1024"])
        #expect(try s.resolve("user@relay.example") == ["relay", "[gw.example]:2525", "user@relay.example", "2048"])
        #expect(try s.resolve("user@other.example") == ["smtp", "[gw.example]:2525", "user@other.example", "4096"])
        #expect(try s.resolve("moved@mx.example.com") == ["error", "5.1.6 User has moved to new@where.example", "moved@mx.example.com", "256"])
        // Malformed domains: flagged, no transport.
        #expect(try s.resolve("user@bad_host!") == ["CHANNEL NOT UPDATED", "NEXTHOP NOT UPDATED", "user@bad_host!", "4100"])
        #expect(try s.resolve("-dash@mx.example.com")[3] == "260")
    }

    /// Whatever the routing tricks, mail for a foreign domain never resolves as local.
    @Test(arguments: [true, false])
    func openRelayBattery(percentAndBang: Bool) throws {
        let (inst, tables) = try instance(percentAndBang ? "" : "allow_percent_hack = no\nswap_bangpath = no\n")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let s = try Service(inst, "rewrite")
        for address in ["user%foreign.com@mx.example.com", "foreign.com!user@mx.example.com",
                        "@mx.example.com:user@foreign.com", "user@foreign.com@mx.example.com",
                        "\"user@foreign.com\"@mx.example.com", "user@foreign.com.", "user%foreign.com@[127.0.0.1]",
                        "foreign.com!user@localhost", "user@foreign.com@localhost."] {
            let r = try s.resolve(address)
            let flags = Int(r[3]) ?? 0
            // Either it goes to the foreign site (default class), or it stays local with
            // the routing operators flagged, which smtpd refuses.
            #expect(flags & 256 == 0 || flags & 2 != 0, "\(address) → \(r)")
            if flags & 256 != 0 { #expect(!r[2].hasSuffix("@foreign.com"), "\(address) → \(r)") }
        }
    }

    @Test func clientLibraryTalksToTheService() throws {
        let (inst, tables) = try instance("transport_maps = texthash:$tables/transport\n")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        setenv("MAIL_CONFIG", inst.configDirectory, 1)
        defer { unsetenv("MAIL_CONFIG") }
        let config = MailConfig.load(configDirectory: inst.configDirectory, processName: "test")
        config.set("queue_directory", inst.queueDirectory)
        let cwd = FileManager.default.currentDirectoryPath
        chdir(inst.queueDirectory)
        defer { chdir(cwd) }
        let c = TrivialRewriteClient(config: config)
        #expect(c.rewrite("user", rule: "local") == "user@mx.example.com")
        let r = c.resolve("x@t.example", sender: "")
        #expect(r == ResolveReply(transport: "tx", nexthop: "t-hop", recipient: "x@t.example", flags: .default))
        #expect(c.resolve("x@t.example", sender: "") == r, "answered from the 30-second cache")
        #expect(c.resolve("a@err.example", sender: "").nexthop == "5.1.2 no such domain")
    }

    /// A rebuilt table file ends the process within 10 seconds; the next client gets a
    /// new process with the new table.
    @Test func changedTableRestartsTheService() throws {
        let (inst, tables) = try instance("transport_maps = hash:$tables/tdb\n")
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let postmap = inst.programDirectory + "/postmap"
        try "x.example one:\n".write(toFile: tables + "/tdb", atomically: true, encoding: .utf8)
        #expect(inst.run(postmap, ["-c", inst.configDirectory, "hash:\(tables)/tdb"]).status == 0)
        // The service process starts with the first client, after the table exists.
        var s = try Service(inst, "rewrite")
        #expect(try s.resolve("u@x.example")[0] == "one")
        sleep(1)
        try "x.example two:\n".write(toFile: tables + "/tdb", atomically: true, encoding: .utf8)
        #expect(inst.run(postmap, ["-c", inst.configDirectory, "hash:\(tables)/tdb"]).status == 0)
        try inst.waitFor("the restart", seconds: 15) {
            inst.logContains("table hash:\(tables)/tdb(0,lock|no_regsub|fold_fix|utf8_request) has changed -- restarting")
        }
        s = try Service(inst, "rewrite")
        #expect(try s.resolve("u@x.example")[0] == "two")
    }

    static let addresses = ["", "user", "user@host", "user@host.", "user@host..", "@a,@b:user@c", "user%host",
        "user%host@example.com", "a!b!user", "a!user@host", "\"quoted user\"@host", "user@[1.2.3.4]", "user@localhost",
        "USER@Host.Example.COM", "@", "user@", "@host", "a@b@c", "user@mx.example.com", "\"a@b\"@example.com",
        "user.@host", "x@y.z.", "user%foreign.com@mx.example.com", "foreign.com!user@mx.example.com",
        "@mx.example.com:user@foreign.com", "user@foreign.com@mx.example.com", "\"user@foreign.com\"@mx.example.com",
        "user@[127.0.0.1]", "user@127.0.0.1", "postmaster", "-dash@mx.example.com", "user@bad_host!", "user@[IPv6:::1]",
        "exact@foreign.com", "exact+ext@foreign.com", "user@t.example", "user+x@t.example", "list@t.example",
        "a@sub.t.example", "a@x.sub.t.example", "a@err.example", "a@errnohop.example", "a@retry.example",
        "a@keep.example", "a@local.example", "re-abc@foreign.com", "moved@mx.example.com", "moved@foreign.com",
        "user@valias.example", "user@vmbox.example", "user@relay.example", "user@sub.relay.example", "USER@T.EXAMPLE",
        "q.k.@t.example", "q.k.+x@t.example", "owner-list@t.example", "a\nb@c.test", "first last@t.example",
        "user@bücher.example", "user@BÜCHER.example", "user@bücher..example", "user@123", "user@1.2.3.4.5", "foreign_com.test"]
    static let senders = ["", "alice@example.org", "bob@example.org", "x@example.net", "dunno@example.org"]
    static let classes = "virtual_alias_domains = valias.example\nvirtual_mailbox_domains = vmbox.example\nrelay_domains = relay.example\n"
    static let configurations: [String] = [
        "",
        "append_dot_mydomain = no\nswap_bangpath = no\nallow_percent_hack = no\nremote_header_rewrite_domain = domain.invalid\n",
        classes + "relayhost = [gw.example]:2525\nresolve_dequoted_address = no\nresolve_numeric_domain = yes\nresolve_null_domain = yes\n",
        classes + "transport_maps = texthash:$tables/transport, texthash:$tables/wild\nparent_domain_matches_subdomains = transport_maps relay_domains\n",
        classes + "transport_maps = regexp:$tables/tr.re texthash:$tables/transport\nrelocated_maps = texthash:$tables/reloc\nsender_dependent_relayhost_maps = texthash:$tables/sdr\nsender_dependent_default_transport_maps = texthash:$tables/sdt\nrelayhost = [default.relay]\n",
        classes + "local_transport = local:$myhostname\nvirtual_transport = virtual:vhop\nrelay_transport = relay:[relayhop]\ndefault_transport = smtp:[defhop]\naddress_verify_default_transport = vsmtp\naddress_verify_relayhost = [verify.relay]\nallow_min_user = yes\nempty_address_recipient = postmaster\nshow_user_unknown_table_name = no\n",
        classes + "transport_maps = fail:broken\n",
        "mydestination = $myhostname, localhost, vmbox.example\nvirtual_mailbox_domains = vmbox.example\n",
    ]

    /// Every answer, for every configuration, equals the reference daemon's.
    @Test(.enabled(if: Instance.reference != nil, "the reference Postfix is not unpacked in .ref/postfix (tools/fetch-reference)"),
          arguments: configurations.indices)
    func sameAnswersAsTheReference(configuration: Int) throws {
        let (inst, tables) = try instance(Self.configurations[configuration])
        defer { inst.stopMaster(); try? FileManager.default.removeItem(atPath: tables) }
        let ours = try Service(inst, "rewrite"), theirs = try Service(inst, "refrewrite")
        var requests: [Pairs] = []
        for rule in ["local", "remote"] {
            for a in Self.addresses { requests.append([("request", "rewrite"), ("rule", rule), ("address", a)]) }
        }
        for verb in ["resolve", "verify"] {
            for sender in Self.senders {
                for a in Self.addresses { requests.append([("request", verb), ("sender", sender), ("address", a)]) }
            }
        }
        var same = 0
        for r in requests {
            let a = try ours.ask(r), b = try theirs.ask(r)
            if a.map({ "\($0.0)=\($0.1)" }) == b.map({ "\($0.0)=\($0.1)" }) {
                same += 1
            } else {
                Issue.record("\(r): ours \(a), reference \(b)")
            }
        }
        #expect(same == requests.count)
        // The same warnings, as many times.
        // (Configuration warnings come once per process, and master may start more
        // reference processes than ours.)
        func warnings(_ program: String) -> [String] {
            inst.log.split(separator: "\n").filter {
                $0.contains(" postfix/\(program)[") && $0.contains("warning:") && !$0.contains("/main.cf, line")
            }.map { String($0[$0.range(of: "warning:")!.lowerBound...]) }.sorted()
        }
        // postlogd writes the last records a moment after the last answer.
        for _ in 0..<200 where warnings("trivial-rewrite") != warnings("ref-trivial-rewrite") { usleep(25_000) }
        #expect(warnings("trivial-rewrite") == warnings("ref-trivial-rewrite"))
    }
}
