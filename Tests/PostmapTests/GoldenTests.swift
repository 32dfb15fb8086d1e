// Golden tests: our postmap and postalias must print exactly what Postfix 3.7's did for
// each scenario: lookups in every table type, builds, updates, dumps, options and
// errors. With the reference unpacked, each golden file is re-checked against it live
// (SWALLOW_RECORD_GOLDENS=1 writes the live result instead).
import Foundation
import Testing
import TestSupport

enum PostmapGolden {
    static let harness = GoldenHarness(scenarios: TestPaths.root.appendingPathComponent("Tests/PostmapTests/Scenarios"),
                                       defaultProgram: "postmap")
    static var ours: [String: String] { ["postmap": TestPaths.program("postmap"), "postalias": TestPaths.program("postalias")] }
    static var referenceIsUnpacked: Bool { TestPaths.reference != nil }
}

@Suite struct PostmapGoldenTests {
    @Test(arguments: PostmapGolden.harness.scenarioNames)
    func scenarioMatchesReference(scenario: String) throws {
        let expected = try PostmapGolden.harness.expected(scenario)
        let actual = try PostmapGolden.harness.render(scenario: scenario, programs: PostmapGolden.ours,
                                                      words: ["SHLIB": "/nonexistent"])
        var saved = ""
        if actual != expected {
            saved = NSTemporaryDirectory() + "postmap-golden-\(scenario).actual"
            try? Data(actual.utf8).write(to: URL(fileURLWithPath: saved))
        }
        #expect(actual == expected, "\(scenario) (whole output in \(saved)): \(GoldenHarness.firstDifference(expected, actual))")
    }

    @Test(.enabled(if: PostmapGolden.referenceIsUnpacked, "the reference Postfix is not unpacked in .ref/postfix"),
          arguments: PostmapGolden.harness.scenarioNames)
    func goldenFileIsCurrent(scenario: String) throws {
        let ref = try #require(TestPaths.reference)
        let libs = ref + "/usr/lib/postfix"
        let live = try PostmapGolden.harness.render(
            scenario: scenario,
            programs: ["postmap": ref + "/usr/sbin/postmap", "postalias": ref + "/usr/sbin/postalias"],
            env: ["LD_LIBRARY_PATH": libs], words: ["SHLIB": libs])
        if ProcessInfo.processInfo.environment["SWALLOW_RECORD_GOLDENS"] == "1" {
            try PostmapGolden.harness.record(scenario, live)
            return
        }
        let expected = try PostmapGolden.harness.expected(scenario)
        #expect(live == expected, "\(scenario): \(GoldenHarness.firstDifference(expected, live))")
    }
}
