// bounce(8), also running as defer and trace: keeps the per-recipient logfiles and sends
// the notifications built from them.
// Mirrors Postfix bounce/bounce.c (the request protocol) and bounce_notify_service.c,
// bounce_warn_service.c, bounce_trace_service.c, bounce_notify_verp.c,
// bounce_one_service.c (who gets which notice, and what is logged).
import Glibc
import MailUtil
import MailGlobal
import MailServer

/// MAIL_ERROR_* classes of notify_classes that concern the bounce daemon.
struct NotifyMask: OptionSet {
    let rawValue: Int
    static let bounce = NotifyMask(rawValue: 1)
    static let doubleBounce = NotifyMask(rawValue: 2)
    static let delay = NotifyMask(rawValue: 4)

    init(rawValue: Int) { self.rawValue = rawValue }

    init(_ names: [String]) {
        var m: NotifyMask = []
        for n in names {
            switch n.lowercased() {
            case "bounce": m.insert(.bounce)
            case "2bounce": m.insert(.doubleBounce)
            case "delay": m.insert(.delay)
            case "data", "policy", "protocol", "resource", "software": break
            default: Msg.fatal("unknown notify_classes name \"\(n)\"")
            }
        }
        self = m
    }
}

final class BounceSettings {
    let config: MailConfig
    let queue: MailQueue
    let myhostname: String
    let mailName: String
    /// mail_name as an RFC 822 atom, for Diagnostic-Code X-... types.
    let diagnosticMailName: String
    let notify: NotifyMask
    let bounceRecipient: String
    let doubleBounceRecipient: String
    let delayRecipient: String
    let bounceSizeLimit: Int
    let doubleBounce: String
    let mailDaemon: String
    let maximalQueueLifetime: Int
    let smtputf8Enable: Bool
    /// enable_threaded_bounces: notices refer to the original's Message-ID.
    let threaded: Bool
    let oldStyleLog: Bool
    var templates = TemplateSet()

    init(config: MailConfig) {
        self.config = config
        queue = MailQueue(config: config)
        myhostname = config.string("myhostname")
        mailName = config.string("mail_name")
        var fixed = ""
        for c in mailName { fixed.append(" \t\r\n()<>@,;:\\\".[]".contains(c) ? "-" : c) }
        diagnosticMailName = fixed
        notify = NotifyMask(config.list("notify_classes"))
        bounceRecipient = config.string("bounce_notice_recipient")
        doubleBounceRecipient = config.string("2bounce_notice_recipient")
        delayRecipient = config.string("delay_notice_recipient")
        bounceSizeLimit = config.int("bounce_size_limit")
        doubleBounce = config.string("double_bounce_sender") + "@" + myhostname
        mailDaemon = "MAILER-DAEMON@" + myhostname
        maximalQueueLifetime = config.time("maximal_queue_lifetime")
        smtputf8Enable = config.bool("smtputf8_enable")
        threaded = config.bool("enable_threaded_bounces")
        oldStyleLog = config.bool("backwards_bounce_logfile_compatibility")
        let file = config.string("bounce_template_file")
        if !file.isEmpty { templates.load(path: file) }
    }

    func isDoubleBounce(_ address: String) -> Bool {
        CaseFold.fold(address) == CaseFold.fold(doubleBounce)
    }
}

/// What a notice request says about the message (the FLUSH/WARN/TRACE/VERP/ONE attributes).
struct NoticeRequest {
    var flags = 0
    var queueName = ""
    var queueID = ""
    var encoding = ""
    var sendopts = 0
    var sender = ""
    var envelopeID = ""
    var retFlags = 0
}

