// QueueFile: reading a complete queue file the way the queue manager and the delivery
// agents do: the envelope (with the size record's offsets), the recipients still to do
// with the offsets of their records, the extracted segment; skipping the content; and the
// in-place updates (a recipient marked done, the warning time reset, a record killed).
// Trusts nothing in the file: a bad record makes the file corrupt, it never crashes.
// Mirrors Postfix qmgr/qmgr_message.c (qmgr_message_read), global/rec_type.h,
// record.c (rec_get, rec_put_type) and deliver_completed.c.
import Glibc
import MailUtil

/// Why a queue file cannot be used.
public struct QueueFileError: Error, CustomStringConvertible {
    public let text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }
}

/// A recipient still to be delivered, with the offset of its R record.
public struct QueueRecipient: Sendable, Equatable {
    public var offset: Int
    public var address: String
    public var originalRecipient: String
    public var dsnOriginalRecipient: String
    public var notify: Int

    public init(offset: Int, address: String, originalRecipient: String = "", dsnOriginalRecipient: String = "",
                notify: Int = 0) {
        self.offset = offset
        self.address = address
        self.originalRecipient = originalRecipient
        self.dsnOriginalRecipient = dsnOriginalRecipient
        self.notify = notify
    }

    public var info: RecipientInfo {
        RecipientInfo(originalRecipient: originalRecipient, address: address, offset: offset,
                      dsnOriginalRecipient: dsnOriginalRecipient, notify: notify)
    }
}

/// What the envelope and the extracted segment of a queue file say.
public struct QueueMessage: Sendable {
    public var messageSize = 0
    public var dataOffset = 0
    public var recipientCount = 0
    public var qmgrFlags = 0
    public var contentLength = 0
    public var sendopts = 0
    public var arrival = timeval()
    public var createTime = 0
    public var sender = ""
    public var fullName: String?
    public var attributes: [String: String] = [:]
    /// The W record: its offset and the time a delay warning is due (0: none, -1: sent).
    public var warnOffset = 0
    public var warnTime = 0
    public var verpDelimiters: String?
    public var filter: String?
    public var redirect: String?
    /// The trace_flags attribute and the offset of its record (killed after a trace flush).
    public var traceFlags = 0
    public var traceFlagsOffset = 0
    public var recipients: [QueueRecipient] = []
    /// Recipients already done (D records).
    public var doneCount = 0
    /// Where reading the next batch of recipients starts (0: all were read).
    public var resumeOffset = 0

    public init() {}

    public var encoding: String { attributes[MailAttr.encoding] ?? "" }
    public var envelopeID: String { attributes[MailAttr.dsnEnvelopeID] ?? "" }
    public var retFlags: Int { Int(attributes[MailAttr.dsnRetFlags] ?? "") ?? 0 }
    public var logIdent: String? { attributes[MailAttr.logIdent] }
}

/// Record-level access to an open queue file: sequential reads with offsets, seeks, and
/// single-byte overwrites.
public final class QueueFileReader {
    public let fd: Int32
    var buffer: [UInt8] = []
    var bufferStart = 0
    var position = 0

    public init(fd: Int32) {
        self.fd = fd
    }

    /// The offset of the next record.
    public var offset: Int { position }

    public func seek(_ offset: Int) {
        position = offset
        if offset < bufferStart || offset > bufferStart + buffer.count {
            buffer = []
            bufferStart = offset
        }
    }

