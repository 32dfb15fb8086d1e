// postconf -d against the reference file of Postfix 3.7.11 defaults: every parameter is
// present with the same default, except Swallow's intended differences (each with its
// reason) and the values computed from the host, which are computed here independently.
import Foundation
import Testing

@Suite struct PostconfDefaultsTests {
    /// Defaults that differ on purpose, and why.
    static let intended: [String: (value: String, reason: String)] = [
        "mail_name": ("Swallow", "banners and Received: headers say honestly what answered (DESIGN section 9)"),
        "mail_version": ("0.1.0", "Swallow's own version"),
        "mail_release_date": ("20261121", "Swallow's own release"),
        "daemon_directory": ("/usr/libexec/postfix", "the upstream layout; the reference is Debian's patched build"),
        "html_directory": ("no", "no HTML documentation is installed"),
        "readme_directory": ("no", "no README files are installed"),
        "shlib_directory": ("no", "no run-time loadable lookup table plug-ins"),
        "alias_maps": ("hash:/etc/aliases", "built without NIS"),
        "smtpd_forbid_bare_newline": ("normalize", "SMTP smuggling is refused out of the box (DESIGN section 9)"),
    ]

    static let fixtures = Harness.root.appendingPathComponent("Tests/PostconfTests/Fixtures")

    /// A configuration directory with an empty main.cf and the reference's services.
    static func configDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("defaults-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data().write(to: dir.appendingPathComponent("main.cf"))
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("master-debian-services.cf"),
                                         to: dir.appendingPathComponent("master.cf"))
        return dir
    }

    static func parse(_ text: String) -> [String: String] {
        var d: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let s = String(line)
            if let r = s.range(of: " = ") {
                d[String(s[..<r.lowerBound])] = String(s[r.upperBound...])
            } else if s.hasSuffix(" =") {
                d[String(s.dropLast(2))] = ""
            }
        }
        return d
    }

    /// myhostname, mydomain and mynetworks (subnet style, as at compatibility level 0),
    /// computed with Python's ipaddress module from `ip -j addr`.
    static func hostValues() throws -> [String: String] {
        let script = #"""
        import json, socket, subprocess, ipaddress
        h = socket.gethostname()
        host = h if "." in h else h + ".localdomain"
        dom = host.split(".", 1)[1]
        ifs = json.loads(subprocess.run(["ip", "-j", "addr", "show", "up"], capture_output=True, text=True).stdout)
        nets = []
        for fam in ("inet", "inet6"):
            for i in ifs:
                for a in i.get("addr_info", []):
                    if a["family"] != fam:
                        continue
                    n = ipaddress.ip_interface("%s/%s" % (a["local"], a["prefixlen"])).network
                    s = ("%s" % n) if fam == "inet" else ("[%s]/%d" % (n.network_address, n.prefixlen))
                    if s not in nets:
                        nets.append(s)
        print(host); print(dom); print(" ".join(nets))
        """#
        let r = try Harness.run("/usr/bin/python3", ["-c", script])
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        try #require(lines.count >= 3, "python3 failed: \(r.stderr)")
        return ["myhostname": lines[0], "mydomain": lines[1], "mynetworks": lines[2]]
    }

    @Test func defaultsMatchPostfix37() throws {
        let reference = Self.parse(try String(contentsOf: Self.fixtures.appendingPathComponent("postconf-d-3.7.txt"), encoding: .utf8))
        let dir = try Self.configDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try Harness.run(Harness.ourPostconf, ["-c", dir.path, "-d"])
        #expect(r.status == 0)
        #expect(r.stderr.isEmpty)
        let ours = Self.parse(r.stdout)
        #expect(Set(ours.keys) == Set(reference.keys), "parameter names differ: missing \(Set(reference.keys).subtracting(ours.keys).sorted()), extra \(Set(ours.keys).subtracting(reference.keys).sorted())")
        let host = try Self.hostValues()
        var checked = 0
        for (name, refValue) in reference {
            guard let value = ours[name] else { continue }
            if let i = Self.intended[name] {
                #expect(value == i.value, "\(name): \(i.reason)")
            } else if let h = host[name] {
                #expect(value == h, "\(name) computed from this host")
            } else if name == "process_id" {
                #expect(Int(value) != nil)
            } else {
                #expect(value == refValue, "\(name)")
                checked += 1
            }
        }
        #expect(checked > 1000)
        // The listing is sorted by name, as Postfix sorts it.
        let names = r.stdout.split(separator: "\n").map { String($0.split(separator: " ").first ?? "") }
        #expect(names == names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
    }

    @Test(.enabled(if: Harness.reference != nil, "the reference Postfix is not unpacked in .ref/postfix"))
    func liveReferenceDefaultsMatch() throws {
        let ref = try #require(Harness.reference)
        let dir = try Self.configDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let theirs = Self.parse(try Harness.run(ref.postconf, ["-c", dir.path, "-d"], env: ["LD_LIBRARY_PATH": ref.libs]).stdout)
        let ours = Self.parse(try Harness.run(Harness.ourPostconf, ["-c", dir.path, "-d"]).stdout)
        #expect(Set(ours.keys) == Set(theirs.keys))
        for (name, v) in theirs where Self.intended[name] == nil && name != "process_id" {
            #expect(ours[name] == v, "\(name)")
        }
    }
}
