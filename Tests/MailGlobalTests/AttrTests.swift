import Testing
import TestSupport
import Glibc
@testable import MailGlobal
@testable import MailUtil

@Suite struct AttrCodecTests {
    func decodeAll(_ data: [UInt8], _ enc: AttrEncoding, chunk: Int) throws -> [AttrList] {
        let r = AttrReader(makeStream(data, chunk: chunk), encoding: enc)
        var out: [AttrList] = []
        while let l = try r.readList() { out.append(l) }
        return out
    }

    @Test func cleanupGreetingBytes() throws {
        var l = AttrList()
        l.append(MailAttr.proto, MailProtocol.cleanup)
        l.append(MailAttr.queueID, "1E24012D687")
        #expect(try AttrCodec.encode(l, .attr0) == bytes("protocol\0cleanup_protocol\0queue_id\01E24012D687\0\0"))
        var f = AttrList()
        f.append(MailAttr.flags, int: 242)
        #expect(try AttrCodec.encode(f, .attr0) == bytes("flags\0242\0\0"))
    }

    @Test func negativeIntsWrap() throws {
        var l = AttrList()
        l.append("status", int: -1)
        #expect(try AttrCodec.encode(l, .plain) == bytes("status=4294967295\n\n"))
        var sc = l.scanner()
        #expect(try sc.int("status") == -1)
    }

    @Test func plainAndAttr64Forms() throws {
        let l: AttrList = [.pair(name: "protocol", value: bytes("test"))]
        #expect(try AttrCodec.encode(l, .attr64) == bytes("cHJvdG9jb2w=:dGVzdA==\n\n"))
        let anvil: AttrList = [.pair(name: "request", value: bytes("connect")), .pair(name: "ident", value: bytes("smtp:192.0.2.10"))]
        #expect(try AttrCodec.encode(anvil, .plain) == bytes("request=connect\nident=smtp:192.0.2.10\n\n"))
        let h: AttrList = [.hash([AttrPair("k", "v")])]
        #expect(try AttrCodec.encode(h, .plain) == bytes("{\0\nk=v\n}\0\n\n"))
        #expect(try AttrCodec.encode(h, .attr0) == bytes("{\0k\0v\0}\0\0"))
        #expect(try AttrCodec.encode(h, .attr64) == bytes("ew==\naw==:dg==\nfQ==\n\n"))
    }

    @Test func moreLeavesListOpen() throws {
        let l: AttrList = [.pair(name: "a", value: bytes("1"))]
        #expect(try AttrCodec.encode(l, .attr0, more: true) == bytes("a\01\0"))
    }

    @Test(arguments: [AttrEncoding.attr0, .plain, .attr64])
    func roundTripDripFed(enc: AttrEncoding) throws {
        var a = AttrList()
        a.append("request", "resolve")
        a.append("sender", "alice@example.org")
        a.append("empty", "")
        a.append("flags", int: 0)
        a.append("flags", int: 4096)
        a.append("size", long: -2)
        a.append("time", data: [0, 1, 2, 255, 254])
        a.appendHash([AttrPair("x", "1"), AttrPair("y", "")])
        var b = AttrList()
        b.append("status", int: 0)
        let data = try AttrCodec.encode(a, enc) + AttrCodec.encode(b, enc)
        for chunk in feedSizes {
            let lists = try decodeAll(data, enc, chunk: chunk)
            #expect(lists == [a, b])
            var sc = lists[0].scanner()
            #expect(try sc.string("sender") == "alice@example.org")
            #expect(try sc.int("flags") == 0)
            #expect(try sc.int("flags") == 4096)
            #expect(try sc.long("size") == -2)
            #expect(try sc.data("time") == [0, 1, 2, 255, 254])
            #expect(try sc.hash() == [AttrPair("x", "1"), AttrPair("y", "")])
        }
    }

    @Test func scannerSkipsUnrequestedUnlessStrict() throws {
        let l: AttrList = [.pair(name: "x", value: bytes("1")), .pair(name: "queue_id", value: bytes("ABC"))]
        var loose = l.scanner()
        #expect(try loose.string("queue_id") == "ABC")
        var strict = l.scanner(strict: true)
        #expect(throws: AttrError.unexpected("x")) { try strict.string("queue_id") }
        var missing = l.scanner()
        #expect(throws: AttrError.missing("nope")) { try missing.string("nope") }
    }

