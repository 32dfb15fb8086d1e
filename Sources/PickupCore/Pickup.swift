// Pickup: the pickup(8) daemon, which moves locally submitted mail from the maildrop
// queue into the mail system. Mirrors Postfix pickup/pickup.c: on every trigger (and the
// master's periodic wakeup) scan maildrop/ until a pass removes nothing; each ready file
// is copied record by record to the cleanup service (only the records a submission may
// hold, with our own Received: header in front of the content) and removed only after
// cleanup has answered that the message is safely queued. Files written by mail_owner
// without the world-read bit are "postsuper -r" requeues: they keep their headers, skip
// the milters, and their old queue ID is logged.
import Glibc
import MailUtil
import MailGlobal
import MailServer

public final class Pickup {
    enum Outcome { case remove, keep }

    let config: MailConfig
    let ownerUID: uid_t
    let lineLimit: Int
    let filter: String
    let baseFlags: CleanupFlags
    let autoUTF8: Bool
    let queue: MailQueue

    /// Records allowed in each part of a maildrop file; the first letter ends the part.
    static let envelopeTypes = Set("MCTcFILSDRO/WVA>K<ion".utf8)
    static let contentTypes = Set("XLNw".utf8)
    static let extractedTypes = Set("EDRO/PreAFIL>Kon".utf8)

    init(ctx: ServerContext) {
        config = ctx.config
        queue = MailQueue(config: config)
        ownerUID = ctx.accounts.ownerUID
        lineLimit = config.int("line_length_limit")
        filter = config.string("content_filter")
        baseFlags = CleanupFlags([.bounce]).union(.external).overridden(by: config.list("receive_override_options"))
        autoUTF8 = config.bool("smtputf8_enable")
            && config.list("smtputf8_autodetect_classes").contains { $0.lowercased() == "sendmail" }
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "pickup"
        desc.solitary = true
        var pickup: Pickup?
        desc.postInit = { ctx in pickup = Pickup(ctx: ctx) }
        TriggerServer.run(arguments, desc) { _, _ in pickup?.scan() }
    }

    /// One trigger: pick up files until a pass over the directory removes none.
    func scan() {
        var removed: Int
        repeat {
            removed = 0
            for id in MailQueue.scan(QueueName.maildrop) {
                // Incomplete files (postdrop still writing) are left alone.
                guard let (path, st) = queue.openable(QueueName.maildrop, id) else { continue }
                guard pickupFile(path, st) == .remove else { continue }
                if unlink(path) < 0 {
                    Msg.warn("remove \(path): \(errnoText(errno))")
                } else {
                    removed += 1
                }
            }
        } while removed > 0
    }

    func isRequeued(_ st: stat) -> Bool { st.st_uid == ownerUID && st.st_mode & S_IROTH == 0 }

