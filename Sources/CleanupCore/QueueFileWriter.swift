// QueueFileWriter: record output to a queue file with a running offset, in-place patches
// (the size record), a size limit, and the final fsync.
// Mirrors Postfix cleanup/cleanup_out.c with the record layer of util/record.c.
import Glibc
import MailUtil
import MailGlobal

final class QueueFileWriter {
    let fd: Int32
    let path: String
    /// message_size_limit: the queue file may not grow beyond this (0 = no limit).
    let sizeLimit: Int
    let lineLimit: Int
    private var buffer: [UInt8] = []
    private var flushedOffset = 0
    /// What went wrong while writing (size or write error); writing stops after one.
    private(set) var status: CleanupStatus = []
    var queueID = ""

    init(fd: Int32, path: String, sizeLimit: Int, lineLimit: Int) {
        self.fd = fd
        self.path = path
        self.sizeLimit = sizeLimit
        self.lineLimit = lineLimit
        buffer.reserveCapacity(65536)
    }

    /// The offset the next record will have.
    var offset: Int { flushedOffset + buffer.count }

    var ok: Bool { status.isEmpty }

    /// Writes one record; text records longer than line_length_limit are split into
    /// unterminated ('L') pieces followed by the rest.
    func put(_ type: RecordType, _ data: some Collection<UInt8>) {
        guard ok else { return }
        let isText = type == .normalText || type == .continuedText
        if isText && data.count > lineLimit {
            var rest = data[...]
            while rest.count > lineLimit {
                RecordCodec.append(&buffer, .continuedText, rest.prefix(lineLimit))
                rest = rest.dropFirst(lineLimit)
            }
            RecordCodec.append(&buffer, type, rest)
        } else {
            RecordCodec.append(&buffer, type, data)
        }
        if sizeLimit > 0 && offset > sizeLimit {
            Msg.warn("\(queueID): queue file size limit exceeded")
            status.insert(.size)
            buffer.removeAll()
            return
        }
        if buffer.count >= 65536 { flush() }
    }

    func put(_ type: RecordType, _ text: String) { put(type, Array(text.utf8)) }

    func attribute(_ name: String, _ value: String) { put(.attribute, name + "=" + value) }

    func flush() {
        guard ok, !buffer.isEmpty else { return }
        if !writeAll(fd, buffer) {
            Msg.warn("\(queueID): write queue file: \(errnoText(errno))")
            status.insert(errno == EFBIG ? .size : .write)
        }
        flushedOffset += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }

    /// Overwrites bytes at an earlier offset (after flushing).
    func patch(at position: Int, _ bytes: [UInt8]) {
        flush()
        guard ok else { return }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, off_t(position)) }
        if n != bytes.count {
            Msg.warn("\(queueID): update queue file: \(errnoText(errno))")
            status.insert(.write)
        }
    }

    /// Makes the file complete: mode 0700 (ready), then fsync.
    func finish() {
        flush()
        guard ok else { return }
        if fchmod(fd, 0o700) < 0 || fsync(fd) < 0 {
            Msg.warn("\(queueID): \(path): \(errnoText(errno))")
            status.insert(.write)
        }
    }
}
