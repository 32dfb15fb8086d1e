// Attr: attribute lists of Postfix's internal protocols, and their three wire encodings.
// Mirrors Postfix util/attr_print0.c, attr_scan0.c, attr_print_plain.c, attr_scan_plain.c,
// attr_print64.c and attr_scan64.c. Lists are ordered and names may repeat (a resolve reply
// carries two "flags"), so readers search forward by name as attr_scan does.
//   attr0:  name\0value\0 ... \0          (every internal service)
//   plain:  name=value\n ... \n           (anvil, policy servers)
//   attr64: base64(name):base64(value)\n ... \n
// A hash group is "{" ... "}" written as names without values. Integers travel as unsigned
// 32-bit decimal (-1 is 4294967295), longs as unsigned 64-bit, binary data as base64.
import MailUtil

public enum AttrEncoding: Sendable {
    case attr0, plain, attr64
}

/// One name/value pair inside a hash group.
public struct AttrPair: Equatable, Sendable {
    public var name: String
    public var value: [UInt8]
    public init(_ name: String, _ value: [UInt8]) {
        self.name = name
        self.value = value
    }
    public init(_ name: String, _ value: String) {
        self.init(name, Array(value.utf8))
    }
}

/// One element of an attribute list.
public enum AttrItem: Equatable, Sendable {
    case pair(name: String, value: [UInt8])
    case hash([AttrPair])

    public var name: String? {
        if case .pair(let n, _) = self { return n }
        return nil
    }
}

/// Why an attribute list could not be written or read.
public enum AttrError: Error, Equatable, CustomStringConvertible {
    /// A name or value holds a byte its encoding cannot carry.
    case unencodable(String)
    /// The input broke the protocol.
    case malformed(String)
    /// The input ended inside a list.
    case truncated
    /// A requested attribute was not in the list.
    case missing(String)
    /// An attribute appeared that was not expected (strict scanning).
    case unexpected(String)
    /// The stream failed.
    case stream(StreamError)

    public var description: String {
        switch self {
        case .unencodable(let s): return "cannot encode attribute: \(s)"
        case .malformed(let s): return s
        case .truncated: return "premature end-of-input while reading attribute list"
        case .missing(let n): return "missing attribute \(n)"
        case .unexpected(let n): return "unexpected attribute \(n)"
        case .stream(let e): return e.description
        }
    }
}

/// An ordered attribute list.
public struct AttrList: Equatable, Sendable, ExpressibleByArrayLiteral {
    public var items: [AttrItem]

    public init(_ items: [AttrItem] = []) { self.items = items }
    public init(arrayLiteral elements: AttrItem...) { items = elements }

    public mutating func append(_ name: String, _ value: String) {
        items.append(.pair(name: name, value: Array(value.utf8)))
    }
    public mutating func append(_ name: String, bytes: [UInt8]) {
        items.append(.pair(name: name, value: bytes))
    }
    /// An int: its unsigned 32-bit pattern in decimal.
    public mutating func append(_ name: String, int value: Int) {
        append(name, String(UInt32(truncatingIfNeeded: value)))
    }
    /// A long: its unsigned 64-bit pattern in decimal.
    public mutating func append(_ name: String, long value: Int64) {
        append(name, String(UInt64(bitPattern: value)))
    }
    /// Binary data: base64.
    public mutating func append(_ name: String, data: [UInt8]) {
        items.append(.pair(name: name, value: Base64.encode(data)))
    }
    public mutating func appendHash(_ pairs: [AttrPair]) {
        items.append(.hash(pairs))
    }

    /// A scanner that reads this list the way attr_scan does.
    public func scanner(strict: Bool = false) -> AttrScanner { AttrScanner(self, strict: strict) }
}

/// Reads requested attributes in order, skipping others (or, when strict, refusing them).
public struct AttrScanner {
    public let list: AttrList
    public let strict: Bool
    public private(set) var position = 0

    public init(_ list: AttrList, strict: Bool = false) {
        self.list = list
        self.strict = strict
    }

    /// The raw value of the next attribute called `name`.
    public mutating func bytes(_ name: String) throws -> [UInt8] {
        while position < list.items.count {
            let item = list.items[position]
            position += 1
            if case .pair(let n, let v) = item, n == name { return v }
            if strict { throw AttrError.unexpected(item.name ?? "{") }
        }
        throw AttrError.missing(name)
    }

    public mutating func string(_ name: String) throws -> String {
        String(decoding: try bytes(name), as: UTF8.self)
    }

    /// An int, accepting the unsigned 32-bit form of negative values.
    public mutating func int(_ name: String) throws -> Int {
        let v = try string(name)
        guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let u = UInt32(v) else {
            throw AttrError.malformed("malformed numerical data while reading input attribute \(name): \(v.prefix(100))")
        }
        return Int(Int32(bitPattern: u))
    }

