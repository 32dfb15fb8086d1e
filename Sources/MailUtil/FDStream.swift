// FDStream: a buffered byte stream over a file descriptor with per-operation time limits.
// Mirrors Postfix util/vstream.c with timed_read.c/timed_write.c, and smtp_get()'s line
// reading from global/smtp_stream.c. Trusts nothing it reads: lines are bounded, line
// endings are reported exactly (CRLF, bare LF, bare CR), and every wait is bounded by poll().
import Glibc

/// Why a stream operation failed.
public enum StreamError: Error, Equatable, CustomStringConvertible {
    /// No progress within the time limit.
    case timeout
    /// End of input before the requested data was complete.
    case eof
    /// A system call failed.
    case system(SystemError)

    public var description: String {
        switch self {
        case .timeout: return "timeout"
        case .eof: return "unexpected end of input"
        case .system(let e): return e.description
        }
    }
}

/// How a line ended.
public enum LineEnding: Sendable, Equatable {
    /// CR LF, the only ending SMTP allows.
    case crlf
    /// A LF without the CR before it.
    case bareLF
    /// No ending: end of input, or the line was cut at the length limit.
    case none
}

/// What to do with a line longer than the limit.
public enum LineOverflow: Sendable {
    /// Return the first `limit` bytes; the rest comes back as the following line(s).
    /// This is how Postfix splits long message lines into records.
    case split
    /// Return the first `limit` bytes and discard the rest of the line through its LF.
    /// This is how an SMTP server treats an overlong command.
    case truncate
}

/// One line read from a stream, without its ending.
public struct Line: Sendable, Equatable {
    public var bytes: [UInt8]
    public var ending: LineEnding
    /// A CR appeared somewhere other than right before the terminating LF.
    public var bareCR: Bool
    /// The line was longer than the limit and `bytes` holds only its first part.
    public var overflow: Bool

    public init(bytes: [UInt8], ending: LineEnding, bareCR: Bool = false, overflow: Bool = false) {
        self.bytes = bytes
        self.ending = ending
        self.bareCR = bareCR
        self.overflow = overflow
    }
}

/// What a stream reads and writes through instead of the descriptor itself (TLS).
/// Both return what read(2) and write(2) would, with errno EAGAIN when the transport
/// must wait: for the descriptor to become writable when `wantsWrite`, else readable.
public protocol StreamTransport: AnyObject {
    func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int
    func write(_ buffer: UnsafeRawPointer, _ count: Int) -> Int
    var wantsWrite: Bool { get }
    /// Input the transport already holds (readable without waiting).
    var pendingInput: Int { get }
}

/// A buffered stream over a file descriptor. Reads and writes wait at most `timeout`
/// seconds for each system call, and never past `deadline` when one is set.
/// Not thread-safe.
public final class FDStream {
    /// The descriptor read from.
    public let fd: Int32
    /// The descriptor written to: the same as `fd` except for a stdin/stdout pair.
    public let writeFD: Int32
    /// Seconds to wait for each read or write; nil waits forever.
    public var timeout: Int?
    /// Absolute limit (CLOCK_MONOTONIC nanoseconds) for all operations until cleared.
    public var deadline: UInt64?
    /// While a deadline is set, each read of N bytes moves it N/minDataRate seconds later
    /// (0: never), as Postfix's VSTREAM_CTL_MIN_DATA_RATE does.
    public var minDataRate = 0
    /// Close the descriptor when the stream goes away.
    public var closeOnDeinit: Bool
    /// Largest request per read(2); tests lower it to feed input one byte at a time.
    public var maxReadSize = Int.max
    /// Bytes read from the descriptor so far, and written to it.
    public private(set) var bytesRead: UInt64 = 0
    public private(set) var bytesWritten: UInt64 = 0

    private var rbuf: UnsafeMutablePointer<UInt8>
    private var rcap: Int
    private var rpos = 0
    private var rend = 0
    private var sawEOF = false
    private var wbuf: [UInt8] = []
    private let writeThreshold = 8192
    /// Reads and writes go through this when set (after STARTTLS, say).
    public var transport: StreamTransport?

    public init(fd: Int32, writeFD: Int32? = nil, timeout: Int? = nil, closeOnDeinit: Bool = false,
                bufferSize: Int = 8192) {
        self.fd = fd
        self.writeFD = writeFD ?? fd
        self.timeout = timeout
        self.closeOnDeinit = closeOnDeinit
        rcap = max(bufferSize, 16)
        rbuf = .allocate(capacity: rcap)
    }

    deinit {
        rbuf.deallocate()
        if closeOnDeinit {
            close(fd)
            if writeFD != fd { close(writeFD) }
        }
    }

    /// Sets a deadline `seconds` from now for everything that follows.
    public func startDeadline(seconds: Int) {
        deadline = monotonicNanos() + UInt64(seconds) * 1_000_000_000
    }

    // MARK: Reading

