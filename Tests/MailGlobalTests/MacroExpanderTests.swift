import Testing
@testable import MailGlobal

@Suite struct MacroExpanderTests {
    let table: [String: String] = [
        "myhostname": "mail.example.com", "mydomain": "example.com", "empty": "",
        "origin": "$mydomain", "chain": "${origin}/x", "loop1": "$loop2", "loop2": "$loop1",
        "compatibility_level": "3.6", "stress": "",
    ]

    func expand(_ s: String, recurse: Bool = true) -> (String, MacroStatus, [String]) {
        var warnings: [String] = []
        let ex = MacroExpander(recurse: recurse, warn: { warnings.append($0) }) { name, _ in table[name] }
        let (out, st) = ex.expand(s)
        return (out, st, warnings)
    }

    @Test(arguments: [
        ("plain text", "plain text"),
        ("$myhostname", "mail.example.com"),
        ("${myhostname}/$(mydomain)", "mail.example.com/example.com"),
        ("a$$b", "a$b"),
        ("$origin", "example.com"),
        ("$chain", "example.com/x"),
        ("${myhostname?yes}", "yes"),
        ("${empty?yes}", ""),
        ("${nothing?yes}", ""),
        ("${empty:no}", "no"),
        ("${myhostname:no}", ""),
        ("${myhostname?{Y}:{N}}", "Y"),
        ("${empty?{Y}:{N}}", "N"),
        ("${ stress ? {10} : {300} }s", "300s"),
        ("${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}", "sha256"),
        ("${{$compatibility_level} <level {3.10} ? {old} : {new}}", "old"),
        ("${{$compatibility_level} >=level {3} ? {a} : {b}}", "a"),
        ("${{a} == {a}}", "true"),
        ("${{a} != {a}}", ""),
        ("${{10} < {9} ? {x} : {y}}", "y"),
        ("${{abc} < {abd} ? {x} : {y}}", "x"),
        ("${name??foo:{b}ar}", ""),
        ("${myhostname??foo:{b}ar}", "?foo:{b}ar"),
    ])
    func expands(pattern: String, expected: String) {
        let (out, st, warnings) = expand(pattern)
        #expect(out == expected)
        #expect(!st.contains(.error))
        #expect(warnings.isEmpty)
    }

    @Test func undefinedNameIsEmptyAndFlagged() {
        let (out, st, _) = expand("[$nothing]")
        #expect(out == "[]")
        #expect(st.contains(.undefined))
    }

    @Test func loopIsDetected() {
        let (_, st, warnings) = expand("$loop1")
        #expect(st.contains(.error))
        #expect(warnings.first?.hasPrefix("unreasonable macro call nesting: ") == true)
    }

    @Test(arguments: [
        ("${myhostname", "truncated macro reference: \"${myhostname\""),
        ("a $ b", "empty macro name: \"a $ b\""),
        ("${my-host}", "attribute name syntax error at: \"...my>>>-host\""),
        ("${{a} =~ {b}}", "\"==\" or \"!=\"\" or \"<\"\" or \"<=\"\" or \">=\"\" or \">\" expected at: \"...a}>>>=~ {b}\""),
        ("${{a} <foo {b}}", "bad operator suffix at: \"...<>>>foo\""),
        ("${{3} <level {x}}", "malformed compatibility level syntax: \"x\""),
        ("${{a} == {b} x}", "\"?\" or \":\" expected at: \"...}>>>x\""),
        ("${myhostname?{a} x}", "\":\" expected at: \"...a}>>>x\""),
        ("${{a} == {b}", "truncated macro reference: \"${{a} == {b}\""),
    ])
    func syntaxErrors(pattern: String, warning: String) {
        let (_, st, warnings) = expand(pattern)
        #expect(st.contains(.error))
        #expect(warnings.first == warning)
    }

    @Test func scanFindsNamesInBothBranches() {
        let names = MacroExpander.names(in: "$a ${b?{$c}:{$d}} ${{$e} == {x} ? {y} : {$f}}")
        #expect(Set(names) == Set(["a", "b", "c", "d", "e", "f"]))
    }

    @Test func nonRecursiveLeavesValuesAlone() {
        let (out, _, _) = expand("$origin", recurse: false)
        #expect(out == "$mydomain")
    }

    @Test(arguments: [("0", "0"), ("1", "1"), ("2", "2"), ("3.6", "3.6"), ("3.10.2", "3.10.2"), ("3.6.0", "3.6")])
    func compatLevelsRoundTrip(text: String, canonical: String) {
        #expect(CompatLevel.parse(text, warn: { _ in })?.description == canonical)
    }

    @Test func compatLevelsCompareNumerically() {
        let p = { (s: String) in CompatLevel.parse(s, warn: { _ in })! }
        #expect(p("3.10") > p("3.9"))
        #expect(p("2") < p("3.0"))
        #expect(p("3.6") == p("3.6.0"))
        #expect(CompatLevel.parse("3.x", warn: { _ in }) == nil)
        #expect(CompatLevel.parse("", warn: { _ in }) == nil)
        #expect(CompatLevel.parse("3.1024", warn: { _ in }) == nil)
    }
}
