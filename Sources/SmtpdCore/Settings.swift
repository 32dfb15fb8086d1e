// Settings: what smtpd reads from main.cf once per process.
// Mirrors the parameter part of Postfix smtpd/smtpd.c and smtpd_check.c (smtpd_check_init).
import Glibc
import MailUtil
import MailGlobal
import MailDict

final class Settings {
    let config: MailConfig
    let myhostname: String
    let banner: String
    let mailName: String
    let timeout: Int
    let lineLimit: Int
    let messageSizeLimit: Int
    let recipientLimit: Int
    let recipientOvershootLimit: Int
    let softErrorLimit: Int
    let hardErrorLimit: Int
    let errorSleep: Int
    let junkLimit: Int
    let queueMinFree: Int
    let heloRequired: Bool
    let strictRFC821: Bool
    let delayReject: Bool
    let disableVRFY: Bool
    let smtputf8: Bool
    let discardEhlo: Set<String>
    let bareNewline: String
    let bareNewlineExclusions: MatchList
    let bareNewlineCode: Int
    let forbiddenCommands: MatchList
    let peernameLookup: Bool
    let clientPortLogging: Bool
    let nullAccessKey: String
    let rejectCode: Int
    let deferCode: Int
    let relayCode: Int
    let accessRejectCode: Int
    let accessDeferCode: Int
    let nonFQDNCode: Int
    let invalidHostnameCode: Int
    let unknownLocalCode: Int
    let unverifiedRecipientCode: Int
    let showUnknownTable: Bool
    let allowUntrustedRouting: Bool
    let cleanupService: String
    let rewriter: TrivialRewriteClient
    let mynetworks: MatchList
    let ownAddresses: [[UInt8]]
    let localHeaderClients: [String]
    let parentStyle: Bool
    let restrictionClasses: [String: [String]]
    let lists: [String: [String]]
    let local: LocalDomains
    let ext: AddressExtension
    let localRecipientMaps: MailAddrFinder?
    let virtualAliasMaps: MailAddrFinder?
    let virtualMailboxMaps: MailAddrFinder?
    let relayRecipientMaps: MailAddrFinder?
    let fastFlushDomains: MatchList
    let doubleBounceSender: String
    var accessTables: [String: Maps] = [:]

