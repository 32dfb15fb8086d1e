// Options read as glibc getopt("+...") reads them.
import Testing
import MailUtil

@Suite struct GetOptTests {
    func parse(_ args: [String], _ spec: String = "c:Dv") -> ([String], [String], GetOpt.Problem?) {
        var seen: [String] = []
        let (ops, problem) = GetOpt.parse(args, spec: spec) { c, v in seen.append(v.map { "\(c)=\($0)" } ?? "\(c)") }
        return (seen, ops, problem)
    }

    @Test func groupedGluedAndSeparateValues() {
        let r = parse(["-vD", "-c/etc/x", "-c", "/y", "start", "-v"])
        #expect(r.0 == ["v", "D", "c=/etc/x", "c=/y"])
        #expect(r.1 == ["start", "-v"], "options end at the first operand")
        #expect(r.2 == nil)
        #expect(parse(["-v", "--", "-D"]).1 == ["-D"])
        #expect(parse(["-", "x"]).1 == ["-", "x"])
    }

    @Test func problems() {
        #expect(parse(["-x"]).2 == .unknown("x"))
        #expect(parse(["-v", "-c"]).2 == .missingArgument("c"))
        #expect(GetOpt.message(.unknown("x"), program: "postfix") == "postfix: invalid option -- 'x'")
        #expect(GetOpt.message(.missingArgument("c"), program: "postfix") == "postfix: option requires an argument -- 'c'")
    }
}
