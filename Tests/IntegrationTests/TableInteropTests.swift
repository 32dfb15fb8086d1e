// Tables shared with the real world: Berkeley DB files built by our postmap/postalias
// are read by the reference Postfix and the reverse, and pgsql: tables query a real
// PostgreSQL server started for the test from Debian's packages.
import Foundation
import Glibc
import Testing

/// A scratch directory with a main.cf that both our programs and the reference accept.
final class TableDir {
    let path: String
    init() throws {
        path = "/tmp/swallow-tables-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try "queue_directory = \(path)\ndata_directory = \(path)\nmeta_directory = \(path)\ncompatibility_level = 3.7\n"
            .write(toFile: path + "/main.cf", atomically: true, encoding: .utf8)
    }
    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: path + "/" + name, atomically: true, encoding: .utf8)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func ours(_ program: String, _ args: [String], stdin: String? = nil) -> Instance.Result {
        let cmd = ([Instance.buildDirectory + "/" + program, "-c", path] + args).map(shellQuote).joined(separator: " ")
        return Instance.run("/bin/sh", ["-c", stdin.map { "printf '%s' \(shellQuote($0)) | \(cmd)" } ?? cmd])
    }

    func reference(_ program: String, _ args: [String]) -> Instance.Result? {
        guard let ref = Instance.reference else { return nil }
        return Instance.run(ref + "/usr/sbin/" + program, ["-c", path] + args,
                            env: ["PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=\(ref)/usr/lib/postfix"])
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

@Suite(.serialized)
struct BerkeleyDBInteropTests {
    static let source = "Alpha.example  one\nbeta  two words\n# comment\ngamma three\n  continued\nÄpfel  utf8\n"
    static let keys = ["alpha.example", "BETA", "gamma", "äpfel", "ÄPFEL", "missing"]
    /// A continuation line keeps its leading white space after the joining space.
    static let values = ["alpha.example": "one", "BETA": "two words", "gamma": "three  continued", "äpfel": "utf8", "ÄPFEL": "utf8"]

    /// Our build, their reads; their build, our reads; same answers and same dump.
    @Test(.enabled(if: Instance.reference != nil, "the reference Postfix is not unpacked in .ref/postfix (tools/fetch-reference)"),
          arguments: ["hash", "btree"], [[], ["-N"], ["-n"]])
    func filesAreInterchangeable(type: String, options: [String]) throws {
        for (builder, reader) in [("ours", "reference"), ("reference", "ours")] {
            let dir = try TableDir()
            try dir.write("t", Self.source)
            let build = builder == "ours" ? dir.ours("postmap", options + ["\(type):\(dir.path)/t"])
                                          : dir.reference("postmap", options + ["\(type):\(dir.path)/t"])!
            #expect(build.status == 0, "\(builder) build: \(build)")
            func read(_ args: [String]) -> Instance.Result {
                reader == "ours" ? dir.ours("postmap", args) : dir.reference("postmap", args)!
            }
            for key in Self.keys {
                let r = read(["-q", key, "\(type):\(dir.path)/t"])
                let value = Self.values[key]
                #expect(r.stdout == (value.map { $0 + "\n" } ?? "") && r.status == (value == nil ? 1 : 0),
                        "\(type) \(options) built by \(builder), read by \(reader): \(key) → \(r)")
            }
            let dump = read(["-s", "\(type):\(dir.path)/t"])
            let lines = Set(dump.stdout.split(separator: "\n").map(String.init))
            #expect(lines == ["alpha.example\tone", "beta\ttwo words", "gamma\tthree  continued", "äpfel\tutf8"],
                    "\(type) \(options) dump by \(reader) of \(builder)'s file: \(dump)")
            // An update by the reader is seen by the builder.
            let del = read(["-d", "beta", "\(type):\(dir.path)/t"])
            #expect(del.status == 0, "\(del)")
            let after = builder == "ours" ? dir.ours("postmap", ["-q", "beta", "\(type):\(dir.path)/t"])
                                          : dir.reference("postmap", ["-q", "beta", "\(type):\(dir.path)/t"])!
            #expect(after.status == 1 && after.stdout.isEmpty)
        }
    }

    @Test(.enabled(if: Instance.reference != nil, "the reference Postfix is not unpacked in .ref/postfix (tools/fetch-reference)"))
    func aliasDatabasesAreInterchangeable() throws {
        let text = "postmaster: root\nroot: admin,\n  \"x y\"@example.com\nlist: :include:/etc/list\n"
        for (builder, reader) in [("ours", "reference"), ("reference", "ours")] {
            let dir = try TableDir()
            try dir.write("aliases", text)
            let build = builder == "ours" ? dir.ours("postalias", ["hash:\(dir.path)/aliases"])
                                          : dir.reference("postalias", ["hash:\(dir.path)/aliases"])!
            #expect(build.status == 0, "\(build)")
            for (key, value) in [("postmaster", "root"), ("root", "admin, \"x y\"@example.com"), ("list", ":include:/etc/list"), ("@", "@")] {
                let r = reader == "ours" ? dir.ours("postalias", ["-q", key, "hash:\(dir.path)/aliases"])
                                         : dir.reference("postalias", ["-q", key, "hash:\(dir.path)/aliases"])!
                #expect(r.status == 0 && r.stdout == value + "\n", "\(builder) → \(reader): \(key): \(r)")
            }
        }
    }
}

