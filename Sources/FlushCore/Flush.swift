// Flush: the flush(8) daemon, the fast flush service behind ETRN, "sendmail -qR",
// "postqueue -s" and "postqueue -i".
// Mirrors Postfix flush/flush.c: for each destination in fast_flush_domains, a logfile
// flush/SITE lists the queue IDs of mail deferred for it (delivery agents "add" them).
// "send_site" unthrottles the queue manager, moves each listed message from deferred to
// incoming with fresh time stamps and empties the log; "send_file" does that for one
// message and marks it to be delivered regardless of throttling; "rfrsh" (also the
// master's periodic wakeup) and "purge" flush logs that were not used for
// fast_flush_refresh_time (or all of them) and remove logs left empty for
// fast_flush_purge_time.
import Glibc
import MailUtil
import MailGlobal
import MailServer

public final class Flush {
    enum Status: Int {
        case ok = 0, fail = -1, bad = 3, deny = 4
    }

    struct How: OptionSet {
        let rawValue: Int
        static let unthrottleBefore = How(rawValue: 1)
        static let unthrottleAfter = How(rawValue: 2)
        static let refreshOnly = How(rawValue: 4)
    }

    let config: MailConfig
    let queue: MailQueue
    let domains: MatchList
    let refreshTime: Int
    let purgeTime: Int
    let qmgr: String

    init(config: MailConfig) {
        self.config = config
        queue = MailQueue(config: config)
        domains = FlushClient.domains(config)
        refreshTime = config.time("fast_flush_refresh_time")
        purgeTime = config.time("fast_flush_purge_time")
        qmgr = config.string("queue_service_name")
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "flush"
        var flush: Flush?
        desc.postInit = { ctx in flush = Flush(config: ctx.config) }
        SingleServer.run(arguments, desc) { client, _ in flush?.serve(client.stream) }
    }