    @Test func protocolCheck() throws {
        let l: AttrList = [.pair(name: "protocol", value: bytes("trivial_rewrite_protocol"))]
        var sc = l.scanner()
        #expect(throws: AttrError.self) { try sc.expect("protocol", equals: MailProtocol.verify) }
        #expect(MailProtocol.verify == "address_verification_prrotocol")
    }

    @Test(arguments: feedSizes)
    func malformedInput(chunk: Int) throws {
        // Truncated inside a value.
        #expect(throws: AttrError.truncated) { try decodeAll(bytes("name\0val"), .attr0, chunk: chunk) }
        // Truncated before the terminator.
        #expect(throws: AttrError.truncated) { try decodeAll(bytes("name\0value\0"), .attr0, chunk: chunk) }
        // Bad base64 in attr64.
        #expect(throws: AttrError.self) { try decodeAll(bytes("!!!:dGVzdA==\n\n"), .attr64, chunk: chunk) }
        // Unbalanced hash group.
        #expect(throws: AttrError.self) { try decodeAll(bytes("}\0\0"), .attr0, chunk: chunk) }
        #expect(throws: AttrError.self) { try decodeAll(bytes("{\0a\0b\0\0"), .attr0, chunk: chunk) }
        // Clean EOF before a list is not an error.
        #expect(try decodeAll([], .attr0, chunk: chunk).isEmpty)
    }

    @Test func oversizedStringsAreRefused() throws {
        let r = AttrReader(makeStream(bytes(String(repeating: "a", count: 100) + "\0x\0\0")), encoding: .attr0)
        r.maxStringLength = 50
        #expect(throws: AttrError.self) { try r.readList() }
    }

    @Test func badNumbersAreRefused() throws {
        let l: AttrList = [.pair(name: "n", value: bytes("12x")), .pair(name: "m", value: bytes("4294967296"))]
        var sc = l.scanner()
        #expect(throws: AttrError.self) { try sc.int("n") }
        #expect(throws: AttrError.self) { try sc.int("m") }
    }

    @Test func unencodableValuesAreRefused() {
        let nul: AttrList = [.pair(name: "a", value: [0x61, 0, 0x62])]
        #expect(throws: AttrError.self) { try AttrCodec.encode(nul, .attr0) }
        let lf: AttrList = [.pair(name: "a", value: bytes("x\ny"))]
        #expect(throws: AttrError.self) { try AttrCodec.encode(lf, .plain) }
        #expect(throws: AttrError.self) { try AttrCodec.encode([.pair(name: "a=b", value: [])], .plain) }
    }

    @Test func moreReportsListEnd() throws {
        let r = AttrReader(makeStream(bytes("a\01\0\0"), chunk: 1), encoding: .attr0)
        #expect(try r.more() == true)
        #expect(try r.next() == .pair(name: "a", value: bytes("1")))
        #expect(try r.more() == false)
        #expect(try r.more() == nil)
    }

    @Test func clientTalksToAServer() throws {
        let path = "/tmp/swallow-attr-\(getpid()).sock"
        let lfd = try UnixSocket.listen(path)
        defer { close(lfd); unlink(path) }
        let server = Thread {
            let c = try! UnixSocket.accept(lfd)
            let s = FDStream(fd: c, timeout: 5, closeOnDeinit: true)
            try! s.write(AttrCodec.encode([.pair(name: "protocol", value: bytes("trivial_rewrite_protocol"))], .attr0))
            try! s.flush()
            let req = try! AttrReader(s).readList()!
            var sc = req.scanner()
            let addr = try! sc.string("address")
            var reply = AttrList()
            reply.append("flags", int: 0)
            reply.append("address", addr + "@example.com")
            try! s.write(AttrCodec.encode(reply, .attr0))
            try! s.flush()
        }
        server.start()
        let client = try AttrClient(path: path, timeout: 5)
        try client.expectProtocol(MailProtocol.trivialRewrite)
        var req = AttrList()
        req.append("request", "rewrite")
        req.append("rule", "local")
        req.append("address", "joe")
        var sc = try client.request(req).scanner()
        #expect(try sc.int("flags") == 0)
        #expect(try sc.string("address") == "joe@example.com")
        server.join()
    }
}

/// A minimal pthread wrapper for tests that need a peer in the same process.
final class Thread: @unchecked Sendable {
    private var tid = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&tid, nil, { arg in
            let me = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }
    func join() { pthread_join(tid, nil) }
}
