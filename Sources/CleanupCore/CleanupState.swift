// CleanupState: one message on its way through cleanup: the envelope, content and
// extracted segments of the client's record stream, checked and rewritten, written to
// the queue file, and finished (size record, mode, fsync) or thrown away.
// Mirrors Postfix cleanup/cleanup_state.c, cleanup_envelope.c, cleanup_extracted.c and
// cleanup_final.c / cleanup_api.c.
import Glibc
import MailUtil
import MailGlobal

final class CleanupState {
    let settings: Settings
    let out: QueueFileWriter
    let queueID: String
    var flags: CleanupFlags
    var errors: CleanupStatus = []
    /// DSN text (with enhanced status code) for the reply, when a check gave one.
    var reason = ""

    enum Phase { case envelope, content, extracted, done }
    var phase: Phase = .envelope

    // Envelope state.
    var arrivalSeconds = 0
    var timeSeen = false
    var senderSeen = false
    var sender = ""
    var fullName: String?
    var warnSeen = false
    var attributeCount = 0
    var attributes: [String: String] = [:]
    var inRecipients = false
    var mixedRecipients = false
    var pendingOriginal: String?
    var pendingNotify = 0
    var pendingDSNOrcpt = ""
    var duplicates = Set<String>()
    var firstRecipientOffset: Int?
    var firstRecipient: String?
    var recipientCount = 0
    var notifyUnion = 0
    var hiddenRecipients: [String] = []
    var filter: String?
    var redirect: String?
    var sendopts = 0

    // Content state.
    var dataOffset = 0
    var extractedOffset = 0
    /// How header addresses are rewritten: local unless the client says otherwise
    /// (rewrite_context); nil for remote mail without remote_header_rewrite_domain.
    var headerRewriteContext: String? = MailAttr.rewriteLocal
    lazy var content = ContentProcessor(self)

    init(settings: Settings, out: QueueFileWriter, queueID: String, flags: CleanupFlags) {
        self.settings = settings
        self.out = out
        self.queueID = queueID
        self.flags = flags
        // The size record comes first; it is patched when the message is complete.
        out.put(.size, RecordCodec.sizePayload([0, 0, 0, 0, 0, 0]))
    }

    var status: CleanupStatus { errors.union(out.status) }

    func protocolError(_ text: String) {
        Msg.warn("\(queueID): \(text)")
        errors.insert(.bad)
    }

    /// Feeds one record from the client.
    func process(_ record: Record) {
        if record.type == .extraFlags {
            if let v = Int(record.text) { flags.formUnion(CleanupFlags(rawValue: v).intersection(.extra)) }
            return
        }
        switch phase {
        case .envelope: envelope(record)
        case .content: content.record(record)
        case .extracted: extracted(record)
        case .done: protocolError("unexpected record type \(record.type) after end of message")
        }
    }

    // MARK: Envelope (cleanup_envelope.c)

    func envelope(_ r: Record) {
        let allowed = RecordSegment.envelope.allowed
        guard allowed.contains(r.type.rawValue) || r.type == .milterCount else {
            protocolError("message rejected: unexpected record type \(r.type.rawValue) in envelope")
            return
        }
        if inRecipients && ![RecordType.recipient, .originalRecipient, .doneRecipient, .canceledRecipient,
                            .killed, .messageStart].contains(r.type) && !isRecipientAttribute(r) {
            mixedRecipients = true
        }
        switch r.type {
        case .size:
            // Only the sendopts of a client's size record count (sendmail's preliminary one).
            let fields = r.text.split(separator: " ")
            if fields.count >= 6, let so = Int(fields[5]) { sendopts |= so & 0xff }
        case .milterCount:
            break
        case .time:
            if timeSeen { return }
            timeSeen = true
            arrivalSeconds = Int(r.text.split(separator: " ").first ?? "") ?? Int(time(nil))
            out.put(.time, r.data)
            out.attribute(MailAttr.createTime, String(time(nil)))
        case .fullName:
            if fullName == nil {
                fullName = r.text
                out.put(.fullName, r.data)
            }
        case .sender:
            if senderSeen {
                protocolError("message rejected: multiple sender records")
                return
            }
            senderSeen = true
            sender = processSender(r.text)
            out.put(.sender, sender)
            bccFor(sender, settings.senderBcc)
        case .recipient, .doneRecipient:
            guard checkBeforeRecipient() else { return }
            inRecipients = true
            if r.type == .doneRecipient {
                out.put(.doneRecipient, r.data)
            } else {
                processRecipient(r.text)
            }
            resetRecipientState()
        case .originalRecipient:
            pendingOriginal = r.text
        case .canceledRecipient:
            resetRecipientState()
        case .warnTime:
            if !warnSeen {
                warnSeen = true
                out.put(.warnTime, r.data)
            }
        case .verp:
            if !sender.isEmpty || !senderSeen { out.put(.verp, r.data) }
        case .filter:
            filter = r.text
        case .redirect:
            redirect = r.text
        case .attribute:
            attribute(r)
        case .messageStart:
            guard senderSeen else {
                protocolError("message rejected: missing sender envelope record")
                return
            }
            guard timeSeen else {
                protocolError("message rejected: missing time envelope record")
                return
            }
            out.put(.messageStart, [])
            dataOffset = out.offset
            phase = .content
        case .killed, .inspector, .createTime:
            break
        default:
            break
        }
    }

