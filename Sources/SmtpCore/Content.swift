// Content: the message as the smtp client sends it: lines in CRLF, leading dots doubled,
// lines longer than smtp_line_length_limit broken with CRLF SPACE; and, when configured,
// through the MIME parser: smtp_header_checks, smtp_mime_header_checks,
// smtp_nested_header_checks and smtp_body_checks (the restricted actions: WARN, INFO,
// REPLACE, PREPEND, IGNORE, DUNNO), address headers through smtp_generic_maps, and
// 8-bit MIME converted to quoted-printable for a server without 8BITMIME.
// Mirrors Postfix smtp/smtp_proto.c (smtp_text_out, smtp_header_rewrite,
// smtp_body_rewrite, the data phase of smtp_loop), smtp_map11.c and
// global/header_body_checks.c.
import MailUtil
import MailGlobal

/// What the content passes through, from main.cf; nil members are not configured.
struct ContentSettings {
    let headerChecks: Maps?
    let mimeHeaderChecks: Maps?
    let nestedHeaderChecks: Maps?
    let bodyChecks: Maps?
    let generic: MailAddrFinder?
    let propagateGeneric: Bool
    let rewriter: TrivialRewriteClient?
    let disableConversion: Bool
    let headerLimit: Int
    let nestingLimit: Int
    let boundaryLimit: Int
    let tokenLimit: Int
    let prefix: String

    init(config: MailConfig, prefix: String) {
        self.prefix = prefix
        func maps(_ name: String) -> Maps? {
            let v = config.string(prefix + name)
            return v.isEmpty ? nil : Maps(title: prefix + name, mapNames: v, flags: .lock)
        }
        headerChecks = maps("header_checks")
        mimeHeaderChecks = maps("mime_header_checks")
        nestedHeaderChecks = maps("nested_header_checks")
        bodyChecks = maps("body_checks")
        let genericName = config.string(prefix + "generic_maps")
        if genericName.isEmpty {
            generic = nil
            rewriter = nil
        } else {
            generic = MailAddrFinder(maps: Maps(title: prefix + "generic_maps", mapNames: genericName, flags: .lock),
                                     local: LocalDomains(config: config), extension: AddressExtension(config: config))
            rewriter = TrivialRewriteClient(config: config)
        }
        propagateGeneric = config.list("propagate_unmatched_extensions").contains { $0.lowercased() == "generic" }
        disableConversion = config.bool("disable_mime_output_conversion")
        headerLimit = config.int("header_size_limit")
        nestingLimit = config.int("mime_nesting_limit")
        boundaryLimit = config.int("mime_boundary_length_limit")
        tokenLimit = config.int("header_address_token_limit")
    }

    var anyHeaderChecks: Bool { headerChecks != nil || mimeHeaderChecks != nil || nestedHeaderChecks != nil }
    var anyChecks: Bool { anyHeaderChecks || bodyChecks != nil }

    /// smtp_map11_internal: an address through smtp_generic_maps; nil when no entry.
    func mapGeneric(_ address: String) -> String? {
        guard let generic, let rewriter, !address.isEmpty else { return nil }
        guard let list = generic.map(address, propagate: propagateGeneric, canonical: {
            rewriter.rewriteInternal($0, rule: MailAttr.rewriteLocal)
        }), let first = list.first else { return nil }
        if list.count > 1 { Msg.warn("multi-valued \(prefix)generic_maps result for \(address)") }
        return first
    }
}

/// smtp_text_out and the MIME call-backs, for one message; output is collected in
/// `out` for the caller to write.
final class ContentWriter {
    let settings: ContentSettings
    let queueID: String
    let limit: Int
    var spaceLeft: Int
    var out: [UInt8] = []
    /// A MIME error that makes sending impossible (nesting while converting).
    var mimeFailure: MimeError?

    init(settings: ContentSettings, queueID: String, lineLimit: Int) {
        self.settings = settings
        self.queueID = queueID
        limit = lineLimit
        spaceLeft = lineLimit
    }

    /// One record: N ends a line, L is part of a longer one.
    func text(_ type: RecordType, _ data: ArraySlice<UInt8>) {
        var d = data
        repeat {
            if spaceLeft == limit, d.first == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            if limit > 0 && d.count >= spaceLeft {
                out += d.prefix(spaceLeft)
                out += [0x0D, 0x0A]
                d = d.dropFirst(spaceLeft)
                spaceLeft = limit
                if !d.isEmpty || type == .continuedText {
                    out.append(0x20)
                    spaceLeft -= 1
                }
            } else {
                out += d
                if type == .continuedText {
                    spaceLeft -= d.count
                } else {
                    out += [0x0D, 0x0A]
                    spaceLeft = limit
                }
                break
            }
        } while !d.isEmpty
    }

    func log(_ action: String, _ where_: String, _ content: String, _ text: String) {
        let c = String(decoding: Array(content.utf8).prefix(60), as: UTF8.self)
        Msg.info(text.isEmpty ? "\(queueID): \(action): \(where_) \(c)" : "\(queueID): \(action): \(where_) \(c): \(text)")
    }

