// Postcat: postcat(1), which shows the records of queue files.
// Mirrors Postfix postcat/postcat.c (3.7): the envelope (-e), header (-h) and body (-b)
// sections, all three by default, with record offsets (-o) and decimal types (-d), from
// files, standard input, or queue IDs looked up in the queues (-q); -s starts at an offset,
// -v shows the records readers normally skip (pointers, padding) and -r does not follow
// pointers. -j is ours: the same records as JSON Lines, one object per record.
import Glibc
import MailUtil
import MailGlobal

public enum Postcat {
    struct Flags: OptionSet {
        let rawValue: Int
        static let envelope = Flags(rawValue: 1 << 0)
        static let header = Flags(rawValue: 1 << 1)
        static let body = Flags(rawValue: 1 << 2)
        static let offsets = Flags(rawValue: 1 << 3)
        static let searchQueue = Flags(rawValue: 1 << 4)
        static let decimalType = Flags(rawValue: 1 << 5)
        static let raw = Flags(rawValue: 1 << 7)
        static let json = Flags(rawValue: 1 << 8)
        static let text: Flags = [.header, .body]
        static let all: Flags = [.envelope, .header, .body]
    }

    enum State { case envelope, header, body }

    static let queues = [QueueName.maildrop, QueueName.incoming, QueueName.active, QueueName.deferred,
                         QueueName.hold, QueueName.saved]

    nonisolated(unsafe) static var output: [UInt8] = []

    static func flush() {
        if !output.isEmpty {
            _ = writeAll(1, output)
            output.removeAll(keepingCapacity: true)
        }
    }

    static func put(_ s: String) { output.append(contentsOf: s.utf8) }
    static func put(bytes: some Collection<UInt8>) { output.append(contentsOf: bytes) }

    /// Warnings come after the output that preceded them, as with Postfix's flushes.
    static func warn(_ s: String) {
        flush()
        Msg.warn(s)
    }

    public static func main(_ arguments: [String]) -> Never {
        if !openStandardDescriptors() { Msg.fatal("open /dev/null: \(errnoText(errno))") }
        let program = arguments.first ?? "postcat"
        // postcat logs to standard error only.
        Msg.outputs = [StderrMsgOutput(tag: program)]
        Msg.sleepBeforeFatalExit = false
        Msg.cleanup = { flush() }
        let usage = "usage: \(program) [-b (body text)] [-c config_dir] [-d (decimal record type)] [-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]"
        var flags: Flags = []
        var start = 0
        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "bc:dehjoqrs:v") { c, v in
            switch c {
            case "b": flags.insert(.body)
            case "c": setenv(MailConfig.configEnvironment, v ?? "", 1)
            case "d": flags.insert(.decimalType)
            case "e": flags.insert(.envelope)
            case "h": flags.insert(.header)
            case "j": flags.insert(.json)
            case "o": flags.insert(.offsets)
            case "q": flags.insert(.searchQueue)
            case "r": flags.insert(.raw)
            case "s":
                guard let v, !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(v) else {
                    Msg.fatal("bad offset: \(v ?? "")")
                }
                start = n
            case "v": Msg.verbose += 1
            default: break
            }
        }
        if let problem {
            _ = writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal(usage)
        }
        if flags.isDisjoint(with: .all) { flags.formUnion(.all) }
        let config = MailConfig.load(processName: "postcat")
        ImportEnvironment.apply(config)

