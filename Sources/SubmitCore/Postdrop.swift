// Postdrop: postdrop(1), the set-gid gate through which local users put mail into the
// maildrop queue. Mirrors Postfix postdrop/postdrop.c: announce the new queue ID, copy the
// caller's record stream into maildrop/ID after checking every record (segment order, the
// attributes a user may give, no control bytes inside envelope records), stamp our own
// arrival time, and only then make the file ready (mode 0744), fsync it and wake pickup.
// End of input before the end record cancels the submission and removes the file.
import Glibc
import MailUtil
import MailGlobal

public enum Postdrop {
    static let usageText = "usage: postdrop [-c config_dir] [-v]"

    /// Record types the caller may send in each segment; the first letter ends the segment.
    static let segments: [[UInt8]] = [Array("MCFSRVAin".utf8), Array("XLN".utf8), Array("EAR".utf8)]

    nonisolated(unsafe) static var pendingPath: String?

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        openStandardDescriptors()
        // The process name comes from the user: use our own.
        let program = "postdrop"
        MailLog.dropCallerLoggingEnvironment()
        MailLog.setupEarly(program: program, stderrTag: program)
        Msg.sleepBeforeFatalExit = false
        let (_, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:rv") { c, v in
            switch c {
            case "c": setenv(MailConfig.configEnvironment, v ?? "", 1)
            case "v": if geteuid() == 0 { Msg.verbose += 1 }
            default: break
            }
        }
        if problem != nil { Msg.fatal(usageText) }
        let config = MailConfig.load(processName: program)
        MailParams.check(config)
        MailLog.setup(config, program: program, stderrTag: program)

        let uid = getuid()
        if let who = UserACL.denied(config, parameter: "authorized_submit_users", uid: uid) {
            Msg.fatal("User \(who)(\(uid)) is not allowed to submit mail")
        }
        ImportEnvironment.apply(config)
        let queueDirectory = config.string("queue_directory")
        if chdir(queueDirectory) < 0 { Msg.fatal("chdir \(queueDirectory): \(errnoText(errno))") }
        Msg.debug("chdir \(queueDirectory)")
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
        for sig in [SIGINT, SIGQUIT, SIGTERM, SIGHUP] { signal(sig, postdropSignal) }
        Msg.cleanup = removePending
        limitFileSize(config)

