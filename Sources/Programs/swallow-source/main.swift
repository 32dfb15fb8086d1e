// swallow-source: an SMTP load generator for benchmarks and fault-injection runs, in the
// manner of Postfix's smtp-source (never installed as part of the mail system). Each of
// SESSIONS processes sends its share of MESSAGES; every message carries its sequence
// number (Message-Id <N.SEQ@swallow-source>, X-Seq: N) so that deliveries can be matched.
//
//   swallow-source [-s SESSIONS] [-m MESSAGES] [-l BYTES] [-f FROM] [-t TO] [-N] [-d]
//                  [-T] [-o FILE] [-w SECONDS] HOST:PORT
//   -s  concurrent sessions (default 1)          -m  messages in all (default 1)
//   -l  approximate message size (default 2048)  -f  sender (default source@example.org)
//   -t  recipient (default sink@example.org)     -N  a numbered recipient per message
//                                                    (TO's local part gets N: sink17@...)
//   -d  keep the connection: the next message goes over the same session (as
//       smtp-source -d); the default is one session per message
//   -T  print each message's latency (connect, or MAIL when -d, to the 250 after DATA)
//       in microseconds, one per line
//   -o  append "N<TAB>REPLY" for every message the server accepted to FILE (with -r,
//       "N.A<TAB>REPLY": attempt A of message N)
//   -w  give up on a server that says nothing for this long (default 60)
//   -r  try a message that was not accepted again, up to this many more times, after
//       a fifth of a second (each attempt is its own message: X-Seq: N.A)
// The summary goes to standard error: messages accepted, refused, failed, seconds, rate.
import Glibc
import MailUtil