        if operands.isEmpty {
            guard let data = try? SafeFile.readAll(fd: 0) else { Msg.fatal("read stdin: \(errnoText(errno))") }
            if start > data.count { Msg.fatal("stdin: skip \(start) bytes failed after \(data.count)") }
            show(data, path: "stdin", flags: flags, start: start)
        } else if flags.contains(.searchQueue) {
            let queueDirectory = config.string("queue_directory")
            if chdir(queueDirectory) < 0 { Msg.fatal("chdir \(queueDirectory): \(errnoText(errno))") }
            let queue = MailQueue(config: config)
            for id in operands {
                guard let qid = QueueID(id) else { Msg.fatal("bad mail queue ID: \(id)") }
                var found: (path: String, fd: Int32)?
                var lastError = ENOENT
                search: for _ in 0..<2 {
                    for name in queues {
                        let path = queue.path(name, qid)
                        let fd = open(path, O_RDONLY | O_CLOEXEC)
                        if fd >= 0 {
                            found = (path, fd)
                            break search
                        }
                        lastError = errno
                    }
                }
                guard let (path, fd) = found else { Msg.fatal("open queue file \(id): \(errnoText(lastError))") }
                show(file: fd, path: path, flags: flags, start: start)
            }
        } else {
            for path in operands {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd < 0 { Msg.fatal("open \(path): \(errnoText(errno))") }
                show(file: fd, path: path, flags: flags, start: start)
            }
        }
        flush()
        exit(0)
    }

    static func show(file fd: Int32, path: String, flags: Flags, start: Int) {
        guard let data = try? SafeFile.readAll(fd: fd) else { Msg.fatal("read \(path): \(errnoText(errno))") }
        close(fd)
        show(data, path: path, flags: flags, start: start)
    }

    /// rec_get_raw over a file in memory: with `follow`, pointer records are followed
    /// (at most 10000 jumps back), padding is skipped, and the end record moves to the
    /// end of the file.
    struct Reader {
        let data: [UInt8]
        let path: String
        let follow: Bool
        var position = 0
        var savedOffset = 0
        var reverseJumps = 0

        /// nil at end of file; a broken record is fatal.
        mutating func next() -> (type: UInt8, data: ArraySlice<UInt8>)? {
            while true {
                guard position < data.count else { return nil }
                let type = data[position]
                position += 1
                var len = 0
                var shift = 0
                while true {
                    if shift >= 32 { fail("\(path): too many length bits, record type \(type)") }
                    guard position < data.count else { fail("\(path): unexpected EOF reading length, record type \(type)") }
                    let b = data[position]
                    position += 1
                    len |= Int(b & 0x7F) << shift
                    if b & 0x80 == 0 { break }
                    shift += 7
                }
                if len > Int(Int32.max) { fail("\(path): illegal length \(len), record type \(type)") }
                guard data.count - position >= len else {
                    fail("\(path): unexpected EOF in data, record type \(type) length \(len)")
                }
                let payload = data[position..<(position + len)]
                position += len
                if follow && type == RecordType.pointer.rawValue {
                    guard goto(payload) else { Msg.fatal("record read error") }
                    continue
                }
                if follow && type == RecordType.padding.rawValue { continue }
                if follow && type == RecordType.end.rawValue { position = data.count }
                return (type, payload)
            }
        }

        func fail(_ why: String) -> Never {
            Postcat.warn(why)
            Msg.fatal("record read error")
        }

        /// rec_goto: continue at the offset a pointer record names (0: a reserved slot).
        mutating func goto(_ payload: ArraySlice<UInt8>) -> Bool {
            let text = String(decoding: payload.drop(while: { $0 == 0x20 || $0 == 0x09 }), as: UTF8.self)
            guard let offset = Int(text), offset >= 0 else {
                Postcat.warn("\(path): malformed pointer record value: \(text)")
                return false
            }
            if offset == 0 { return true }
            if offset <= savedOffset {
                reverseJumps += 1
                if reverseJumps > 10000 {
                    Postcat.warn("\(path): too many reverse jump records")
                    return false
                }
            }
            position = offset
            savedOffset = offset
            return true
        }
    }

    /// The C string view of a record (printf's "%s" stops at a NUL byte).
    static func cString(_ b: ArraySlice<UInt8>) -> String {
        String(decoding: b.prefix(while: { $0 != 0 }), as: UTF8.self)
    }

    /// asctime() of a time, with its newline.
    static func asctimeLine(_ t: Int) -> String { MailDate.asctime(time_t(t)) + "\n" }

    /// split_nameval(): "name = value" with the blanks around both trimmed.
    static func splitNameValue(_ s: String) -> (name: String, value: String)? {
        let u = Array(s.utf8)
        func space(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }
        var i = 0
        while i < u.count && space(u[i]) { i += 1 }
        if i == u.count { return nil }
        let ns = i
        while i < u.count && !space(u[i]) && u[i] != UInt8(ascii: "=") { i += 1 }
        let ne = i
        while i < u.count && space(u[i]) { i += 1 }
        guard i < u.count && u[i] == UInt8(ascii: "=") else { return nil }
        i += 1
        while i < u.count && space(u[i]) { i += 1 }
        var ve = u.count
        while ve > i && space(u[ve - 1]) { ve -= 1 }
        return (String(decoding: u[ns..<ne], as: UTF8.self), String(decoding: u[i..<ve], as: UTF8.self))
    }

    static func nameValueError(_ s: String) -> String {
        let t = s.drop(while: { $0 == " " || $0 == "\t" })
        return t.isEmpty ? "missing attribute name" : "missing '=' after attribute name"
    }

    static func show(_ data: [UInt8], path: String, flags: Flags, start: Int) {
        let verbose = Msg.verbose > 0
        if start == 0 && data.isEmpty { return }
        var reader = Reader(data: data, path: path, follow: !verbose, position: start)
        if start == 0, let first = data.first, !(RecordSegment.envelope.allowed.contains(first) || first == 0) {
            warn("\(path): input is not a valid queue file")
            return
        }
        let json = flags.contains(.json)
        var state = State.envelope
        var doPrint = flags.contains(.envelope)
        var dataOffset = -1, dataSize = -1
        var prevType: UInt8 = 0
        if start == 0 && flags.contains(.envelope) && !json { put("*** ENVELOPE RECORDS \(path) ***\n") }

        func prefix(_ offset: Int, _ type: UInt8) {
            if flags.contains(.offsets) { put(QueuePrinter.pad(String(offset), 9, left: false) + " ") }
            if flags.contains(.decimalType) { put(QueuePrinter.pad(String(type), 3, left: false) + " ") }
        }
        func marker(_ offset: Int, _ type: UInt8, _ text: String) {
            if json {
                put("{\"offset\": \(offset), \"section\": \"\(text.lowercased())\"}\n")
                return
            }
            prefix(offset, type)
            put("*** \(text) \(path) ***\n")
        }
        func jsonRecord(_ offset: Int, _ type: UInt8, _ payload: ArraySlice<UInt8>) {
            let section = state == .envelope ? "envelope" : state == .header ? "header" : "body"
            put("{\"offset\": \(offset), \"section\": \"\(section)\", \"type\": \"\(QueuePrinter.quote(String(UnicodeScalar(type))))\", ")
            put("\"name\": \"\(RecordType(type).name)\", \"value\": \"\(QueuePrinter.quote(String(decoding: payload, as: UTF8.self)))\"}\n")
        }
        func seek(_ offset: Int) { reader.position = offset }

        records: while true {
            let offset = reader.position
            guard let (type, payload) = reader.next() else { break }
            let isText = type == RecordType.normalText.rawValue || type == RecordType.continuedText.rawValue
            switch type {
            case _ where isText:
                // The first line that is neither a header nor a continuation starts the body.
                if state == .header && !flags.isDisjoint(with: .text) && prevType != RecordType.continuedText.rawValue
                    && MimeState.headerLength(payload) == nil && payload.first != 0x20 && payload.first != 0x09 {
                    state = .body
                    doPrint = flags.contains(.body)
                    if !doPrint && !flags.contains(.envelope) { break records }
                    if !doPrint && flags.contains(.envelope) && dataOffset >= 0 && dataSize >= 0 {
                        seek(dataOffset + dataSize)
                    }
                }
            case RecordType.messageStart.rawValue:
                if state != .envelope { warn("\(path): out-of-order message content marker") }
                if flags.contains(.envelope) { marker(offset, type, "MESSAGE CONTENTS") }
                if flags.isDisjoint(with: .text) && dataOffset >= 0 && dataSize >= 0 { seek(dataOffset + dataSize) }
                state = .header
                doPrint = flags.contains(.header)
                continue records
            case RecordType.extractedStart.rawValue:
                if state == .envelope { warn("\(path): out-of-order extracted segment marker") }
                if doPrint && prevType == RecordType.continuedText.rawValue { put("\n") }
                if flags.contains(.envelope) { marker(offset, type, "HEADER EXTRACTED") }
                state = .envelope
                doPrint = flags.contains(.envelope)
                if !doPrint { break records }
                continue records
            case RecordType.end.rawValue:
                if state != .envelope { warn("\(path): out-of-order message end marker") }
                if flags.contains(.envelope) { marker(offset, type, "MESSAGE FILE END") }
                if flags.contains(.raw) { continue records }
                break records
            case RecordType.pointer.rawValue:
                // Seen only with -v: readers follow pointers on their own otherwise.
                if doPrint {
                    if json { jsonRecord(offset, type, payload) } else {
                        prefix(offset, type)
                        put("\(RecordType(type).name): \(cString(payload))\n")
                    }
                }
                if !flags.contains(.raw) && !reader.goto(payload) {
                    Msg.fatal("bad pointer record, or input is not seekable")
                }
                continue records
            case RecordType.size.rawValue:
                if doPrint {
                    if json { jsonRecord(offset, type, payload) } else {
                        prefix(offset, type)
                        put("\(RecordType(type).name): \(cString(payload))\n")
                    }
                }
                if dataSize >= 0 || dataOffset >= 0 {
                    warn("file contains multiple size records")
                } else {
                    let f = cString(payload).split(whereSeparator: { $0 == " " || $0 == "\t" })
                    if f.count >= 2, let s = Int(f[0]), let o = Int(f[1]) {
                        (dataSize, dataOffset) = (s, o)
                    }
                    if f.count < 2 || dataOffset <= 0 || dataSize <= 0 {
                        warn("invalid size record: \(String(cString(payload).prefix(100)))")
                    }
                    if !flags.contains(.envelope) {
                        seek(dataOffset)
                        state = .header
                        doPrint = flags.contains(.header)
                    }
                }
                continue records
            default:
                break
            }
            if !doPrint { continue }
            if json {
                jsonRecord(offset, type, payload)
                prevType = type
                continue
            }
            prefix(offset, type)
            var thisType = type
            let name = RecordType(type).name
            switch type {
            case RecordType.time.rawValue, RecordType.warnTime.rawValue:
                let text = cString(payload).drop(while: { $0 == " " })
                let seconds = Int(text.prefix(while: { $0.isNumber || $0 == "-" })) ?? 0
                put("\(name): \(asctimeLine(seconds))")
            case RecordType.continuedText.rawValue:
                if state == .envelope {
                    put("\(name): ")
                } else if verbose {
                    put("unterminated_text: ")
                }
                put(bytes: payload)
                if state == .envelope || verbose || flags.contains(.offsets) {
                    thisType = 0
                    put("\n")
                }
            case RecordType.normalText.rawValue:
                if verbose { put("\(name): ") }
                put(bytes: payload)
                put("\n")
            case RecordType.padding.rawValue:
                put("\(name): ")
                put(bytes: payload)
                put("\n")
            case RecordType.attribute.rawValue:
                let text = cString(payload)
                guard let (n, v) = splitNameValue(text) else {
                    warn("\(path): malformed attribute: \(nameValueError(text)): \(String(text.prefix(100)))")
                    break
                }
                if n == MailAttr.createTime {
                    put("\(MailAttr.createTime): \(asctimeLine(Int(v.prefix(while: { $0.isNumber || $0 == "-" })) ?? 0))")
                } else {
                    put("\(name): \(n)=\(v)\n")
                }
            default:
                put("\(name): \(cString(payload))\n")
            }
            prevType = thisType
            if output.count >= 65536 { flush() }
        }
        flush()
    }
}