/// A PostgreSQL cluster of our own on a UNIX socket in a temporary directory.
final class PostgresCluster {
    let dir: String
    var socketDir: String { dir + "/sock" }
    let bin: String
    var running = false

    /// Debian's server programs, when the postgresql package is installed.
    static var binDirectory: String? {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        for v in versions where FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/initdb") { return "\(base)/\(v)/bin" }
        return nil
    }

    static var unavailableReason: String? {
        if binDirectory == nil { return "PostgreSQL server programs are not installed (apt-get install postgresql)" }
        if getpwnam("postgres") == nil { return "there is no postgres account" }
        if geteuid() != 0 { return "starting a cluster as another user needs root" }
        return nil
    }

    init() throws {
        bin = PostgresCluster.binDirectory!
        dir = "/tmp/swallow-pg-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir + "/sock", withIntermediateDirectories: true)
        let pw = getpwnam("postgres")!.pointee
        chown(dir, pw.pw_uid, pw.pw_gid)
        chown(dir + "/sock", pw.pw_uid, pw.pw_gid)
        try run("\(bin)/initdb", ["-D", dir + "/data", "-A", "trust", "-U", "postgres", "--no-locale", "-E", "UTF8"])
        try run("\(bin)/pg_ctl", ["-D", dir + "/data", "-l", dir + "/log", "-w", "-t", "60",
                                  "-o", "-k \(dir)/sock -c listen_addresses= -c fsync=off", "start"])
        running = true
    }

    @discardableResult
    func run(_ program: String, _ args: [String]) throws -> Instance.Result {
        let r = Instance.run("/usr/bin/setpriv", ["--reuid=postgres", "--regid=postgres", "--clear-groups", program] + args,
                             env: ["PATH=/usr/bin:/bin", "LANG=C"])
        if r.status != 0 { throw ClusterError.failed("\(program) \(args): \(r.stderr)") }
        return r
    }

