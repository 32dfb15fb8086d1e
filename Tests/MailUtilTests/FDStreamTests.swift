import Testing
import TestSupport
import Glibc
@testable import MailUtil

@Suite struct FDStreamLineTests {
    func lines(_ input: String, limit: Int, overflow: LineOverflow = .truncate, chunk: Int) throws -> [Line] {
        let s = makeStream(bytes(input), chunk: chunk)
        var out: [Line] = []
        while let l = try s.readLine(limit: limit, overflow: overflow) { out.append(l) }
        return out
    }

    @Test(arguments: feedSizes)
    func crlfAndBareEndings(chunk: Int) throws {
        let got = try lines("HELO a\r\nMAIL FROM:<x>\nbare\rcr\r\nlast", limit: 100, chunk: chunk)
        #expect(got == [
            Line(bytes: bytes("HELO a"), ending: .crlf),
            Line(bytes: bytes("MAIL FROM:<x>"), ending: .bareLF),
            Line(bytes: bytes("bare\rcr"), ending: .crlf, bareCR: true),
            Line(bytes: bytes("last"), ending: .none),
        ])
    }

    @Test(arguments: feedSizes)
    func emptyLinesAndTrailingCR(chunk: Int) throws {
        let got = try lines("\r\n\n\r", limit: 10, chunk: chunk)
        #expect(got == [
            Line(bytes: [], ending: .crlf),
            Line(bytes: [], ending: .bareLF),
            Line(bytes: bytes("\r"), ending: .none, bareCR: true),
        ])
    }

    @Test(arguments: feedSizes)
    func exactLimitIsNotOverflow(chunk: Int) throws {
        let got = try lines("abcd\r\nabcde\r\n", limit: 4, chunk: chunk)
        #expect(got[0] == Line(bytes: bytes("abcd"), ending: .crlf))
        #expect(got[1] == Line(bytes: bytes("abcd"), ending: .crlf, overflow: true))
        #expect(got.count == 2)
    }

    @Test(arguments: feedSizes)
    func overflowSplitKeepsTheRest(chunk: Int) throws {
        let got = try lines("0123456789\r\nxy\n", limit: 4, overflow: .split, chunk: chunk)
        #expect(got.map { String(decoding: $0.bytes, as: UTF8.self) } == ["0123", "4567", "89", "xy"])
        #expect(got.map(\.overflow) == [true, true, false, false])
        #expect(got.map(\.ending) == [.none, .none, .crlf, .bareLF])
    }

    @Test(arguments: feedSizes)
    func overflowTruncateDiscardsToLF(chunk: Int) throws {
        let got = try lines("0123456789\rzz\r\nnext\r\n", limit: 4, chunk: chunk)
        #expect(got.count == 2)
        #expect(got[0].bytes == bytes("0123") && got[0].overflow && got[0].ending == .crlf && got[0].bareCR)
        #expect(got[1] == Line(bytes: bytes("next"), ending: .crlf))
    }

    @Test(arguments: feedSizes)
    func longLineAcrossBufferGrowth(chunk: Int) throws {
        let long = String(repeating: "x", count: 20000)
        let got = try lines(long + "\r\n" + "y\r\n", limit: 30000, chunk: chunk == 1 ? 4096 : chunk)
        #expect(got.count == 2)
        #expect(got[0].bytes.count == 20000 && got[0].ending == .crlf)
    }

    @Test func nulBytesStayInLine() throws {
        let got = try lines("a\u{0}b\r\n", limit: 10, chunk: 1)
        #expect(got == [Line(bytes: [0x61, 0, 0x62], ending: .crlf)])
    }
}

@Suite struct FDStreamIOTests {
    @Test(arguments: feedSizes)
    func exactReadsAndPeek(chunk: Int) throws {
        let s = makeStream(bytes("hello world"), chunk: chunk)
        #expect(try s.peekByte() == UInt8(ascii: "h"))
        #expect(try s.read(exactly: 5) == bytes("hello"))
        #expect(try s.readByte() == UInt8(ascii: " "))
        #expect(throws: StreamError.eof) { try s.read(exactly: 6) }
    }

    @Test(arguments: feedSizes)
    func readThroughDelimiter(chunk: Int) throws {
        let s = makeStream(bytes("name\u{0}value\u{0}rest"), chunk: chunk)
        let a = try s.read(through: 0, maxCount: 100)
        #expect(a.bytes == bytes("name") && a.found && !a.overflow)
        let b = try s.read(through: 0, maxCount: 3)
        #expect(b.bytes == bytes("val") && !b.found && b.overflow)
        let c = try s.read(through: 0, maxCount: 100)
        #expect(c.bytes == bytes("ue") && c.found)
        let d = try s.read(through: 0, maxCount: 100)
        #expect(d.bytes == bytes("rest") && !d.found && !d.overflow)
    }

    @Test func readTimesOut() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let s = FDStream(fd: fds[0], timeout: 1, closeOnDeinit: true)
        let start = monotonicNanos()
        #expect(throws: StreamError.timeout) { try s.readByte() }
        #expect(monotonicNanos() - start >= 900_000_000)
    }

    @Test func deadlineBoundsTotalTime() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let s = FDStream(fd: fds[0], timeout: 60, closeOnDeinit: true)
        s.deadline = monotonicNanos() + 200_000_000
        #expect(throws: StreamError.timeout) { try s.readByte() }
    }

    @Test func writeAndFlushThroughPipe() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let w = FDStream(fd: fds[1], timeout: 5, closeOnDeinit: true)
        try w.write("250 ok\r\n")
        #expect(w.pendingOutputCount == 8)
        try w.flush()
        #expect(w.pendingOutputCount == 0)
        let r = FDStream(fd: fds[0], timeout: 5, closeOnDeinit: true)
        #expect(try r.readLine(limit: 100) == Line(bytes: bytes("250 ok"), ending: .crlf))
    }
}
