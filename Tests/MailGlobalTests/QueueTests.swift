import Testing
import TestSupport
import Glibc
@testable import MailGlobal
@testable import MailUtil

@Suite struct QueueIDTests {
    @Test func shortIDFormat() {
        let id = QueueID.short(usec: 123456, inode: 1234567)
        #expect(id.text == "1E24012D687")
        #expect(!id.isLong)
        #expect(id.hashDirectories(depth: 2) == ["1", "E"])
        #expect(QueueID.short(usec: 5, inode: 0xA).text == "00005A")
    }

    @Test func longIDFormat() {
        let id = QueueID.long(sec: 1724307000, usec: 123456, inode: 1234567)
        #expect(id.text == "4WqCV00sf8z9HdB")
        #expect(id.isLong)
        // Long IDs hash on the hex of their microseconds, like the short ID of that moment.
        #expect(id.hashText == "1E240")
        #expect(id.hashDirectories(depth: 1) == ["1"])
        #expect(!id.text.dropLast(5).contains("z") || id.text.firstIndex(of: "z") == id.text.index(id.text.startIndex, offsetBy: 10))
    }

    @Test func validation() {
        #expect(QueueID("1E24012D687") != nil)
        #expect(QueueID("") == nil)
        #expect(QueueID("../etc") == nil)
        #expect(QueueID(String(repeating: "A", count: 256)) == nil)
        #expect(QueueName.isValid("deferred"))
        #expect(!QueueName.isValid("defer/red"))
    }

    @Test func inodeNumbersAndRenaming() {
        let short = QueueID.short(usec: 0x12345, inode: 0xABCDEF)
        #expect(short.inode == 0xABCDEF)
        #expect(short.renamed(inode: 0x99, long: false).text == "1234599")
        #expect(short.renamed(inode: 0x99, long: true).text == "1234599")
        let long = QueueID.long(sec: 1_700_000_000, usec: 0x12345, inode: 123_456_789)
        #expect(long.inode == 123_456_789)
        #expect(long.renamed(inode: 5, long: true) == QueueID.long(sec: 1_700_000_000, usec: 0x12345, inode: 5))
        // Long to short keeps the microseconds, as postsuper -s does for enable_long_queue_ids = no.
        #expect(long.renamed(inode: 0x1F, long: false).text == "123451F")
        #expect(QueueID("12345")!.inode == nil)
        #expect(QueueID("12345XYZ")!.inode == nil)
    }

    @Test func queuePathsAndCreation() throws {
        var t = Array("/tmp/swallow-q-XXXXXX".utf8CString)
        let root = t.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        mkdir(root + "/incoming", 0o700)
        let q = MailQueue(root: root)
        let (id, fd) = try q.create(in: "incoming")
        defer { close(fd) }
        var st = stat()
        #expect(stat(q.path("incoming", id), &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(!QueueFileMode.isReady(st.st_mode))
        #expect(id.text.hasSuffix(String(UInt64(st.st_ino), radix: 16, uppercase: true)))
        try q.move(id, from: "incoming", to: "deferred")
        #expect(q.path("deferred", id) == "\(root)/deferred/\(id.text.prefix(1))/\(id.text)")
        #expect(stat(q.path("deferred", id), &st) == 0)
        try q.remove("deferred", id)
        #expect(throws: SystemError.self) { try q.remove("deferred", id) }
        let lq = MailQueue(root: root, longIDs: true)
        let (lid, lfd) = try lq.create(in: "incoming")
        close(lfd)
        #expect(lid.isLong)
    }
}

@Suite struct RecordTests {
    @Test(arguments: [(0, [0x00]), (17, [0x11]), (95, [0x5F]), (127, [0x7F]), (200, [0xC8, 0x01]), (16384, [0x80, 0x80, 0x01])])
    func lengthEncoding(length: Int, encoded: [UInt8]) {
        var out: [UInt8] = []
        RecordCodec.appendLength(&out, length)
        #expect(out == encoded)
    }

