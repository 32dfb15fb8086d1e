// Golden scenarios: command lines run against a fresh copy of a scenario directory, with
// their output, exit status and file changes rendered as text. The same rendering of
// the reference Postfix's programs is the golden file; ours must print the same.
//
// A scenario directory holds its files and `commands`: one line per case ("#" starts a
// comment). A line may name its program first (one of `programs`), else the default
// one runs; " ;; " separates commands that share one copy (build, then query); "< FILE"
// at the end feeds FILE on standard input. @DIR@ stands for the copy's directory in
// files and arguments, and other @NAME@ words for values the caller gives. NAME.sql
// becomes the SQLite database NAME. Commands run in the copy's directory; files are
// dated an hour back (Postfix treats files changed in the last seconds as in flux).
import Foundation

public struct GoldenHarness: Sendable {
    public let scenarios: URL
    public let defaultProgram: String

    public init(scenarios: URL, defaultProgram: String) {
        self.scenarios = scenarios
        self.defaultProgram = defaultProgram
    }

    public struct Result: CustomStringConvertible, Sendable {
        public var stdout: String
        public var stderr: String
        public var status: Int32
        public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    }

    /// Runs a program with output to files (a large output can never block it).
    public static func run(_ program: String, _ args: [String], env: [String: String] = [:],
                           stdin: Data? = nil, cwd: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        var e = ["PATH": "/usr/bin:/bin", "NORANDOMIZE": "1"]
        for (k, v) in env { e[k] = v }
        p.environment = e
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: base.path + ".out", contents: nil)
        FileManager.default.createFile(atPath: base.path + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: base.path + ".out")
            try? FileManager.default.removeItem(atPath: base.path + ".err")
        }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: base.path + ".out"))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: base.path + ".err"))
        let inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(stdin) }
        try inp.fileHandleForWriting.close()
        p.waitUntilExit()
        try out.close()
        try err.close()
        let outData = FileManager.default.contents(atPath: base.path + ".out") ?? Data()
        let errData = FileManager.default.contents(atPath: base.path + ".err") ?? Data()
        return Result(stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self),
                      status: p.terminationStatus)
    }

    /// Splits a command line with shell-style single and double quotes.
    public static func split(_ line: String) -> [String] {
        var out: [String] = []
        var cur = ""
        var have = false
        var quote: Character?
        for c in line {
            if let q = quote {
                if c == q { quote = nil } else { cur.append(c) }
            } else if c == "'" || c == "\"" {
                quote = c
                have = true
            } else if c == " " || c == "\t" {
                if have { out.append(cur); cur = ""; have = false }
            } else {
                cur.append(c)
                have = true
            }
        }
        if have { out.append(cur) }
        return out
    }

    static func snapshot(_ dir: String) -> [String: (Data, Int)] {
        var out: [String: (Data, Int)] = [:]
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let p = dir + "/" + f
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue,
                  let d = FileManager.default.contents(atPath: p),
                  let attrs = try? FileManager.default.attributesOfItem(atPath: p),
                  let mode = attrs[.posixPermissions] as? Int else { continue }
            out[f] = (d, mode & 0o777)
        }
        return out
    }

    /// Copies a scenario into `dir`, with @DIR@ and the caller's words substituted, and
    /// makes the SQLite databases.
    func prepare(_ src: URL, into dir: String, words: [String: String]) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where f != "commands" && f != "expected" {
            var text = String(decoding: try Data(contentsOf: src.appendingPathComponent(f)), as: UTF8.self)
            text = text.replacingOccurrences(of: "@DIR@", with: dir)
            for (k, v) in words { text = text.replacingOccurrences(of: "@\(k)@", with: v) }
            let p = dir + "/" + f
            try Data(text.utf8).write(to: URL(fileURLWithPath: p))
            if f.hasSuffix(".sql") {
                let db = String(p.dropLast(4))
                let r = try GoldenHarness.run("/usr/bin/python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(open(sys.argv[2]).read()); c.commit()", db, p])
                guard r.status == 0 else { throw GoldenError.setup("sqlite database \(db): \(r.stderr)") }
            }
        }
        let old = Date(timeIntervalSinceNow: -3600)
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: dir + "/" + f)
        }
    }

    /// Runs every command of a scenario and renders the golden text. `programs` maps
    /// program names to the binaries that play them.
    public func render(scenario: String, programs: [String: String], env: [String: String] = [:],
                       words: [String: String] = [:]) throws -> String {
        let src = scenarios.appendingPathComponent(scenario)
        let commands = try String(contentsOf: src.appendingPathComponent("commands"), encoding: .utf8)
        var out: [String] = []
        for line in commands.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("golden-\(UUID().uuidString)")
            let dir = tmp.appendingPathComponent(scenario).path
            defer { try? FileManager.default.removeItem(at: tmp) }
            try prepare(src, into: dir, words: words)
            for command in line.components(separatedBy: " ;; ") {
                let before = GoldenHarness.snapshot(dir)
                var args = GoldenHarness.split(command).map { $0.replacingOccurrences(of: "@DIR@", with: dir) }
                var name = defaultProgram
                if let first = args.first, programs[first] != nil {
                    name = first
                    args.removeFirst()
                }
                var stdin: Data?
                if args.count >= 2 && args[args.count - 2] == "<" {
                    stdin = FileManager.default.contents(atPath: dir + "/" + args.last!) ?? Data()
                    args.removeLast(2)
                }
                let program = programs[name]!
                let r = try GoldenHarness.run(program, args, env: env, stdin: stdin, cwd: dir)
                func norm(_ s: String) -> String {
                    var t = s.replacingOccurrences(of: dir, with: "@DIR@")
                    for (n, path) in programs { t = t.replacingOccurrences(of: path, with: n) }
                    t = t.replacingOccurrences(of: #"(?m)^YP_LAST_MODIFIED:\t[0-9]+$"#, with: "YP_LAST_MODIFIED:\tTIME",
                                               options: .regularExpression)
                    return t.replacingOccurrences(of: #"(?m)^process_id = [0-9]+$"#, with: "process_id = PID",
                                                  options: .regularExpression)
                }
                func trimNL(_ s: String) -> String {
                    var t = s
                    while t.hasSuffix("\n") { t.removeLast() }
                    return t
                }
                out.append("### " + command)
                out.append("--- stdout")
                out.append(trimNL(norm(r.stdout)))
                out.append("--- stderr")
                out.append(trimNL(norm(r.stderr)))
                out.append("--- exit \(r.status)")
                let after = GoldenHarness.snapshot(dir)
                for f in Set(before.keys).union(after.keys).sorted() {
                    let b = before[f], a = after[f]
                    if b?.0 != a?.0 || b?.1 != a?.1 {
                        if let a {
                            if f.hasSuffix(".db") {
                                // Database files differ in the creator's uid; their content
                                // is checked by queries.
                                out.append("--- file \(f) \(String(a.1, radix: 8)) (database)")
                            } else {
                                out.append("--- file \(f) \(String(a.1, radix: 8))")
                                out.append(norm(String(decoding: a.0, as: UTF8.self)))
                            }
                        } else {
                            out.append("--- removed \(f)")
                        }
                    }
                }
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    public var scenarioNames: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: scenarios.path)) ?? []).filter {
            FileManager.default.fileExists(atPath: scenarios.appendingPathComponent($0).appendingPathComponent("commands").path)
        }.sorted()
    }

    public func expected(_ scenario: String) throws -> String {
        try String(contentsOf: scenarios.appendingPathComponent(scenario).appendingPathComponent("expected"), encoding: .utf8)
    }

    /// Replaces a golden file (when re-recording from the reference).
    public func record(_ scenario: String, _ text: String) throws {
        try Data(text.utf8).write(to: scenarios.appendingPathComponent(scenario).appendingPathComponent("expected"))
    }

    /// The first differing line of two texts, for readable failures.
    public static func firstDifference(_ a: String, _ b: String) -> String {
        let la = a.split(separator: "\n", omittingEmptySubsequences: false)
        let lb = b.split(separator: "\n", omittingEmptySubsequences: false)
        for i in 0..<max(la.count, lb.count) {
            let x = i < la.count ? String(la[i]) : "<end>"
            let y = i < lb.count ? String(lb[i]) : "<end>"
            if x != y {
                let ctx = la[max(0, i - 3)..<min(la.count, i)].joined(separator: "\n")
                return "line \(i + 1):\n\(ctx)\n- expected: \(x)\n+ actual:   \(y)"
            }
        }
        return "identical"
    }

    public enum GoldenError: Error { case setup(String) }
}

/// The package root (two levels above this file) and the reference Postfix.
public enum TestPaths {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Where the test binaries (and our programs) were built.
    public static var buildDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().path
    }

    /// One of our programs, next to the test bundle.
    public static func program(_ name: String) -> String {
        let beside = buildDirectory + "/" + name
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return root.appendingPathComponent(".build/debug/\(name)").path
    }

    /// The reference Postfix (SWALLOW_REF_DIR, default .ref/postfix) if unpacked:
    /// its root, with usr/sbin and usr/lib/postfix beneath.
    public static var reference: String? {
        let dir = ProcessInfo.processInfo.environment["SWALLOW_REF_DIR"]
            ?? root.appendingPathComponent(".ref/postfix").path
        return FileManager.default.isExecutableFile(atPath: dir + "/usr/sbin/postconf") ? dir : nil
    }
}
