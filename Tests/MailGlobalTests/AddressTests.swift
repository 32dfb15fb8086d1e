import Testing
@testable import MailGlobal

@Suite struct QuoteTests {
    @Test(arguments: [
        ("user@example.com", "user@example.com"),
        ("first.last@example.com", "first.last@example.com"),
        ("John Doe@example.com", "\"John Doe\"@example.com"),
        ("a..b@example.com", "\"a..b\"@example.com"),
        (".a@example.com", "\".a\"@example.com"),
        ("a.@example.com", "\"a.\"@example.com"),
        ("a\"b@x", "\"a\\\"b\"@x"),
        ("a\\b@x", "\"a\\\\b\"@x"),
        ("a@b@x", "\"a@b\"@x"),
        ("@relay1,@relay2:user@example.com", "@relay1,@relay2:user@example.com"),
        ("@relay:a b@example.com", "@relay:\"a b\"@example.com"),
        ("", "\"\""),
        ("postmaster", "postmaster"),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("j\u{fc}rgen@example.de", "j\u{fc}rgen@example.de"),
    ])
    func quote822(inner: String, external: String) {
        #expect(Quote822.quote822(inner) == external)
        #expect(Quote822.unquote822(external) == inner)
    }

    @Test func rfc821Quoting() {
        #expect(Quote822.quote821("a b@x") == "\"a b\"@x")
        #expect(Quote822.quote821("a\nb@x") == "\"a\\\nb\"@x")
        #expect(Quote822.quote821("a(b)@x") == "\"a(b)\"@x")
        #expect(Quote822.quote821("a@b", flags: [.eightBitClean, .bareLocalPart, .exposeAt]) == "a@b")
    }
}

@Suite struct Tok822Tests {
    @Test(arguments: [
        ("user@example.com", ["user@example.com"]),
        ("John Doe <john@example.com>", ["john@example.com"]),
        ("\"Doe, John\" <john@example.com>, jane@example.com (Jane)", ["john@example.com", "jane@example.com"]),
        ("<>", []),
        ("user@[192.0.2.1]", ["user@[192.0.2.1]"]),
        ("<@a,@b:user@example.com>", ["@a,@b:user@example.com"]),
        ("\"a b\"@example.com", ["a b@example.com"]),
        ("a@b c@d", ["a@b", "c@d"]),
    ])
    func addresses(header: String, expected: [String]) {
        #expect(Address822.internalAddresses(header) == expected)
    }

    @Test func externalizeRoundTrips() {
        let tree = Address822.parse("\"Doe, John\" <\"john doe\"@example.com>, jane@example.com (Jane)")
        #expect(Address822.externalize(tree) == "\"Doe, John\" <\"john doe\"@example.com>, jane@example.com (Jane)")
        #expect(Address822.internalize(tree) == "Doe, John <john doe@example.com>, jane@example.com (Jane)")
        #expect(Address822.externalize(Address822.parse("a@b c@d")) == "a@b, c@d")
    }

    @Test func tokensAndLimits() {
        let toks = Address822.scan("a (c (nested)) \"q\\\"s\" [1.2.3.4] x\\@y <")
        #expect(toks.map(\.type) == [Tok822.Kind.atom, Tok822.Kind.comment, Tok822.Kind.quotedString,
                                     Tok822.Kind.domainLiteral, Tok822.Kind.quotedString, Int(UInt8(ascii: "<"))])
        #expect(toks[1].string == "(c (nested))")
        #expect(toks[2].string == "q\"s")
        #expect(toks[4].string == "x@y")
        #expect(Address822.scan("a b c d e", limit: 2).count == 2)
        #expect(Address822.parse("") == nil)
    }
}