    @Test func senderAndEndRecords() throws {
        let data = RecordCodec.encode([Record(.sender, "alice@example.org"), Record(.messageStart, ""), Record(.end, "")])
        #expect(data == [0x53, 0x11] + bytes("alice@example.org") + [0x4D, 0x00, 0x45, 0x00])
    }

    @Test func sizeRecordIsFixedWidth() {
        let p = RecordCodec.sizePayload([418, 182, 1, 0, 418, 0])
        #expect(p.utf8.count == 95)
        #expect(p == "            418             182               1               0             418               0")
        #expect(RecordCodec.fixed15(-1) == "             -1")
    }

    @Test func longLinesSplitIntoContinuations() throws {
        var out: [UInt8] = []
        RecordCodec.appendText(&out, bytes("abcdefghij"), limit: 4)
        RecordCodec.appendText(&out, [], limit: 4)
        let recs = try RecordCodec.decode(out)
        #expect(recs.map(\.type) == [.continuedText, .continuedText, .normalText, .normalText])
        #expect(recs.map(\.text) == ["abcd", "efgh", "ij", ""])
    }

    @Test func streamReaderDripFed() throws {
        var recs = [Record(.size, RecordCodec.sizePayload([1, 2, 3, 0, 5, 0])), Record(.time, "1724307000 123456"),
                    Record(.attribute, "rewrite_context=local"), Record(.sender, ""),
                    Record(.recipient, String(repeating: "r", count: 300)), Record(.end, "")]
        recs.append(Record(.normalText, [0, 1, 2, 0x0D, 0x0A]))
        let data = RecordCodec.encode(recs)
        for chunk in feedSizes {
            let r = RecordReader(makeStream(data, chunk: chunk))
            var got: [Record] = []
            while let rec = try r.read(maxLength: 2048) { got.append(rec) }
            #expect(got == recs)
        }
    }

    @Test func malformedRecords() throws {
        #expect(throws: RecordError.truncatedLength(.sender)) { try RecordCodec.decode([0x53, 0x80]) }
        #expect(throws: RecordError.truncatedData(.sender, 5)) { try RecordCodec.decode([0x53, 0x05, 0x61]) }
        #expect(throws: RecordError.tooManyLengthBits(.sender)) { try RecordCodec.decode([0x53, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) }
        #expect(throws: RecordError.illegalLength(3000, .sender)) {
            try RecordCodec.decode([0x53] + [0xB8, 0x17] + [UInt8](repeating: 0x61, count: 3000), maxLength: 2048)
        }
        let r = RecordReader(makeStream([0x53, 0xB8, 0x17] + [UInt8](repeating: 0x61, count: 3000) + [0x45, 0x00], chunk: 7))
        #expect(throws: RecordError.illegalLength(3000, .sender)) { try r.read(maxLength: 2048) }
        #expect(try r.read() == Record(.end, ""))
    }

    @Test func attributeRecordsMapToPseudoTypes() {
        #expect(Record(.attribute, "dsn_orig_rcpt=rfc822;bob@example.net").mappedType == .dsnOriginalRecipient)
        #expect(Record(.attribute, "notify_flags=2").mappedType == .dsnNotify)
        #expect(Record(.attribute, "create_time=1").mappedType == .createTime)
        #expect(Record(.attribute, "rewrite_context=local").mappedType == .attribute)
        #expect(Record(.attribute, "rewrite_context=local").attribute! == ("rewrite_context", "local"))
        #expect(RecordType.size.name == "message_size" && RecordType.end.name == "message_end")
        #expect(RecordSegment.envelope.allowed.contains(UInt8(ascii: "S")))
        #expect(!RecordSegment.content.allowed.contains(UInt8(ascii: "S")))
        #expect(!RecordSegment.envelope.allowedFromPostdropClient.contains(UInt8(ascii: "p")))
    }
}
