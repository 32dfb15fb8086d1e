// GetOpt: command-line options as glibc's getopt() with a leading "+" reads them: letters
// after "-", grouped or not, a value glued on or in the next argument, options ending at
// the first operand or at "--". Every Postfix program parses its options this way.
public enum GetOpt {
    public enum Problem: Equatable, Sendable {
        case unknown(Character)
        case missingArgument(Character)
    }

    /// What glibc prints to standard error for a problem.
    public static func message(_ problem: Problem, program: String) -> String {
        switch problem {
        case .unknown(let c): return "\(program): invalid option -- '\(c)'"
        case .missingArgument(let c): return "\(program): option requires an argument -- '\(c)'"
        }
    }

    /// Calls `handle` with each option letter and its value (for letters followed by ":"
    /// in `spec`), in order; stops at the first problem. Returns the operands.
    public static func parse(_ args: [String], spec: String,
                             _ handle: (Character, String?) -> Void) -> (operands: [String], problem: Problem?) {
        parse(args, spec: spec, atArgument: { _, _ in false }, handle)
    }

    /// Like parse(_:spec:_:), for programs with options getopt cannot read (sendmail's
    /// "-q" without a value): `atArgument` sees each argument before getopt does; it may
    /// rewrite it, or return true when it took the argument itself.
    public static func parse(_ args: [String], spec: String, atArgument: (inout [String], Int) -> Bool,
                             _ handle: (Character, String?) -> Void) -> (operands: [String], problem: Problem?) {
        var args = args
        let letters = Array(spec)
        var i = 0
        while i < args.count {
            if atArgument(&args, i) {
                i += 1
                continue
            }
            let a = Array(args[i])
            if args[i] == "--" { return (Array(args[(i + 1)...]), nil) }
            if a.count < 2 || a[0] != "-" { break }
            var k = 1
            while k < a.count {
                let c = a[k]
                k += 1
                guard c != ":", let at = letters.firstIndex(of: c) else { return ([], .unknown(c)) }
                var value: String?
                if at + 1 < letters.count && letters[at + 1] == ":" {
                    if k < a.count {
                        value = String(a[k...])
                        k = a.count
                    } else if i + 1 < args.count {
                        i += 1
                        value = args[i]
                    } else {
                        return ([], .missingArgument(c))
                    }
                }
                handle(c, value)
            }
            i += 1
        }
        return (Array(args[i...]), nil)
    }
}
