// PostMail: mail that Postfix itself sends (postmaster notices, bounces, delay warnings),
// posted through the cleanup service like any other message.
// Mirrors Postfix global/post_mail.c: the envelope (time, local origin, trace flags,
// sender, DSN attributes, recipient), a "Received: by" header, the content given, then
// the end of the message; cleanup answers with a status. The message is queued only when
// that status is 0 (cleanup has fsynced the file).
import Glibc
import MailUtil

/// MAIL_SRC_MASK_*: where internally generated mail comes from, for
/// internal_mail_filter_classes.
public enum MailSource: String, Sendable {
    case bounce, notify, verify
}

public final class PostMail {
    let client: AttrClient
    /// The queue ID cleanup gave the message.
    public let queueID: String
    let lineLimit: Int
    var failed = false

    /// Opens a message from `sender` to `recipient`. `notify`/`envid`/`orcpt` carry DSN
    /// attributes of bounce messages.
    public init(config: MailConfig, sender: String, recipient: String, source: MailSource,
                traceFlags: Int = 0, smtputf8: Bool = false, envelopeID: String? = nil,
                notify: Int? = nil, originalRecipient: String? = nil, now: timeval? = nil) throws {
        client = try AttrClient(serviceClass: MailClass.public, name: config.string("cleanup_service_name"),
                                timeout: config.time("ipc_timeout"))
        let hello = try client.expectProtocol(MailProtocol.cleanup)
        var sc = hello.scanner()
        queueID = try sc.string(MailAttr.queueID)
        lineLimit = max(config.int("line_length_limit"), 1)
        var flags: CleanupFlags = [.mapOK]
        if config.list("internal_mail_filter_classes").contains(where: { $0.lowercased() == source.rawValue }) {
            flags.formUnion([.filter, .milter])
        }
        if smtputf8 { flags.insert(.smtputf8) }
        if source == .verify && config.list("smtputf8_autodetect_classes").contains(where: { $0.lowercased() == "verify" }) {
            flags.insert(.autoUTF8)
        }
        var f = AttrList()
        f.append(MailAttr.flags, int: flags.rawValue)
        try client.send(f)
        var t = now ?? timeval()
        if now == nil { gettimeofday(&t, nil) }
        var out: [UInt8] = []
        func rec(_ type: RecordType, _ v: String) { RecordCodec.append(&out, type, Array(v.utf8)) }
        rec(.time, "\(t.tv_sec) \(t.tv_usec)")
        rec(.attribute, "\(MailAttr.logMessageOrigin)=local")
        rec(.attribute, "\(MailAttr.traceFlags)=\(traceFlags)")
        rec(.sender, sender)
        if let envelopeID { rec(.attribute, "\(MailAttr.dsnEnvelopeID)=\(envelopeID)") }
        if let notify { rec(.attribute, "\(MailAttr.dsnNotifyFlags)=\(notify)") }
        if let originalRecipient { rec(.attribute, "\(MailAttr.dsnOriginalRecipient)=rfc822;\(originalRecipient)") }
        rec(.recipient, recipient)
        rec(.messageStart, "")
        try client.stream.write(out)
        try line("Received: by \(config.string("myhostname")) (\(config.string("mail_name")))")
        try line("\tid \(queueID); \(MailDate.format(t.tv_sec))")
        try line("Date: \(MailDate.format(t.tv_sec))")
    }

    /// One line of content (split into records as long lines are).
    public func line(_ text: String) throws {
        var out: [UInt8] = []
        RecordCodec.appendText(&out, Array(text.utf8), limit: lineLimit)
        try client.stream.write(out)
    }

    /// One content record as it is (text with its line structure kept).
    public func record(_ r: Record) throws {
        var out: [UInt8] = []
        RecordCodec.append(&out, r.type, r.data)
        try client.stream.write(out)
    }

    /// Gives up on the message: what was sent goes to cleanup, which then sees the
    /// connection end before the end of the message and drops the file.
    public func abort() {
        try? client.stream.flush()
        shutdown(client.stream.fd, Int32(SHUT_RDWR))
    }

    /// Ends the message; returns cleanup's status (0: queued) and reason.
    public func close() throws -> (status: Int, reason: String) {
        var out: [UInt8] = []
        RecordCodec.append(&out, .extractedStart, [])
        RecordCodec.append(&out, .end, [])
        try client.stream.write(out)
        try client.stream.flush()
        let r = try client.receive()
        var sc = r.scanner()
        let status = try sc.int(MailAttr.status)
        let reason = (try? sc.string(MailAttr.reason)) ?? ""
        return (status, reason)
    }
}