    enum Outcome { case keep, drop, replace(String) }

    /// hbc_action: what a matching header or body line turns into.
    func act(_ action: String, map: String, where_: String, line: String) -> Outcome {
        let cmdEnd = action.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? action.endIndex
        let cmd = action[..<cmdEnd].uppercased()
        let args = String(action[cmdEnd...].drop(while: { $0 == " " || $0 == "\t" }))
        switch cmd {
        case "WARN":
            log("warning", where_, line, args)
        case "INFO":
            log("info", where_, line, args)
        case "REPLACE", "PREPEND":
            if args.isEmpty {
                Msg.warn("\(cmd) action without text in \(map) map")
            } else if where_ == "header" && !HeaderText.isHeader(args) {
                Msg.warn("bad \(cmd) header text \"\(args)\" in \(map) map -- need \"headername: headervalue\"")
            } else if cmd == "REPLACE" {
                log("replace", where_, line, args)
                return .replace(args)
            } else {
                log("prepend", where_, line, args)
                text(.normalText, Array(args.utf8)[...])
            }
        case "IGNORE":
            return .drop
        case "DUNNO", "OK":
            break
        default:
            Msg.warn("unsupported command in \(map) map: \(action)")
        }
        return .keep
    }

    /// smtp_header_rewrite / smtp_header_out: one logical header (lines joined by LF).
    func header(_ cls: MimeHeaderClass, _ info: HeaderInfo?, _ buffer: [UInt8]) {
        var buf = buffer
        if settings.anyHeaderChecks {
            let (maps, name): (Maps?, String) = (info?.isMIME ?? false) ? (settings.mimeHeaderChecks, "mime_header_checks")
                : cls == .primary ? (settings.headerChecks, "header_checks")
                : cls == .multipart ? (settings.mimeHeaderChecks, "mime_header_checks")
                : (settings.nestedHeaderChecks, "nested_header_checks")
            let line = String(decoding: buf, as: UTF8.self)
            if let maps, let action = maps.find(line) {
                switch act(action, map: settings.prefix + name, where_: "header", line: line) {
                case .keep: break
                case .drop: return
                case .replace(let new): buf = Array(new.utf8)
                }
            }
        }
        if settings.generic != nil, cls == .primary, let info,
           HeaderText.senderHeaders.contains(info.name.lowercased()) || HeaderText.recipientHeaders.contains(info.name.lowercased()),
           let lines = rewriteAddresses(buf, name: info.name) {
            // Folded as cleanup folds: continuation lines already start with a TAB.
            for l in lines { text(.normalText, l[...]) }
            return
        }
        for l in buf.split(separator: 0x0A, omittingEmptySubsequences: false) { text(.normalText, l) }
    }

    /// The header's addresses through smtp_generic_maps; nil when none changed.
    func rewriteAddresses(_ buffer: [UInt8], name: String) -> [[UInt8]]? {
        var value = buffer.dropFirst(name.utf8.count + 1)
        while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
        guard let tree = Address822.parse(String(decoding: value, as: UTF8.self), limit: settings.tokenLimit) else { return nil }
        var changed = false
        for addr in Tok822.addresses(tree) {
            let old = Address822.internalize(addr.head)
            if let new = settings.mapGeneric(old), new != old {
                addr.replaceChildren(with: Quote822.quote822(new))
                changed = true
            }
        }
        guard changed else { return nil }
        let pieces = Address822.externalize(tree, lineBreaks: true).split(separator: "\n", omittingEmptySubsequences: false)
        return HeaderText.fold(name, pieces.map(String.init)).map { Array($0.utf8) }
    }

    /// smtp_body_rewrite / smtp_text_out: one body record.
    func body(_ type: RecordType, _ line: ArraySlice<UInt8>) {
        if let checks = settings.bodyChecks {
            let s = String(decoding: line, as: UTF8.self)
            if let action = checks.find(s) {
                switch act(action, map: settings.prefix + "body_checks", where_: "body", line: s) {
                case .keep: break
                case .drop: return
                case .replace(let new): return text(type, Array(new.utf8)[...])
                }
            }
        }
        text(type, line)
    }

    /// A parser for this message: nil when the content goes out as it is stored.
    func parser(downgrading: Bool) -> MimeState? {
        guard downgrading || settings.generic != nil || settings.anyChecks else { return nil }
        let options: MimeOptions = downgrading ? [.downgrade, .reportNesting] : settings.anyChecks ? [] : [.disableMIME]
        return MimeState(options: options, headerLimit: settings.headerLimit, nestingLimit: settings.nestingLimit,
                         boundaryLimit: settings.boundaryLimit,
                         headOut: { [unowned self] cls, info, buf, _ in self.header(cls, info, buf) },
                         headEnd: {},
                         bodyOut: { [unowned self] type, line, _ in self.body(type, line) },
                         bodyEnd: {},
                         errorOut: { [unowned self] e, _ in if e.contains(.nesting) { self.mimeFailure = e } })
    }
}
