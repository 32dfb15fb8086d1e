// MimeState: a MIME structure parser fed one text record at a time: it assembles logical
// headers (primary, multipart part and nested message headers), follows Content-Type and
// Content-Transfer-Encoding through multipart boundaries and message/rfc822 attachments,
// reports structure errors, and can downgrade 8-bit bodies to quoted-printable.
// The parser is kept simple for robustness: anything it does not understand is body text.
// Mirrors Postfix global/mime_state.c (RFC 2045, 2046) with header_token.c and
// header_opts.c.

/// The kind of header a header callback gets.
public enum MimeHeaderClass: Sendable, Equatable {
    /// The message's own headers.
    case primary
    /// The headers of a multipart body part.
    case multipart
    /// The headers of an attached message (message/rfc822).
    case nested
}

/// MIME_ERR_*: what is wrong with the structure (each reported once).
public struct MimeError: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let nesting = MimeError(rawValue: 1 << 0)
    public static let truncatedHeader = MimeError(rawValue: 1 << 1)
    public static let eightBitInHeader = MimeError(rawValue: 1 << 2)
    public static let eightBitIn7BitBody = MimeError(rawValue: 1 << 3)
    public static let encodingDomain = MimeError(rawValue: 1 << 4)

    /// mime_state_error(): the text for the first error in Postfix's order.
    public var text: String {
        if contains(.nesting) { return "MIME nesting exceeds safety limit" }
        if contains(.truncatedHeader) { return "message header length exceeds safety limit" }
        if contains(.eightBitInHeader) { return "improper use of 8-bit data in message header" }
        if contains(.eightBitIn7BitBody) { return "improper use of 8-bit data in message body" }
        if contains(.encodingDomain) { return "invalid message/* or multipart/* encoding domain" }
        return "no error"
    }
}

/// MIME_OPT_*: what the parser reports and does.
public struct MimeOptions: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let reportTruncatedHeader = MimeOptions(rawValue: 1 << 0)
    public static let report8BitInHeader = MimeOptions(rawValue: 1 << 1)
    public static let report8BitIn7BitBody = MimeOptions(rawValue: 1 << 2)
    public static let reportEncodingDomain = MimeOptions(rawValue: 1 << 3)
    public static let reportNesting = MimeOptions(rawValue: 1 << 4)
    /// Convert 8-bit content to quoted-printable (for a peer without 8BITMIME).
    public static let downgrade = MimeOptions(rawValue: 1 << 5)
    /// Treat every message/* body as nested headers.
    public static let recurseAllMessage = MimeOptions(rawValue: 1 << 6)
    /// Headers only: no MIME structure at all (disable_mime_input_processing).
    public static let disableMIME = MimeOptions(rawValue: 1 << 7)
}

/// What a header is, as far as MIME processing cares (header_opts.c).
public struct HeaderInfo: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case contentType, contentTransferEncoding, other }
    public let name: String
    public let kind: Kind
    /// Content-* and MIME-Version: checked by mime_header_checks.
    public let isMIME: Bool

    public static func of(_ line: [UInt8]) -> HeaderInfo? {
        guard let len = MimeState.headerLength(line) else { return nil }
        let name = String(decoding: line[0..<len], as: UTF8.self)
        let lower = name.lowercased()
        let kind: Kind = lower == "content-type" ? .contentType
            : lower == "content-transfer-encoding" ? .contentTransferEncoding : .other
        return HeaderInfo(name: name, kind: kind, isMIME: lower.hasPrefix("content-") || lower == "mime-version")
    }
}

public final class MimeState {
    enum State { case primary, multipart, nested, body }
    enum ContentType { case other, text, message, multipart }
    enum Subtype { case other, plain, rfc822, partial, externalBody }
    enum Encoding: Equatable {
        case sevenBit, eightBit, binary, base64, quotedPrintable

        /// The domain an encoding puts the data in (base64 and QP are 7-bit).
        var domain: Encoding { self == .base64 || self == .quotedPrintable ? .sevenBit : self }
        var name: String {
            switch self {
            case .sevenBit: return "7bit"
            case .eightBit: return "8bit"
            case .binary: return "binary"
            case .base64: return "base64"
            case .quotedPrintable: return "quoted-printable"
            }
        }
    }

    struct Boundary {
        let defaultType: ContentType
        let defaultSubtype: Subtype
        let text: [UInt8]
    }

    public typealias HeaderOut = (MimeHeaderClass, HeaderInfo?, [UInt8], Int) -> Void
    public typealias BodyOut = (RecordType, ArraySlice<UInt8>, Int) -> Void

