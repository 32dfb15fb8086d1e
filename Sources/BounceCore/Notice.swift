// Notice: one notification built from a logfile (or a single forged record) and the
// original message: non-delivery, delay, delivery status and postmaster copies, as
// RFC 3464 multipart/report messages posted through cleanup.
// Mirrors Postfix bounce/bounce_notify_util.c (bounce_mail_init, bounce_header,
// bounce_boilerplate, bounce_diagnostic_log/dsn, bounce_original, bounce_delrcpt) and
// util/line_wrap.c.
import Glibc
import MailUtil
import MailGlobal

/// DSN_NOTIFY_OVERRIDE: every recipient, whatever it asked for (postmaster copies).
let notifyOverride = DSNNotify.any | DSNNotify.never

final class Notice {
    let settings: BounceSettings
    let queueName: String
    let queueID: String
    let envelopeID: String
    let template: Template
    /// The logfile records (nil: there is no logfile).
    let records: [LogRecord]?
    /// The sender as the original queue file has it ("MAILER-DAEMON@..." for <>).
    var senderText = ""
    var arrival = 0
    var messageSize = 0
    /// The offset of the first content record of the original (0: unavailable).
    var contentOffset = 0
    var queueFD: Int32 = -1
    let boundary: String
    /// The Content-Transfer-Encoding of the whole notice (nil: none).
    let mimeEncoding: String?
    let eightBit: Bool
    /// The original asked for SMTPUTF8: the report and the returned message use the
    /// RFC 6533 types (message/global-delivery-status, message/global).
    var smtputf8 = false

    init(settings: BounceSettings, queueName: String, queueID: String, encoding: String, envelopeID: String,
         template: Template, records: [LogRecord]?) {
        self.settings = settings
        self.queueName = queueName
        self.queueID = queueID
        self.envelopeID = envelopeID
        self.template = template
        self.records = records
        boundary = "\(queueID).\(time(nil))/\(settings.myhostname)"
        eightBit = settings.smtputf8Enable || encoding == "8bit"
        if eightBit {
            mimeEncoding = "8bit"
        } else if encoding == "7bit" {
            mimeEncoding = "7bit"
        } else {
            if !encoding.isEmpty { Msg.warn("\(queueID): unknown encoding: \(encoding.prefix(200))") }
            mimeEncoding = nil
        }
        openOriginal()
    }

    deinit {
        if queueFD >= 0 { close(queueFD) }
    }

