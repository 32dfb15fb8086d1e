// FakeDNS: runs Tests/Support/fakedns.py, an authoritative DNS server of the test's own, on
// a loopback address, with the zone text given, for as long as the value lives. Tests point
// a resolver at it (DNS.useServer in-process, or a private /etc/resolv.conf for a whole
// instance: see Instance), so no query ever leaves the machine.
import Foundation
import Glibc
import MailUtil

public final class FakeDNS {
    public let address: String
    public let port: Int
    public let directory: String
    let pid: pid_t

    /// The server script beside this file.
    public static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("fakedns.py").path
    }

    /// Starts a server for `zone` on `address` (default: a fresh 127.53.x.y) and `port`
    /// (53 for a resolv.conf, any other for DNS.useServer); waits until it answers.
    public init(zone: String, address: String? = nil, port: Int = 53) throws {
        self.address = address ?? "127.53.\(Int.random(in: 1...254)).\(Int.random(in: 1...254))"
        self.port = port
        directory = "/tmp/swallow-dns-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try zone.write(toFile: directory + "/zone", atomically: true, encoding: .utf8)
        try "nameserver \(self.address)\noptions attempts:1 timeout:2\n"
            .write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError.current("pipe") }
        let null = open("/dev/null", O_RDWR)
        defer { close(null); close(fds[1]) }
        pid = try Spawn.run("/usr/bin/python3", argv: ["python3", FakeDNS.script, directory + "/zone", self.address, String(port)],
                            environment: ["PATH=/usr/bin:/bin"], descriptors: [0: null, 1: fds[1], 2: null])
        let ready = FDStream(fd: fds[0], timeout: 10, closeOnDeinit: true)
        guard let line = try? ready.readLine(limit: 100), String(decoding: line.bytes, as: UTF8.self) == "ready" else {
            kill(pid, SIGKILL)
            throw SystemError(errno: EIO, "fakedns did not start on \(self.address):\(port)")
        }
    }

    /// resolv.conf naming this server (bind-mount it over /etc/resolv.conf).
    public var resolvConf: String { directory + "/resolv.conf" }

    /// The queries received so far, "name TYPE" each.
    public var queries: [String] {
        ((try? String(contentsOfFile: directory + "/" + address + ".log", encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    deinit {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
