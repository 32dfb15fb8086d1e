// Settings: what smtpd reads from main.cf once per process, and the start-up checks that
// refuse an open-relay configuration.
// Mirrors the parameter part of Postfix smtpd/smtpd.c and smtpd_check.c (smtpd_check_init).
import Glibc
import MailUtil
import MailGlobal
import MailTLS
import MailSASL
import MailDict

/// smtpd_forbid_bare_newline.
enum BareNewline {
    case no, normalize, reject
}

/// The restriction list of each stage.
struct RestrictionLists {
    var client: [String]
    var helo: [String]
    var sender: [String]
    var relay: [String]
    var recipient: [String]
    var etrn: [String]
    var data: [String]
    var endOfData: [String]
}

final class Settings {
    let config: MailConfig
    let standalone: Bool
    let myhostname: String
    let banner: String
    let mailName: String
    let timeout: Int
    /// smtpd_per_request_deadline: smtpd_timeout bounds a whole request, not each read.
    let perRequestDeadline: Bool
    /// smtpd_min_data_rate: bytes a second of message content that earn more time.
    let minDataRate: Int
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
    let softBounce: Bool
    let ehloDiscard: EHLOMask
    let ehloDiscardMaps: Maps?
    let bareNewline: BareNewline
    let bareNewlineExclusions: MatchList
    let bareNewlineCode: Int
    let forbiddenCommands: MatchList
    let noopCommands: MatchList
    let forbidUnauthPipelining: Bool
    let peernameLookup: Bool
    let clientPortLogging: Bool
    let nullAccessKey: String
    let rejectCode: Int
    let deferCode: Int
    let relayCode: Int
    let accessRejectCode: Int
    let accessDeferCode: Int
    let nonFQDNCode: Int
    let badNameCode: Int
    let unknownClientCode: Int
    let unknownHostnameCode: Int
    let unknownAddressCode: Int
    let unknownLocalCode: Int
    let unknownVirtualMailboxCode: Int
    let unknownRelayRecipientCode: Int
    let virtualAliasCode: Int
    let multiRecipientBounceCode: Int
    let plaintextCode: Int
    let unknownHeloTempfail: TempfailAction
    let unknownAddressTempfail: TempfailAction
    /// reject_unverified_sender and reject_unverified_recipient.
    let unverifiedSender: Unverified
    let unverifiedRecipient: Unverified
    let verifyPollCount: Int
    /// TLS (smtpd_tls_security_level and friends).
    let tlsLevel: TLSLevel
    let tlsWrapper: Bool
    let tlsReceivedHeader: Bool
    let starttlsTimeout: Int
    var tlsContext: TLSServerContext?
    /// SASL (smtpd_sasl_auth_enable and friends); `saslImpl` is set up once per process.
    let saslEnabled: Bool
    var saslImpl: SASLServerImpl?
    let saslService: String
    let saslRealm: String
    let saslOptions: String
    let saslTLSOptions: String
    let saslMechanismFilter: MatchList?
    let saslExceptions: MatchList?
    let saslResponseLimit: Int
    let saslAuthenticatedHeader: Bool
    let brokenSASLClients: Bool
    let tlsAuthOnly: Bool
    let senderLoginMaps: MailAddrFinder?
    let relayClientCerts: Maps?
    let verifyPollDelay: Int
    let showUnknownTable: Bool
    let allowUntrustedRouting: Bool
    let rejectUnlistedSender: Bool
    let rejectUnlistedRecipient: Bool
    let relayBeforeRecipientChecks: Bool
    let noUnknownRecipientChecks: Bool
    let cleanupService: String
    /// Stand-alone mode: where postdrop lives, and the environment it gets.
    let commandDirectory: String
    let exportEnvironment: [String]
    let cleanupFlags: CleanupFlags
    let contentFilter: String
    let rewriter: TrivialRewriteClient
    let mynetworks: MatchList
    let relayDomains: MatchList
    let permitMXBackupNetworks: MatchList?
    let verpClients: MatchList
    let verpDelimiters: String
    let verpFilter: Set<UInt8>
    let logPermitActions: MatchList
    let ownAddresses: [[UInt8]]
    let inet6: Bool
    let localHeaderClients: [String]
    let parentStyle: Bool
    let restrictionClasses: [String: [String]]
    let lists: RestrictionLists
    let local: LocalDomains
    let ext: AddressExtension
    let localRecipientMaps: MailAddrFinder?
    let virtualAliasMaps: MailAddrFinder?
    let virtualMailboxMaps: MailAddrFinder?
    let relayRecipientMaps: MailAddrFinder?
    let canonicalMaps: MailAddrFinder?
    let senderCanonicalMaps: MailAddrFinder?
    let recipientCanonicalMaps: MailAddrFinder?
    let doubleBounceSender: String
    let rblReplyMaps: Maps?
    let defaultRBLReply: String
    let rblCode: Int
    let mapsRBLDomains: [String]
    let expansionFilter: Set<UInt8>
    let historyThreshold: Int
    let notifyClasses: Set<ErrorClass>
    let errorNoticeRecipient: String
    var accessTables: [String: Maps] = [:]
    var policyClients: [String: PolicyClient] = [:]