    public mutating func long(_ name: String) throws -> Int64 {
        let v = try string(name)
        guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let u = UInt64(v) else {
            throw AttrError.malformed("malformed numerical data while reading input attribute \(name): \(v.prefix(100))")
        }
        return Int64(bitPattern: u)
    }

    public mutating func data(_ name: String) throws -> [UInt8] {
        let v = try bytes(name)
        guard let d = Base64.decode(v) else {
            throw AttrError.malformed("malformed base64 data while reading input attribute \(name)")
        }
        return d
    }

    /// The next hash group.
    public mutating func hash() throws -> [AttrPair] {
        while position < list.items.count {
            let item = list.items[position]
            position += 1
            if case .hash(let pairs) = item { return pairs }
            if strict { throw AttrError.unexpected(item.name ?? "{") }
        }
        throw AttrError.missing("{")
    }

    /// Requires the next attribute `name` to have exactly `value` (RECV_ATTR_STREQ).
    public mutating func expect(_ name: String, equals value: String) throws {
        let got = try string(name)
        if got != value {
            throw AttrError.malformed("unexpected \(name) value: \"\(got)\" (expecting: \"\(value)\")")
        }
    }

    /// True when no attributes are left.
    public var atEnd: Bool { position >= list.items.count }
}

public enum AttrCodec {
    /// Encodes a list; the terminator is left off when `more` is set (ATTR_FLAG_MORE).
    public static func encode(_ list: AttrList, _ encoding: AttrEncoding, more: Bool = false) throws -> [UInt8] {
        var out = [UInt8]()
        for item in list.items {
            switch item {
            case .pair(let name, let value):
                try encodePair(&out, Array(name.utf8), value, encoding)
            case .hash(let pairs):
                try encodeBare(&out, Array("{".utf8), encoding)
                for p in pairs { try encodePair(&out, Array(p.name.utf8), p.value, encoding) }
                try encodeBare(&out, Array("}".utf8), encoding)
            }
        }
        if !more { out.append(encoding == .attr0 ? 0 : 0x0A) }
        return out
    }

    private static func checkName(_ name: [UInt8], _ enc: AttrEncoding) throws {
        if name.isEmpty { throw AttrError.unencodable("empty attribute name") }
        switch enc {
        case .attr0:
            if name.contains(0) { throw AttrError.unencodable("NUL in attribute name") }
        case .plain:
            if name.contains(0x0A) || name.contains(UInt8(ascii: "=")) || name.contains(0) {
                throw AttrError.unencodable("newline, '=' or NUL in attribute name")
            }
        case .attr64:
            break
        }
    }

    private static func encodePair(_ out: inout [UInt8], _ name: [UInt8], _ value: [UInt8], _ enc: AttrEncoding) throws {
        try checkName(name, enc)
        switch enc {
        case .attr0:
            if value.contains(0) { throw AttrError.unencodable("NUL in value of attribute \(String(decoding: name, as: UTF8.self))") }
            out += name; out.append(0); out += value; out.append(0)
        case .plain:
            if value.contains(0x0A) { throw AttrError.unencodable("newline in value of attribute \(String(decoding: name, as: UTF8.self))") }
            out += name; out.append(UInt8(ascii: "=")); out += value; out.append(0x0A)
        case .attr64:
            out += Base64.encode(name); out.append(UInt8(ascii: ":")); out += Base64.encode(value); out.append(0x0A)
        }
    }

    private static func encodeBare(_ out: inout [UInt8], _ name: [UInt8], _ enc: AttrEncoding) throws {
        switch enc {
        case .attr0:
            out += name; out.append(0)
        case .plain:
            // Postfix writes sizeof("{") bytes here: the brace and its NUL.
            out += name; out.append(0); out.append(0x0A)
        case .attr64:
            out += Base64.encode(name); out.append(0x0A)
        }
    }
}

/// What the reader found next.
public enum AttrEvent: Equatable {
    case pair(name: String, value: [UInt8])
    case hashStart
    case hashEnd
    /// The list terminator.
    case end
}

/// Reads attribute lists from a stream, with limits on sizes and counts.
public final class AttrReader {
    public let stream: FDStream
    public let encoding: AttrEncoding
    /// Longest name or value accepted.
    public var maxStringLength = 1 << 20
    /// Most attributes accepted in one list, and in one hash group (ATTR_HASH_LIMIT).
    public var maxItems = 100_000
    public var maxHashItems = 1024

    public init(_ stream: FDStream, encoding: AttrEncoding = .attr0) {
        self.stream = stream
        self.encoding = encoding
    }