    /// Bytes already buffered and not yet consumed.
    public var bufferedInputCount: Int { rend - rpos }

    /// Up to `max` bytes of buffered input, left in the buffer.
    public func peekBuffered(max: Int) -> [UInt8] {
        Array(UnsafeBufferPointer(start: rbuf + rpos, count: Swift.max(0, Swift.min(max, rend - rpos))))
    }

    /// True once a read returned end of input and the buffer is drained.
    public var atEOF: Bool { sawEOF && rpos == rend }

    /// Reads one byte; nil at end of input.
    public func readByte() throws -> UInt8? {
        if rpos == rend, try fill() == 0 { return nil }
        let b = rbuf[rpos]
        rpos += 1
        return b
    }

    /// Looks at the next byte without consuming it; nil at end of input.
    public func peekByte() throws -> UInt8? {
        if rpos == rend, try fill() == 0 { return nil }
        return rbuf[rpos]
    }

    /// Reads exactly `count` bytes; throws `.eof` if the input ends first.
    public func read(exactly count: Int) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            if rpos == rend, try fill() == 0 { throw StreamError.eof }
            let n = min(count - out.count, rend - rpos)
            out.append(contentsOf: UnsafeBufferPointer(start: rbuf + rpos, count: n))
            rpos += n
        }
        return out
    }

    /// Reads what is available, at most `maxCount` bytes, waiting for at least one;
    /// returns an empty array at end of input.
    public func read(upTo maxCount: Int) throws -> [UInt8] {
        if rpos == rend, try fill() == 0 { return [] }
        let n = min(maxCount, rend - rpos)
        let out = Array(UnsafeBufferPointer(start: rbuf + rpos, count: n))
        rpos += n
        return out
    }

    /// Reads bytes up to `delimiter`, which is consumed and not returned. `found` is false
    /// when the input ended first; `overflow` is set (and reading stops) when more than
    /// `maxCount` bytes came without the delimiter.
    public func read(through delimiter: UInt8, maxCount: Int) throws -> (bytes: [UInt8], found: Bool, overflow: Bool) {
        var out = [UInt8]()
        while true {
            if rpos == rend, try fill() == 0 { return (out, false, false) }
            let span = rend - rpos
            if let p = memchr(rbuf + rpos, Int32(delimiter), span) {
                let k = rbuf.distance(to: p.assumingMemoryBound(to: UInt8.self)) - rpos
                if out.count + k > maxCount {
                    let take = maxCount - out.count
                    out.append(contentsOf: UnsafeBufferPointer(start: rbuf + rpos, count: take))
                    rpos += take
                    return (out, false, true)
                }
                out.append(contentsOf: UnsafeBufferPointer(start: rbuf + rpos, count: k))
                rpos += k + 1
                return (out, true, false)
            }
            let take = min(span, maxCount - out.count)
            out.append(contentsOf: UnsafeBufferPointer(start: rbuf + rpos, count: take))
            rpos += take
            if out.count >= maxCount { return (out, false, true) }
        }
    }

    /// Reads one line of at most `limit` bytes (not counting its ending). Returns nil
    /// at end of input when no bytes are left.
    public func readLine(limit: Int, overflow: LineOverflow = .truncate) throws -> Line? {
        precondition(limit > 0, "line limit must be positive")
        let window = limit + 2                      // content, then maybe CR, then LF
        if rcap < window { grow(to: window) }
        var scanned = 0                             // bytes from rpos already known to hold no LF
        while true {
            let avail = rend - rpos
            let span = min(avail, window)
            if span > scanned, let p = memchr(rbuf + rpos + scanned, 0x0A, span - scanned) {
                let lf = rbuf.distance(to: p.assumingMemoryBound(to: UInt8.self)) - rpos
                var contentEnd = lf
                var ending = LineEnding.bareLF
                if lf > 0 && rbuf[rpos + lf - 1] == 0x0D {
                    contentEnd -= 1
                    ending = .crlf
                }
                if contentEnd <= limit {
                    let line = makeLine(count: contentEnd, ending: ending, overflow: false)
                    rpos += lf + 1
                    return line
                }
                // LF too late: fall through to the overflow handling below.
            } else {
                scanned = span
            }
            if avail >= window {
                return try overflowLine(limit: limit, mode: overflow)
            }
            let ended = try sawEOF || fill() == 0
            if ended {
                let left = rend - rpos
                if left == 0 { return nil }
                if left > limit { return try overflowLine(limit: limit, mode: overflow) }
                let line = makeLine(count: left, ending: .none, overflow: false)
                rpos = rend
                return line
            }
        }
    }

    private func makeLine(count: Int, ending: LineEnding, overflow: Bool) -> Line {
        let bytes = Array(UnsafeBufferPointer(start: rbuf + rpos, count: count))
        let hasCR = memchr(rbuf + rpos, 0x0D, count) != nil
        return Line(bytes: bytes, ending: ending, bareCR: hasCR, overflow: overflow)
    }

    private func overflowLine(limit: Int, mode: LineOverflow) throws -> Line {
        var line = makeLine(count: limit, ending: .none, overflow: true)
        rpos += limit
        if mode == .truncate {
            // Discard through the next LF, remembering how the line ended and any bare CR.
            var prev: UInt8 = rpos > 0 ? rbuf[rpos - 1] : 0
            while true {
                if rpos == rend, try fill() == 0 { break }
                let b = rbuf[rpos]
                rpos += 1
                if b == 0x0A {
                    line.ending = prev == 0x0D ? .crlf : .bareLF
                    break
                }
                if prev == 0x0D { line.bareCR = true }
                prev = b
            }
        }
        return line
    }

    /// Reads more input into the buffer; returns the number of bytes added (0 = EOF).
    @discardableResult
    public func fill() throws -> Int {
        if sawEOF { return 0 }
        if rpos == rend {
            rpos = 0
            rend = 0
        } else if rend == rcap {
            if rpos > 0 {
                memmove(rbuf, rbuf + rpos, rend - rpos)
                rend -= rpos
                rpos = 0
            } else {
                grow(to: rcap * 2)
            }
        }
        // Input a transport already holds needs no waiting.
        if (transport?.pendingInput ?? 0) == 0 { try wait(forWriting: false) }
        while true {
            let room = min(rcap - rend, maxReadSize)
            let n = transport.map { $0.read(rbuf + rend, room) } ?? Glibc.read(fd, rbuf + rend, room)
            if n > 0 {
                rend += n
                bytesRead += UInt64(n)
                if minDataRate > 0, let d = deadline {
                    deadline = d + UInt64(n) * 1_000_000_000 / UInt64(minDataRate)
                }
                return n
            }
            if n == 0 {
                sawEOF = true
                return 0
            }
            if errno == EINTR { continue }
            if errno == EAGAIN {
                try wait(forWriting: transport?.wantsWrite ?? false)
                continue
            }
            throw StreamError.system(.current("read"))
        }
    }

    private func grow(to capacity: Int) {
        let nb = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        let used = rend - rpos
        if used > 0 { nb.update(from: rbuf + rpos, count: used) }
        rbuf.deallocate()
        rbuf = nb
        rcap = capacity
        rpos = 0
        rend = used
    }

    // MARK: Writing

    public func write(_ bytes: [UInt8]) throws {
        wbuf.append(contentsOf: bytes)
        if wbuf.count >= writeThreshold { try flush() }
    }

    public func write<S: Sequence>(contentsOf bytes: S) throws where S.Element == UInt8 {
        wbuf.append(contentsOf: bytes)
        if wbuf.count >= writeThreshold { try flush() }
    }

    public func write(_ text: String) throws {
        try write(contentsOf: text.utf8)
    }

    public func write(byte: UInt8) throws {
        wbuf.append(byte)
        if wbuf.count >= writeThreshold { try flush() }
    }

    /// Drops input read but not yet taken (what a client sent before STARTTLS completed
    /// must not count as sent over TLS).
    public func purgeInput() {
        rpos = 0
        rend = 0
    }

    /// Bytes written but not yet flushed.
    public var pendingOutputCount: Int { wbuf.count }

    /// Writes everything buffered.
    public func flush() throws {
        var off = 0
        defer {
            if off > 0 { wbuf.removeFirst(off) }
        }
        var waitForReading = false
        while off < wbuf.count {
            try wait(forWriting: !waitForReading)
            waitForReading = false
            let n = wbuf.withUnsafeBytes { raw in
                if let t = transport { return t.write(raw.baseAddress! + off, raw.count - off) }
                return Glibc.write(writeFD, raw.baseAddress! + off, raw.count - off)
            }
            if n > 0 || (n == 0 && transport == nil) {
                off += n
                bytesWritten += UInt64(n)
                continue
            }
            if n == 0 { throw StreamError.system(SystemError(errno: EPIPE, "write")) }
            if errno == EAGAIN, let t = transport { waitForReading = !t.wantsWrite }
            if errno == EINTR || errno == EAGAIN { continue }
            throw StreamError.system(.current("write"))
        }
    }

    // MARK: Waiting

    private func wait(forWriting: Bool) throws {
        var ms: Int32 = -1
        if let t = timeout { ms = Int32(clamping: t * 1000) }
        if let d = deadline {
            let now = monotonicNanos()
            let left = d > now ? Int32(clamping: (d - now) / 1_000_000) : 0
            ms = ms < 0 ? left : min(ms, left)
        }
        if ms < 0 { return }
        var pfd = pollfd(fd: forWriting ? writeFD : fd, events: Int16(forWriting ? POLLOUT : POLLIN), revents: 0)
        while true {
            let r = poll(&pfd, 1, ms)
            if r > 0 { return }
            if r == 0 { throw StreamError.timeout }
            if errno == EINTR { continue }
            throw StreamError.system(.current("poll"))
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