public enum Bounce {
    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "bounce"
        var settings: BounceSettings?
        desc.preInit = { ctx in settings = BounceSettings(config: ctx.config) }
        SingleServer.run(arguments, desc) { client, ctx in
            guard let settings else { return }
            serve(client.stream, service: ctx.serviceName, settings: settings)
        }
    }

    static func serve(_ stream: FDStream, service: String, settings: BounceSettings) {
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.bounce)
        do {
            try stream.write(AttrCodec.encode(hello, .attr0))
            try stream.flush()
        } catch {
            return
        }
        let reader = AttrReader(stream, encoding: .attr0)
        let status: Int
        do {
            guard let list = try reader.readList() else { return }
            status = try handle(list, service: service, settings: settings)
        } catch {
            Msg.warn("malformed request")
            return
        }
        var reply = AttrList()
        reply.append(MailAttr.status, long: Int64(UInt32(bitPattern: Int32(truncatingIfNeeded: status))))
        try? stream.write(AttrCodec.encode(reply, .attr0))
        try? stream.flush()
    }

    static func handle(_ list: AttrList, service: String, settings: BounceSettings) throws -> Int {
        var sc = list.scanner()
        let command = try sc.int(MailAttr.nrequest)
        switch BounceCommand(rawValue: command) {
        case .append:
            let flags = try sc.int(MailAttr.flags)
            let queueID = try sc.string(MailAttr.queueID)
            let rcpt = try recipient(&sc)
            let dsn = try status(&sc)
            _ = flags
            guard QueueID.isValid(queueID) else {
                Msg.warn("malformed queue id: \(Msg.printable(queueID))")
                return -1
            }
            BounceLog.append(service: service, queueID: queueID, recipient: rcpt, status: dsn, queue: settings.queue,
                             oldStyle: settings.oldStyleLog)
            return 0
        case .flush, .warn, .trace, .verp, .one:
            var r = NoticeRequest()
            r.flags = try sc.int(MailAttr.flags)
            r.queueName = try sc.string(MailAttr.queueName)
            r.queueID = try sc.string(MailAttr.queueID)
            r.encoding = try sc.string(MailAttr.encoding)
            r.sendopts = try sc.int(MailAttr.sendOptions)
            r.sender = try sc.string(MailAttr.sender)
            r.envelopeID = try sc.string(MailAttr.dsnEnvelopeID)
            r.retFlags = try sc.int(MailAttr.dsnRetFlags)
            guard QueueName.isValid(r.queueName) else {
                Msg.warn("malformed queue name: \(Msg.printable(r.queueName))")
                return -1
            }
            guard QueueID.isValid(r.queueID) else {
                Msg.warn("malformed queue id: \(Msg.printable(r.queueID))")
                return -1
            }
            let n = Notifier(settings: settings, service: service, request: r)
            switch BounceCommand(rawValue: command)! {
            case .flush: return n.flush()
            case .warn: return n.warn()
            case .trace: return n.trace()
            case .verp:
                let delims = try sc.string(MailAttr.verpDelimiters)
                return n.verp(delimiters: delims)
            case .one:
                let rcpt = try recipient(&sc)
                let dsn = try status(&sc)
                return n.one(rcpt, dsn)
            case .append: return -1
            }
        case nil:
            Msg.warn("unknown command: \(command)")
            return -1
        }
    }

    static func recipient(_ sc: inout AttrScanner) throws -> RecipientInfo {
        let orig = try sc.string(MailAttr.originalRecipient)
        let addr = try sc.string(MailAttr.recipient)
        let offset = Int(try sc.long(MailAttr.offset))
        let dsn = try sc.string(MailAttr.dsnOriginalRecipient)
        let notify = try sc.int(MailAttr.dsnNotifyFlags)
        return RecipientInfo(originalRecipient: orig, address: addr, offset: offset, dsnOriginalRecipient: dsn, notify: notify)
    }

    static func status(_ sc: inout AttrScanner) throws -> DeliveryStatus {
        let st = try sc.string(MailAttr.status)
        let dt = try sc.string(MailAttr.dsnDiagType)
        let dx = try sc.string(MailAttr.dsnDiagText)
        let mt = try sc.string(MailAttr.dsnMTAType)
        let mn = try sc.string(MailAttr.dsnMTAName)
        let ac = try sc.string(MailAttr.action)
        let re = try sc.string(MailAttr.reason)
        return DeliveryStatus(status: st, action: ac, reason: re, diagnosticType: dt, diagnosticText: dx,
                              mtaType: mt, mtaName: mn)
    }
}

/// Sends the notices of one request.
struct Notifier {
    let settings: BounceSettings
    let service: String
    let request: NoticeRequest

    var queueID: String { request.queueID }

    func notice(_ template: Template, records: [LogRecord]?) -> Notice {
        let n = Notice(settings: settings, queueName: request.queueName, queueID: request.queueID, encoding: request.encoding,
                       envelopeID: request.envelopeID, template: template, records: records)
        n.smtputf8 = request.sendopts & 1 != 0
        return n
    }

    func readLog() -> [LogRecord]? {
        BounceLog.read(service: service, queueID: queueID, queue: settings.queue, config: settings.config)
    }

    func removeLog() {
        let p = BounceLog.path(service, queueID, settings.queue)
        if unlink(p) < 0 && errno != ENOENT { Msg.fatal("remove \(service) \(queueID): \(errnoText(errno))") }
    }

