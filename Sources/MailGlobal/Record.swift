// Record: the queue file record format, on disk and on the cleanup/postdrop channels.
// Mirrors Postfix global/record.c, rec_type.h, rec_attr_map.c and rec_streamlf.c:
// type byte, little-endian base-128 length, data. Readers bound the length and reject
// truncated input rather than guessing.
import MailUtil

/// A record type letter.
public struct RecordType: Hashable, Sendable, CustomStringConvertible, ExpressibleByUnicodeScalarLiteral {
    public let rawValue: UInt8
    public init(_ raw: UInt8) { rawValue = raw }
    public init(unicodeScalarLiteral value: Unicode.Scalar) { rawValue = UInt8(value.value) }

    public static let size: RecordType = "C"
    public static let time: RecordType = "T"
    public static let createTime: RecordType = "c"
    public static let fullName: RecordType = "F"
    public static let inspector: RecordType = "I"
    public static let filter: RecordType = "L"
    public static let sender: RecordType = "S"
    public static let doneRecipient: RecordType = "D"
    public static let recipient: RecordType = "R"
    public static let originalRecipient: RecordType = "O"
    public static let canceledRecipient: RecordType = "/"
    public static let warnTime: RecordType = "W"
    public static let attribute: RecordType = "A"
    public static let killed: RecordType = "K"
    public static let redirect: RecordType = ">"
    public static let extraFlags: RecordType = "f"
    public static let delay: RecordType = "d"
    public static let messageStart: RecordType = "M"
    public static let normalText: RecordType = "N"
    /// "L" in the content segment: a line continued in the next record.
    public static let continuedText: RecordType = "L"
    public static let padding: RecordType = "w"
    public static let extractedStart: RecordType = "X"
    public static let returnReceipt: RecordType = "r"
    public static let errorsTo: RecordType = "e"
    public static let priority: RecordType = "P"
    public static let pointer: RecordType = "p"
    public static let verp: RecordType = "V"
    public static let dsnReturn: RecordType = "<"
    public static let dsnEnvelopeID: RecordType = "i"
    public static let dsnOriginalRecipient: RecordType = "o"
    public static let dsnNotify: RecordType = "n"
    public static let milterCount: RecordType = "m"
    public static let end: RecordType = "E"

    /// The name postcat prints.
    public var name: String {
        RecordType.names[rawValue] ?? "unknown_record_type_\(rawValue)"
    }

    public var description: String { String(UnicodeScalar(rawValue)) }

    static let names: [UInt8: String] = [
        UInt8(ascii: "C"): "message_size", UInt8(ascii: "T"): "message_arrival_time",
        UInt8(ascii: "c"): "queue_file_create_time", UInt8(ascii: "F"): "sender_fullname",
        UInt8(ascii: "I"): "content_inspector", UInt8(ascii: "L"): "content_filter",
        UInt8(ascii: "S"): "sender", UInt8(ascii: "D"): "done_recipient",
        UInt8(ascii: "R"): "recipient", UInt8(ascii: "O"): "original_recipient",
        UInt8(ascii: "/"): "canceled_recipient", UInt8(ascii: "W"): "warning_message_time",
        UInt8(ascii: "A"): "named_attribute", UInt8(ascii: "K"): "killed_record",
        UInt8(ascii: ">"): "redirect_to", UInt8(ascii: "f"): "cleanup_flags",
        UInt8(ascii: "d"): "delay", UInt8(ascii: "M"): "message_content",
        UInt8(ascii: "N"): "regular_text", UInt8(ascii: "w"): "padding",
        UInt8(ascii: "X"): "extracted_info", UInt8(ascii: "r"): "return_receipt",
        UInt8(ascii: "e"): "errors_to", UInt8(ascii: "P"): "priority",
        UInt8(ascii: "p"): "pointer_record", UInt8(ascii: "V"): "verp_delimiters",
        UInt8(ascii: "<"): "dsn_return_flags", UInt8(ascii: "i"): "dsn_envelope_id",
        UInt8(ascii: "o"): "dsn_original_recipient", UInt8(ascii: "n"): "dsn_notify_flags",
        UInt8(ascii: "m"): "milter_count", UInt8(ascii: "E"): "message_end",
    ]
}

/// The record sets allowed in each part of a queue file.
public enum RecordSegment: Sendable {
    case envelope, content, extracted

    public var allowed: Set<UInt8> {
        switch self {
        case .envelope: return Set("MCTcFILSDRO/WVA>K<ion".utf8)
        case .content: return Set("XLNw".utf8)
        case .extracted: return Set("EDRO/PreAFIL>Kon".utf8)
        }
    }

    /// What sendmail may send to postdrop in each part.
    public var allowedFromPostdropClient: Set<UInt8> {
        switch self {
        case .envelope: return Set("MCFSRVAin".utf8)
        case .content: return Set("XLN".utf8)
        case .extracted: return Set("EAR".utf8)
        }
    }
}

public struct Record: Equatable, Sendable {
    public var type: RecordType
    public var data: [UInt8]

    public init(_ type: RecordType, _ data: [UInt8]) {
        self.type = type
        self.data = data
    }

    public init(_ type: RecordType, _ text: String) {
        self.init(type, Array(text.utf8))
    }

    public var text: String { String(decoding: data, as: UTF8.self) }

    /// For "A" records: the name and value around the first "=".
    public var attribute: (name: String, value: String)? {
        guard type == .attribute, let eq = data.firstIndex(of: UInt8(ascii: "=")) else { return nil }
        return (String(decoding: data[..<eq], as: UTF8.self), String(decoding: data[(eq + 1)...], as: UTF8.self))
    }

