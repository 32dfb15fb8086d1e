// Integration tests of proxy: tables and the proxymap/proxywrite services on a running
// instance: approval lists (also inside unionmap/pipemap), lookups, updates through
// proxywrite only, the raw protocol, and the restart after a table file changes.
import Foundation
import Glibc
import Testing
import MailUtil
import MailGlobal

@Suite(.serialized)
struct ProxymapTests {
    static let master = """
    proxymap   unix  -  -  n  -  -  proxymap
    proxywrite unix  -  -  n  -  1  proxymap
    postlog    unix-dgram n - n - 1 postlogd
    """

    func makeInstance() throws -> (Instance, String) {
        let root = "/tmp/swallow-px-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let inst = try Instance(main: """
        tables = \(root)
        proxy_read_maps = proxy:hash:$tables/t1 proxy:texthash:$tables/t2
            unionmap:{proxy:texthash:$tables/t5, inline:{x=y}} proxy:fail:x
            pipemap:{inline:{q=k5}, proxy:texthash:$tables/t7}
            proxy:unionmap:{inline:{a=1},texthash:$tables/t3}
        proxy_write_maps = proxy:btree:$tables/w1

        """, master: Self.master)
        try "KEY1 val1\nkey2 val2\n".write(toFile: root + "/t1", atomically: true, encoding: .utf8)
        for (f, text) in [("t2", "tk tv\n"), ("t3", "a 3\n"), ("t5", "five 5\n"), ("t7", "k5 seven\n")] {
            try text.write(toFile: root + "/" + f, atomically: true, encoding: .utf8)
        }
        #expect(postmap(inst, ["hash:\(root)/t1"]).status == 0)
        #expect(postmap(inst, ["btree:\(root)/w1"], ensureSource: true).status == 0)
        return (inst, root)
    }

    func postmap(_ inst: Instance, _ args: [String], ensureSource: Bool = false) -> Instance.Result {
        if ensureSource, let spec = args.last, let colon = spec.firstIndex(of: ":") {
            FileManager.default.createFile(atPath: String(spec[spec.index(after: colon)...]), contents: Data())
        }
        return inst.run(inst.programDirectory + "/postmap", ["-c", inst.configDirectory] + args)
    }

    @Test func lookupsGoThroughTheService() throws {
        let (inst, root) = try makeInstance()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try inst.startMaster()
        defer { inst.stopMaster() }

        // The client folds nothing itself: the server folds as the real table needs.
        var r = postmap(inst, ["-q", "KEY1", "proxy:hash:\(root)/t1"])
        #expect(r.status == 0 && r.stdout == "val1\n", "\(r)")
        r = postmap(inst, ["-q", "nokey", "proxy:hash:\(root)/t1"])
        #expect(r.status == 1 && r.stdout.isEmpty)
        r = postmap(inst, ["-q", "tk", "proxy:proxy:texthash:\(root)/t2"])
        #expect(r.stdout == "tv\n")
        r = postmap(inst, ["-q", "a", "proxy:unionmap:{inline:{a=1},texthash:\(root)/t3}"])
        #expect(r.stdout == "1,3\n", "\(r)")
        // Proxied members of unionmap/pipemap entries are approved on their own ...
        #expect(postmap(inst, ["-q", "five", "proxy:texthash:\(root)/t5"]).stdout == "5\n")
        #expect(postmap(inst, ["-q", "k5", "proxy:texthash:\(root)/t7"]).stdout == "seven\n")
        // ... but the members of an approved proxy:unionmap are not.
        r = postmap(inst, ["-q", "a", "proxy:texthash:\(root)/t3"])
        #expect(r.status == 1)
        #expect(r.stderr == "postmap: fatal: proxymap service is not configured for table \"texthash:\(root)/t3\"\n", "\(r)")
        try inst.waitFor("the approval hint") {
            inst.logContains("warning: to approve this table for read-only access, list proxy:texthash:\(root)/t3 in main.cf:proxy_read_maps")
        }
        inst.expectLog("warning: request for unapproved table: \"texthash:\(root)/t3\"")

        // A table error is a temporary failure, never "not found".
        r = postmap(inst, ["-q", "x", "proxy:fail:x"])
        #expect(r.status == 1 && r.stderr == "postmap: fatal: table proxy:fail:x: query error: Application error\n", "\(r)")

        // Several keys on one connection.
        let keys = inst.root + "/keys"
        try "KEY1\nkey2\nnone\n".write(toFile: keys, atomically: true, encoding: .utf8)
        r = Instance.run("/bin/sh", ["-c", "\(inst.programDirectory)/postmap -c \(inst.configDirectory) -q - proxy:hash:\(root)/t1 < \(keys)"])
        #expect(r.status == 0 && r.stdout == "KEY1\tval1\nkey2\tval2\n", "\(r)")

        // What postmap refuses to do through the proxy.
        r = postmap(inst, ["-s", "proxy:hash:\(root)/t1"])
        #expect(r.status == 1 && r.stderr == "postmap: fatal: can't sequence maps via the proxy service\n")
        r = postmap(inst, ["proxy:hash:\(root)/t1"])
        #expect(r.status == 1 && r.stderr == "postmap: fatal: can't create maps via the proxy service\n")

        // Updates: only through proxywrite, only for proxy_write_maps.
        r = postmap(inst, ["-d", "KEY1", "proxy:hash:\(root)/t1"])
        #expect(r.status == 1 && r.stderr == "postmap: fatal: proxywrite service is not configured for table \"hash:\(root)/t1\"\n", "\(r)")
        r = Instance.run("/bin/sh", ["-c", "printf 'k1 v1\\nk2 v2\\n' | \(inst.programDirectory)/postmap -c \(inst.configDirectory) -i proxy:btree:\(root)/w1"])
        #expect(r.status == 1 && r.stderr == "postmap: fatal: unsupported dictionary type: proxy does not support bulk-mode creation.\n", "\(r)")
        r = Instance.run("/bin/sh", ["-c", "echo w 1 | \(inst.programDirectory)/postmap -c \(inst.configDirectory) -i btree:\(root)/w1"])
        #expect(r.status == 0, "\(r)")
        // proxywrite runs as mail_owner, who must be able to write the table.
        if let pw = getpwnam(inst.owner) { chown(root + "/w1.db", pw.pointee.pw_uid, pw.pointee.pw_gid) }
        r = postmap(inst, ["-d", "w", "proxy:btree:\(root)/w1"])
        #expect(r.status == 0, "\(r)\n\(inst.log)")
        r = postmap(inst, ["-d", "w", "proxy:btree:\(root)/w1"])
        #expect(r.status == 1)
    }

    @Test func rawProtocol() throws {
        let (inst, root) = try makeInstance()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try inst.startMaster()
        defer { inst.stopMaster() }

        let c = try AttrClient(path: inst.queueDirectory + "/private/proxymap", timeout: 10)
        try c.expectProtocol(MailProtocol.proxymap)
        func ask(_ pairs: [(String, String)]) throws -> [String] {
            var l = AttrList()
            for (n, v) in pairs { l.append(n, v) }
            return try c.request(l).items.map { item in
                if case .pair(let p) = item { return "\(p.name)=\(String(decoding: p.value, as: UTF8.self))" }
                return "?"
            }
        }
        let t1 = "hash:\(root)/t1"
        let opened = try ask([("request", "open"), ("table", t1), ("flags", "0")])
        #expect(opened.count == 2 && opened[0] == "status=0" && opened[1].hasPrefix("flags="), "\(opened)")
        // A hash table is a fixed-key table (DICT_FLAG_FIXED).
        #expect((Int(opened[1].dropFirst(6)) ?? 0) & 0x10 != 0)
        #expect(try ask([("request", "lookup"), ("table", t1), ("flags", "16384"), ("key", "KEY1")]) == ["status=0", "value=val1"])
        #expect(try ask([("request", "lookup"), ("table", t1), ("flags", "0"), ("key", "KEY1")]) == ["status=1", "value="])
        #expect(try ask([("request", "lookup"), ("table", "hash:/nolist"), ("flags", "0"), ("key", "k")]) == ["status=4", "value="])
        #expect(try ask([("request", "lookup"), ("table", "nocolon"), ("flags", "0"), ("key", "k")]) == ["status=3", "value="])
        #expect(try ask([("request", "lookup"), ("table", "fail:x"), ("flags", "0"), ("key", "k")]) == ["status=2", "value="])
        #expect(try ask([("request", "sequence"), ("table", t1), ("flags", "0"), ("function", "0")]).first == "status=0")
        #expect(try ask([("request", "sequence"), ("table", t1), ("flags", "0"), ("function", "1")]).first == "status=0")
        #expect(try ask([("request", "sequence"), ("table", t1), ("flags", "0"), ("function", "1")]) == ["status=1", "key=", "value="])
        #expect(try ask([("request", "sequence"), ("table", t1), ("flags", "0"), ("function", "7")]) == ["status=3", "key=", "value="])
        #expect(try ask([("request", "update"), ("table", t1), ("flags", "0"), ("key", "k"), ("value", "v")]) == ["status=4"])
        #expect(try ask([("request", "bogus")]) == ["status=3"])
        try inst.waitFor("the refusal") { inst.logContains("warning: refusing \(t1) update request on non-proxywrite service") }
        try inst.waitFor("the unknown request") { inst.logContains("warning: unrecognized request: \"bogus\", ignored") }
    }

    @Test func changedTableRestartsTheReader() throws {
        let (inst, root) = try makeInstance()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try inst.startMaster()
        defer { inst.stopMaster() }

        #expect(postmap(inst, ["-q", "key2", "proxy:hash:\(root)/t1"]).stdout == "val2\n")
        try "KEY1 val1\nkey2 changed\n".write(toFile: root + "/t1", atomically: true, encoding: .utf8)
        sleep(1)  // the change must be visible in the modification time (seconds)
        #expect(postmap(inst, ["hash:\(root)/t1"]).status == 0)
        // The next client is served by a new process, which reads the new file.
        var answer = ""
        try inst.waitFor("the new value") {
            answer = postmap(inst, ["-q", "key2", "proxy:hash:\(root)/t1"]).stdout
            return answer == "changed\n"
        }
        try inst.waitFor("the restart notice") {
            inst.logContains("table hash:\(root)/t1: has changed -- restarting")
        }
    }
}

