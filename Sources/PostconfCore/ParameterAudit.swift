// ParameterAudit: settings in main.cf and master.cf that no program uses, with the known
// name each one most likely meant. "postfix check" reports them ("did you mean ...?").
// Uses postconf's name space: built-in, per-service and user-defined parameters.
import Glibc
import MailUtil
import MailGlobal

public struct UnusedParameter: Sendable, Equatable {
    /// The file that sets it (main.cf or master.cf).
    public var file: String
    public var name: String
    public var value: String
    /// The closest valid name, when one is close enough to be a likely misspelling.
    public var suggestion: String?
}

public enum ParameterAudit {
    /// Reads the configuration as postconf does (fatal on syntax errors) and lists the
    /// unused settings, main.cf first.
    public static func unusedParameters(configDirectory: String) -> [UnusedParameter] {
        let state = PostconfState(argv0: "postconf", mode: [], configDirectory: configDirectory)
        state.readParameters()
        state.registerBuiltinParameters()
        state.readMaster(failOnOpenError: false)
        state.registerServiceParameters()
        state.registerUserParameters()
        let known = Array(state.nodes.keys)
        var out: [UnusedParameter] = []
        for (name, value) in state.unusedMainParameters() {
            out.append(UnusedParameter(file: state.mainPath, name: name, value: value,
                                       suggestion: closest(name, in: known)))
        }
        for (name, value) in state.unusedMasterParameters() {
            out.append(UnusedParameter(file: state.masterPath, name: name, value: value,
                                       suggestion: closest(name, in: known)))
        }
        return out
    }

    /// The known name at the smallest edit distance (insert, delete, replace, swap of
    /// neighbours), if that distance is small for the name's length; ties go to the
    /// alphabetically first name.
    public static func closest(_ name: String, in known: [String]) -> String? {
        let word = Array(name.utf8)
        let limit = word.count <= 4 ? 1 : (word.count <= 12 ? 2 : 3)
        var best: (Int, String)?
        for k in known.sorted() {
            let cand = Array(k.utf8)
            if abs(cand.count - word.count) > limit { continue }
            let d = distance(word, cand)
            if d <= limit && (best == nil || d < best!.0) { best = (d, k) }
        }
        return best?.1
    }

    /// Optimal string alignment distance.
    static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev2 = [Int](repeating: 0, count: b.count + 1)
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    cur[j] = min(cur[j], prev2[j - 2] + 1)
                }
            }
            (prev2, prev, cur) = (prev, cur, prev2)
        }
        return prev[b.count]
    }
}
