// The table types in-process: what each answers, how keys are folded, how updates,
// deletes and sequences behave, and that a broken table fails as a temporary error
// (never as "not found"). postmap-level behaviour, byte for byte against Postfix, is in
// PostmapTests.
import Foundation
import Glibc
import Testing
import MailUtil
@testable import MailDict

final class Scratch {
    let dir = NSTemporaryDirectory() + "dict-\(UUID().uuidString)"
    init() { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(atPath: dir) }
    func file(_ name: String, _ text: String) -> String {
        let p = dir + "/" + name
        try? text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}

@Suite(.serialized) struct DatabaseDictTests {
    @Test(arguments: ["hash", "btree"])
    func updateLookupDeleteSequence(type: String) throws {
        let s = Scratch()
        let d = DictRegistry.open("\(type):\(s.dir)/t", mode: .create, flags: [.try1Null, .duplicateReplace])
        #expect(try d.update("one", "1"))
        #expect(try d.update("two", "2"))
        #expect(try d.update("one", "uno"), "duplicates are replaced when asked")
        #expect(try d.lookup("one") == "uno")
        #expect(try d.lookup("three") == nil)
        #expect(try d.delete("two"))
        #expect(try !d.delete("two"))
        var seen: [String: String] = [:]
        var first = true
        while let (k, v) = try d.sequence(first: first) {
            seen[k] = v
            first = false
        }
        #expect(seen == ["one": "uno"])
        d.close()
        // Stored with the trailing NUL, as Postfix does by default.
        let raw = try Data(contentsOf: URL(fileURLWithPath: "\(s.dir)/t.db"))
        #expect(raw.range(of: Data("one\0".utf8)) != nil)
        // A reader opened without a NUL preference finds both forms.
        let r = DictRegistry.open("\(type):\(s.dir)/t", mode: .readOnly, flags: [.try0Null, .try1Null])
        #expect(try r.lookup("one") == "uno")
        #expect(r.flags.contains(.fixed))
    }

    @Test func duplicatesAreKeptUnlessReplaced() throws {
        let s = Scratch()
        let d = DictRegistry.open("hash:\(s.dir)/t", mode: .create, flags: [.try1Null, .duplicateIgnore])
        #expect(try d.update("k", "first"))
        #expect(try !d.update("k", "second"))
        #expect(try d.lookup("k") == "first")
    }

    @Test func foldedKeys() throws {
        let s = Scratch()
        let d = DictRegistry.open("hash:\(s.dir)/t", mode: .create, flags: [.try1Null, .foldFix, .utf8Request])
        try d.update("MiXeD@Example.COM", "v")
        try d.update("STRASSE", "ascii")
        #expect(try d.lookup("mixed@example.com") == "v")
        #expect(try d.lookup("MIXED@EXAMPLE.COM") == "v")
        #expect(DictKey.fold("ÄÖÜ") == "äöü")
        #expect(DictKey.fold("Straße") == "strasse", "full Unicode case folding")
        #expect(DictKey.fold("ÄB", utf8: false) == "Äb", "ASCII-only without SMTPUTF8")
    }

    @Test func aMissingFileIsATemporaryFailureInDaemons() throws {
        DictRegistry.allowSurrogate = true
        defer { DictRegistry.allowSurrogate = false }
        let d = DictRegistry.open("hash:/nonexistent/dir/t", mode: .readOnly, flags: [])
        #expect(throws: DictError.retry) { try d.lookup("k") }
        let u = DictRegistry.open("nosuchtype:x", mode: .readOnly, flags: [])
        #expect(throws: DictError.retry) { try u.lookup("k") }
    }
}

@Suite(.serialized) struct MemoryDictTests {
    @Test func texthashReadsPostmapSyntax() throws {
        let s = Scratch()
        let p = s.file("th", "# comment\nKey value one\n  continued\nother  two\n")
        let d = DictRegistry.open("texthash:\(p)", flags: [.foldFix, .utf8Request])
        #expect(try d.lookup("key") == "value one  continued")
        #expect(try d.lookup("other") == "two")
        #expect(try d.lookup("nothing") == nil)
    }

    @Test func inlineStaticFailEnviron() throws {
        let i = DictRegistry.open("inline:{ a=1, {b = two words}, c=3 }", flags: [])
        #expect(try i.lookup("b") == "two words")
        #expect(try i.lookup("x") == nil)
        #expect(try DictRegistry.open("static:{ any value }").lookup("whatever") == "any value")
        #expect(throws: DictError.retry) { try DictRegistry.open("fail:down").lookup("k") }
        setenv("SWALLOW_DICT_TEST", "env value", 1)
        #expect(try DictRegistry.open("environ:x").lookup("SWALLOW_DICT_TEST") == "env value")
        #expect(try DictRegistry.open("environ:x").lookup("SWALLOW_DICT_UNSET") == nil)
    }