    let options: MimeOptions
    let headerLimit: Int
    let nestingLimit: Int
    let boundaryLimit: Int
    let headOut: HeaderOut
    let headEnd: () -> Void
    let bodyOut: BodyOut
    let bodyEnd: () -> Void
    let errorOut: (MimeError, String) -> Void

    var state = State.primary
    var ctype = ContentType.text
    var stype = Subtype.plain
    var encoding = Encoding.sevenBit
    var domain = Encoding.sevenBit
    var buffer: [UInt8] = []
    var prevType: RecordType?
    var stack: [Boundary] = []
    public private(set) var errors: MimeError = []
    var headOffset = 0
    var bodyOffset = 0

    public init(options: MimeOptions, headerLimit: Int, nestingLimit: Int, boundaryLimit: Int,
                headOut: @escaping HeaderOut, headEnd: @escaping () -> Void,
                bodyOut: @escaping BodyOut, bodyEnd: @escaping () -> Void,
                errorOut: @escaping (MimeError, String) -> Void) {
        self.options = options
        self.headerLimit = headerLimit
        self.nestingLimit = nestingLimit
        self.boundaryLimit = boundaryLimit
        self.headOut = headOut
        self.headEnd = headEnd
        self.bodyOut = bodyOut
        self.bodyEnd = bodyEnd
        self.errorOut = errorOut
    }

    func report(_ e: MimeError, _ text: [UInt8]) {
        guard !errors.contains(e) else { return }
        errors.insert(e)
        errorOut(e, String(decoding: text, as: UTF8.self))
    }

    func setState(_ s: State, _ t: ContentType, _ st: Subtype, _ enc: Encoding, _ dom: Encoding) {
        state = s
        ctype = t
        stype = st
        encoding = enc
        domain = dom
        if s == .body { bodyOffset = 0 } else { headOffset = 0 }
    }

    func setState(_ s: State) {
        state = s
        if s == .body { bodyOffset = 0 } else { headOffset = 0 }
    }

    var headerClass: MimeHeaderClass {
        switch state {
        case .multipart: return .multipart
        case .nested: return .nested
        default: return .primary
        }
    }

    func emitHeader(_ info: HeaderInfo?, _ len: Int) {
        headOut(headerClass, info, buffer, headOffset)
        headOffset += len + 1
    }

    func emitBody(_ type: RecordType, _ text: ArraySlice<UInt8>) {
        bodyOut(type, text, bodyOffset)
        bodyOffset += text.count + 1
    }

    /// is_header(): the length of the header label when `line` starts a header ("Name:",
    /// or the obsolete "Name :"), or nil.
    public static func headerLength(_ line: some Collection<UInt8>) -> Int? {
        var len = 0
        var afterSpace = false
        for c in line {
            switch c {
            case UInt8(ascii: ":"):
                return len > 0 ? len : nil
            case 0x20, 0x09:
                if len == 0 { return nil }
                afterSpace = true
            default:
                if c <= 32 || c >= 127 || afterSpace { return nil }
                len += 1
            }
        }
        return nil
    }

