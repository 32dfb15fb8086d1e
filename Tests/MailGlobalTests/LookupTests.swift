// The key search orders every caller shares: maps with their error rules, the address
// search of mail_addr_find (user@domain, user, @domain, extensions), access table walks
// (parent domains, address prefixes, DUNNO ends the walk) and match lists.
import Foundation
import Testing
import MailUtil
import MailDict
@testable import MailGlobal

func lookupConfig(_ settings: [String: String] = [:]) -> MailConfig {
    var e = ConfigEntries()
    let base = ["myhostname": "mail.example.com", "mydomain": "example.com", "inet_interfaces": "127.0.0.1",
                "inet_protocols": "ipv4"]
    for (k, v) in base.merging(settings, uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) { e[k] = v }
    return MailConfig(configDirectory: "/etc/postfix", entries: e, processName: "test")
}

@Suite(.serialized) struct MapsTests {
    @Test func firstTableWithAnAnswerWins() {
        let maps = Maps(title: "test_maps", mapNames: "inline:{a=1} inline:{a=2, b=3}", flags: [.lock, .foldFix, .utf8Request])
        #expect(maps.find("a") == "1")
        #expect(maps.find("B") == "3", "keys are folded when the maps ask for it")
        #expect(maps.find("c") == nil && maps.error == nil)
        #expect(maps.find("") == nil && maps.error == nil)
    }

    @Test func aFailingTableIsAnErrorNotAMiss() {
        let maps = Maps(title: "test_maps", mapNames: "inline:{a=1}, fail:broken, inline:{c=3}", flags: [.lock])
        #expect(maps.find("a") == "1")
        #expect(maps.find("c") == nil)
        #expect(maps.error == .retry, "a failure before the table that has the key stops the search")
    }

    @Test func anEmptyResultIsAConfigurationError() {
        let maps = Maps(title: "test_maps", mapNames: "static:{}", flags: [])
        #expect(maps.find("x") == nil)
        #expect(maps.error == .config)
    }

    @Test func fixedFilterSkipsPatternTables() throws {
        let dir = NSTemporaryDirectory() + "maps-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "/./ pattern\n".write(toFile: dir + "/re", atomically: true, encoding: .utf8)
        let maps = Maps(title: "t", mapNames: "regexp:\(dir)/re inline:{k=fixed}", flags: [])
        #expect(maps.find("k") == "pattern")
        #expect(maps.find("k", filter: .fixed) == "fixed")
    }

    @Test func changedTablesAreNoticed() throws {
        let dir = NSTemporaryDirectory() + "maps-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = DictRegistry.open("hash:\(dir)/t", mode: .create, flags: [])
        try t.update("k", "v")
        t.close()
        let spec = "hash:\(dir)/t"
        let maps = Maps(title: "t", mapNames: spec, flags: [.lock])
        #expect(maps.find("k") == "v")
        #expect(DictCache.changedName() == nil || !(DictCache.changedName() ?? "").contains(dir))
        // Replace the file the way postmap does: a new file renamed over the old one.
        let t2 = DictRegistry.open("hash:\(dir)/t2", mode: .create, flags: [])
        try t2.update("k", "new")
        t2.close()
        #expect(rename(dir + "/t2.db", dir + "/t.db") == 0)
        #expect(DictCache.changedName()?.hasPrefix(spec) == true)
    }
}

@Suite(.serialized) struct MailAddrFindTests {
    func finder(_ table: String, delimiter: String = "+", mydestination: String = "$myhostname, localhost") -> MailAddrFinder {
        let config = lookupConfig(["mydestination": mydestination, "myorigin": "example.com"])
        let maps = Maps(title: "virtual_alias_maps", mapNames: table, flags: [.lock, .foldFix, .utf8Request])
        return MailAddrFinder(maps: maps, local: LocalDomains(config: config), extension: AddressExtension(delimiters: delimiter))
    }

    @Test func searchOrder() {
        let f = finder("inline:{{user+ext@example.org=full}, {user@example.org=bare}, {user=local}, {@example.org=catchall}}")
        var ext: String?
        #expect(f.find("user+ext@example.org", extension: &ext) == "full" && ext == nil)
        #expect(f.find("user+other@example.org", extension: &ext) == "bare" && ext == "+other")
        #expect(f.find("someone@example.org") == "catchall")
        // "user" alone is tried only when the domain is local ($myorigin or mydestination).
        #expect(f.find("user@mail.example.com") == "local")
        #expect(f.find("user@example.com") == "local")
        #expect(f.find("user@elsewhere.net") == nil)
    }

    @Test func extensionsNeedADelimiter() {
        let f = finder("inline:{{user@example.org=bare}}", delimiter: "")
        #expect(f.find("user+ext@example.org") == nil)
        let g = finder("inline:{{user@example.org=bare}}", delimiter: "+-")
        #expect(g.find("user-ext@example.org") == "bare")
        #expect(g.find("user+ext@example.org") == "bare")
    }

    @Test func ownerRequestAddressesKeepTheirDash() {
        let f = finder("inline:{{owner-list@example.org=o}, {owner@example.org=x}}", delimiter: "-")
        #expect(f.find("owner-list@example.org") == "o")
        #expect(AddressExtension(delimiters: "-").strip("owner-list@example.org") == nil)
    }