    init(config: MailConfig, standalone: Bool) {
        self.config = config
        self.standalone = standalone
        myhostname = config.string("myhostname")
        banner = config.string("smtpd_banner")
        mailName = config.string("mail_name")
        timeout = config.time("smtpd_timeout")
        perRequestDeadline = config.bool("smtpd_per_request_deadline")
        minDataRate = config.int("smtpd_min_data_rate")
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
        softBounce = config.bool("soft_bounce")
        ehloDiscard = EHLOMask.parse(config.string("smtpd_discard_ehlo_keywords"), parameter: "smtpd_discard_ehlo_keywords")
        let discardMaps = config.string("smtpd_discard_ehlo_keyword_address_maps")
        // Stand-alone mode (sendmail -bs) makes no access checks, so it opens no tables: the
        // user who runs it could not reach proxymap anyway.
        ehloDiscardMaps = discardMaps.isEmpty || standalone ? nil
            : Maps(title: "smtpd_discard_ehlo_keyword_address_maps", mapNames: discardMaps, flags: .lock)
        // "normalize" (Postfix 3.9's default; "yes" and "normal" mean the same): a bare LF
        // ends a line but never the message; "reject" refuses it; "no" is the old way.
        switch config.string("smtpd_forbid_bare_newline").lowercased() {
        case "no": bareNewline = .no
        case "normalize", "normal", "yes": bareNewline = .normalize
        case "reject": bareNewline = .reject
        case let v: Msg.fatal("invalid smtpd_forbid_bare_newline value: \"\(v)\"")
        }
        bareNewlineExclusions = MatchList(name: "smtpd_forbid_bare_newline_exclusions", kind: .nameAddress,
                                          options: [], text: config.string("smtpd_forbid_bare_newline_exclusions"))
        bareNewlineCode = config.int("smtpd_forbid_bare_newline_reject_code")
        forbiddenCommands = MatchList(name: "smtpd_forbidden_commands", kind: .string, options: [],
                                      text: config.string("smtpd_forbidden_commands"))
        noopCommands = MatchList(name: "smtpd_noop_commands", kind: .string, options: [],
                                 text: config.string("smtpd_noop_commands"))
        forbidUnauthPipelining = config.bool("smtpd_forbid_unauth_pipelining")
        peernameLookup = config.bool("smtpd_peername_lookup")
        clientPortLogging = config.bool("smtpd_client_port_logging")
        nullAccessKey = config.string("smtpd_null_access_lookup_key")
        rejectCode = config.int("reject_code")
        deferCode = config.int("defer_code")
        relayCode = config.int("relay_domains_reject_code")
        accessRejectCode = config.int("access_map_reject_code")
        accessDeferCode = config.int("access_map_defer_code")
        nonFQDNCode = config.int("non_fqdn_reject_code")
        badNameCode = config.int("invalid_hostname_reject_code")
        unknownClientCode = config.int("unknown_client_reject_code")
        unknownHostnameCode = config.int("unknown_hostname_reject_code")
        unknownAddressCode = config.int("unknown_address_reject_code")
        unknownLocalCode = config.int("unknown_local_recipient_reject_code")
        unknownVirtualMailboxCode = config.int("unknown_virtual_mailbox_reject_code")
        unknownRelayRecipientCode = config.int("unknown_relay_recipient_reject_code")
        virtualAliasCode = config.int("unknown_virtual_alias_reject_code")
        multiRecipientBounceCode = config.int("multi_recipient_bounce_reject_code")
        plaintextCode = config.int("plaintext_reject_code")
        unknownHeloTempfail = TempfailAction(config.string("unknown_helo_hostname_tempfail_action"),
                                             parameter: "unknown_helo_hostname_tempfail_action")
        unknownAddressTempfail = TempfailAction(config.string("unknown_address_tempfail_action"),
                                                parameter: "unknown_address_tempfail_action")
        unverifiedSender = Unverified(config, "sender")
        unverifiedRecipient = Unverified(config, "recipient")
        verifyPollCount = config.int("address_verify_poll_count")
        tlsLevel = TLSLevel.server(config)
        tlsWrapper = config.bool("smtpd_tls_wrappermode")
        tlsReceivedHeader = config.bool("smtpd_tls_received_header")
        starttlsTimeout = config.time("smtpd_starttls_timeout")
        verifyPollDelay = config.time("address_verify_poll_delay")
        saslEnabled = config.bool("smtpd_sasl_auth_enable")
        saslService = config.string("smtpd_sasl_service")
        saslRealm = config.string("smtpd_sasl_local_domain")
        saslOptions = config.string("smtpd_sasl_security_options")
        saslTLSOptions = config.string("smtpd_sasl_tls_security_options")
        let mechFilter = config.string("smtpd_sasl_mechanism_filter")
        saslMechanismFilter = mechFilter.isEmpty ? nil
            : MatchList(name: "smtpd_sasl_mechanism_filter", kind: .string, options: [], text: mechFilter)
        let exceptions = config.string("smtpd_sasl_exceptions_networks")
        saslExceptions = exceptions.isEmpty ? nil
            : MatchList(name: "smtpd_sasl_exceptions_networks", kind: .nameAddress, options: [], text: exceptions)
        saslResponseLimit = config.int("smtpd_sasl_response_limit")
        saslAuthenticatedHeader = config.bool("smtpd_sasl_authenticated_header")
        brokenSASLClients = config.bool("broken_sasl_auth_clients")
        tlsAuthOnly = config.bool("smtpd_tls_auth_only")
        showUnknownTable = config.bool("show_user_unknown_table_name")
        allowUntrustedRouting = config.bool("allow_untrusted_routing")
        rejectUnlistedSender = config.bool("smtpd_reject_unlisted_sender")
        rejectUnlistedRecipient = config.bool("smtpd_reject_unlisted_recipient")
        relayBeforeRecipientChecks = config.bool("smtpd_relay_before_recipient_restrictions")
        let overrides = config.list("receive_override_options")
        noUnknownRecipientChecks = overrides.contains { $0.lowercased() == "no_unknown_recipient_checks" }
        cleanupService = config.string("cleanup_service_name")
        commandDirectory = config.string("command_directory")
        exportEnvironment = ImportEnvironment.filtered(config, parameter: "export_environment")
        cleanupFlags = CleanupFlags([.external, .smtpReply]).overridden(by: overrides)
        contentFilter = config.string("content_filter")
        rewriter = TrivialRewriteClient(config: config)
        mynetworks = MatchList(name: "mynetworks", kind: .address, options: [], text: config.string("mynetworks"))
        relayDomains = MatchList(name: "relay_domains", kind: .domain,
                                 options: MatchList.parentStyle("relay_domains", config: config),
                                 text: config.string("relay_domains"))
        let mxNets = config.string("permit_mx_backup_networks")
        permitMXBackupNetworks = mxNets.isEmpty ? nil
            : MatchList(name: "permit_mx_backup_networks", kind: .address, options: [], text: mxNets)
        verpClients = MatchList(name: "smtpd_authorized_verp_clients", kind: .nameAddress, options: [],
                                text: config.string("smtpd_authorized_verp_clients"))
        verpDelimiters = config.string("default_verp_delimiters")
        verpFilter = Set(config.string("verp_delimiter_filter").utf8)
        logPermitActions = MatchList(name: "smtpd_log_access_permit_actions", kind: .string, options: [],
                                     text: config.string("smtpd_log_access_permit_actions"))
        ownAddresses = HostDefaults.ownAddresses(config)
        inet6 = (try? HostDefaults.families(inetProtocols: config.string("inet_protocols")).get())?.contains(AF_INET6) ?? false
        localHeaderClients = config.list("local_header_rewrite_clients")
        parentStyle = MatchList.parentStyle("smtpd_access_maps", config: config).contains(.parent)
        var classes: [String: [String]] = [:]
        for name in config.list("smtpd_restriction_classes") {
            classes[name] = Tokens.splitQuoted(config.string(name))
        }
        restrictionClasses = classes
        func list(_ name: String) -> [String] { Tokens.splitQuoted(config.string(name)) }
        lists = RestrictionLists(client: list("smtpd_client_restrictions"), helo: list("smtpd_helo_restrictions"),
                                 sender: list("smtpd_sender_restrictions"), relay: list("smtpd_relay_restrictions"),
                                 recipient: list("smtpd_recipient_restrictions"), etrn: list("smtpd_etrn_restrictions"),
                                 data: list("smtpd_data_restrictions"), endOfData: list("smtpd_end_of_data_restrictions"))
        let local = LocalDomains(config: config)
        let ext = AddressExtension(config: config)
        self.local = local
        self.ext = ext
        func finder(_ name: String) -> MailAddrFinder? {
            let v = config.string(name)
            if v.isEmpty || standalone { return nil }
            return MailAddrFinder(maps: Maps(title: name, mapNames: v, flags: .lock), local: local, extension: ext)
        }
        localRecipientMaps = finder("local_recipient_maps")
        virtualAliasMaps = finder("virtual_alias_maps")
        virtualMailboxMaps = finder("virtual_mailbox_maps")
        relayRecipientMaps = finder("relay_recipient_maps")
        canonicalMaps = finder("canonical_maps")
        senderCanonicalMaps = finder("sender_canonical_maps")
        recipientCanonicalMaps = finder("recipient_canonical_maps")
        senderLoginMaps = finder("smtpd_sender_login_maps")
        let ccerts = config.string("relay_clientcerts")
        relayClientCerts = ccerts.isEmpty || standalone ? nil : Maps(title: "relay_clientcerts", mapNames: ccerts, flags: .lock)
        doubleBounceSender = config.string("double_bounce_sender")
        let replyMaps = config.string("rbl_reply_maps")
        rblReplyMaps = replyMaps.isEmpty || standalone ? nil : Maps(title: "rbl_reply_maps", mapNames: replyMaps, flags: .lock)
        defaultRBLReply = config.string("default_rbl_reply")
        rblCode = config.int("maps_rbl_reject_code")
        mapsRBLDomains = config.list("maps_rbl_domains")
        expansionFilter = Set(Self.unescape(config.string("smtpd_expansion_filter")))
        historyThreshold = config.int("smtpd_history_flush_threshold")
        var notify: Set<ErrorClass> = []
        for c in config.list("notify_classes") {
            switch c.lowercased() {
            case "bounce": notify.insert(.bounce)
            case "data": notify.insert(.data)
            case "policy": notify.insert(.policy)
            case "protocol": notify.insert(.proto)
            case "resource": notify.insert(.resource)
            case "software": notify.insert(.software)
            case "2bounce", "delay": break
            default: Msg.warn("unknown notify_classes value \"\(c)\" ignored")
            }
        }
        notifyClasses = notify
        errorNoticeRecipient = config.string("error_notice_recipient")
        requireRelayControl()
        // Policy servers are set up at start-up, so that a malformed one stops smtpd there.
        for l in [lists.client, lists.helo, lists.sender, lists.relay, lists.recipient, lists.etrn, lists.data,
                  lists.endOfData] + Array(restrictionClasses.values) {
            for (i, r) in l.enumerated() where r.lowercased() == "check_policy_service" && i + 1 < l.count {
                _ = policyClient(l[i + 1])
            }
        }
    }