    /// One record of content: a text line (N), a piece of a long line (L), or nil for the
    /// end of the content.
    public func update(_ type: RecordType?, _ text: [UInt8]) {
        let isText = type == .normalText || type == .continuedText
        if !isText && prevType == .continuedText { update(.normalText, []) }
        switch state {
        case .primary, .multipart, .nested:
            if !buffer.isEmpty {
                if isText {
                    if prevType == .continuedText {
                        if buffer.count + text.count <= headerLimit {
                            buffer += text
                        } else if options.contains(.reportTruncatedHeader) {
                            report(.truncatedHeader, buffer)
                        }
                        prevType = type
                        return
                    }
                    if let f = text.first, f == 0x20 || f == 0x09 {
                        if buffer.count + 1 + text.count <= headerLimit {
                            buffer.append(0x0A)
                            buffer += text
                        } else if options.contains(.reportTruncatedHeader) {
                            report(.truncatedHeader, buffer)
                        }
                        prevType = type
                        return
                    }
                }
                // Another header, not a header, or not text: the saved header is complete.
                let info = HeaderInfo.of(buffer)
                if !options.contains(.disableMIME), let info {
                    if info.kind == .contentType { contentType(info) }
                    if info.kind == .contentTransferEncoding { contentEncoding(info) }
                }
                if options.contains(.report8BitInHeader) && !errors.contains(.eightBitInHeader)
                    && buffer.contains(where: { $0 >= 0x80 }) {
                    report(.eightBitInHeader, buffer)
                }
                if info?.kind != .contentTransferEncoding || !options.contains(.downgrade) || domain == .sevenBit {
                    emitHeader(info, text.count)
                }
                prevType = nil
                buffer = []
            }
            if isText, let hl = Self.headerLength(text) {
                // "Name :" is normalized to "Name:".
                buffer = Array(text[0..<hl]) + text[hl...].drop(while: { $0 == 0x20 || $0 == 0x09 })
                prevType = type
                return
            }
            // The end of a header block.
            if options.contains(.downgrade) && domain != .sevenBit {
                buffer = Array("Content-Transfer-Encoding: \(ctype == .message || ctype == .multipart ? "7bit" : "quoted-printable")".utf8)
                emitHeader(nil, text.count)
                buffer = []
            }
            if state == .primary { headEnd() }
            if options.contains(.reportEncodingDomain) {
                if ctype == .message {
                    if stype == .partial || stype == .externalBody {
                        if domain != .sevenBit { report(.encodingDomain, Array(encoding.name.utf8)) }
                    } else if encoding != domain {
                        report(.encodingDomain, Array(encoding.name.utf8))
                    }
                } else if ctype == .multipart && encoding != domain {
                    report(.encodingDomain, Array(encoding.name.utf8))
                }
            }
            if isText {
                if text.isEmpty {
                    bodyOffset = 0
                    if ctype == .message {
                        if stype == .rfc822 || options.contains(.recurseAllMessage) {
                            setState(.nested, .text, .plain, .sevenBit, .sevenBit)
                        } else {
                            setState(.body)
                        }
                    } else if ctype == .multipart {
                        setState(.body, .other, .other, .sevenBit, .sevenBit)
                    } else {
                        setState(.body)
                    }
                } else {
                    // Not a header and not the blank line: one blank line is made up.
                    setState(.body)
                    emitBody(.normalText, [][...])
                }
            } else {
                setState(.body)
            }
            fallthrough
        case .body:
            if isText {
                if options.contains(.report8BitIn7BitBody) && encoding == .sevenBit && !errors.contains(.eightBitIn7BitBody)
                    && text.contains(where: { $0 >= 0x80 }) {
                    report(.eightBitIn7BitBody, text)
                }
                if !stack.isEmpty && prevType != .continuedText && text.count >= 2
                    && text[0] == UInt8(ascii: "-") && text[1] == UInt8(ascii: "-") {
                    let rest = text[2...]
                    if let k = stack.lastIndex(where: { rest.starts(with: $0.text) }) {
                        let b = stack[k]
                        stack.removeSubrange((k + 1)...)
                        if rest.dropFirst(b.text.count).starts(with: [UInt8(ascii: "-"), UInt8(ascii: "-")]) {
                            stack.removeLast()
                            setState(.body, .other, .other, .sevenBit, .sevenBit)
                        } else {
                            setState(.multipart, b.defaultType, b.defaultSubtype, .sevenBit, .sevenBit)
                        }
                    }
                }
                if options.contains(.downgrade) && domain != .sevenBit {
                    downgrade(type!, text)
                } else {
                    emitBody(type!, text[...])
                }
            } else {
                bodyEnd()
            }
            prevType = type
        }
    }

    // MARK: Content-Type and Content-Transfer-Encoding

    func contentType(_ info: HeaderInfo) {
        var cp = Array(buffer.dropFirst(info.name.utf8.count + 1))[...]
        var toks = HeaderToken.parse(&cp, max: 3, specials: Array("()<>@,;:\\\"/[]?=".utf8), terminator: UInt8(ascii: ";"))
        guard let t = toks, !t.isEmpty else { return }
        func match(_ i: Int, _ s: String) -> Bool { i < t.count && t[i].isToken && t[i].value.lowercased() == s }
        func isSlash(_ i: Int) -> Bool { i < t.count && t[i].op == UInt8(ascii: "/") }
        if match(0, "text") {
            ctype = .text
            stype = t.count >= 3 && isSlash(1) && match(2, "plain") ? .plain : .other
            return
        }
        if match(0, "message") {
            ctype = .message
            stype = .other
            if t.count >= 3 && isSlash(1) {
                if match(2, "rfc822") { stype = .rfc822 }
                else if match(2, "partial") { stype = .partial }
                else if match(2, "external-body") { stype = .externalBody }
            }
            return
        }
        if match(0, "multipart") {
            ctype = .multipart
            let digest = t.count >= 3 && isSlash(1) && match(2, "digest")
            while true {
                toks = HeaderToken.parse(&cp, max: 3, specials: Array("()<>@,;:\\\"/[]?=".utf8), terminator: UInt8(ascii: ";"))
                guard let p = toks else { break }
                if p.count >= 3 && p[0].isToken && p[0].value.lowercased() == "boundary" && p[1].op == UInt8(ascii: "=") {
                    if stack.count > nestingLimit {
                        if options.contains(.reportNesting) { report(.nesting, buffer) }
                    } else {
                        stack.append(Boundary(defaultType: digest ? .message : .text, defaultSubtype: digest ? .rfc822 : .plain,
                                              text: Array(Array(p[2].value.utf8).prefix(boundaryLimit))))
                    }
                }
            }
            return
        }
        ctype = .other
    }

