// Forward: mail that local delivery sends on (alias and .forward expansions to other
// domains, to aliases with an owner- companion, :include: lists) goes back through
// cleanup as a new message, one per envelope sender and Delivered-To value.
// Mirrors Postfix local/forward.c.
import Glibc
import MailUtil
import MailGlobal
import DeliverCore

final class Forwarder {
    struct Pending {
        var sender: String
        var delivered: String
        var recipients: [(rcpt: QueueRecipient, notify: Int)] = []
    }
    var pending: [Pending] = []

    /// forward_append: remembers one recipient to forward.
    func append(sender: String, delivered: String, recipient: QueueRecipient) {
        if let i = pending.firstIndex(where: { $0.sender == sender && $0.delivered == delivered }) {
            pending[i].recipients.append((recipient, recipient.notify))
        } else {
            pending.append(Pending(sender: sender, delivered: delivered, recipients: [(recipient, recipient.notify)]))
        }
    }

    /// forward_finish: posts every pending message and reports its recipients; returns
    /// 0, or -1 when some could not be forwarded.
    /// The outcome of each message is reported for the request's recipient.
    func finish(_ job: DeliveryJob, recipient: QueueRecipient, deliveredHeader: Bool) -> Int {
        var status = 0
        for p in pending {
            switch send(job, p, deliveredHeader: deliveredHeader) {
            case .success(let id):
                status |= job.report.sent(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: recipient.info,
                                          relay: job.service, dsn: DeliveryStatus(status: "2.0.0", reason: "forwarded as \(id)"))
            case .failure(let why):
                status |= job.report.defer(flags: job.flags, id: job.queueID, stats: job.request.stats,
                                           recipient: recipient.info, relay: job.service, dsn: why)
            }
        }
        pending.removeAll()
        return status
    }

    enum Outcome {
        case success(String)
        case failure(DeliveryStatus)
    }

    func send(_ job: DeliveryJob, _ p: Pending, deliveredHeader: Bool) -> Outcome {
        let config = job.config
        let r = job.request
        let unable = DeliveryStatus(status: "4.3.0", reason: "unable to forward message")
        do {
            let c = try AttrClient(serviceClass: MailClass.public, name: config.string("cleanup_service_name"),
                                   timeout: config.time("ipc_timeout"))
            let hello = try c.expectProtocol(MailProtocol.cleanup)
            var sc = hello.scanner()
            let id = try sc.string(MailAttr.queueID)
            var flags: CleanupFlags = [.bounce, .mapOK]
            if r.sendopts & 1 != 0 { flags.insert(.smtputf8) }
            var f = AttrList()
            f.append(MailAttr.flags, int: flags.rawValue)
            try c.send(f)
            var out: [UInt8] = []
            func rec(_ t: RecordType, _ v: String) { RecordCodec.append(&out, t, Array(v.utf8)) }
            rec(.time, "\(r.stats.incomingArrival.tv_sec) \(r.stats.incomingArrival.tv_usec)")
            rec(.attribute, "\(MailAttr.logIdent)=\(r.queueID)")
            rec(.attribute, "\(MailAttr.rewriteContext)=local")
            if !r.envelopeID.isEmpty { rec(.attribute, "\(MailAttr.dsnEnvelopeID)=\(r.envelopeID)") }
            if r.retFlags != 0 { rec(.attribute, "\(MailAttr.dsnRetFlags)=\(r.retFlags)") }
            rec(.sender, p.sender)
            for (rcpt, notify) in p.recipients {
                if !rcpt.dsnOriginalRecipient.isEmpty { rec(.attribute, "\(MailAttr.dsnOriginalRecipient)=\(rcpt.dsnOriginalRecipient)") }
                if notify != 0 { rec(.attribute, "\(MailAttr.dsnNotifyFlags)=\(notify)") }
                rec(.originalRecipient, rcpt.originalRecipient)
                rec(.recipient, rcpt.address)
            }
            rec(.messageStart, "")
            var now = timeval()
            gettimeofday(&now, nil)
            rec(.normalText, "Received: by \(config.string("myhostname")) (\(config.string("mail_name")))")
            rec(.normalText, "\tid \(id); \(MailDate.format(now.tv_sec))")
            if deliveredHeader { rec(.normalText, "Delivered-To: \(Quote822.quote822(p.delivered))") }
            try c.stream.write(out)
            out.removeAll()
            let reader = QueueFileReader(fd: job.fd)
            reader.seek(r.dataOffset)
            while let (_, x) = try reader.next(maxLength: 0) {
                if x.type != .normalText && x.type != .continuedText { break }
                RecordCodec.append(&out, x.type, x.data)
                if out.count > 65536 {
                    try c.stream.write(out)
                    out.removeAll(keepingCapacity: true)
                }
            }
            RecordCodec.append(&out, .extractedStart, [])
            RecordCodec.append(&out, .end, [])
            try c.stream.write(out)
            try c.stream.flush()
            let reply = try c.receive()
            var rs = reply.scanner()
            let status = try rs.int(MailAttr.status)
            if status != 0 { return .failure(unable) }
            return .success(id)
        } catch {
            Msg.warn("\(r.queueID): forward: \(error)")
            return .failure(unable)
        }
    }
}