    /// Posts one notice; `body` writes everything after the header and returns false to
    /// cancel it (no recipient to tell). Returns (status, cancelled-for-lack-of-recipients).
    func post(_ n: Notice, from sender: String, to dest: String, postmasterCopy: Bool,
              body: (PostMail) throws -> Bool) -> (status: Int, id: String?) {
        let pm: PostMail
        do {
            pm = try PostMail(config: settings.config, sender: sender, recipient: dest, source: .bounce,
                              smtputf8: request.sendopts & 1 != 0)
        } catch {
            Msg.warn("\(queueID): cannot post notification: \(error)")
            return (-1, nil)
        }
        do {
            try n.header(pm, to: dest, postmasterCopy: postmasterCopy)
            if try !body(pm) {
                pm.abort()
                return (0, nil)
            }
            let (st, _) = try pm.close()
            return (st == 0 ? 0 : -1, st == 0 ? pm.queueID : nil)
        } catch {
            pm.abort()
            return (-1, nil)
        }
    }

    /// A notice with the recipients `filter` selects; `boiler` adds the template text.
    func standard(_ n: Notice, to dest: String, from sender: String, postmasterCopy: Bool, boiler: Bool,
                  filter: Int, ret: Int) -> (status: Int, id: String?) {
        post(n, from: sender, to: dest, postmasterCopy: postmasterCopy) { pm in
            if boiler { try n.boilerplate(pm) }
            guard try n.diagnosticLog(pm, filter: filter) > 0 else { return false }
            try n.headerDSN(pm)
            guard try n.diagnosticDSN(pm, filter: filter) > 0 else { return false }
            try n.original(pm, ret: ret)
            return true
        }
    }

    func logged(_ r: (status: Int, id: String?), _ what: String) -> Int {
        if r.status == 0, let id = r.id { Msg.info("\(queueID): \(what): \(id)") }
        return r.status
    }

    /// BOUNCE_CMD_FLUSH: the non-delivery notice; the logfile goes when it was sent.
    func flush() -> Int {
        let n = notice(settings.templates.failure, records: readLog())
        let status = failureNotices(n, single: nil)
        if status == 0 && request.flags & BounceFlags.deleteRecipients.rawValue != 0 { n.deleteRecipients() }
        if status == 0 { removeLog() }
        return status
    }

    /// Sender and postmaster non-delivery notices for a notice's records.
    func failureNotices(_ n: Notice, single: LogRecord?) -> Int {
        let sender = request.sender
        let ret = request.retFlags != 0 ? request.retFlags : DSNRet.full
        if settings.isDoubleBounce(sender) {
            Msg.warn("\(queueID): undeliverable postmaster notification discarded")
            return 0
        }
        if sender.isEmpty {
            guard settings.notify.contains(.doubleBounce) else { return 0 }
            let r = standard(n, to: settings.doubleBounceRecipient, from: settings.doubleBounce, postmasterCopy: true,
                             boiler: false, filter: notifyOverride, ret: DSNRet.full)
            if r.status == 0 && r.id == nil { return 0 }
            return logged(r, "postmaster non-delivery notification")
        }
        let r = standard(n, to: sender, from: "", postmasterCopy: false, boiler: true, filter: DSNNotify.failure, ret: ret)
        var status = r.status
        if r.status == 0 && r.id != nil {
            _ = logged(r, "sender non-delivery notification")
        }
        if status == 0 && settings.notify.contains(.bounce) {
            let p = standard(n, to: settings.bounceRecipient, from: settings.doubleBounce, postmasterCopy: true,
                             boiler: false, filter: notifyOverride, ret: DSNRet.headers)
            if p.status == 0 && p.id != nil {
                _ = logged(p, "postmaster non-delivery notification")
            } else if p.status != 0 {
                Msg.warn("\(queueID): postmaster notice failed while bouncing to \(sender)")
            }
        }
        _ = single
        status = r.status
        return status
    }

    /// BOUNCE_CMD_WARN: the delay warning; the logfile stays.
    func warn() -> Int {
        let n = notice(settings.templates.delay, records: readLog())
        let sender = request.sender
        if settings.isDoubleBounce(sender) {
            Msg.warn("\(queueID): undeliverable postmaster notification discarded")
            return 0
        }
        if sender.isEmpty {
            guard settings.notify.contains(.doubleBounce) else { return 0 }
            let r = standard(n, to: settings.doubleBounceRecipient, from: settings.doubleBounce, postmasterCopy: true,
                             boiler: false, filter: notifyOverride, ret: DSNRet.headers)
            return logged(r, "postmaster delay notification")
        }
        let r = standard(n, to: sender, from: "", postmasterCopy: false, boiler: true, filter: DSNNotify.delay,
                         ret: DSNRet.headers)
        _ = logged(r, "sender delay notification")
        if r.status == 0 && settings.notify.contains(.delay) {
            let p = standard(n, to: settings.delayRecipient, from: settings.doubleBounce, postmasterCopy: true,
                             boiler: false, filter: notifyOverride, ret: DSNRet.headers)
            if p.status == 0 && p.id != nil {
                _ = logged(p, "postmaster delay notification")
            } else if p.status != 0 {
                Msg.warn("\(queueID): postmaster notice failed while warning \(sender)")
            }
        }
        return r.status
    }

