// BounceLog: the per-message logfiles of the bounce, defer and trace services
// (bounce/ID, defer/ID, trace/ID): appending one recipient's record durably, and reading
// the records back for a notification.
// Mirrors Postfix bounce/bounce_append_service.c and global/bounce_log.c. A record is a
// blank line, the old-style "<recipient>: reason" line, one name=value line per known
// attribute, and a blank line; readers also accept old-style records alone.
import Glibc
import MailUtil

/// One recipient's entry in a logfile.
public struct LogRecord: Sendable {
    public var recipient = ""
    public var originalRecipient = ""
    public var offset = 0
    public var dsnOriginalRecipient = ""
    public var notify = 0
    public var status = ""
    public var action = ""
    public var diagnosticType = ""
    public var diagnosticText = ""
    public var mtaType = ""
    public var mtaName = ""
    public var reason = ""

    public init() {}
}

public enum BounceLog {
    /// The path of SERVICE/ID (hashed as the queue configuration says).
    public static func path(_ service: String, _ id: String, _ queue: MailQueue) -> String {
        guard let qid = QueueID(id) else { return "\(service)/\(id)" }
        return queue.path(service, qid)
    }

    /// Appends one record; any failure is fatal, so that the queue manager backs off
    /// and nothing is lost.
    public static func append(service: String, queueID: String, recipient: RecipientInfo, status: DeliveryStatus,
                       queue: MailQueue, oldStyle: Bool) {
        let p = path(service, queueID, queue)
        let fd = queue.openAppend(service, queueID)
        if fd < 0 { Msg.fatal("open file \(service) \(queueID): \(errnoText(errno))") }
        defer { close(fd) }
        do {
            try FileLock.apply(fd, style: .fcntl, .exclusive)
        } catch {
            Msg.fatal("lock file \(service) \(queueID): \(errnoText(errno))")
        }
        let origLength = lseek(fd, 0, SEEK_END)
        if origLength < 0 { Msg.fatal("seek file \(service) \(queueID): \(errnoText(errno))") }
        var text = "\n"
        let quoted = recipient.address.isEmpty ? "" : Quote822.quote822(recipient.address)
        if oldStyle {
            text += "<\(printable(quoted))>: \(printable(status.reason))\n"
        }
        func put(_ name: String, _ value: String) { text += "\(name)=\(printable(value))\n" }
        put("recipient", quoted)
        if !recipient.originalRecipient.isEmpty
            && CaseFold.fold(recipient.originalRecipient) != CaseFold.fold(recipient.address) {
            put("original_recipient", Quote822.quote822(recipient.originalRecipient))
        }
        if recipient.offset > 0 { put("offset", String(recipient.offset)) }
        if !recipient.dsnOriginalRecipient.isEmpty { put("dsn_orig_rcpt", recipient.dsnOriginalRecipient) }
        if recipient.notify != 0 { put("notify_flags", String(recipient.notify)) }
        put("status", status.status)
        if !status.action.isEmpty { put("action", status.action) }
        if !status.diagnosticType.isEmpty && !status.diagnosticText.isEmpty {
            put("diag_type", status.diagnosticType)
            put("diag_text", status.diagnosticText)
        }
        if !status.mtaType.isEmpty && !status.mtaName.isEmpty {
            put("mta_type", status.mtaType)
            put("mta_mname", status.mtaName)
        }
        put("reason", status.reason)
        text += "\n"
        let bytes = Array(text.utf8)
        let ok = (try? SafeFile.writeAll(fd: fd, bytes, path: p)) != nil && fsync(fd) == 0
        if !ok {
            let e = errno
            if ftruncate(fd, origLength) < 0 { Msg.fatal("truncate file \(service) \(queueID): \(errnoText(errno))") }
            Msg.fatal("append file \(service) \(queueID): \(errnoText(e))")
        }
    }

    /// Control characters become "?" (printable(3) with '?').
    public static func printable(_ s: String) -> String {
        if s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            out.append(u.value < 0x20 || u.value == 0x7F || u == "\u{FFFD}" ? "?" : u)
        }
        return String(out)
    }

    /// Reads every record of SERVICE/ID; nil when there is no logfile. Records without
    /// DSN information get the service's defaults.
    public static func read(service: String, queueID: String, queue: MailQueue, config: MailConfig) -> [LogRecord]? {
        let p = path(service, queueID, queue)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno != ENOENT { Msg.fatal("open \(service) \(queueID): \(errnoText(errno))") }
            return nil
        }
        defer { close(fd) }
        guard let data = try? SafeFile.readAll(fd: fd) else {
            Msg.warn("\(queueID): read bounce log \(queueID): \(errnoText(errno))")
            return []
        }
        let (defStatus, defAction): (String, String)
        if service == config.string("defer_service_name") {
            (defStatus, defAction) = ("4.0.0", "delayed")
        } else if service == config.string("trace_service_name") {
            (defStatus, defAction) = ("2.0.0", "delivered")
        } else {
            (defStatus, defAction) = ("5.0.0", "failed")
        }
        var records: [LogRecord] = []
        var cur = LogRecord()
        var have = false
        var lineNo = 0
        func finish() {
            if have {
                if cur.status.isEmpty { cur.status = defStatus }
                if cur.action.isEmpty { cur.action = defAction }
                if cur.recipient == "<>" { cur.recipient = "" }
                records.append(cur)
            }
            cur = LogRecord()
            have = false
        }
        for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNo += 1
            let line = printable(String(decoding: raw, as: UTF8.self))
            if line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) {
                finish()
                continue
            }
            if line.hasPrefix("<") {
                // The old-style line: "<recipient>: text".
                let b = Array(line.utf8)
                if let k = (1..<max(b.count - 2, 1)).first(where: { b[$0] == UInt8(ascii: ">") && b[$0 + 1] == UInt8(ascii: ":") && b[$0 + 2] == 0x20 }) {
                    if cur.recipient.isEmpty { cur.recipient = String(decoding: b[1..<k], as: UTF8.self) }
                    if cur.reason.isEmpty { cur.reason = String(decoding: b[(k + 3)...], as: UTF8.self) }
                    have = true
                }
                continue
            }
            guard let c = line.first, c.isLetter || c.isNumber, let eq = line.firstIndex(of: "=") else {
                Msg.warn("\(p), line \(lineNo): malformed record: \(line.prefix(200))")
                continue
            }
            let name = String(line[..<eq])
            let value = String(line[line.index(after: eq)...])
            have = true
            switch name {
            case "recipient": cur.recipient = value
            case "original_recipient": cur.originalRecipient = value
            case "offset": cur.offset = Int(value) ?? 0
            case "dsn_orig_rcpt": cur.dsnOriginalRecipient = value
            case "notify_flags": cur.notify = Int(value) ?? 0
            case "status": cur.status = value
            case "action": cur.action = value
            case "diag_type": cur.diagnosticType = value
            case "diag_text": cur.diagnosticText = value
            case "mta_type": cur.mtaType = value
            case "mta_mname": cur.mtaName = value
            case "reason": cur.reason = value
            default: Msg.warn("\(p), line \(lineNo): ignoring unknown attribute: \(name.prefix(200))")
            }
        }
        finish()
        return records
    }
}
