// DNS lookups against a server of the test's own on loopback (fakedns.py), and the answer
// parser fed malformed packets.
import Testing
import Glibc
@testable import MailDNS
import TestSupport

@Suite(.serialized) struct DNSTests {
    static let zone = """
    mx.example.test      MX    20 b.mx.example.test
    mx.example.test      MX    10 a.mx.example.test
    a.mx.example.test    A     192.0.2.10
    v6.example.test      AAAA  2001:db8::25
    txt.example.test     TXT   listed for spam
    alias.example.test   CNAME a.mx.example.test
    nullmx.example.test  MX    0 .
    fail.example.test    SERVFAIL
    10.2.0.192.in-addr.arpa PTR a.mx.example.test
    sub.empty.example.test A   192.0.2.99
    """

    /// A server on a high port: the in-process resolver is pointed at it.
    static func server() throws -> FakeDNS {
        let dns = try FakeDNS(zone: zone, address: "127.0.0.1", port: Int.random(in: 30000...60000))
        #expect(DNS.useServer(dns.address, port: dns.port))
        return dns
    }

    @Test func recordsOfEachType() throws {
        let dns = try Self.server()
        let mx = DNS.query("mx.example.test", .mx)
        #expect(mx.status == .ok)
        #expect(Set(mx.records.map { "\($0.preference) \($0.data)" }) == ["10 a.mx.example.test", "20 b.mx.example.test"])
        let a = DNS.query("a.mx.example.test.", .a)
        #expect(a.records.map(\.data) == ["192.0.2.10"] && a.records.first?.address == [192, 0, 2, 10])
        #expect(DNS.query("v6.example.test", .aaaa).records.map(\.data) == ["2001:db8::25"])
        #expect(DNS.query("txt.example.test", .txt).records.map(\.data) == ["listed for spam"])
        #expect(DNS.query("alias.example.test", .a).records.map(\.data) == ["192.0.2.10"])
        #expect(DNS.query(DNS.reverseName([192, 0, 2, 10], domain: "in-addr.arpa"), .ptr).records.map(\.data)
                == ["a.mx.example.test"])
        #expect(dns.queries.contains("mx.example.test MX"))
    }

    @Test func failuresSayWhy() throws {
        let dns = try Self.server()
        let nx = DNS.query("nx.example.test", .mx)
        #expect(nx.status == .notFound && nx.nxdomain)
        #expect(nx.reason == "Host or domain name not found. Name service error for name=nx.example.test type=MX: Host not found")
        let nodata = DNS.query("a.mx.example.test", .mx)
        #expect(nodata.status == .notFound && !nodata.nxdomain)
        let empty = DNS.query("empty.example.test", .a)
        #expect(empty.status == .notFound && !empty.nxdomain, "a name with only children exists")
        let fail = DNS.query("fail.example.test", .a)
        #expect(fail.status == .retry)
        #expect(fail.reason.hasSuffix("type=A: Host not found, try again"))
        let null = DNS.query("nullmx.example.test", .mx)
        #expect(null.status == .nullMX && null.reason == "Domain nullmx.example.test does not accept mail (nullMX)")
        #expect(DNS.query("bad..name", .a).status == .invalid)
        _ = dns
    }

    @Test func lookupListStopsWhereDomainAnswers() throws {
        let dns = try Self.server()
        // No MX, so the A record counts (the "mail host" lookup of smtpd).
        let mh = DNS.lookup("a.mx.example.test", [.mx, .a, .aaaa])
        #expect(mh.status == .ok, "\(mh.reason)")
        // A name that does not exist is not asked again for A and AAAA.
        #expect(DNS.lookup("nx2.example.test", [.mx, .a, .aaaa]).status == .notFound)
        #expect(!dns.queries.contains("nx2.example.test A"))
        #expect(DNS.lookup("fail.example.test", [.mx, .a]).status == .retry)
        #expect(DNS.lookup("nullmx.example.test", [.mx, .a]).status == .nullMX)
    }

    @Test func reverseNames() {
        #expect(DNS.reverseName([192, 0, 2, 1], domain: "zen.example") == "1.2.0.192.zen.example")
        var v6 = [UInt8](repeating: 0, count: 16)
        v6[0] = 0x20; v6[1] = 0x01; v6[2] = 0x0d; v6[3] = 0xb8; v6[15] = 0x1
        #expect(DNS.reverseName(v6, domain: "x") == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.x")
    }

    @Test func malformedAnswersAreRefused() {
        // Header claims one answer that is not there; a compression loop; a label past the end.
        let header: [UInt8] = [0, 1, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        #expect(DNS.parse(header, type: .a) == nil)
        let loop: [UInt8] = [0, 1, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]
        #expect(DNS.parse(loop, type: .a) == nil)
        let past: [UInt8] = [0, 1, 0x84, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 0x61]
        #expect(DNS.parse(past, type: .a) == nil)
        let badA: [UInt8] = [0, 1, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3]
        #expect(DNS.parse(badA, type: .a) == nil)
        let good: [UInt8] = [0, 1, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]
        #expect(DNS.parse(good, type: .a)?.map(\.data) == ["1.2.3.4"])
    }
}