    func sql(_ db: String, _ statements: String) throws {
        try run("\(bin)/psql", ["-h", socketDir, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", statements])
    }

    func stop() {
        if running { _ = try? run("\(bin)/pg_ctl", ["-D", dir + "/data", "-m", "immediate", "-w", "stop"]) }
        running = false
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    enum ClusterError: Error { case failed(String) }
}

@Suite(.serialized)
struct PgsqlTableTests {
    @Test(.enabled(if: PostgresCluster.unavailableReason == nil, .init(rawValue: PostgresCluster.unavailableReason ?? "")))
    func queriesARealServer() throws {
        let pg = try PostgresCluster()
        try pg.sql("postgres", "CREATE DATABASE mail")
        try pg.sql("mail", """
            CREATE TABLE aliases (addr text, goto text, extra text);
            INSERT INTO aliases VALUES ('user@example.com', 'u1@dest.com', 'x1'), ('user@example.com', 'u2@dest.com', 'x2'),
              ('o''brien@example.com', 'quote-ok', NULL), ('back\\slash', 'bs-ok', NULL),
              ('upper@example.com', 'lower-stored', NULL), ('multi@example.com', 'm1', NULL),
              ('multi@example.com', 'm2', NULL), ('multi@example.com', 'm3', NULL), ('empty@example.com', '', NULL);
            """)
        let dir = try TableDir()
        let sock = pg.socketDir
        try dir.write("p1.cf", "hosts = unix:\(sock)\nuser = postgres\ndbname = mail\nquery = SELECT goto FROM aliases WHERE addr='%s'\n")
        try dir.write("p2.cf", "hosts = unix:\(sock)\nuser = postgres\ndbname = mail\nquery = SELECT goto, extra FROM aliases WHERE addr='%s'\nexpansion_limit = 2\n")
        try dir.write("p3.cf", "hosts = unix:\(dir.path)/nosock\nuser = postgres\ndbname = mail\nquery = SELECT 1\n")
        try dir.write("p4.cf", "hosts = unix:\(sock)\nuser = postgres\ndbname = nosuchdb\nquery = SELECT 1\n")
        try dir.write("p5.cf", "hosts = unix:\(sock)\nuser = postgres\ndbname = mail\nquery = SELEC goto FROM aliases\n")
        try dir.write("p6.cf", "hosts = unix:\(dir.path)/nosock, unix:\(sock)\nuser = postgres\ndbname = mail\nquery = SELECT 'ok'\n")
        try dir.write("p7.cf", "hosts = unix:\(sock)\nuser = postgres\ndbname = mail\nquery = SELECT goto FROM aliases WHERE addr='%u@%d'\ndomain = example.com\nresult_format = <%s>\n")

        func q(_ key: String, _ cf: String) -> Instance.Result { dir.ours("postmap", ["-q", key, "pgsql:\(dir.path)/\(cf)"]) }
        var r = q("user@example.com", "p1.cf")
        #expect(r.status == 0 && r.stdout == "u1@dest.com,u2@dest.com\n", "\(r)")
        #expect(q("o'brien@example.com", "p1.cf").stdout == "quote-ok\n")
        #expect(q("back\\slash", "p1.cf").stdout == "bs-ok\n")
        // Keys are folded by default (postmap without -f).
        #expect(q("Upper@Example.com", "p1.cf").stdout == "lower-stored\n")
        r = q("none@example.com", "p1.cf")
        #expect(r.status == 1 && r.stdout.isEmpty && r.stderr.isEmpty)
        r = q("empty@example.com", "p1.cf")
        #expect(r.status == 1 && r.stdout.isEmpty)
        // expansion_limit: more results than allowed is an error, never a partial answer.
        r = q("multi@example.com", "p2.cf")
        #expect(r.status == 1 && r.stderr.contains("query error"), "\(r)")
        // A server that is down, a database that does not exist, bad SQL: a temporary
        // failure with the reason, never "not found".
        for cf in ["p3.cf", "p4.cf", "p5.cf"] {
            r = q("user@example.com", cf)
            #expect(r.status == 1 && r.stdout.isEmpty && r.stderr.contains("fatal: table pgsql:\(dir.path)/\(cf): query error"), "\(cf): \(r)")
        }
        #expect(q("user@example.com", "p3.cf").stderr.contains("warning: connect to pgsql server unix:\(dir.path)/nosock"))
        // Hosts are tried in order.
        r = q("x", "p6.cf")
        #expect(r.status == 0 && r.stdout == "ok\n", "\(r)")
        // %u/%d with domain filtering and result_format.
        #expect(q("user@example.com", "p7.cf").stdout == "<u1@dest.com>,<u2@dest.com>\n")
        r = q("user@other.org", "p7.cf")
        #expect(r.status == 1 && r.stdout.isEmpty)

        // The reference's pgsql plug-in gives the same answers, when it is unpacked.
        if let ref = Instance.reference, FileManager.default.fileExists(atPath: ref + "/usr/lib/postfix/postfix-pgsql.so") {
            try "pgsql postfix-pgsql.so dict_pgsql_open\n".write(toFile: dir.path + "/dynamicmaps.cf", atomically: true, encoding: .utf8)
            let main = try String(contentsOfFile: dir.path + "/main.cf", encoding: .utf8)
            try (main + "shlib_directory = \(ref)/usr/lib/postfix\n").write(toFile: dir.path + "/main.cf", atomically: true, encoding: .utf8)
            for cf in ["p1.cf", "p2.cf", "p6.cf", "p7.cf"] {
                for key in ["user@example.com", "o'brien@example.com", "back\\slash", "Upper@Example.com", "multi@example.com", "none"] {
                    let ours = q(key, cf)
                    let theirs = dir.reference("postmap", ["-q", key, "pgsql:\(dir.path)/\(cf)"])!
                    #expect(ours.stdout == theirs.stdout && ours.status == theirs.status,
                            "\(cf) \(key): ours \(ours) reference \(theirs)")
                }
            }
        }
    }
}
