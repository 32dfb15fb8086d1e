// swallow-sink: an SMTP server that accepts every message and keeps none, for relay
// benchmarks, in the manner of Postfix's smtp-sink (never installed as part of the mail
// system). One process per connection; it offers PIPELINING, 8BITMIME and SIZE, and
// answers each pipelined command in order.
//
//   swallow-sink [-c FILE] HOST:PORT [BACKLOG]
//   -c  append one line per accepted message to FILE ("N<TAB>peer")
import Glibc
import MailUtil

/// A line on standard error.
func warn(_ text: String) {
    let b = Array(text.utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func usage() -> Never {
    warn("usage: swallow-sink [-c file] host:port [backlog]\n")
    exit(2)
}

var args = Array(CommandLine.arguments.dropFirst())
var countFile: String?
if args.first == "-c" {
    guard args.count > 1 else { usage() }
    countFile = args[1]
    args.removeFirst(2)
}
guard let hp = args.first, let colon = hp.lastIndex(of: ":"), let port = UInt16(hp[hp.index(after: colon)...]) else { usage() }
let host = String(hp[..<colon]).filter { $0 != "[" && $0 != "]" }
let backlog = Int32(args.dropFirst().first.flatMap { Int($0) } ?? 256)
guard let addr = SocketAddress(numeric: host, port: port), let listener = try? InetSocket.listen(addr, backlog: backlog) else {
    warn("swallow-sink: cannot listen on \(hp)\n")
    exit(1)
}
let counter: Int32 = countFile.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? -1
signal(SIGCHLD, SIG_IGN)
signal(SIGPIPE, SIG_IGN)

func session(_ fd: Int32) {
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let s = FDStream(fd: fd, timeout: 300, closeOnDeinit: true)
    var count = 0
    func say(_ t: String) {
        try? s.write(t + "\r\n")
        if s.bufferedInputCount == 0 { try? s.flush() }
    }
    say("220 swallow-sink.example ESMTP")
    while let l = try? s.readLine(limit: 65536) {
        let line = String(decoding: l.bytes, as: UTF8.self)
        let verb = line.prefix(4).uppercased()
        switch verb {
        case "EHLO":
            say("250-swallow-sink.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0")
        case "HELO": say("250 swallow-sink.example")
        case "MAIL": say("250 2.1.0 Ok")
        case "RCPT": say("250 2.1.5 Ok")
        case "DATA":
            say("354 End data with <CR><LF>.<CR><LF>")
            try? s.flush()
            while let d = try? s.readLine(limit: 65536), d.bytes != [UInt8(ascii: ".")] {}
            count += 1
            say("250 2.0.0 Ok: queued as \(getpid())S\(count)")
            if counter >= 0 {
                let b = Array("\(count)\t\(getpid())\n".utf8)
                _ = b.withUnsafeBytes { write(counter, $0.baseAddress, $0.count) }
            }
        case "RSET", "NOOP": say("250 2.0.0 Ok")
        case "QUIT":
            say("221 2.0.0 Bye")
            try? s.flush()
            return
        default: say("502 5.5.2 Error: command not recognized")
        }
    }
}

while true {
    let fd = accept(listener, nil, nil)
    if fd < 0 { continue }
    let pid = fork()
    if pid == 0 {
        close(listener)
        session(fd)
        exit(0)
    }
    close(fd)
}