        var start = timeval()
        gettimeofday(&start, nil)
        let queue = MailQueue(config: config)
        let created: (id: QueueID, fd: Int32)
        do {
            created = try queue.create(in: QueueName.maildrop, extraMode: 0o444)
        } catch {
            Msg.fatal("\(error)")
        }
        let path = queue.path(QueueName.maildrop, created.id)
        pendingPath = path
        let out = FDStream(fd: 1)
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.postdrop)
        hello.append(MailAttr.queueID, created.id.text)
        do {
            try out.write(AttrCodec.encode(hello, .attr0))
            try out.flush()
        } catch {
            Msg.fatal("uid=\(uid): write queue ID: \(error)")
        }

        let file = FDStream(fd: created.fd)
        let lineLimit = config.int("line_length_limit")
        var buffer: [UInt8] = []
        func put(_ type: RecordType, _ data: some Collection<UInt8>) {
            RecordCodec.append(&buffer, type, data)
            if buffer.count >= 65536 { flushBuffer() }
        }
        var writeError: Error?
        func flushBuffer() {
            guard writeError == nil, !buffer.isEmpty else { buffer = []; return }
            do { try file.write(buffer); try file.flush() } catch { writeError = error }
            buffer = []
        }
        put(.time, Array("\(start.tv_sec) \(start.tv_usec)".utf8))

        let input = RecordReader(FDStream(fd: 0))
        var segment = 0
        var senders = 0, recipients = 0
        while true {
            let record: Record
            do {
                guard let r = try input.read(maxLength: lineLimit) else {
                    // The caller went away before the end: the submission is cancelled.
                    close(created.fd)
                    if unlink(path) < 0 {
                        Msg.warn("uid=\(uid): remove \(path): \(errnoText(errno))")
                    } else {
                        Msg.debug("remove \(path)")
                    }
                    pendingPath = nil
                    exit(0)
                }
                record = r
            } catch {
                Msg.warn("stdin: \(error)")
                Msg.fatal("uid=\(uid): malformed input")
            }
            let t = record.type.rawValue
            guard t != 0, segments[segment].contains(t) else {
                Msg.fatal("uid=\(uid): unexpected record type: \(t)")
            }
            if t == segments[segment][0] && segment < segments.count - 1 { segment += 1 }
            if record.type == .sender && record.data.contains(0) {
                // As Postfix 3.7: the submission fails with a reason; the rest is read first.
                while let r = try? input.read(maxLength: lineLimit), r.type != .end {}
                reply(out, .bad, "NUL in FROM record")
                close(created.fd)
                unlink(path)
                pendingPath = nil
                exit(Int32(CleanupStatus.bad.rawValue))
            }
            if segment == 0 || record.type == .attribute || record.type == .sender || record.type == .recipient {
                // Envelope data is never text: no line structure may be smuggled in (a
                // recipient "bob\nX-Evil: yes" would become a header later). Postfix 3.7
                // copies such records; later Postfix versions refuse them as we do.
                if record.data.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) {
                    Msg.fatal("uid=\(uid): malformed input")
                }
            }
            switch record.type {
            case .sender: senders += 1
            case .recipient: recipients += 1
            case .attribute:
                let name: String, value: String
                switch ConfigFile.splitNameValue(record.data) {
                case .success(let nv): (name, value) = nv
                case .failure(let e):
                    Msg.warn("uid=\(uid): ignoring malformed record: \(e): \(String(decoding: record.data.prefix(200), as: UTF8.self))")
                    continue
                }
                if allowedAttribute(name, value) {
                    put(.attribute, Array("\(name)=\(value)".utf8))
                } else {
                    Msg.warn("uid=\(uid): ignoring attribute record: \(String(name.prefix(200)))=\(String(value.prefix(200)))")
                }
                continue
            default: break
            }
            put(record.type, record.data)
            if record.type == .end { break }
        }
        var status = CleanupStatus.ok
        if senders == 0 || recipients == 0 {
            status = .bad
            close(created.fd)
            unlink(path)
        } else {
            flushBuffer()
            if let writeError {
                Msg.warn("uid=\(uid): \(writeError)")
                status = .write
                close(created.fd)
                unlink(path)
            } else if fchmod(created.fd, 0o744) < 0 || fsync(created.fd) < 0 || close(created.fd) < 0 {
                Msg.warn("uid=\(uid): \(errnoText(errno))")
                status = .write
                unlink(path)
            } else {
                _ = MailTrigger.send(serviceClass: MailClass.public, service: config.string("pickup_service_name"))
            }
        }
        pendingPath = nil
        reply(out, status, "")
        exit(Int32(truncatingIfNeeded: status.rawValue))
    }

    static func reply(_ out: FDStream, _ status: CleanupStatus, _ reason: String) {
        var list = AttrList()
        list.append(MailAttr.status, int: status.rawValue)
        list.append(MailAttr.reason, reason)
        try? out.write(AttrCodec.encode(list, .attr0))
        try? out.flush()
    }

    /// The attributes a user may set: body type, DSN data, the rewriting context and the
    /// tracing requests of sendmail -bv and -v.
    static func allowedAttribute(_ name: String, _ value: String) -> Bool {
        switch name {
        case MailAttr.encoding: return value == "7bit" || value == "8bit" || value.isEmpty
        case MailAttr.dsnEnvelopeID, MailAttr.dsnNotifyFlags, MailAttr.dsnRetFlags, MailAttr.dsnOriginalRecipient,
             MailAttr.createTime:
            return true
        case MailAttr.rewriteContext: return value == "local" || value == "remote"
        case MailAttr.traceFlags: return true
        default: return false
        }
    }

    static func removePending() {
        if let p = pendingPath {
            unlink(p)
            pendingPath = nil
        }
    }
}

private func postdropSignal(_ sig: Int32) {
    for s in [SIGINT, SIGQUIT, SIGTERM, SIGHUP] { signal(s, SIG_IGN) }
    Postdrop.removePending()
    _exit(sig)
}
