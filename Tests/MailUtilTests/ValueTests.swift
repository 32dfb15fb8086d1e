import Testing
@testable import MailUtil

@Suite struct ConfigValueTests {
    @Test(arguments: [
        ("10", 10), ("10s", 10), ("2m", 120), ("1h", 3600), ("5d", 432000), ("1w", 604800),
        ("0", 0), ("s", 0), (" 7s", 7), ("+3m", 180), ("-0", 0),
    ])
    func goodTimes(text: String, seconds: Int) {
        #expect(ConfigValue.parseTime(text) == seconds)
    }

    @Test(arguments: ["", "x", "10x", "10ss", "1.5h", "-1", "5 ", " s", "99999999999", "3550w"])
    func badTimes(text: String) {
        #expect(ConfigValue.parseTime(text) == nil)
    }

    @Test func defaultUnitApplies() {
        #expect(ConfigValue.parseTime("5", defaultUnit: UInt8(ascii: "d")) == 432000)
        #expect(ConfigValue.parseTime("5", defaultUnit: UInt8(ascii: "x")) == nil)
    }

    @Test func integers() {
        #expect(ConfigValue.parseInt("100") == 100)
        #expect(ConfigValue.parseInt(" -5") == -5)
        #expect(ConfigValue.parseInt("2147483648") == nil)
        #expect(ConfigValue.parseLong("2147483648") == 2147483648)
        #expect(ConfigValue.parseLong("9223372036854775808") == nil)
        #expect(ConfigValue.parseInt("10k") == nil)
        #expect(ConfigValue.parseInt("") == nil)
        #expect(ConfigValue.parseInt("1 ") == nil)
    }

    @Test func sizes() {
        #expect(ConfigValue.parseSize("10240000") == 10240000)
        #expect(ConfigValue.parseSize("0") == 0)
        #expect(ConfigValue.parseSize("-1") == nil)
        #expect(ConfigValue.parseSize("10M") == nil)
        #expect(ConfigValue.parseSize("99999999999999999999") == nil)
    }

    @Test func booleans() {
        #expect(ConfigValue.parseBool("yes") == true)
        #expect(ConfigValue.parseBool("NO") == false)
        #expect(ConfigValue.parseBool("true") == nil)
    }
}

@Suite struct TokensTests {
    @Test func listSplitting() {
        #expect(Tokens.split(" a, b ,,c\td\n") == ["a", "b", "c", "d"])
        #expect(Tokens.split("") == [])
    }

    @Test func bracedWordsStayTogether() {
        #expect(Tokens.splitQuoted("a { b c } {x{y z}} d") == ["a", "{ b c }", "{x{y z}}", "d"])
        #expect(Tokens.splitQuoted("-o {name = a b}", separators: spaceSeparators) == ["-o", "{name = a b}"])
    }

    @Test func extractBraced() {
        #expect(Tokens.extractBraced("{ a b }").inner == "a b")
        #expect(Tokens.extractBraced("{ a b }").error == nil)
        let unclosed = Tokens.extractBraced("{abc")
        #expect(unclosed.error == "missing '}' in \"{abc\"")
        let junk = Tokens.extractBraced("{a}b")
        #expect(junk.inner == "a" && junk.error == "syntax error after '}' in \"{a}b\"")
    }

    @Test func paths() {
        #expect(dirname(of: "/etc/postfix/main.cf") == "/etc/postfix")
        #expect(dirname(of: "main.cf") == ".")
        #expect(dirname(of: "/main.cf") == "/")
        #expect(basename(of: "/usr/sbin/postconf") == "postconf")
        #expect(basename(of: "postconf") == "postconf")
    }

    @Test func base64RoundTrip() {
        for n in 0..<40 {
            let data = (0..<n).map { UInt8(($0 * 37 + 11) & 0xFF) }
            #expect(Base64.decode(Base64.encode(data)) == data)
        }
        #expect(String(decoding: Base64.encode(Array("protocol".utf8)), as: UTF8.self) == "cHJvdG9jb2w=")
        #expect(Base64.decode(Array("cHJvdG9jb2w".utf8)) == nil)
        #expect(Base64.decode(Array("c=Jv".utf8)) == nil)
        #expect(Base64.decode(Array("cH*v".utf8)) == nil)
    }
}