    func isRecipientAttribute(_ r: Record) -> Bool {
        guard r.type == .attribute, let (name, _) = r.attribute else { return false }
        return name == MailAttr.dsnNotifyFlags || name == MailAttr.dsnOriginalRecipient
    }

    func resetRecipientState() {
        pendingOriginal = nil
        pendingNotify = 0
        pendingDSNOrcpt = ""
    }

    func checkBeforeRecipient() -> Bool {
        if !senderSeen {
            protocolError("message rejected: missing sender envelope record")
            return false
        }
        if !timeSeen {
            protocolError("message rejected: missing time envelope record")
            return false
        }
        return true
    }

    /// Named attributes: DSN data kept for the next recipient, the rewrite context,
    /// everything else copied (empty values dropped, at most the attribute limit).
    func attribute(_ r: Record) {
        guard let (name, value) = r.attribute, !name.isEmpty else {
            protocolError("message rejected: malformed attribute record")
            return
        }
        switch name {
        case MailAttr.dsnNotifyFlags:
            guard let n = Int(value), n >= 0, n <= 15 else {
                Msg.warn("\(queueID): ignoring malformed DSN notify flags: \(value)")
                return
            }
            pendingNotify = n
            return
        case MailAttr.dsnOriginalRecipient:
            pendingDSNOrcpt = value
            return
        case MailAttr.createTime:
            return
        case MailAttr.rewriteContext:
            guard value == MailAttr.rewriteLocal || value == MailAttr.rewriteRemote else {
                protocolError("message rejected: bad rewriting context: \(value)")
                return
            }
            headerRewriteContext = value == MailAttr.rewriteLocal ? MailAttr.rewriteLocal
                : (settings.remoteHeaderDomain.isEmpty ? nil : MailAttr.rewriteRemote)
        default:
            break
        }
        if value.isEmpty { return }
        attributeCount += 1
        if settings.attributeLimit > 0 && attributeCount > settings.attributeLimit {
            protocolError("message rejected: too many attribute records")
            return
        }
        attributes[name] = value
        out.put(.attribute, r.data)
    }

    // MARK: Extracted segment (cleanup_extracted.c)

    func startExtracted() {
        out.put(.extractedStart, [])
        extractedOffset = out.offset - 2
        phase = .extracted
    }

    func extracted(_ r: Record) {
        guard RecordSegment.extracted.allowed.contains(r.type.rawValue) else {
            protocolError("message rejected: unexpected record type \(r.type.rawValue) in extracted segment")
            return
        }
        switch r.type {
        case .recipient:
            guard checkBeforeRecipient() else { return }
            processRecipient(r.text)
            resetRecipientState()
        case .doneRecipient:
            out.put(.doneRecipient, r.data)
            resetRecipientState()
        case .originalRecipient:
            pendingOriginal = r.text
        case .canceledRecipient:
            resetRecipientState()
        case .attribute:
            if let (name, value) = r.attribute {
                if name == MailAttr.dsnNotifyFlags, let n = Int(value) { pendingNotify = n; return }
                if name == MailAttr.dsnOriginalRecipient { pendingDSNOrcpt = value; return }
                if value.isEmpty { return }
            }
            out.put(.attribute, r.data)
        case .filter:
            filter = r.text
        case .redirect:
            redirect = r.text
        case .end:
            finishExtracted()
        default:
            break
        }
    }

    func finishExtracted() {
        // Hidden recipients (always_bcc and the BCC tables) come after the visible ones.
        if flags.contains(.bccOK) && !settings.alwaysBcc.isEmpty && !hiddenRecipients.contains(settings.alwaysBcc) {
            hiddenRecipients.append(settings.alwaysBcc)
        }
        if let f = filter { out.put(.filter, f) }
        if let r = redirect { out.put(.redirect, r) }
        // A Content-Transfer-Encoding of 8bit is noted for the delivery agents.
        if content.eightBitDeclared {
            out.attribute(MailAttr.encoding, MailAttr.encoding8bit)
        }
        for h in hiddenRecipients { outputBcc(h) }
        out.put(.end, [])
        phase = .done
    }

    // MARK: Completion (cleanup_api.c)

    /// Patches the size record and makes the file ready; returns the final status.
    func finish() -> CleanupStatus {
        if phase != .done && status.isEmpty {
            protocolError("message rejected: unexpected EOF")
        }
        if status.isEmpty && recipientCount == 0 {
            Msg.warn("\(queueID): message rejected: no recipients specified")
            errors.insert(.recipients)
        }
        if settings.hopLimit > 0 && content.hops > settings.hopLimit {
            errors.insert(.hops)
        }
        if !status.isEmpty { return status }
        let contentSize = extractedOffset - dataOffset
        var qmgrFlags = notifyUnion << 1
        if mixedRecipients { qmgrFlags |= 1 }
        var so = sendopts
        if flags.contains(.smtputf8) { so |= 1 }
        so |= content.utf8Seen
        let size = RecordCodec.sizePayload([contentSize, dataOffset, recipientCount, qmgrFlags, contentSize, so])
        var rec: [UInt8] = []
        RecordCodec.append(&rec, .size, Array(size.utf8))
        out.patch(at: 0, rec)
        out.finish()
        return status
    }
}