    /// The type this record stands for after rec_attr_map: some "A" records carry
    /// DSN data and the creation time under pseudo types.
    public var mappedType: RecordType {
        guard let a = attribute else { return type }
        switch a.name {
        case MailAttr.dsnOriginalRecipient: return .dsnOriginalRecipient
        case MailAttr.dsnNotifyFlags: return .dsnNotify
        case MailAttr.dsnEnvelopeID: return .dsnEnvelopeID
        case MailAttr.dsnRetFlags: return .dsnReturn
        case MailAttr.createTime: return .createTime
        default: return type
        }
    }
}

public enum RecordError: Error, Equatable, CustomStringConvertible {
    case truncatedLength(RecordType)
    case tooManyLengthBits(RecordType)
    case illegalLength(Int, RecordType)
    case truncatedData(RecordType, Int)
    case stream(StreamError)

    public var description: String {
        switch self {
        case .truncatedLength(let t): return "unexpected EOF reading length, record type \(t.rawValue)"
        case .tooManyLengthBits(let t): return "too many length bits, record type \(t.rawValue)"
        case .illegalLength(let n, let t): return "illegal length \(n), record type \(t.rawValue)"
        case .truncatedData(let t, let n): return "unexpected EOF in data, record type \(t.rawValue) length \(n)"
        case .stream(let e): return e.description
        }
    }
}

public enum RecordCodec {
    /// Appends the encoding of one record.
    public static func append(_ out: inout [UInt8], _ type: RecordType, _ data: some Collection<UInt8>) {
        out.append(type.rawValue)
        appendLength(&out, data.count)
        out.append(contentsOf: data)
    }

    public static func appendLength(_ out: inout [UInt8], _ length: Int) {
        var len = length
        repeat {
            var b = UInt8(len & 0x7F)
            len >>= 7
            if len != 0 { b |= 0x80 }
            out.append(b)
        } while len != 0
    }

    public static func encode(_ records: [Record]) -> [UInt8] {
        var out = [UInt8]()
        for r in records { append(&out, r.type, r.data) }
        return out
    }

    /// Appends a text line as records: pieces of at most `limit` bytes, all but the last
    /// as continued text ("L"), the last as "N".
    public static func appendText(_ out: inout [UInt8], _ line: some Collection<UInt8>, limit: Int) {
        var rest = Array(line)[...]
        while limit > 0 && rest.count > limit {
            append(&out, .continuedText, rest.prefix(limit))
            rest = rest.dropFirst(limit)
        }
        append(&out, .normalText, rest)
    }

    /// Decodes every record in `bytes` (for tests and tools).
    public static func decode(_ bytes: [UInt8], maxLength: Int = 0) throws -> [Record] {
        var out: [Record] = []
        var i = 0
        while i < bytes.count {
            let type = RecordType(bytes[i])
            i += 1
            var len = 0
            var shift = 0
            while true {
                if shift >= 32 { throw RecordError.tooManyLengthBits(type) }
                guard i < bytes.count else { throw RecordError.truncatedLength(type) }
                let b = bytes[i]
                i += 1
                len |= Int(b & 0x7F) << shift
                if b & 0x80 == 0 { break }
                shift += 7
            }
            if len > Int(Int32.max) || (maxLength > 0 && len > maxLength) {
                throw RecordError.illegalLength(len, type)
            }
            guard bytes.count - i >= len else { throw RecordError.truncatedData(type, len) }
            out.append(Record(type, Array(bytes[i..<(i + len)])))
            i += len
        }
        return out
    }

    /// Formats the 95-byte payload of a size record (six %15ld fields).
    public static func sizePayload(_ fields: [Int]) -> String {
        precondition(fields.count == 6, "the size record has six fields")
        return fields.map { padLeft(String($0), 15) }.joined(separator: " ")
    }

    /// Formats a fixed-width %15ld value (warning time, pointer records).
    public static func fixed15(_ value: Int) -> String { padLeft(String(value), 15) }

    static func padLeft(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }
}

/// Reads records from a stream.
public final class RecordReader {
    public let stream: FDStream
    public init(_ stream: FDStream) { self.stream = stream }

    /// Reads the next record; nil at end of input before a record starts. A length over
    /// `maxLength` (0 = no limit) is an error; the data is skipped first, as Postfix does.
    public func read(maxLength: Int = 0) throws -> Record? {
        do {
            guard let t = try stream.readByte() else { return nil }
            let type = RecordType(t)
            var len = 0
            var shift = 0
            while true {
                if shift >= 32 { throw RecordError.tooManyLengthBits(type) }
                guard let b = try stream.readByte() else { throw RecordError.truncatedLength(type) }
                len |= Int(b & 0x7F) << shift
                if b & 0x80 == 0 { break }
                shift += 7
            }
            if len > Int(Int32.max) || (maxLength > 0 && len > maxLength) {
                var left = min(len, Int(Int32.max))
                while left > 0 {
                    let chunk = try stream.read(upTo: min(left, 65536))
                    if chunk.isEmpty { break }
                    left -= chunk.count
                }
                throw RecordError.illegalLength(len, type)
            }
            do {
                return Record(type, try stream.read(exactly: len))
            } catch StreamError.eof {
                throw RecordError.truncatedData(type, len)
            }
        } catch let e as StreamError {
            throw RecordError.stream(e)
        }
    }
}