    /// Reads the original's envelope up to its content: size, arrival time, sender.
    func openOriginal() {
        guard QueueName.isValid(queueName), let qid = QueueID(queueID) else { return }
        let path = settings.queue.path(queueName, qid)
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            if errno != ENOENT { Msg.fatal("open \(queueName) \(queueID): \(errnoText(errno))") }
            return
        }
        queueFD = fd
        let reader = QueueFileReader(fd: fd)
        do {
            while let (_, r) = try reader.next(maxLength: 0) {
                switch r.type {
                case .size:
                    messageSize = Int(r.text.split(separator: " ").first ?? "") ?? 0
                case .time:
                    arrival = Int(r.text.split(separator: " ").first ?? "") ?? 0
                case .sender:
                    senderText = r.data.isEmpty ? settings.mailDaemon : Quote822.quote822(r.text)
                case .messageStart:
                    contentOffset = reader.offset
                    return
                default:
                    break
                }
            }
        } catch {
            Msg.warn("\(queueID): read message file \(queueName) \(queueID): \(error)")
        }
    }

    var isFailure: Bool { template.kind == .failure }
    var isUndelivered: Bool { template.kind == .failure || template.kind == .delay }

    // MARK: The parts of a notice

    func header(_ pm: PostMail, to dest: String, postmasterCopy: Bool) throws {
        try pm.line("From: \(template.from)")
        try pm.line("Subject: \(postmasterCopy ? (template.postmasterSubject ?? template.subject) : template.subject)")
        try pm.line("To: \(Quote822.quote822(dest))")
        if settings.threaded, let id = originalMessageID() {
            try pm.line("References: \(id)")
            try pm.line("In-Reply-To: \(id)")
        }
        try pm.line("Auto-Submitted: \(postmasterCopy ? "auto-generated" : "auto-replied")")
        try pm.line("MIME-Version: 1.0")
        try pm.line("Content-Type: multipart/report; report-type=delivery-status;")
        try pm.line("\tboundary=\"\(boundary)\"")
        if let e = mimeEncoding { try pm.line("Content-Transfer-Encoding: \(e)") }
        try pm.line("")
        try pm.line("This is a MIME-encapsulated message.")
        try pm.line("")
        try pm.line("--\(boundary)")
        try pm.line("Content-Description: Notification")
        let ascii = template.charset.lowercased() == "us-ascii"
        try pm.line("Content-Type: text/plain; charset=\(eightBit && ascii ? "utf-8" : template.charset)")
        if eightBit || !ascii { try pm.line("Content-Transfer-Encoding: 8bit") }
        try pm.line("")
    }

    /// The Message-ID of the original (its first such header, unfolded), for threading.
    func originalMessageID() -> String? {
        guard contentOffset > 0, queueFD >= 0 else { return nil }
        let reader = QueueFileReader(fd: queueFD)
        reader.seek(contentOffset)
        var line: [UInt8] = []
        var value: String?
        do {
            while let (_, r) = try reader.next(maxLength: 0) {
                guard r.type == .normalText || r.type == .continuedText else { break }
                line += r.data
                if r.type == .continuedText { continue }
                defer { line = [] }
                let text = String(decoding: line, as: UTF8.self)
                if line.first == 0x20 || line.first == 0x09 {
                    if value != nil { value! += text }
                    continue
                }
                if value != nil || !HeaderText.isHeader(text) { break }
                if let colon = text.firstIndex(of: ":"),
                   String(text[..<colon]).trimmingCharacters().lowercased() == "message-id" {
                    value = String(text[text.index(after: colon)...])
                }
            }
        } catch {
            return nil
        }
        guard let v = value?.trimmingCharacters(), !v.isEmpty else { return nil }
        return v
    }

    func boilerplate(_ pm: PostMail) throws {
        for l in template.expand(config: settings.config) { try pm.line(l) }
    }

    func wants(_ r: LogRecord, _ filter: Int) -> Bool {
        r.notify == 0 || r.notify & filter != 0
    }

    func recipientLog(_ pm: PostMail, _ r: LogRecord) throws {
        try pm.line("")
        if !r.originalRecipient.isEmpty {
            try wrap(pm, "<\(r.recipient)> (expanded from <\(r.originalRecipient)>): \(r.reason)")
        } else {
            try wrap(pm, "<\(r.recipient)>: \(r.reason)")
        }
    }

    /// The human-readable list; returns how many recipients it names.
    func diagnosticLog(_ pm: PostMail, filter: Int) throws -> Int {
        guard let records else {
            if isFailure {
                try pm.line("")
                try pm.line("\t--- Delivery report unavailable ---")
                return 1
            }
            return 0
        }
        var count = 0
        for r in records where wants(r, filter) {
            count += 1
            try recipientLog(pm, r)
        }
        return count
    }

    func headerDSN(_ pm: PostMail) throws {
        try pm.line("")
        try pm.line("--\(boundary)")
        try pm.line("Content-Description: Delivery report")
        try pm.line("Content-Type: \(smtputf8 ? "message/global-delivery-status" : "message/delivery-status")")
        if smtputf8, let e = mimeEncoding { try pm.line("Content-Transfer-Encoding: \(e)") }
        try pm.line("")
        try pm.line("Reporting-MTA: dns; \(settings.myhostname)")
        if !envelopeID.isEmpty { try pm.line("Original-Envelope-Id: \(envelopeID)") }
        try pm.line("X-\(settings.mailName)-Queue-ID: \(queueID)")
        try pm.line("X-\(settings.mailName)-Sender: rfc822; \(senderText)")
        if arrival > 0 { try pm.line("Arrival-Date: \(MailDate.format(time_t(arrival)))") }
    }

    func recipientDSN(_ pm: PostMail, _ r: LogRecord) throws {
        try pm.line("")
        let utf8 = smtputf8 && r.recipient.utf8.contains(where: { $0 >= 0x80 })
        try pm.line("Final-Recipient: \(utf8 ? "utf-8" : "rfc822"); \(r.recipient)")
        if !r.dsnOriginalRecipient.isEmpty {
            if r.dsnOriginalRecipient.lowercased().hasPrefix("rfc822;") {
                try pm.line("Original-Recipient: \(r.dsnOriginalRecipient)")
            }
        } else if !r.originalRecipient.isEmpty {
            try pm.line("Original-Recipient: rfc822; \(r.originalRecipient)")
        }
        try pm.line("Action: \(isFailure ? "failed" : r.action)")
        try pm.line("Status: \(r.status)")
        if !r.mtaType.isEmpty && !r.mtaName.isEmpty { try pm.line("Remote-MTA: \(r.mtaType); \(r.mtaName)") }
        if !r.diagnosticType.isEmpty && !r.diagnosticText.isEmpty {
            try wrap(pm, "Diagnostic-Code: \(r.diagnosticType); \(r.diagnosticText)")
        } else {
            try wrap(pm, "Diagnostic-Code: X-\(settings.diagnosticMailName); \(r.reason)")
        }
        if template.kind == .delay {
            try pm.line("Will-Retry-Until: \(MailDate.format(time_t(arrival + settings.maximalQueueLifetime)))")
        }
    }

    /// The machine-readable list; returns how many recipients it names.
    func diagnosticDSN(_ pm: PostMail, filter: Int) throws -> Int {
        guard let records else { return isFailure ? 1 : 0 }
        var count = 0
        for r in records where wants(r, filter) {
            count += 1
            try recipientDSN(pm, r)
        }
        return count
    }

    /// The original message (or its headers) and the closing boundary.
    func original(_ pm: PostMail, ret: Int) throws {
        var headersOnly = ret == DSNRet.headers
        if settings.bounceSizeLimit > 0 && queueFD >= 0 && (messageSize <= 0 || messageSize > settings.bounceSizeLimit) {
            headersOnly = true
        }
        try pm.line("")
        try pm.line("--\(boundary)")
        try pm.line("Content-Description: \(isUndelivered ? "Undelivered " : "")\(headersOnly ? "Message Headers" : "Message")")
        try pm.line("Content-Type: \(headersOnly ? (smtputf8 ? "message/global-headers" : "text/rfc822-headers") : (smtputf8 ? "message/global" : "message/rfc822"))")
        if mimeEncoding == "8bit" { try pm.line("Content-Transfer-Encoding: 8bit") }
        try pm.line("")
        if contentOffset == 0 || queueFD < 0 {
            try pm.line("\t--- Undelivered message unavailable ---")
        } else {
            try pm.line("Return-Path: <\(senderText)>")
            let reader = QueueFileReader(fd: queueFD)
            reader.seek(contentOffset)
            while let (_, r) = try reader.next(maxLength: 0) {
                if r.type != .normalText && r.type != .continuedText { break }
                if headersOnly {
                    let first = r.data.first
                    if !(first == 0x20 || first == 0x09 || HeaderText.isHeader(r.text)) { break }
                }
                try pm.record(r)
            }
        }
        try pm.line("")
        try pm.line("--\(boundary)--")
    }

    /// bounce_delrcpt: marks every logged recipient done in the original queue file.
    func deleteRecipients(only: LogRecord? = nil) {
        guard queueFD >= 0 else { return }
        for r in only.map({ [$0] }) ?? records ?? [] where r.offset > 0 {
            DeliveryReport.completed(fd: queueFD, path: "\(queueName)/\(queueID)", offset: r.offset)
        }
    }

    // MARK: Helpers

    /// line_wrap(text, 79, 4): break at blanks before a line grows past 79 columns;
    /// continuation lines are indented by 4.
    func wrap(_ pm: PostMail, _ text: String) throws {
        for l in Notice.wrapLines(text) { try pm.line(l) }
    }

    static func wrapLines(_ text: String, width: Int = 79, indent: Int = 4) -> [String] {
        let b = Array(text.utf8)
        var out: [String] = []
        var curIndent = 0
        var start = 0
        var word = 0
        func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
        func emit(_ from: Int, _ to: Int) {
            var end = to
            while end > from && isBlank(b[end - 1]) { end -= 1 }
            out.append(String(repeating: " ", count: curIndent) + String(decoding: b[from..<end], as: UTF8.self))
        }
        while true {
            var nextSpace = word
            while nextSpace < b.count && !isBlank(b[nextSpace]) { nextSpace += 1 }
            if word > start && nextSpace - start > width - curIndent {
                emit(start, word)
                var w = word
                while w < b.count && isBlank(b[w]) { w += 1 }
                if start == 0 { curIndent += indent }
                start = w
                word = w
            }
            if nextSpace >= b.count { break }
            word = nextSpace + 1
        }
        emit(start, b.count)
        return out
    }
}
