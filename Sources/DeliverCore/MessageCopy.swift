// MessageCopy: the message content of a queue file written to a mailbox, a file or a
// command: the optional From_ line, Return-Path, X-Original-To and Delivered-To, the
// content with ">From " quoting when mbox wants it, and the closing blank line.
// Mirrors Postfix global/mail_copy.c; the "file too large" mapping is mbox_open.c's
// mbox_dsn.
import Glibc
import MailUtil
import MailGlobal

public struct CopyFlags: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let from = CopyFlags(rawValue: 1)
    public static let quote = CopyFlags(rawValue: 2)
    public static let toFile = CopyFlags(rawValue: 4)
    public static let returnPath = CopyFlags(rawValue: 8)
    public static let delivered = CopyFlags(rawValue: 16)
    public static let originalRecipient = CopyFlags(rawValue: 32)
    public static let blank = CopyFlags(rawValue: 64)
    public static let dot = CopyFlags(rawValue: 128)
    public static let mbox: CopyFlags = [.from, .quote, .toFile, .returnPath, .delivered, .originalRecipient, .blank]
}

public enum MessageCopy {
    /// The lines before the content.
    public static func prefix(sender: String, originalRecipient: String, delivered: String, flags: CopyFlags,
                              eol: String = "\n") -> String {
        var out = ""
        let quoted = sender.isEmpty ? "" : Quote822.quote822(sender)
        if flags.contains(.from) {
            let date = MailDate.asctime(time(nil))
            out += "From \(sender.isEmpty ? "MAILER-DAEMON" : quoted)  \(date)\(eol)"
        }
        if flags.contains(.returnPath) { out += "Return-Path: <\(quoted)>\(eol)" }
        if flags.contains(.originalRecipient) && !originalRecipient.isEmpty {
            out += "X-Original-To: \(Quote822.quote822(originalRecipient))\(eol)"
        }
        if flags.contains(.delivered) { out += "Delivered-To: \(Quote822.quote822(delivered))\(eol)" }
        return out
    }

    /// Streams the content records from `offset` through `write`; returns false when a
    /// record other than text or the end of content turned up (a corrupt file).
    public static func content(fd: Int32, offset: Int, flags: CopyFlags, eol: String = "\n",
                               write: ([UInt8]) throws -> Void) throws -> Bool {
        let reader = QueueFileReader(fd: fd)
        reader.seek(offset)
        let eolBytes = Array(eol.utf8)
        var prevNormal = true
        var out: [UInt8] = []
        out.reserveCapacity(65536)
        var sawEnd = false
        while let (_, r) = try reader.next(maxLength: 0) {
            if r.type != .normalText && r.type != .continuedText {
                sawEnd = r.type == .extractedStart
                break
            }
            if prevNormal {
                if flags.contains(.quote) && r.data.starts(with: [0x46, 0x72, 0x6F, 0x6D, 0x20]) { out.append(UInt8(ascii: ">")) }
                if flags.contains(.dot) && r.data.first == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            }
            out += r.data
            if r.type == .normalText { out += eolBytes }
            prevNormal = r.type == .normalText
            if out.count >= 65536 {
                try write(out)
                out.removeAll(keepingCapacity: true)
            }
        }
        if !prevNormal { out += eolBytes }
        if flags.contains(.blank) { out += eolBytes }
        if !out.isEmpty { try write(out) }
        if !sawEnd { Msg.warn("bad record type in message content") }
        return sawEnd
    }

    /// mbox_dsn: the DSN code of a write error (a full file system or file size limit
    /// is a mailbox-full condition).
    public static func dsnCode(errno e: Int32, default d: String) -> String {
        switch e {
        case EAGAIN, ESTALE: return "4.2.0"
        case ENOSPC: return "4.3.0"
        case EDQUOT, EFBIG: return "5.2.2"
        default: return d
        }
    }

    /// Appends prefix and content to an open file, fsyncs it, and truncates it back to
    /// its old length on error. Returns nil on success, else the DSN and the reason.
    public static func toFile(fd: Int32, queueFD: Int32, offset: Int, sender: String, originalRecipient: String,
                              delivered: String, flags: CopyFlags) -> DeliveryStatus? {
        let origLength = lseek(fd, 0, SEEK_END)
        if origLength < 0 { Msg.fatal("seek file: \(errnoText(errno))") }
        var writeErrno: Int32 = 0
        func put(_ b: [UInt8]) throws {
            var off = 0
            while off < b.count {
                let n = b.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
                if n < 0 {
                    if errno == EINTR { continue }
                    writeErrno = errno
                    throw SystemError.current("write")
                }
                off += n
            }
        }
        var readError: String?
        var corrupt = false
        do {
            try put(Array(prefix(sender: sender, originalRecipient: originalRecipient, delivered: delivered, flags: flags).utf8))
            corrupt = !(try content(fd: queueFD, offset: offset, flags: flags, write: put))
        } catch let e as QueueFileError {
            readError = e.text
        } catch {}
        if writeErrno == 0 && fsync(fd) < 0 { writeErrno = errno }
        if writeErrno != 0 || readError != nil || corrupt {
            _ = ftruncate(fd, origLength)
        }
        func unix(_ status: String, _ reason: String) -> DeliveryStatus {
            DeliveryStatus(status: status, reason: reason, diagnosticType: "x-unix", diagnosticText: "input/output error")
        }
        if let readError { return unix("4.3.0", "error reading message: \(readError)") }
        if writeErrno != 0 { return unix(dsnCode(errno: writeErrno, default: "5.3.0"), "error writing message: \(errnoText(writeErrno))") }
        if corrupt { return DeliveryStatus(status: "4.3.0", reason: "queue file write error") }
        return nil
    }
}
