// Golden tests: Swallow's postconf must print exactly what Postfix 3.7's postconf printed
// for each scenario (recorded by tools/gen-postconf-goldens), file edits included.
import Foundation
import Testing

@Suite struct PostconfGoldenTests {
    @Test(arguments: Harness.scenarioNames)
    func scenarioMatchesReference(scenario: String) throws {
        let expectedURL = Harness.scenarios.appendingPathComponent(scenario).appendingPathComponent("expected")
        let expected = try String(contentsOf: expectedURL, encoding: .utf8)
        let actual = try Harness.render(scenario: scenario, program: Harness.ourPostconf)
        #expect(actual == expected, "\(scenario): \(Harness.firstDifference(expected, actual))")
    }

    /// Re-records each scenario with the reference itself when it is unpacked, so a stale
    /// golden file cannot hide a difference.
    @Test(.enabled(if: Harness.reference != nil, "the reference Postfix is not unpacked in .ref/postfix"),
          arguments: Harness.scenarioNames)
    func goldenFileIsCurrent(scenario: String) throws {
        let ref = try #require(Harness.reference)
        let expectedURL = Harness.scenarios.appendingPathComponent(scenario).appendingPathComponent("expected")
        let expected = try String(contentsOf: expectedURL, encoding: .utf8)
        let live = try Harness.render(scenario: scenario, program: ref.postconf, env: ["LD_LIBRARY_PATH": ref.libs])
        #expect(live == expected, "\(scenario): \(Harness.firstDifference(expected, live))")
    }
}
