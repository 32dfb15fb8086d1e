// postlogd(8): appends the records that mail programs send to the postlog service to
// maillog_file. Mirrors Postfix postlogd/postlogd.c: a datagram server with a process
// limit of 1; each datagram (at most 4096 bytes) is written as it came, plus a newline.
// The file is opened once, as root, before privileges are dropped ("postfix logrotate"
// renames it and reloads, so a new postlogd opens a new file); "/dev/stdout" writes to
// master's standard output (postfix start-fg). Without maillog_file, records are passed
// on to syslog under their own tag. Told to stop, it first writes what is still queued.
import Glibc
import MailUtil
import MailGlobal
import MailServer

nonisolated(unsafe) var logFD: Int32 = -1

var desc = ServerDescription()
desc.program = "postlogd"
desc.solitary = true
desc.writesLog = true
desc.maxUse = 0
desc.preInit = { ctx in
    if let extra = ctx.options.operands.first.map({ _ in ctx.options.operands.joined(separator: " ") }) {
        Msg.fatal("unexpected command-line argument: \(extra)")
    }
    let path = ctx.config.string("maillog_file")
    if path.isEmpty { return }
    if path == "/dev/stdout" {
        logFD = 1
    } else {
        do {
            logFD = try SafeFile.openAppend(path, mode: 0o644)
        } catch {
            Msg.fatal("open logfile '\(path)': \(error)")
        }
    }
    // postlogd's own messages go straight to the file.
    Msg.outputs = [DirectLogOutput(fd: logFD, tag: ctx.config.string("syslog_name") + "/postlogd",
                                   host: MailLog.shortHostname(ctx.config.string("myhostname")))]
}

/// Records written by postlogd itself, in the format of every other record.
final class DirectLogOutput: MsgOutput {
    let fd: Int32
    let tag: String
    let host: String
    init(fd: Int32, tag: String, host: String) {
        self.fd = fd
        self.tag = tag
        self.host = host
    }
    func emit(_ level: MsgLevel, _ text: String) {
        writeAll(fd, Array("\(FileMsgOutput.timestamp(time(nil))) \(host) \(tag)[\(getpid())]: \(level.prefix)\(text)\n".utf8))
    }
}

/// Passes a record on to syslog: "Mmm dd hh:mm:ss host tag[pid]: text" is logged as
/// "text" under "tag[pid]", at info level whatever the text says.
func relayToSyslog(_ record: [UInt8]) {
    var rest = record[...]
    for _ in 0..<4 {
        while rest.first == 0x20 { rest = rest.dropFirst() }
        rest = rest.drop { $0 != 0x20 }
    }
    while rest.first == 0x20 { rest = rest.dropFirst() }
    guard let colon = rest.firstIndex(of: UInt8(ascii: ":")) else {
        Msg.warn("malformed record: \(String(decoding: record, as: UTF8.self))")
        return
    }
    let tag = String(decoding: rest[..<colon], as: UTF8.self)
    var text = rest[(colon + 1)...]
    if text.first == 0x20 { text = text.dropFirst() }
    SyslogMsgOutput.relay(tag: tag, String(decoding: text, as: UTF8.self))
}

func write(_ record: [UInt8]) {
    if logFD < 0 {
        relayToSyslog(record)
    } else {
        writeAll(logFD, record + [0x0A])
    }
}

// Told to stop (master stops the whole mail system), write what is still queued first:
// the last records before a stop are the ones an administrator looks for.
let openLog = desc.preInit!
desc.preInit = { ctx in
    openLog(ctx)
    SignalPipe.install([SIGTERM], loop: ctx.loop) { _ in
        for fd in ctx.listenFDs {
            FileDescriptor.setNonBlocking(fd)
            var buf = [UInt8](repeating: 0, count: DgramServer.maxDatagram)
            while true {
                let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
                if n < 0 { break }
                write(Array(buf[0..<n]))
            }
        }
        exit(0)
    }
}

DgramServer.run(CommandLine.arguments, desc) { record, _ in
    write(record)
}