    /// BOUNCE_CMD_TRACE: the delivery status notice (NOTIFY=SUCCESS, sendmail -v/-bv);
    /// the logfile goes in any case.
    func trace() -> Int {
        guard let records = readLog() else { return 0 }
        let verbose = request.flags & (DeliverFlags.userVerify.rawValue | DeliverFlags.record.rawValue) != 0
        let n = notice(verbose ? settings.templates.verify : settings.templates.success, records: records)
        var dest = request.sender
        if settings.isDoubleBounce(dest) {
            Msg.info("\(queueID): not sending trace/success notification for double-bounce message")
            return 0
        }
        if dest.isEmpty {
            if settings.notify.contains(.doubleBounce) {
                dest = settings.doubleBounceRecipient
            } else {
                Msg.info("\(queueID): not sending trace/success notification for single-bounce message")
                removeLog()
                return 0
            }
        }
        let filter = verbose ? notifyOverride : DSNNotify.success
        let r = standard(n, to: dest, from: "", postmasterCopy: false, boiler: true, filter: filter, ret: DSNRet.headers)
        let status = logged(r, "sender delivery status notification")
        removeLog()
        return status
    }

    /// BOUNCE_CMD_VERP: one non-delivery notice per recipient, each to the sender's
    /// VERP address for that recipient.
    func verp(delimiters: String) -> Int {
        let sender = request.sender
        if settings.isDoubleBounce(sender) {
            Msg.warn("\(queueID): undeliverable postmaster notification discarded")
            return 0
        }
        guard let records = readLog() else { return flush() }
        if sender.isEmpty { return flush() }
        let ret = request.retFlags != 0 ? request.retFlags : DSNRet.full
        var status = 0
        for rec in records {
            let n = notice(settings.templates.failure, records: [rec])
            if rec.notify == 0 || rec.notify & DSNNotify.failure != 0 {
                let dest = VERP.address(sender: sender, recipient: rec.recipient, delimiters: delimiters)
                let r = standard(n, to: dest, from: "", postmasterCopy: false, boiler: true, filter: notifyOverride, ret: ret)
                status = logged(r, "sender non-delivery notification")
                if status != 0 { break }
                if request.flags & BounceFlags.deleteRecipients.rawValue != 0 { n.deleteRecipients(only: rec) }
            }
            if status == 0 && settings.notify.contains(.bounce) {
                let p = standard(n, to: settings.bounceRecipient, from: settings.doubleBounce, postmasterCopy: true,
                                 boiler: false, filter: notifyOverride, ret: DSNRet.headers)
                if p.status == 0 && p.id != nil {
                    _ = logged(p, "postmaster non-delivery notification")
                } else if p.status != 0 {
                    Msg.warn("\(queueID): postmaster notice failed while bouncing to \(sender)")
                }
            }
        }
        if status == 0 { removeLog() }
        return status
    }

    /// BOUNCE_CMD_ONE: a non-delivery notice for one recipient, without a logfile.
    func one(_ rcpt: RecipientInfo, _ dsn: DeliveryStatus) -> Int {
        var rec = LogRecord()
        rec.recipient = rcpt.address.isEmpty ? "" : Quote822.quote822(rcpt.address)
        if !rcpt.originalRecipient.isEmpty { rec.originalRecipient = Quote822.quote822(rcpt.originalRecipient) }
        rec.offset = rcpt.offset
        rec.dsnOriginalRecipient = rcpt.dsnOriginalRecipient
        rec.notify = rcpt.notify
        rec.status = dsn.status
        rec.action = dsn.action.isEmpty ? "failed" : dsn.action
        rec.diagnosticType = dsn.diagnosticType
        rec.diagnosticText = dsn.diagnosticText
        rec.mtaType = dsn.mtaType
        rec.mtaName = dsn.mtaName
        rec.reason = dsn.reason
        let n = notice(settings.templates.failure, records: [rec])
        return failureNotices(n, single: rec)
    }
}

enum VERP {
    /// verp_sender: local+rcptlocal=rcptdomain@domain.
    static func address(sender: String, recipient: String, delimiters: String) -> String {
        let d = Array(delimiters)
        guard d.count == 2 else { return sender }
        var local = sender, domain = ""
        if let at = sender.lastIndex(of: "@") {
            local = String(sender[..<at])
            domain = String(sender[at...])
        }
        var rl = recipient, rd = ""
        if let at = recipient.lastIndex(of: "@") {
            rl = String(recipient[..<at])
            rd = String(recipient[recipient.index(after: at)...])
        }
        return "\(local)\(d[0])\(rl)\(d[1])\(rd)\(domain)"
    }
}
