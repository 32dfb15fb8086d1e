// swallow-testd: a daemon for the integration tests only (never installed). It runs on
// the real server skeletons, so tests can watch master start, count and retire children.
//   master.cf: NAME unix - n n - - swallow-testd single   greets "hello PID", echoes lines
//              NAME unix - n n - 1 swallow-testd multi    answers each line with "PID line"
//              NAME unix - n n 60 1 swallow-testd trigger FILE   appends each trigger to FILE
//              NAME unix - n n - - swallow-testd crash    exits 3 before serving anyone
import Glibc
import MailUtil
import MailServer

let args = CommandLine.arguments
var operands: [String] = []
var i = 1
while i < args.count {
    if args[i] == "-o" || args[i] == "-n" || args[i] == "-t" || args[i] == "-s" || args[i] == "-m" || args[i] == "-i" || args[i] == "-r" {
        i += 2
        continue
    }
    if args[i].hasPrefix("-") { i += 1; continue }
    operands.append(args[i])
    i += 1
}
let mode = operands.first ?? "single"
var desc = ServerDescription()
desc.program = "swallow-testd"

switch mode {
case "crash":
    desc.postInit = { _ in exit(3) }
    SingleServer.run(args, desc) { _, _ in }
case "multi":
    MultiServer.run(args, desc) { stream, _ in
        guard let line = try? stream.readLine(limit: 1000) else { return .close }
        try? stream.write("\(getpid()) \(String(decoding: line.bytes, as: UTF8.self))\n")
        return .keep
    }
case "trigger":
    let file = operands.count > 1 ? operands[1] : "/dev/null"
    TriggerServer.run(args, desc) { bytes, _ in
        let fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        if fd >= 0 {
            writeAll(fd, Array("\(getpid()) \(String(decoding: bytes, as: UTF8.self))\n".utf8))
            close(fd)
        }
    }
default:
    SingleServer.run(args, desc) { client, ctx in
        try? client.stream.write("hello \(getpid()) \(ctx.serviceName)\n")
        try? client.stream.flush()
        while let line = try? client.stream.readLine(limit: 1000) {
            let text = String(decoding: line.bytes, as: UTF8.self)
            if text == "quit" { break }
            try? client.stream.write("echo \(text)\n")
            try? client.stream.flush()
        }
    }
}