/// A line on standard error.
func warn(_ text: String) {
    let b = Array(text.utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

struct Options {
    var sessions = 1
    var messages = 1
    var size = 2048
    var from = "source@example.org"
    var to = "sink@example.org"
    var numbered = false
    var keep = false
    var timing = false
    var output: String?
    var timeout = 60
    var retries = 0
    var host = "127.0.0.1"
    var port: UInt16 = 25
}

func usage() -> Never {
    warn("usage: swallow-source [-s sessions] [-m messages] [-l bytes] [-f from] [-t to] [-N] [-d] [-T] [-o file] [-w seconds] host:port\n")
    exit(2)
}

func parse() -> Options {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    func value() -> String {
        guard args.count > 1 else { usage() }
        args.removeFirst()
        return args[0]
    }
    var operands: [String] = []
    while !args.isEmpty {
        let a = args[0]
        switch a {
        case "-s": o.sessions = max(1, Int(value()) ?? 1)
        case "-m": o.messages = max(0, Int(value()) ?? 1)
        case "-l": o.size = max(0, Int(value()) ?? 2048)
        case "-f": o.from = value()
        case "-t": o.to = value()
        case "-N": o.numbered = true
        case "-d": o.keep = true
        case "-T": o.timing = true
        case "-o": o.output = value()
        case "-w": o.timeout = max(1, Int(value()) ?? 60)
        case "-r": o.retries = max(0, Int(value()) ?? 0)
        default:
            if a.hasPrefix("-") { usage() }
            operands.append(a)
        }
        args.removeFirst()
    }
    guard operands.count == 1 else { usage() }
    let hp = operands[0]
    if let colon = hp.lastIndex(of: ":"), let p = UInt16(hp[hp.index(after: colon)...]) {
        o.host = String(hp[..<colon]).filter { $0 != "[" && $0 != "]" }
        o.port = p
    } else {
        o.host = hp
    }
    return o
}

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}

/// One SMTP conversation with the server.
final class Conversation {
    let stream: FDStream

    init?(_ o: Options) {
        guard let addr = SocketAddress(numeric: o.host, port: o.port),
              let fd = try? InetSocket.connect(addr, timeout: o.timeout) else { return nil }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        stream = FDStream(fd: fd, timeout: o.timeout, closeOnDeinit: true)
    }

    /// A reply: its code and last line.
    func reply() -> (Int, String)? {
        while true {
            guard let l = try? stream.readLine(limit: 4096) else { return nil }
            let t = String(decoding: l.bytes, as: UTF8.self)
            if t.utf8.count < 4 || Array(t.utf8)[3] != UInt8(ascii: "-") { return (Int(t.prefix(3)) ?? 0, t) }
        }
    }

    func ask(_ line: String) -> (Int, String)? {
        do {
            try stream.write(line + "\r\n")
            try stream.flush()
        } catch { return nil }
        return reply()
    }
}

func body(_ o: Options, _ n: String) -> [UInt8] {
    var text = "From: <\(o.from)>\r\nTo: <\(o.to)>\r\nSubject: swallow-source message \(n)\r\n"
        + "Message-Id: <\(n).\(getpid())@swallow-source>\r\nX-Seq: \(n)\r\n\r\n"
    let line = String(repeating: "x", count: 76) + "\r\n"
    while text.utf8.count + line.utf8.count <= o.size { text += line }
    return Array((text + ".\r\n").utf8)
}

func recipient(_ o: Options, _ n: Int) -> String {
    guard o.numbered, let at = o.to.firstIndex(of: "@") else { return o.to }
    return "\(o.to[..<at])\(n)\(o.to[at...])"
}

/// One process's share: messages first, first + step, ... Counts (accepted, refused, failed).
func run(_ o: Options, first: Int, step: Int, out: Int32) -> (Int, Int, Int) {
    var accepted = 0, refused = 0, failed = 0
    var conv: Conversation?
    var n = first
    var attempt = 0
    func emit(_ s: String, _ fd: Int32) {
        let b = Array(s.utf8)
        _ = b.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
    let tag = { o.retries > 0 ? "\(n).\(attempt)" : "\(n)" }
    // The next message, or this one again (-r).
    func advance(_ ok: Bool) {
        if !ok && attempt < o.retries {
            attempt += 1
            usleep(200_000)
        } else {
            n += step
            attempt = 0
        }
    }
    while n < o.messages {
        let start = now()
        if conv == nil {
            guard let c = Conversation(o), let g = c.reply(), g.0 == 220,
                  let e = c.ask("EHLO swallow-source.example"), e.0 == 250 else {
                if attempt >= o.retries { failed += 1 }
                advance(false)
                continue
            }
            conv = c
        }
        let c = conv!
        var ok = false
        if let m = c.ask("MAIL FROM:<\(o.from)>"), m.0 == 250,
           let r = c.ask("RCPT TO:<\(recipient(o, n))>"), r.0 == 250,
           let d = c.ask("DATA"), d.0 == 354 {
            do {
                try c.stream.write(body(o, tag()))
                try c.stream.flush()
                if let e = c.reply() {
                    if e.0 == 250 {
                        accepted += 1
                        ok = true
                        if out >= 0 { emit("\(tag())\t\(e.1)\n", out) }
                        if o.timing { emit("\(now() - start)\n", 1) }
                    } else if attempt >= o.retries {
                        refused += 1
                    }
                } else if attempt >= o.retries {
                    failed += 1
                }
            } catch {
                if attempt >= o.retries { failed += 1 }
            }
        } else {
            if attempt >= o.retries { failed += 1 }
            conv = nil
        }
        if !o.keep || !ok {
            if ok { _ = c.ask("QUIT") }
            conv = nil
        }
        advance(ok)
    }
    if let c = conv { _ = c.ask("QUIT") }
    return (accepted, refused, failed)
}

signal(SIGPIPE, SIG_IGN)
let o = parse()
let out: Int32 = o.output.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? -1
if o.output != nil && out < 0 { warn("swallow-source: cannot open \(o.output!): \(String(cString: strerror(errno)))\n"); exit(1) }
let start = now()
// Each session process reports its counts through a pipe.
var children: [(pid_t, Int32)] = []
for s in 0..<min(o.sessions, max(o.messages, 1)) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { warn("swallow-source: pipe failed\n"); exit(1) }
    let pid = fork()
    if pid == 0 {
        close(fds[0])
        let (a, r, f) = run(o, first: s, step: o.sessions, out: out)
        let text = Array("\(a) \(r) \(f)\n".utf8)
        _ = text.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        exit(0)
    }
    close(fds[1])
    children.append((pid, fds[0]))
}
var accepted = 0, refused = 0, failed = 0
for (pid, fd) in children {
    var buf = [UInt8](repeating: 0, count: 64)
    let n = read(fd, &buf, buf.count)
    close(fd)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let parts = String(decoding: buf.prefix(max(n, 0)), as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int($0) }
    if parts.count == 3 {
        accepted += parts[0]
        refused += parts[1]
        failed += parts[2]
    }
}
let seconds = Double(now() - start) / 1_000_000
let rate = seconds > 0 ? Double(accepted) / seconds : 0
warn("swallow-source: \(accepted) accepted, \(refused) refused, \(failed) failed in \(String(format3(seconds))) s (\(String(format3(rate))) msg/s)\n")
exit(failed > 0 ? 1 : 0)

func format3(_ v: Double) -> String {
    let scaled = Int((v * 1000).rounded())
    let frac = String(scaled % 1000)
    return "\(scaled / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
}