    func serve(_ stream: FDStream) {
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.flush)
        do {
            try stream.write(AttrCodec.encode(hello, .attr0))
            try stream.flush()
        } catch {
            return
        }
        // The master's wakeup ("W" and a null byte) asks for a refresh, without a reply.
        if let b = try? stream.peekByte(), b == UInt8(ascii: "W") {
            _ = try? stream.read(upTo: 2)
            refresh(maxAge: refreshTime)
            return
        }
        let reader = AttrReader(stream, encoding: .attr0)
        var status = Status.bad
        var later: (() -> Void)?
        do {
            guard let list = try reader.readList() else { return }
            var sc = list.scanner()
            let request = try sc.string(MailAttr.request)
            switch request {
            case "add":
                let site = try sc.string(MailAttr.site), id = try sc.string(MailAttr.queueID)
                if QueueID.isValid(id) { status = add(site: site.lowercased(), id: id) }
            case "send_site":
                status = sendSite(try sc.string(MailAttr.site).lowercased())
            case "send_file":
                status = sendFile(try sc.string(MailAttr.queueID))
            case "rfrsh":
                status = .ok
                later = { self.refresh(maxAge: self.refreshTime) }
            case "purge":
                status = .ok
                later = { self.refresh(maxAge: 0) }
            default:
                Msg.warn("unrecognized request: \"\(Msg.printable(request))\", ignored")
            }
        } catch {
            Msg.warn("malformed request: \(error)")
        }
        var reply = AttrList()
        reply.append(MailAttr.status, long: Int64(UInt32(bitPattern: Int32(status.rawValue))))
        try? stream.write(AttrCodec.encode(reply, .attr0))
        try? stream.flush()
        // The client does not wait for a refresh.
        later?()
    }

    // MARK: logfiles

    /// flush_site_to_path: the logfile name of a site (lower case, anything but letters
    /// and digits as "_").
    static func logName(_ site: String) -> String {
        String(decoding: site.utf8.map { isASCIIAlnum($0) ? $0 : UInt8(ascii: "_") }, as: UTF8.self)
    }

    static func isASCIIAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
    }

    func policyOK(_ site: String) -> Bool { domains.matches(site) }

    func logPath(_ name: String) -> String? { QueueID(name).map { queue.path(QueueName.flush, $0) } }

    func add(site: String, id: String) -> Status {
        guard policyOK(site) else { return .deny }
        let name = Flush.logName(site)
        guard let path = logPath(name) else { return .bad }
        let fd = queue.openAppend(QueueName.flush, name)
        if fd < 0 { Msg.fatal("flush_add_path: open fast flush logfile \(name): \(errnoText(errno))") }
        defer { close(fd) }
        do { try FileLock.apply(fd, style: .flock, .exclusive) } catch {
            Msg.fatal("flush_add_path: lock fast flush logfile \(name): \(errnoText(errno))")
        }
        if !writeAll(fd, Array((id + "\n").utf8)) {
            Msg.warn("write fast flush logfile \(path): \(errnoText(errno))")
        }
        return .ok
    }

    func sendSite(_ site: String) -> Status {
        guard policyOK(site) else { return .deny }
        return sendLog(Flush.logName(site), [.unthrottleBefore])
    }

    func sendFile(_ id: String) -> Status {
        guard QueueID.isValid(id) else { return .bad }
        if requeue(id, now: time(nil), [.unthrottleAfter]) { trigger("I") }
        return .ok
    }

    func trigger(_ request: String) {
        MailTrigger.send(serviceClass: MailClass.public, service: qmgr, Array(request.utf8))
    }

    /// flush_send_path: every message the log names goes from deferred to incoming; the
    /// log is emptied, and the queue manager told to look.
    func sendLog(_ name: String, _ how: How) -> Status {
        guard let path = logPath(name) else { return .bad }
        if how.contains(.unthrottleBefore) { trigger("F") }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            if errno != ENOENT { Msg.fatal("flush_send_path: open fast flush logfile \(name): \(errnoText(errno))") }
            return .ok
        }
        defer { close(fd) }
        do { try FileLock.apply(fd, style: .flock, .exclusive) } catch {
            Msg.fatal("flush_send_path: lock fast flush logfile \(name): \(errnoText(errno))")
        }
        let data = (try? SafeFile.readAll(fd: fd)) ?? []
        let now = time(nil)
        var seen = Set<String>()
        var count = 0
        for line in data.split(separator: UInt8(ascii: "\n")) {
            let id = String(decoding: line, as: UTF8.self)
            guard QueueID.isValid(id) else {
                Msg.warn("bad queue id \"\(id.prefix(30))...\" in fast flush logfile for domain \(name)")
                continue
            }
            if seen.insert(id).inserted && requeue(id, now: now, how) { count += 1 }
        }
        if count > 0 && ftruncate(fd, 0) < 0 {
            Msg.fatal("flush_send_path: truncate fast flush logfile \(name): \(errnoText(errno))")
        }
        // The access time says when the log was last used (noatime mounts ignore reads).
        utimes(path, nil)
        if count > 0 {
            Msg.debug("flush_send_path: requesting delivery for logfile \(name)")
            trigger("I")
        }
        return .ok
    }

    /// flush_one_file: fresh time stamps, and deferred to incoming; false when the message
    /// is not in the deferred queue (delivered, or moved already).
    func requeue(_ id: String, now: time_t, _ how: How) -> Bool {
        guard let qid = QueueID(id) else { return false }
        let path = queue.path(QueueName.deferred, qid)
        var times = utimbuf(actime: now, modtime: now)
        if utime(path, &times) < 0 {
            if errno != ENOENT { Msg.warn("flush_one_file: update \(path) time stamps: \(errnoText(errno))") }
            return false
        }
        if how.contains(.unthrottleAfter) {
            var st = stat()
            if stat(path, &st) < 0 {
                if errno != ENOENT { Msg.warn("flush_one_file: \(path): \(errnoText(errno))") }
                return false
            }
            if chmod(path, (st.st_mode | QueueFileMode.unthrottle) & 0o7777) < 0 {
                Msg.warn("flush_one_file: chmod \(path): \(errnoText(errno))")
            }
        }
        do {
            try queue.move(qid, from: QueueName.deferred, to: QueueName.incoming)
        } catch let e as SystemError where e.errno == ENOENT {
        } catch {
            Msg.warn("\(path): rename from \(QueueName.deferred) to \(QueueName.incoming): \(errnoText((error as? SystemError)?.errno ?? EIO))")
        }
        Msg.debug("flush_one_file: requeued \(path)")
        return true
    }

    /// flush_refresh_service: logs unused for `maxAge` seconds are flushed (without
    /// unthrottling); logs empty and unchanged for fast_flush_purge_time go.
    func refresh(maxAge: Int) {
        let now = time(nil)
        for name in MailQueue.scan(QueueName.flush) {
            guard let path = logPath(name) else { continue }
            var st = stat()
            if stat(path, &st) < 0 {
                if errno != ENOENT { Msg.warn("flush_refresh_service: stat \(path): \(errnoText(errno))") }
                continue
            }
            if st.st_size == 0 {
                if Int(st.st_mtim.tv_sec) + purgeTime < now {
                    if unlink(path) < 0 { Msg.warn("remove logfile \(path): \(errnoText(errno))") }
                }
            } else if Int(st.st_atim.tv_sec) + maxAge < now || maxAge == 0 {
                _ = sendLog(name, [.refreshOnly])
            }
        }
    }
}