    /// Reads one complete list; nil when the stream is at end of input before the list.
    public func readList() throws -> AttrList? {
        var list = AttrList()
        var hash: [AttrPair]?
        var first = true
        while true {
            guard let ev = try next(atStart: first) else { return nil }
            first = false
            switch ev {
            case .end:
                if hash != nil { throw AttrError.malformed("list ended inside a hash group") }
                return list
            case .hashStart:
                if hash != nil { throw AttrError.malformed("nested hash group") }
                hash = []
            case .hashEnd:
                guard let h = hash else { throw AttrError.malformed("unexpected '}' in attribute list") }
                list.items.append(.hash(h))
                hash = nil
            case .pair(let n, let v):
                if hash != nil {
                    if hash!.count >= maxHashItems { throw AttrError.malformed("too many attributes in hash group") }
                    hash!.append(AttrPair(n, v))
                } else {
                    list.items.append(.pair(name: n, value: v))
                }
            }
            if list.items.count > maxItems { throw AttrError.malformed("too many attributes in list") }
        }
    }

    /// Peeks for more attributes in the current list (attr_scan_more): consumes a
    /// terminator and returns false, returns true when an attribute follows, nil at EOF.
    public func more() throws -> Bool? {
        do {
            guard let b = try stream.peekByte() else { return nil }
            if b == (encoding == .attr0 ? 0 : 0x0A) {
                _ = try stream.readByte()
                return false
            }
            return true
        } catch let e as StreamError {
            throw AttrError.stream(e)
        }
    }

    /// Reads the named attributes, in this order, of a list that goes on (attr_scan with
    /// ATTR_FLAG_MORE|ATTR_FLAG_STRICT): no terminator is consumed.
    public func scanMore(_ names: [String]) throws -> [[UInt8]] {
        var values: [[UInt8]] = []
        for (i, name) in names.enumerated() {
            guard let ev = try next(atStart: i == 0) else { throw AttrError.truncated }
            guard case .pair(let n, let v) = ev, n == name else {
                throw AttrError.malformed("expected attribute \(name)")
            }
            values.append(v)
        }
        return values
    }

    /// Reads the next element. At the start of a list, end of input yields nil.
    public func next(atStart: Bool = false) throws -> AttrEvent? {
        do {
            switch encoding {
            case .attr0:
                guard let name = try readUntil(0, atStart: atStart) else { return nil }
                if name.isEmpty { return .end }
                if name == [UInt8(ascii: "{")] { return .hashStart }
                if name == [UInt8(ascii: "}")] { return .hashEnd }
                guard let value = try readUntil(0, atStart: false) else { throw AttrError.truncated }
                return .pair(name: String(decoding: name, as: UTF8.self), value: value)
            case .plain:
                guard var line = try readUntil(0x0A, atStart: atStart) else { return nil }
                if line.isEmpty { return .end }
                guard let eq = line.firstIndex(of: UInt8(ascii: "=")) else {
                    if let z = line.firstIndex(of: 0) { line.removeSubrange(z...) }
                    if line == [UInt8(ascii: "{")] { return .hashStart }
                    if line == [UInt8(ascii: "}")] { return .hashEnd }
                    return .pair(name: String(decoding: line, as: UTF8.self), value: [])
                }
                return .pair(name: String(decoding: line[..<eq], as: UTF8.self), value: Array(line[(eq + 1)...]))
            case .attr64:
                guard let line = try readUntil(0x0A, atStart: atStart) else { return nil }
                if line.isEmpty { return .end }
                let colon = line.firstIndex(of: UInt8(ascii: ":"))
                guard let name = Base64.decode(line[..<(colon ?? line.endIndex)]) else {
                    throw AttrError.malformed("malformed base64 data in attribute name")
                }
                if colon == nil {
                    if name == [UInt8(ascii: "{")] { return .hashStart }
                    if name == [UInt8(ascii: "}")] { return .hashEnd }
                    return .pair(name: String(decoding: name, as: UTF8.self), value: [])
                }
                guard let value = Base64.decode(line[(colon! + 1)...]) else {
                    throw AttrError.malformed("malformed base64 data in attribute value")
                }
                return .pair(name: String(decoding: name, as: UTF8.self), value: value)
            }
        } catch let e as StreamError {
            throw AttrError.stream(e)
        }
    }

    private func readUntil(_ terminator: UInt8, atStart: Bool) throws -> [UInt8]? {
        let (bytes, found, overflow) = try stream.read(through: terminator, maxCount: maxStringLength)
        if overflow { throw AttrError.malformed("attribute string longer than \(maxStringLength) bytes") }
        if !found {
            if atStart && bytes.isEmpty { return nil }
            throw AttrError.truncated
        }
        return bytes
    }
}