    /// The relay and recipient lists together must refuse something: Postfix will not
    /// start as an open relay.
    func requireRelayControl() {
        let required = ["reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
                        "defer_if_permit", "check_relay_domains"]
        var seen: Set<String> = []
        func has(_ list: [String]) -> Bool {
            var i = 0
            while i < list.count {
                let r = list[i].lowercased()
                if r == "warn_if_reject" && i + 1 < list.count {
                    i += 2
                    continue
                }
                if r == "permit" { return false }
                if required.contains(r) { return true }
                if let cls = restrictionClasses[list[i]], seen.insert(list[i]).inserted, has(cls) { return true }
                i += 1
            }
            return false
        }
        if !has(lists.recipient) && !has(lists.relay) {
            Msg.fatal("in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: \(required.prefix(5).joined(separator: ", ")) or \(required.last!)")
        }
    }

    /// The access table named `spec` (opened once per process).
    func accessTable(_ spec: String) -> Maps {
        if let m = accessTables[spec] { return m }
        let m = Maps(title: spec, mapNames: spec, flags: .lock)
        accessTables[spec] = m
        return m
    }

    func policyClient(_ spec: String) -> PolicyClient {
        if let c = policyClients[spec] { return c }
        let c = PolicyClient(spec: spec, config: config)
        policyClients[spec] = c
        return c
    }