    @Test func domainSearchWithParents() {
        let f = finder("inline:{{example.org=domain}, {.example.org=dotted}}")
        #expect(f.find("u@example.org", strategy: [.domain]) == "domain")
        #expect(f.find("u@a.b.example.org", strategy: [.domain, .parentDomains]) == "domain")
        #expect(f.find("u@a.b.example.org", strategy: [.domain, .dotParentDomains]) == "dotted")
        #expect(f.find("u@a.b.example.org", strategy: [.domain]) == nil)
    }
}

@Suite(.serialized) struct AccessWalkTests {
    let maps = Maps(title: "smtpd_client_restrictions",
                    mapNames: "inline:{{example.com=OK}, {.example.net=REJECT dotted}, {192.0.2=DUNNO}, {192=REJECT net}, {2001:db8=REJECT v6}, {user@=REJECT user}, {spam.example.org=DUNNO}, {example.org=REJECT org}}",
                    flags: [.lock, .foldFix, .utf8Request])

    @Test func domainsAndTheirParents() {
        #expect(AccessWalk.domain(maps, "mail.example.com", parentStyle: true) == .found("OK"))
        #expect(AccessWalk.domain(maps, "mail.example.com", parentStyle: false) == .notFound)
        #expect(AccessWalk.domain(maps, "a.b.example.net", parentStyle: false) == .found("REJECT dotted"))
        #expect(AccessWalk.domain(maps, "MAIL.EXAMPLE.COM", parentStyle: true) == .found("OK"))
        // DUNNO is an answer: the walk stops there instead of reaching example.org.
        #expect(AccessWalk.domain(maps, "x.spam.example.org", parentStyle: true) == .found("DUNNO"))
        // An address literal is one key, not a domain to walk.
        #expect(AccessWalk.domain(maps, "192.0.2.1", parentStyle: true) == .notFound)
    }

    @Test func addressPrefixes() {
        #expect(AccessWalk.address(maps, "192.0.2.1") == .found("DUNNO"))
        #expect(AccessWalk.address(maps, "192.1.1.1") == .found("REJECT net"))
        #expect(AccessWalk.address(maps, "10.1.1.1") == .notFound)
        #expect(AccessWalk.address(maps, "2001:db8:0:0:0:0:0:1") == .found("REJECT v6"))
    }

    @Test func mailAddresses() {
        let f = MailAddrFinder(maps: maps, local: nil, extension: AddressExtension(delimiters: "+"))
        #expect(AccessWalk.mail(f, "someone@host.example.com", parentStyle: true) == .found("OK"))
        #expect(AccessWalk.mail(f, "user+x@elsewhere.test", parentStyle: true) == .found("REJECT user"))
        #expect(AccessWalk.mail(f, "nobody@elsewhere.test", parentStyle: true) == .notFound)
        let broken = Maps(title: "t", mapNames: "fail:x", flags: [])
        let g = MailAddrFinder(maps: broken, local: nil, extension: AddressExtension(delimiters: "+"))
        #expect(AccessWalk.mail(g, "a@b.c", parentStyle: true) == .failed(.retry))
    }
}

@Suite(.serialized) struct MatchListTests {
    @Test func domainListsWithAndWithoutParents() {
        let parent = MatchList(name: "relay_domains", kind: .domain, options: .parent, text: "example.com, !bad.example.org, .example.org")
        #expect(parent.matches("example.com"))
        #expect(parent.matches("Sub.Example.COM"))
        #expect(!parent.matches("bad.example.org"))
        // As in Postfix's match_hostname(): in parent style a ".domain" pattern needs a
        // name ending in "..domain", so it matches nothing useful.
        #expect(!parent.matches("good.example.org"))
        #expect(!parent.matches("example.org"))
        let exact = MatchList(name: "relay_domains", kind: .domain, options: [], text: "example.com .example.org")
        #expect(exact.matches("example.com"))
        #expect(!exact.matches("sub.example.com"))
        #expect(exact.matches("sub.example.org"))
        #expect(!exact.matches("example.org"))
    }

    @Test func stringListsAndTables() {
        let l = MatchList(name: "mydestination", kind: .string, options: .returnErrors, text: "localhost inline:{{example.com=x}}")
        #expect(l.matches("LOCALHOST"))
        #expect(l.matches("example.com"))
        #expect(!l.matches("sub.example.com"))
        let broken = MatchList(name: "mydestination", kind: .string, options: .returnErrors, text: "fail:x")
        #expect(!broken.matches("a"))
        #expect(broken.error == .retry)
    }

    @Test func networks() {
        let l = MatchList(name: "mynetworks", kind: .nameAddress, options: [], text: "127.0.0.0/8 [::1]/128 !192.0.2.7 192.0.2.0/24 trusted.example")
        #expect(l.matches("unknown", address: "127.0.0.1"))
        #expect(l.matches("unknown", address: "::1"))
        #expect(!l.matches("unknown", address: "192.0.2.7"))
        #expect(l.matches("unknown", address: "192.0.2.8"))
        #expect(l.matches("trusted.example", address: "198.51.100.1"))
        #expect(!l.matches("other.example", address: "198.51.100.1"))
    }
}