    @Test func unixPasswordAndGroup() throws {
        let root = try DictRegistry.open("unix:passwd.byname").lookup("root")
        #expect(root?.hasPrefix("root:x:0:0:") == true)
        #expect(try DictRegistry.open("unix:group.byname").lookup("root")?.hasPrefix("root:x:0:") == true)
        #expect(try DictRegistry.open("unix:passwd.byname").lookup("no-such-user-here") == nil)
    }

    @Test func internalTablesStoreValues() throws {
        let d = DictRegistry.open("internal:test-\(UUID().uuidString)", mode: .readWrite, flags: [.duplicateReplace])
        try d.update("k", "v")
        #expect(try d.lookup("k") == "v")
        #expect(try d.delete("k"))
        #expect(try d.lookup("k") == nil)
    }
}

@Suite(.serialized) struct PatternDictTests {
    static let rules = """
    # first match wins
    /^(user)\\+(.*)@example\\.com$/   $1 with extension $2
    !/@/                              no at-sign
    if /^list-/
    /-owner@/                         list owner
    endif
    /^CASE@/                          case-insensitive by default
    /^Exact@/i                        flag i turns case folding off
    """

    @Test(arguments: ["regexp", "pcre"])
    func rulesInOrder(type: String) throws {
        let s = Scratch()
        let p = s.file("rules", Self.rules)
        let d = DictRegistry.open("\(type):\(p)", flags: [])
        #expect(d.flags.contains(.pattern))
        #expect(try d.lookup("user+tag@example.com") == "user with extension tag")
        #expect(try d.lookup("plain") == "no at-sign")
        #expect(try d.lookup("list-owner@example.org") == "list owner")
        #expect(try d.lookup("x-owner@example.org") == nil, "outside the if block")
        #expect(try d.lookup("case@x") == "case-insensitive by default")
        #expect(try d.lookup("Exact@x") == "flag i turns case folding off")
        #expect(try d.lookup("exact@x") == nil)
    }

    @Test func cidrFirstMatch() throws {
        let s = Scratch()
        let p = s.file("c", "192.0.2.0/24 net\n192.0.2.7 host-after-net\n2001:db8::/32 v6\n!10.0.0.0/8 not-ten\n")
        let d = DictRegistry.open("cidr:\(p)", flags: [])
        #expect(try d.lookup("192.0.2.7") == "net")
        #expect(try d.lookup("2001:db8::1") == "v6")
        #expect(try d.lookup("10.1.2.3") == nil)
        #expect(try d.lookup("172.16.0.1") == "not-ten")
        #expect(try d.lookup("not-an-address") == nil)
    }

    @Test func composites() throws {
        #expect(try DictRegistry.open("unionmap:{inline:{a=1}, inline:{a=2, b=3}}").lookup("a") == "1,2")
        #expect(try DictRegistry.open("pipemap:{inline:{a=b}, inline:{b=c}}").lookup("a") == "c")
        #expect(try DictRegistry.open("pipemap:{inline:{a=b}, inline:{x=y}}").lookup("a") == nil)
        #expect(throws: DictError.retry) { try DictRegistry.open("unionmap:{inline:{a=1}, fail:x}").lookup("a") }
        let r = try DictRegistry.open("randmap:{one, two}").lookup("anything")
        #expect(r == "one" || r == "two")
    }
}

/// Found by bench/fuzz.sh (LeakSanitizer): each compiled pattern held its table strongly,
/// so a regexp or pcre table, its patterns and their regex_t/pcre2 code were never freed.
@Suite struct PatternTableLifetimeTests {
    @Test(arguments: ["regexp", "pcre"])
    func aClosedPatternTableIsFreed(type: String) throws {
        let s = Scratch()
        // The file must be older than a second, or the open waits for it to settle.
        let path = s.file("table", "/^a(.*)/ A$1\nif /b/\n/c/ C\nendif\n")
        var times = [timeval(tv_sec: time(nil) - 10, tv_usec: 0), timeval(tv_sec: time(nil) - 10, tv_usec: 0)]
        utimes(path, &times)
        weak var gone: Dict?
        do {
            let d = DictRegistry.open("\(type):\(path)")
            #expect(try d.lookup("abc") == "Abc")
            gone = d
        }
        #expect(gone == nil, "the \(type) table is still alive after its last reference went")
    }
}
