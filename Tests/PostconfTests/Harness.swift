// Test harness: runs a postconf binary the way tools/gen-postconf-goldens runs the
// reference, and renders the result in the same golden format.
import Foundation
import Testing

enum Harness {
    /// The package root (three levels above this file).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let scenarios = root.appendingPathComponent("Tests/PostconfTests/Scenarios")

    /// Our freshly built postconf, next to the test bundle.
    static var ourPostconf: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        let beside = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("postconf").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return root.appendingPathComponent(".build/debug/postconf").path
    }

    /// The reference Postfix (SWALLOW_REF_DIR, default .ref/postfix), if unpacked.
    static var reference: (postconf: String, libs: String)? {
        let dir = ProcessInfo.processInfo.environment["SWALLOW_REF_DIR"]
            ?? root.appendingPathComponent(".ref/postfix").path
        let p = dir + "/usr/sbin/postconf"
        guard FileManager.default.isExecutableFile(atPath: p) else { return nil }
        return (p, dir + "/usr/lib/postfix")
    }

    struct Result {
        var stdout: String
        var stderr: String
        var status: Int32
    }

    static func run(_ program: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        var e = ["PATH": "/usr/bin:/bin", "NORANDOMIZE": "1"]
        for (k, v) in env { e[k] = v }
        p.environment = e
        // Output goes to files, so a large output can never block the child.
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
        if let s = stdin { inp.fileHandleForWriting.write(Data(s.utf8)) }
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
    static func split(_ line: String) -> [String] {
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

    /// Runs every command of a scenario with `program` and renders the golden text.
    static func render(scenario: String, program: String, env: [String: String] = [:]) throws -> String {
        let src = scenarios.appendingPathComponent(scenario)
        let commands = try String(contentsOf: src.appendingPathComponent("commands"), encoding: .utf8)
        var out: [String] = []
        for line in commands.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("golden-\(UUID().uuidString)")
            let dir = tmp.appendingPathComponent(scenario).path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: tmp) }
            for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where f != "commands" && f != "expected" {
                var data = try Data(contentsOf: src.appendingPathComponent(f))
                data = Data(String(decoding: data, as: UTF8.self).replacingOccurrences(of: "@DIR@", with: dir).utf8)
                let p = dir + "/" + f
                try data.write(to: URL(fileURLWithPath: p))
                let old = Date(timeIntervalSinceNow: -3600)
                try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: p)
            }
            let before = snapshot(dir)
            let args = split(line).map { $0.replacingOccurrences(of: "@DIR@", with: dir) }
            let r = try run(program, args, env: env)
            func norm(_ s: String) -> String {
                let t = s.replacingOccurrences(of: program, with: "postconf").replacingOccurrences(of: dir, with: "@DIR@")
                return t.replacingOccurrences(of: #"(?m)^process_id = [0-9]+$"#, with: "process_id = PID",
                                              options: .regularExpression)
            }
            func trimNL(_ s: String) -> String {
                var t = s
                while t.hasSuffix("\n") { t.removeLast() }
                return t
            }
            out.append("### " + line)
            out.append("--- stdout")
            out.append(trimNL(norm(r.stdout)))
            out.append("--- stderr")
            out.append(trimNL(norm(r.stderr)))
            out.append("--- exit \(r.status)")
            let after = snapshot(dir)
            for f in Set(before.keys).union(after.keys).sorted() {
                let b = before[f], a = after[f]
                if b?.0 != a?.0 || b?.1 != a?.1 {
                    if let a {
                        out.append("--- file \(f) \(String(a.1, radix: 8))")
                        out.append(norm(String(decoding: a.0, as: UTF8.self)))
                    } else {
                        out.append("--- removed \(f)")
                    }
                }
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    static var scenarioNames: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: scenarios.path)) ?? []).filter {
            FileManager.default.fileExists(atPath: scenarios.appendingPathComponent($0).appendingPathComponent("commands").path)
        }.sorted()
    }

    /// The first differing line of two texts, for readable failures.
    static func firstDifference(_ a: String, _ b: String) -> String {
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
}