    func pickupFile(_ path: String, _ lst: stat) -> Outcome {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e != ENOENT { Msg.warn("open input file \(path): \(errnoText(e))") }
            if e == EACCES {
                Msg.warn("if this file was created by Postfix < 1.1, then you may have to chmod a+r \(config.string("queue_directory"))/\(path)")
                return .keep
            }
            return .remove
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) < 0 || st.st_ino != lst.st_ino || st.st_dev != lst.st_dev {
            Msg.warn("open input file \(path): file was replaced")
            return .remove
        }
        var flags = baseFlags
        if isRequeued(st) {
            flags.remove(.milter)
        } else if autoUTF8 {
            flags.insert(.autoUTF8)
        }
        let client: AttrClient
        let id: String
        do {
            client = try connectCleanup()
            let hello = try client.expectProtocol(MailProtocol.cleanup)
            var sc = hello.scanner()
            id = try sc.string(MailAttr.queueID)
            var f = AttrList()
            f.append(MailAttr.flags, int: flags.rawValue)
            try client.send(f)
        } catch {
            Msg.warn("\(path): cleanup service: \(error)")
            return .keep
        }
        return copy(path, st, QueueFileReader(fd: fd), client, id)
    }

    /// mail_connect_wait: cleanup may be busy or restarting; keep trying.
    func connectCleanup() throws -> AttrClient {
        let name = config.string("cleanup_service_name")
        var attempt = 0
        while true {
            do {
                return try AttrClient(serviceClass: MailClass.public, name: name, timeout: config.time("ipc_timeout"))
            } catch {
                attempt += 1
                if attempt >= 6 { throw error }
                Msg.warn("connect to \(MailClass.public)/\(name): \(error) (try again)")
                sleep(10)
            }
        }
    }

    func copy(_ path: String, _ st: stat, _ reader: QueueFileReader, _ client: AttrClient, _ id: String) -> Outcome {
        var mtime = st.st_mtim.tv_sec
        let now = time(nil)
        if mtime > now + 2 * 3600 {
            Msg.warn("\(id): message dated \(mtime - now) seconds into the future")
            mtime = now
        } else if mtime < now - 86400 {
            Msg.warn("\(id): message has been queued for \((now - mtime) / 86400) days")
        }
        var out: [UInt8] = []
        var sender: String?
        var timeSeen = false
        var writeFailed = false
        func put(_ t: RecordType, _ data: [UInt8]) {
            RecordCodec.append(&out, t, data)
            if out.count >= 65536 { flush() }
        }
        func flush() {
            if !writeFailed && !out.isEmpty {
                do { try client.stream.write(out) } catch { writeFailed = true }
            }
            out = []
        }
        func writeError() -> Outcome {
            Msg.warn("\(path): error writing \(id): \(CleanupStatus.write.detail.text)")
            return .keep
        }
        /// Copies one part; nil when it ended as it should.
        func segment(_ allowed: Set<UInt8>, _ terminator: RecordType, content: Bool) -> Outcome? {
            var checkFirst = content
            while true {
                let r: Record
                do {
                    guard let next = try reader.next(maxLength: lineLimit)?.record else {
                        Msg.warn("uid=\(st.st_uid): unexpected or malformed record type -1")
                        return .remove
                    }
                    r = next
                } catch {
                    Msg.warn("uid=\(st.st_uid): unexpected or malformed record type -2")
                    return .remove
                }
                // Pointer records chain in-place edits; padding is left-over space.
                if r.type == .pointer {
                    if let target = Int(r.text.trimmingCharacters()), target > 0 { reader.seek(target) }
                    continue
                }
                if r.type == .padding && !content { continue }
                guard allowed.contains(r.type.rawValue) else {
                    Msg.warn("uid=\(st.st_uid): unexpected or malformed record type \(r.type.rawValue)")
                    return .remove
                }
                Msg.debug("\(id): read \(r.type) \(r.text)")
                if r.type == terminator { return nil }
                if r.type == .sender {
                    if sender == nil { sender = r.text }
                    if !timeSeen { put(.time, Array(String(st.st_mtim.tv_sec).utf8)) }
                }
                if r.type == .time { timeSeen = true }
                if !content {
                    // What "postsuper -r" leaves behind: old filter and redirect decisions.
                    if r.type == .filter || r.type == .redirect { continue }
                    if terminator == .end {
                        if r.type == .returnReceipt || r.type == .errorsTo { continue }
                        if r.type == .attribute, let a = r.attribute, !Self.dsnAttributes.contains(a.name) { continue }
                    }
                }
                if r.type == .padding { continue }
                // Content that starts with white space would continue our Received: header.
                if checkFirst && (r.type == .normalText || r.type == .continuedText) {
                    checkFirst = false
                    if let b = r.data.first, b == 0x20 || b == 0x09 { put(.normalText, []) }
                }
                put(r.type, r.data)
            }
        }

        if !filter.isEmpty { put(.filter, Array(filter.utf8)) }
        if let o = segment(Self.envelopeTypes, .messageStart, content: false) { return o }
        guard let sender else {
            Msg.warn("\(id): uid=\(st.st_uid): no envelope sender")
            return .remove
        }
        let requeued = isRequeued(st)
        if requeued {
            Msg.info("\(id): uid=\(st.st_uid) from=<\(sender)> orig_id=\(path.split(separator: "/").last.map(String.init) ?? path)")
        } else {
            Msg.info("\(id): uid=\(st.st_uid) from=<\(sender)>")
        }
        put(.messageStart, [])
        put(.normalText, Array("Received: by \(config.string("myhostname")) (\(config.string("mail_name")), from userid \(st.st_uid))".utf8))
        put(.normalText, Array("\tid \(id); \(MailDate.format(mtime))".utf8))
        if let o = segment(Self.contentTypes, .extractedStart, content: true) { return o }
        put(.extractedStart, [])
        if let o = segment(Self.extractedTypes, .end, content: false) { return o }
        put(.end, [])
        flush()
        if writeFailed { return writeError() }
        do {
            try client.stream.flush()
            let reply = try client.receive()
            var sc = reply.scanner()
            let status = try sc.int(MailAttr.status)
            let reason = (try? sc.string(MailAttr.reason)) ?? ""
            if status == 0 { return .remove }
            let s = CleanupStatus(rawValue: status)
            Msg.warn("\(path): error writing \(id): \(reason.isEmpty ? s.detail.text : reason)")
            return s.isDisjoint(with: [.bad, .recipients]) ? .keep : .remove
        } catch {
            return writeError()
        }
    }

    /// Attributes of the extracted part that survive a requeue.
    static let dsnAttributes: Set<String> = [MailAttr.dsnOriginalRecipient, MailAttr.dsnNotifyFlags]
}
