// Settings: what cleanup reads from main.cf once per process: the address mapping
// tables, content checks, masquerading and limits.
// Mirrors Postfix cleanup/cleanup_init.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict

/// Where a mapping applies (canonical_classes, masquerade_classes).
struct MapClasses: OptionSet {
    let rawValue: Int
    static let envelopeSender = MapClasses(rawValue: 1)
    static let envelopeRecipient = MapClasses(rawValue: 2)
    static let headerSender = MapClasses(rawValue: 4)
    static let headerRecipient = MapClasses(rawValue: 8)

    init(rawValue: Int) { self.rawValue = rawValue }

    init(_ config: MailConfig, _ name: String) {
        var c: MapClasses = []
        for word in config.list(name) {
            switch word.lowercased() {
            case "envelope_sender": c.insert(.envelopeSender)
            case "envelope_recipient": c.insert(.envelopeRecipient)
            case "header_sender": c.insert(.headerSender)
            case "header_recipient": c.insert(.headerRecipient)
            default: Msg.fatal("unknown \(name) value \"\(word)\" in \"\(config.string(name))\"")
            }
        }
        self = c
    }
}

/// A one-to-one or one-to-many address table with its class set.
struct AddressMap {
    let title: String
    let finder: MailAddrFinder
    let classes: MapClasses
}

final class Settings {
    let config: MailConfig
    let rewriter: TrivialRewriteClient
    let queue: MailQueue
    let local: LocalDomains
    let ext: AddressExtension

    let senderCanonical: AddressMap?
    let recipientCanonical: AddressMap?
    let canonical: AddressMap?
    let virtualAlias: MailAddrFinder?
    let senderBcc: MailAddrFinder?
    let recipientBcc: MailAddrFinder?
    let alwaysBcc: String

    let headerChecks: Maps?
    let mimeHeaderChecks: Maps?
    let nestedHeaderChecks: Maps?
    let bodyChecks: Maps?
    let bodyChecksSizeLimit: Int
    let mimeOptions: MimeOptions
    let mimeNestingLimit: Int
    let mimeBoundaryLimit: Int
    let masqueradeDomains: [String]
    let masqueradeExceptions: Set<String>
    let masqueradeClasses: MapClasses
    let propagateCanonical: Bool
    let propagateVirtual: Bool

    let lineLimit: Int
    let headerSizeLimit: Int
    let headerTokenLimit: Int
    let hopLimit: Int
    let messageSizeLimit: Int
    let duplicateLimit: Int
    let attributeLimit: Int
    let delayWarning: Int
    let alwaysAddHeaders: Bool
    let undisclosedHeader: String
    let dropHeaders: Set<String>
    let remoteHeaderDomain: String
    let myhostname: String
    let myorigin: String
    let emptyRecipient: String
    let virtualRecursionLimit: Int
    let virtualExpansionLimit: Int
    let replaceStrayCRLF: Bool
    let headerFromObsolete: Bool
    let longQueueIDs: Bool

    init(config: MailConfig) {
        self.config = config
        rewriter = TrivialRewriteClient(config: config)
        queue = MailQueue(config: config)
        let local = LocalDomains(config: config)
        let ext = AddressExtension(config: config)
        self.local = local
        self.ext = ext
        func finder(_ name: String) -> MailAddrFinder? {
            let v = config.string(name)
            if v.isEmpty { return nil }
            return MailAddrFinder(maps: Maps(title: name, mapNames: v, flags: .lock), local: local, extension: ext)
        }
        func addressMap(_ name: String, _ classes: String) -> AddressMap? {
            finder(name).map { AddressMap(title: name, finder: $0, classes: MapClasses(config, classes)) }
        }
        senderCanonical = addressMap("sender_canonical_maps", "sender_canonical_classes")
        recipientCanonical = addressMap("recipient_canonical_maps", "recipient_canonical_classes")
        canonical = addressMap("canonical_maps", "canonical_classes")
        virtualAlias = finder("virtual_alias_maps")
        senderBcc = finder("sender_bcc_maps")
        recipientBcc = finder("recipient_bcc_maps")
        alwaysBcc = config.string("always_bcc")
        func maps(_ name: String) -> Maps? {
            let v = config.string(name)
            return v.isEmpty ? nil : Maps(title: name, mapNames: v, flags: .lock)
        }
        headerChecks = maps("header_checks")
        mimeHeaderChecks = maps("mime_header_checks")
        nestedHeaderChecks = maps("nested_header_checks")
        bodyChecks = maps("body_checks")
        bodyChecksSizeLimit = config.int("body_checks_size_limit")
        var mime: MimeOptions = []
        if config.bool("disable_mime_input_processing") {
            mime.insert(.disableMIME)
        } else {
            let strict8 = config.bool("strict_8bitmime"), strict7h = config.bool("strict_7bit_headers")
            let strict8b = config.bool("strict_8bitmime_body"), strictDomain = config.bool("strict_mime_encoding_domain")
            if strict8 || strict7h { mime.insert(.report8BitInHeader) }
            if strict8 || strict8b { mime.insert(.report8BitIn7BitBody) }
            if strictDomain { mime.insert(.reportEncodingDomain) }
            if strict8 || strict7h || strict8b || strictDomain || headerChecks != nil || mimeHeaderChecks != nil
                || nestedHeaderChecks != nil {
                mime.insert(.reportNesting)
            }
        }
        mimeOptions = mime
        mimeNestingLimit = config.int("mime_nesting_limit")
        mimeBoundaryLimit = config.int("mime_boundary_length_limit")
        masqueradeDomains = config.list("masquerade_domains")
        masqueradeExceptions = Set(config.list("masquerade_exceptions").map { $0.lowercased() })
        masqueradeClasses = MapClasses(config, "masquerade_classes")
        let propagate = Set(config.list("propagate_unmatched_extensions").map { $0.lowercased() })
        propagateCanonical = propagate.contains("canonical")
        propagateVirtual = propagate.contains("virtual")

        lineLimit = max(config.int("line_length_limit"), 1)
        headerSizeLimit = config.int("header_size_limit")
        headerTokenLimit = config.int("header_address_token_limit")
        hopLimit = config.int("hopcount_limit")
        messageSizeLimit = config.long("message_size_limit")
        duplicateLimit = config.int("duplicate_filter_limit")
        attributeLimit = config.int("queue_file_attribute_count_limit")
        delayWarning = config.time("delay_warning_time")
        alwaysAddHeaders = config.bool("always_add_missing_headers")
        undisclosedHeader = config.string("undisclosed_recipients_header")
        dropHeaders = Set(config.list("message_drop_headers").map { $0.lowercased() })
        remoteHeaderDomain = config.string("remote_header_rewrite_domain")
        myhostname = config.string("myhostname")
        myorigin = config.string("myorigin")
        emptyRecipient = config.string("empty_address_recipient")
        virtualRecursionLimit = config.int("virtual_alias_recursion_limit")
        virtualExpansionLimit = config.int("virtual_alias_expansion_limit")
        replaceStrayCRLF = config.bool("cleanup_replace_stray_cr_lf")
        headerFromObsolete = config.string("header_from_format").lowercased() == "obsolete"
        longQueueIDs = config.bool("enable_long_queue_ids")
    }
}