    func contentEncoding(_ info: HeaderInfo) {
        var cp = Array(buffer.dropFirst(info.name.utf8.count + 1))[...]
        guard let t = HeaderToken.parse(&cp, max: 1, specials: [], terminator: nil), let first = t.first, first.isToken else { return }
        let map: [String: Encoding] = ["7bit": .sevenBit, "8bit": .eightBit, "binary": .binary, "base64": .base64,
                                       "quoted-printable": .quotedPrintable]
        if let e = map[first.value.lowercased()] {
            encoding = e
            domain = e.domain
        }
    }

    // MARK: 8-bit to quoted-printable

    var qp: [UInt8] = []

    func downgrade(_ type: RecordType, _ text: [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        func encode(_ c: UInt8) {
            qp.append(UInt8(ascii: "="))
            qp.append(hex[Int(c >> 4)])
            qp.append(hex[Int(c & 0xF)])
        }
        for c in text {
            if qp.count > 72 {
                qp.append(UInt8(ascii: "="))
                emitBody(.normalText, qp[...])
                qp = []
            }
            if (c < 32 && c != 0x09) || c == UInt8(ascii: "=") || c > 126 { encode(c) } else { qp.append(c) }
        }
        if type == .normalText {
            if let last = qp.last, last == 0x20 || last == 0x09 {
                qp.removeLast()
                encode(last)
            }
            emitBody(.normalText, qp[...])
            qp = []
        }
    }
}

/// header_token(): RFC 822 style tokens of a structured header value, up to a
/// terminator.
public struct HeaderToken {
    public let value: String
    /// The operator byte for a special character; 0 for a token or quoted string.
    public let op: UInt8
    public var isToken: Bool { op == 0 }

    /// Tokens up to `terminator` (consumed) or the end; nil at the end of input. Comments
    /// are skipped; at most `max` tokens are kept.
    public static func parse(_ cp: inout ArraySlice<UInt8>, max: Int, specials: [UInt8], terminator: UInt8?) -> [HeaderToken]? {
        var out: [HeaderToken] = []
        func skipSpace() { while let c = cp.first, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { cp = cp.dropFirst() } }
        skipSpace()
        if cp.isEmpty { return nil }
        while let c = cp.first {
            if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D {
                skipSpace()
                continue
            }
            if let t = terminator, c == t {
                cp = cp.dropFirst()
                break
            }
            if c == UInt8(ascii: "(") {
                var depth = 0
                while let d = cp.first {
                    cp = cp.dropFirst()
                    if d == UInt8(ascii: "\\") { cp = cp.dropFirst(); continue }
                    if d == UInt8(ascii: "(") { depth += 1 }
                    if d == UInt8(ascii: ")") { depth -= 1; if depth == 0 { break } }
                }
                continue
            }
            if c == UInt8(ascii: "\"") {
                cp = cp.dropFirst()
                var v: [UInt8] = []
                while let d = cp.first {
                    cp = cp.dropFirst()
                    if d == UInt8(ascii: "\\"), let e = cp.first { v.append(e); cp = cp.dropFirst(); continue }
                    if d == UInt8(ascii: "\"") { break }
                    v.append(d)
                }
                if out.count < max { out.append(HeaderToken(value: String(decoding: v, as: UTF8.self), op: 0)) }
                continue
            }
            if specials.contains(c) {
                cp = cp.dropFirst()
                if out.count < max { out.append(HeaderToken(value: String(UnicodeScalar(c)), op: c)) }
                continue
            }
            var v: [UInt8] = []
            while let d = cp.first, d > 0x20, d != 0x7F, !specials.contains(d), d != UInt8(ascii: "(") && d != UInt8(ascii: "\"") {
                if let t = terminator, d == t { break }
                v.append(d)
                cp = cp.dropFirst()
            }
            if v.isEmpty {
                cp = cp.dropFirst()
                continue
            }
            if out.count < max { out.append(HeaderToken(value: String(decoding: v, as: UTF8.self), op: 0)) }
        }
        return out
    }
}
