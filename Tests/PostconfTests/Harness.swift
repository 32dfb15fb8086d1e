// Test harness: the golden scenarios of postconf (recorded by tools/gen-postconf-goldens
// from the reference), run through the shared GoldenHarness.
import Foundation
import TestSupport

enum Harness {
    static let root = TestPaths.root
    static let golden = GoldenHarness(scenarios: root.appendingPathComponent("Tests/PostconfTests/Scenarios"),
                                      defaultProgram: "postconf")
    static var scenarios: URL { golden.scenarios }
    static var ourPostconf: String { TestPaths.program("postconf") }

    /// The reference Postfix's postconf and its libraries, if unpacked.
    static var reference: (postconf: String, libs: String)? {
        TestPaths.reference.map { ($0 + "/usr/sbin/postconf", $0 + "/usr/lib/postfix") }
    }

    typealias Result = GoldenHarness.Result

    static func run(_ program: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> Result {
        try GoldenHarness.run(program, args, env: env, stdin: stdin.map { Data($0.utf8) })
    }

    static func render(scenario: String, program: String, env: [String: String] = [:]) throws -> String {
        try golden.render(scenario: scenario, programs: ["postconf": program], env: env)
    }

    static var scenarioNames: [String] { golden.scenarioNames }

    static func firstDifference(_ a: String, _ b: String) -> String { GoldenHarness.firstDifference(a, b) }
}