    /// An address as info_log_address_format wants it in log lines.
    func logAddress(_ address: String) -> String {
        address.isEmpty ? "" : Quote822.quote822(address)
    }

    /// Backslash escapes of a character-set parameter (\t, \40, \\).
    static func unescape(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        let b = Array(text.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\") && i + 1 < b.count {
                let c = b[i + 1]
                switch c {
                case UInt8(ascii: "t"): out.append(0x09); i += 2
                case UInt8(ascii: "n"): out.append(0x0A); i += 2
                case UInt8(ascii: "r"): out.append(0x0D); i += 2
                case UInt8(ascii: "0")...UInt8(ascii: "7"):
                    var v = 0
                    var j = i + 1
                    while j < b.count && j < i + 4 && b[j] >= 0x30 && b[j] <= 0x37 {
                        v = v * 8 + Int(b[j] - 0x30)
                        j += 1
                    }
                    out.append(UInt8(truncatingIfNeeded: v))
                    i = j
                default: out.append(c); i += 2
                }
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }
}

/// unverified_{sender,recipient}_{defer_code,reject_code,reject_reason,tempfail_action}.
struct Unverified {
    let deferCode: Int
    let rejectCode: Int
    let reason: String
    let tempfail: TempfailAction

    init(_ config: MailConfig, _ what: String) {
        deferCode = config.int("unverified_\(what)_defer_code")
        rejectCode = config.int("unverified_\(what)_reject_code")
        reason = config.string("unverified_\(what)_reject_reason")
        tempfail = TempfailAction(config.string("unverified_\(what)_tempfail_action"),
                                  parameter: "unverified_\(what)_tempfail_action")
    }
}