    init(config: MailConfig) {
        self.config = config
        myhostname = config.string("myhostname")
        banner = config.string("smtpd_banner")
        mailName = config.string("mail_name")
        timeout = config.time("smtpd_timeout")
        lineLimit = max(config.int("line_length_limit"), 1)
        messageSizeLimit = config.long("message_size_limit")
        recipientLimit = config.int("smtpd_recipient_limit")
        recipientOvershootLimit = config.int("smtpd_recipient_overshoot_limit")
        softErrorLimit = config.int("smtpd_soft_error_limit")
        hardErrorLimit = config.int("smtpd_hard_error_limit")
        errorSleep = config.time("smtpd_error_sleep_time")
        junkLimit = config.int("smtpd_junk_command_limit")
        queueMinFree = config.long("queue_minfree")
        heloRequired = config.bool("smtpd_helo_required")
        strictRFC821 = config.bool("strict_rfc821_envelopes")
        delayReject = config.bool("smtpd_delay_reject")
        disableVRFY = config.bool("disable_vrfy_command")
        smtputf8 = config.bool("smtputf8_enable")
        discardEhlo = Set(config.list("smtpd_discard_ehlo_keywords").map { $0.lowercased() })
        // "normalize" (Postfix 3.9's default; "yes" and "normal" mean the same): a bare LF
        // ends a line but never the message; "reject" refuses it; "no" is the old way.
        switch config.string("smtpd_forbid_bare_newline").lowercased() {
        case "no": bareNewline = "no"
        case "normalize", "normal", "yes": bareNewline = "normalize"
        case "reject": bareNewline = "reject"
        case let v: Msg.fatal("invalid smtpd_forbid_bare_newline value: \"\(v)\"")
        }
        bareNewlineExclusions = MatchList(name: "smtpd_forbid_bare_newline_exclusions", kind: .nameAddress,
                                          options: [], text: config.string("smtpd_forbid_bare_newline_exclusions"))
        bareNewlineCode = config.int("smtpd_forbid_bare_newline_reject_code")
        forbiddenCommands = MatchList(name: "smtpd_forbidden_commands", kind: .string, options: [],
                                      text: config.string("smtpd_forbidden_commands"))
        peernameLookup = config.bool("smtpd_peername_lookup")
        clientPortLogging = config.bool("smtpd_client_port_logging")
        nullAccessKey = config.string("smtpd_null_access_lookup_key")
        rejectCode = config.int("reject_code")
        deferCode = config.int("defer_code")
        relayCode = config.int("relay_domains_reject_code")
        accessRejectCode = config.int("access_map_reject_code")
        accessDeferCode = config.int("access_map_defer_code")
        nonFQDNCode = config.int("non_fqdn_reject_code")
        invalidHostnameCode = config.int("invalid_hostname_reject_code")
        unknownLocalCode = config.int("unknown_local_recipient_reject_code")
        unverifiedRecipientCode = config.int("unknown_virtual_mailbox_reject_code")
        showUnknownTable = config.bool("show_user_unknown_table_name")
        allowUntrustedRouting = config.bool("allow_untrusted_routing")
        cleanupService = config.string("cleanup_service_name")
        rewriter = TrivialRewriteClient(config: config)
        mynetworks = MatchList(name: "mynetworks", kind: .address, options: [], text: config.string("mynetworks"))
        var own: [[UInt8]] = []
        if let fams = try? HostDefaults.families(inetProtocols: config.string("inet_protocols")).get() {
            for p in ["inet_interfaces", "proxy_interfaces"] where !config.string(p).isEmpty {
                if case .success(let l) = HostDefaults.interfaceAddresses(inetInterfaces: config.string(p), families: fams) {
                    own += l.map { $0.address }
                }
            }
        }
        ownAddresses = own
        localHeaderClients = config.list("local_header_rewrite_clients")
        parentStyle = MatchList.parentStyle("smtpd_access_maps", config: config).contains(.parent)
        var classes: [String: [String]] = [:]
        for name in config.list("smtpd_restriction_classes") {
            classes[name] = Tokens.splitQuoted(config.string(name))
        }
        restrictionClasses = classes
        var lists: [String: [String]] = [:]
        for name in ["smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
                     "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
                     "smtpd_end_of_data_restrictions", "smtpd_etrn_restrictions"] {
            lists[name] = Tokens.splitQuoted(config.string(name))
        }
        self.lists = lists
        let local = LocalDomains(config: config)
        let ext = AddressExtension(config: config)
        self.local = local
        self.ext = ext
        func finder(_ name: String) -> MailAddrFinder? {
            let v = config.string(name)
            if v.isEmpty { return nil }
            return MailAddrFinder(maps: Maps(title: name, mapNames: v, flags: .lock), local: local, extension: ext)
        }
        localRecipientMaps = finder("local_recipient_maps")
        virtualAliasMaps = finder("virtual_alias_maps")
        virtualMailboxMaps = finder("virtual_mailbox_maps")
        relayRecipientMaps = finder("relay_recipient_maps")
        fastFlushDomains = MatchList(name: "fast_flush_domains", kind: .domain,
                                     options: MatchList.parentStyle("fast_flush_domains", config: config),
                                     text: config.string("fast_flush_domains"))
        doubleBounceSender = config.string("double_bounce_sender")
    }

    /// The access table named `spec` (opened once per process).
    func accessTable(_ spec: String) -> Maps {
        if let m = accessTables[spec] { return m }
        let m = Maps(title: spec, mapNames: spec, flags: .lock)
        accessTables[spec] = m
        return m
    }
}