    /// Refills the buffer at `position`; false at the end of the file. The first read is
    /// small (most queue files are), later ones large; nothing is zero-filled first.
    func fill() throws -> Bool {
        let size = bufferStart == 0 && buffer.isEmpty ? 8192 : 65536
        let at = position
        var failed: Int32 = 0
        buffer = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            let n = pread(fd, buf.baseAddress, size, off_t(at))
            if n < 0 { failed = errno }
            count = max(n, 0)
        }
        bufferStart = at
        if failed != 0 { throw QueueFileError("read: \(errnoText(failed))") }
        return !buffer.isEmpty
    }

    func byte() throws -> UInt8? {
        if position >= bufferStart + buffer.count {
            guard try fill() else { return nil }
        }
        let b = buffer[position - bufferStart]
        position += 1
        return b
    }

    /// The next `count` bytes, nil when the file ends first.
    func bytes(_ count: Int) throws -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            if position >= bufferStart + buffer.count {
                guard try fill() else { return nil }
            }
            let from = position - bufferStart
            let take = min(count - out.count, buffer.count - from)
            out.append(contentsOf: buffer[from..<(from + take)])
            position += take
        }
        return out
    }

    /// The next record and the offset of its type byte; nil at the end of the file.
    public func next(maxLength: Int = 0) throws -> (offset: Int, record: Record)? {
        let start = position
        guard let t = try byte() else { return nil }
        var len = 0
        var shift = 0
        while true {
            guard shift < 28 else { throw QueueFileError("record too long at offset \(start)") }
            guard let b = try byte() else { throw QueueFileError("premature end of file at offset \(start)") }
            len |= Int(b & 0x7F) << shift
            if b & 0x80 == 0 { break }
            shift += 7
        }
        if maxLength > 0 && len > maxLength { throw QueueFileError("illegal length \(len), record type \(t)") }
        guard let data = try bytes(len) else { throw QueueFileError("premature end of file at offset \(start)") }
        return (start, Record(RecordType(t), data))
    }

    /// Overwrites the type byte of the record at `offset` (R→D, W→…, A→K), durably.
    public static func overwriteType(fd: Int32, at offset: Int, _ type: RecordType) throws {
        var b = type.rawValue
        if pwrite(fd, &b, 1, off_t(offset)) != 1 { throw QueueFileError("write queue file: \(errnoText(errno))") }
        if fsync(fd) < 0 { throw QueueFileError("fsync queue file: \(errnoText(errno))") }
    }

    /// Rewrites the W record at `offset` with a new time (-1: the warning was sent).
    public static func rewriteWarnTime(fd: Int32, at offset: Int, _ value: Int) throws {
        var rec: [UInt8] = []
        RecordCodec.append(&rec, .warnTime, Array(RecordCodec.fixed15(value).utf8))
        let n = rec.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        if n != rec.count { throw QueueFileError("write queue file: \(errnoText(errno))") }
        if fsync(fd) < 0 { throw QueueFileError("fsync queue file: \(errnoText(errno))") }
    }

    /// Reads the whole message description (qmgr_message_read): every segment but the
    /// content. `lineLimit` bounds envelope records.
    public func readMessage(lineLimit: Int, recipientLimit: Int = 0) throws -> QueueMessage {
        var m = QueueMessage()
        seek(0)
        guard let first = try next(maxLength: lineLimit), first.record.type == .size else {
            throw QueueFileError("no size record")
        }
        let fields = first.record.text.split(separator: " ").map { Int($0) }
        guard fields.count >= 3, fields.allSatisfy({ $0 != nil }) else { throw QueueFileError("bad size record") }
        m.messageSize = fields[0]!
        m.dataOffset = fields[1]!
        m.recipientCount = fields[2]!
        m.qmgrFlags = fields.count > 3 ? fields[3]! : 0
        m.contentLength = fields.count > 4 ? fields[4]! : m.messageSize
        m.sendopts = fields.count > 5 ? fields[5]! : 0
        if m.dataOffset <= 0 || m.messageSize <= 0 { throw QueueFileError("bad size record: \(first.record.text)") }
        var pendingOriginal: String?
        var pendingNotify = 0
        var pendingDSN = ""
        // The offset of the first record of the recipient being assembled (A, O, R).
        var pendingStart = 0
        var segment = 0 // 0 envelope, 2 extracted
        var sawEnd = false
        var sawTime = false
        var sawSender = false
        var jumps = 0
        loop: while let (off, r) = try next(maxLength: lineLimit) {
            switch r.type {
            case .pointer:
                // Postfix's heap records: continue at the offset given (0 = a reserved slot).
                guard let target = Int(r.text.trimmingCharacters()) else { throw QueueFileError("bad pointer record") }
                if target > 0 {
                    jumps += 1
                    if jumps > 10000 { throw QueueFileError("too many pointer records") }
                    seek(target)
                }
            case .padding, .killed:
                break
            case .time:
                if !sawTime {
                    let p = r.text.split(separator: " ")
                    m.arrival.tv_sec = time_t(Int(p.first ?? "") ?? 0)
                    m.arrival.tv_usec = suseconds_t(p.count > 1 ? Int(p[1]) ?? 0 : 0)
                    sawTime = true
                }
            case .fullName:
                if m.fullName == nil { m.fullName = r.text }
            case .sender:
                if sawSender { throw QueueFileError("duplicate sender record") }
                m.sender = r.text
                sawSender = true
            case .warnTime:
                if m.warnOffset == 0 {
                    m.warnOffset = off
                    m.warnTime = Int(r.text.trimmingCharacters()) ?? 0
                }
            case .verp:
                m.verpDelimiters = r.text
            case .filter where segment != 1:
                m.filter = r.text
            case .redirect:
                m.redirect = r.text
            case .attribute:
                guard let (name, value) = r.attribute else { throw QueueFileError("bad attribute record") }
                switch name {
                case MailAttr.dsnNotifyFlags:
                    if pendingStart == 0 { pendingStart = off }
                    pendingNotify = Int(value) ?? 0
                case MailAttr.dsnOriginalRecipient:
                    if pendingStart == 0 { pendingStart = off }
                    pendingDSN = value
                case MailAttr.createTime: m.createTime = Int(value) ?? 0
                case MailAttr.traceFlags:
                    m.traceFlags = Int(value) ?? 0
                    m.traceFlagsOffset = off
                default: m.attributes[name] = value
                }
            case .originalRecipient:
                if pendingStart == 0 { pendingStart = off }
                pendingOriginal = r.text
            case .recipient:
                if recipientLimit > 0 && m.recipients.count >= recipientLimit {
                    if m.resumeOffset == 0 { m.resumeOffset = pendingStart > 0 ? pendingStart : off }
                } else {
                    m.recipients.append(QueueRecipient(offset: off, address: r.text, originalRecipient: pendingOriginal ?? "",
                                                       dsnOriginalRecipient: pendingDSN, notify: pendingNotify))
                }
                pendingOriginal = nil
                pendingNotify = 0
                pendingDSN = ""
                pendingStart = 0
            case .doneRecipient, .canceledRecipient:
                if r.type == .doneRecipient { m.doneCount += 1 }
                pendingOriginal = nil
                pendingNotify = 0
                pendingDSN = ""
                pendingStart = 0
            case .messageStart:
                // The content is skipped: the extracted segment follows it.
                segment = 1
                seek(m.dataOffset + m.messageSize)
            case .extractedStart:
                segment = 2
            case .end:
                sawEnd = true
                break loop
            case .normalText, .continuedText:
                if segment != 2 { throw QueueFileError("unexpected content record") }
            default:
                break
            }
        }
        if !sawEnd { throw QueueFileError("no end record") }
        if !sawSender { throw QueueFileError("no sender record") }
        if m.createTime == 0 { m.createTime = Int(m.arrival.tv_sec) }
        return m
    }

    /// Reads up to `limit` more recipients from `offset` (a resumeOffset); returns them
    /// and where the batch after them starts (0: none is left).
    public func readRecipients(from offset: Int, dataOffset: Int, messageSize: Int, limit: Int,
                               lineLimit: Int) throws -> (recipients: [QueueRecipient], resume: Int) {
        seek(offset)
        var out: [QueueRecipient] = []
        var pendingOriginal: String?
        var pendingNotify = 0
        var pendingDSN = ""
        var pendingStart = 0
        var jumps = 0
        while let (off, r) = try next(maxLength: lineLimit) {
            switch r.type {
            case .pointer:
                guard let target = Int(r.text.trimmingCharacters()) else { throw QueueFileError("bad pointer record") }
                if target > 0 {
                    jumps += 1
                    if jumps > 10000 { throw QueueFileError("too many pointer records") }
                    seek(target)
                }
            case .attribute:
                guard let (name, value) = r.attribute else { throw QueueFileError("bad attribute record") }
                if name == MailAttr.dsnNotifyFlags {
                    if pendingStart == 0 { pendingStart = off }
                    pendingNotify = Int(value) ?? 0
                } else if name == MailAttr.dsnOriginalRecipient {
                    if pendingStart == 0 { pendingStart = off }
                    pendingDSN = value
                }
            case .originalRecipient:
                if pendingStart == 0 { pendingStart = off }
                pendingOriginal = r.text
            case .recipient:
                if limit > 0 && out.count >= limit { return (out, pendingStart > 0 ? pendingStart : off) }
                out.append(QueueRecipient(offset: off, address: r.text, originalRecipient: pendingOriginal ?? "",
                                          dsnOriginalRecipient: pendingDSN, notify: pendingNotify))
                pendingOriginal = nil
                pendingNotify = 0
                pendingDSN = ""
                pendingStart = 0
            case .doneRecipient, .canceledRecipient:
                pendingOriginal = nil
                pendingNotify = 0
                pendingDSN = ""
                pendingStart = 0
            case .messageStart:
                seek(dataOffset + messageSize)
            case .end:
                return (out, 0)
            default:
                break
            }
        }
        throw QueueFileError("no end record")
    }
}

extension String {
    /// Without leading and trailing blanks (fixed-width numbers are space padded).
    public func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
