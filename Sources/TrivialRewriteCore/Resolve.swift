// Resolve: the "resolve" and "verify" requests of trivial-rewrite: which transport and
// next hop a recipient goes to, in canonical user@domain form, and its address class.
// Mirrors Postfix trivial-rewrite/resolve.c: local domains are stripped off the right
// end again and again while routing operators ('@', and '%' and '!' when enabled) remain,
// so "user%remote@local" and "remote!user@local" resolve to the remote site (and so
// are relaying, which the callers then refuse); an empty local part is
// $empty_address_recipient; then the class decides: local, virtual alias, virtual
// mailbox, relay or default, with relayhost and the sender-dependent tables; then
// transport_maps, then relocated_maps.
import MailUtil
import MailDict
import MailGlobal

/// The transport parameters of one resolve flavour (resolve, or verify with its
/// address_verify_* overrides).
final class ResolveContext {
    let localTransport: (value: String, name: String)
    let virtualTransport: (value: String, name: String)
    let relayTransport: (value: String, name: String)
    let defaultTransport: (value: String, name: String)
    let relayhost: String
    let senderRelay: (maps: Maps, finder: MailAddrFinder, name: String)?
    let senderTransport: (maps: Maps, finder: MailAddrFinder, name: String)?
    let transport: TransportMaps?
    let transportName: String

    init(config: MailConfig, verify: Bool) {
        func p(_ name: String) -> (String, String) {
            let n = verify ? "address_verify_" + name : name
            return (config.string(n), n)
        }
        localTransport = p("local_transport")
        virtualTransport = p("virtual_transport")
        relayTransport = p("relay_transport")
        defaultTransport = p("default_transport")
        relayhost = p("relayhost").0
        let ext = AddressExtension(config: config)
        func maps(_ name: String) -> (Maps, MailAddrFinder, String)? {
            let (value, param) = p(name)
            if value.isEmpty { return nil }
            let m = Maps(title: param, mapNames: value, flags: [.lock, .foldFix, .noRegsub, .utf8Request])
            return (m, MailAddrFinder(maps: m, local: nil, extension: ext), param)
        }
        senderRelay = maps("sender_dependent_relayhost_maps")
        senderTransport = maps("sender_dependent_default_transport_maps")
        let (t, tn) = p("transport_maps")
        transportName = tn
        transport = t.isEmpty ? nil : TransportMaps(t, title: tn, config: config)
    }
}

/// The result of resolving one address.
struct Resolution: Equatable {
    var transport = ""
    var nexthop = ""
    var recipient = ""
    var flags: ResolveFlags = []
}

final class Resolver {
    let config: MailConfig
    let settings: RewriteSettings
    let local: LocalDomains
    let myhostname: String
    let emptyRecipient: String
    let dequoted: Bool
    let nullDomain: Bool
    let numericDomain: Bool
    let smtputf8: Bool
    let showTableName: Bool
    let nullSenderKey: String
    let nullTransportKey: String
    let allowMinUser: Bool
    let virtualAliasDomains: MatchList?
    let virtualMailboxDomains: MatchList?
    let relayDomains: MatchList?
    let relocated: (maps: Maps, finder: MailAddrFinder)?

    init(config: MailConfig) {
        self.config = config
        settings = RewriteSettings(config: config)
        local = LocalDomains(config: config)
        myhostname = config.string("myhostname")
        emptyRecipient = config.string("empty_address_recipient")
        dequoted = config.bool("resolve_dequoted_address")
        nullDomain = config.bool("resolve_null_domain")
        numericDomain = config.bool("resolve_numeric_domain")
        smtputf8 = config.bool("smtputf8_enable")
        showTableName = config.bool("show_user_unknown_table_name")
        nullSenderKey = config.string("empty_address_relayhost_maps_lookup_key")
        nullTransportKey = config.string("empty_address_default_transport_maps_lookup_key")
        allowMinUser = config.bool("allow_min_user")
        func list(_ name: String, kind: MatchList.Kind) -> MatchList? {
            let v = config.string(name)
            if v.isEmpty { return nil }
            return MatchList(name: name, kind: kind, options: MatchList.parentStyle(name, config: config).union(.returnErrors), text: v)
        }
        virtualAliasDomains = list("virtual_alias_domains", kind: .string)
        virtualMailboxDomains = list("virtual_mailbox_domains", kind: .string)
        relayDomains = list("relay_domains", kind: .domain)
        let r = config.string("relocated_maps")
        if r.isEmpty {
            relocated = nil
        } else {
            let m = Maps(title: "relocated_maps", mapNames: r, flags: [.lock, .foldFix, .utf8Request])
            relocated = (m, MailAddrFinder(maps: m, local: local, extension: AddressExtension(config: config)))
        }
    }

    static let at = AddressTokens.at

    /// What a sender-dependent table says about a sender.
    enum SenderAnswer {
        case value(String)
        /// DUNNO, or an empty result (reported): use the default.
        case dunno
        case none
        case failed
    }

    /// Looks up the sender (the null sender as `nullKey`) in a sender-dependent table.
    func senderAnswer(_ t: (maps: Maps, finder: MailAddrFinder, name: String), _ sender: String,
                      nullKey: String) -> SenderAnswer {
        let key = sender.isEmpty ? nullKey : sender
        guard let v = t.finder.find(key) else { return t.maps.error != nil ? .failed : .none }
        if v.isEmpty {
            Msg.warn("\(t.name): ignoring null lookup result for \(key)")
            return .dunno
        }
        return CaseFold.lowercaseASCII(v) == "dunno" ? .dunno : .value(v)
    }

    /// Resolves an address in internal (unquoted) form.
    func resolve(_ address: String, sender: String, _ rp: ResolveContext) -> Resolution {
        var res = Resolution(transport: "CHANNEL NOT UPDATED", nexthop: "NEXTHOP NOT UPDATED",
                             recipient: "NEXTRCPT NOT UPDATED", flags: [])
        // Work on the quoted form, and open quoted local parts only where routing
        // operators hide in them (so that "first last" keeps its quotes).
        var a = AddressTokens(Quote822.quote822(address))
        var savedDomain: [Tok822]?
        var remote = false
        let loopMax = address.utf8.count + 100
        var loops = 0
        while true {
            loops += 1
            if loops > loopMax {
                Msg.warn("resolve_addr: <\(address)>: giving up after \(loops - 1) iterations")
                res.flags.insert(.fail)
                return res
            }
            // One trailing dot of a domain goes, but not from ".." or "@.".
            if let last = a.tokens.last, last.type == AddressTokens.dot, a.last(Resolver.at) != nil {
                let prev = a.tokens[a.tokens.count - 2].type
                if prev != AddressTokens.dot && prev != Resolver.at { a.tokens.removeLast() }
            }
            if nullDomain, a.tokens.last?.type == Resolver.at { a.tokens.removeLast() }
            // Strip, and remember, a local @domain; stop at a remote one.
            if let at = a.last(Resolver.at) {
                if at + 1 < a.tokens.count {
                    switch local.resolveLocal(AddressTokens.text(a.tokens[(at + 1)...])) {
                    case .failure:
                        res.flags.insert(.fail)
                        return res
                    case .success(false):
                        remote = true
                    case .success(true):
                        break
                    }
                    if remote { break }
                }
                savedDomain = Array(a.tokens[at...])
                a.tokens.removeSubrange(at...)
            }
            // Routing operators in what is left: make it canonical and go again.
            if a.last(Resolver.at) != nil
                || (settings.swapBangpath && a.last(AddressTokens.bang) != nil)
                || (settings.percentHack && a.last(AddressTokens.percent) != nil) {
                Rewriter.rewrite(&a, settings.local, settings)
                continue
            }
            // A quoted local part with routing operators inside is opened up.
            if dequoted, a.tokens.count == 1, a.tokens[0].type == Tok822.Kind.quotedString {
                var local = a.tokens[0].text
                let op = local.lastIndex(of: UInt8(ascii: "@"))
                    ?? (settings.percentHack ? local.lastIndex(of: UInt8(ascii: "%")) : nil)
                    ?? (settings.swapBangpath ? local.lastIndex(of: UInt8(ascii: "!")) : nil)
                if let op {
                    if local[op] == UInt8(ascii: "%") { local[op] = UInt8(ascii: "@") }
                    var text = String(decoding: local, as: UTF8.self)
                    if local[op] == UInt8(ascii: "@") { text = Quote822.quote822(text) }
                    a = AddressTokens(tokens: Address822.scan(text))
                    Rewriter.rewrite(&a, settings.local, settings)
                    continue
                }
            }
            // An empty (or empty quoted) local part is $empty_address_recipient.
            if a.tokens.count == 1, a.tokens[0].type == Tok822.Kind.quotedString, a.tokens[0].text.isEmpty {
                a.tokens = []
            }
            if a.tokens.isEmpty {
                a.tokens = Address822.scan(emptyRecipient)
                continue
            }
            // No domain at all: try again with @$myhostname.
            if savedDomain == nil {
                a.tokens += [AddressTokens.op("@")] + AddressTokens.parts(myhostname)
                continue
            }
            break
        }

        // user@domain form: the local domain that was stripped, or $myhostname.
        if !remote {
            if let d = savedDomain {
                a.tokens += AddressTokens.owned(d)
            } else {
                a.tokens += [AddressTokens.op("@")] + AddressTokens.parts(myhostname)
            }
        }
        var rcpt = a.internalForm
        guard let atIndex = rcpt.lastIndex(of: "@") else { Msg.panic("no @ in address: \"\(rcpt)\"") }
        var domain = String(rcpt[rcpt.index(after: atIndex)...])
        if domain.hasPrefix("[") {
            if !ValidHostname.isMailhostLiteral(domain) { res.flags.insert(.error) }
        } else if !ValidHostname.isValid(domain, utf8: smtputf8) {
            if numericDomain && ValidHostname.isAddress(domain) {
                rcpt = String(rcpt[...atIndex]) + "[" + domain + "]"
                domain = "[" + domain + "]"
                switch local.resolveLocal(domain) {
                case .success(true): remote = false
                case .success(false): break
                case .failure:
                    res.recipient = rcpt
                    res.flags.insert(.fail)
                    return res
                }
            } else {
                res.flags.insert(.error)
            }
        }
        res.recipient = rcpt
        // Malformed: no transport, and the default class.
        if res.flags.contains(.error) {
            res.flags.insert(.default)
            return res
        }
        // Routing operators anywhere in the local part, whatever this site does with
        // them: the next site may act on them.
        if let op = rcpt.firstIndex(where: { $0 == "@" || $0 == "!" || $0 == "%" }),
           rcpt[rcpt.index(after: op)...] != domain[...] {
            res.flags.insert(.routed)
        }

        /// A table failed: a temporary failure for the whole request.
        func lookupFailure(_ table: String) -> Resolution {
            Msg.warn("\(table) lookup failure")
            res.flags.insert(.fail)
            return res
        }

        var blame = ""
        if remote {
            if let l = virtualAliasDomains, l.matches(domain) {
                if let v = virtualMailboxDomains, v.matches(domain) {
                    Msg.warn("do not list domain \(domain) in BOTH virtual_alias_domains and virtual_mailbox_domains")
                }
                if let r = relayDomains, r.matches(domain) {
                    Msg.warn("do not list domain \(domain) in BOTH virtual_alias_domains and relay_domains")
                }
                res.transport = "error"
                res.nexthop = "5.1.1 User unknown" + (showTableName ? " in virtual alias table" : "")
                res.flags.insert(.alias)
            } else if let l = virtualAliasDomains, l.error != nil {
                return lookupFailure("virtual_alias_domains")
            } else if let l = virtualMailboxDomains, l.matches(domain) {
                if let r = relayDomains, r.matches(domain) {
                    Msg.warn("do not list domain \(domain) in BOTH virtual_mailbox_domains and relay_domains")
                }
                res.transport = rp.virtualTransport.value
                res.nexthop = domain
                blame = rp.virtualTransport.name
                res.flags.insert(.virtual)
            } else if let l = virtualMailboxDomains, l.error != nil {
                return lookupFailure("virtual_mailbox_domains")
            } else {
                if let l = relayDomains, l.matches(domain) {
                    res.transport = rp.relayTransport.value
                    blame = rp.relayTransport.name
                    res.flags.insert(.relay)
                } else if let l = relayDomains, l.error != nil {
                    return lookupFailure("relay_domains")
                } else {
                    res.transport = rp.defaultTransport.value
                    blame = rp.defaultTransport.name
                    if let st = rp.senderTransport {
                        switch senderAnswer(st, sender, nullKey: nullTransportKey) {
                        case .value(let t):
                            res.transport = t
                            blame = st.name
                        case .dunno: blame = st.name
                        case .none: break
                        case .failed: return lookupFailure(st.name)
                        }
                    }
                    res.flags.insert(.default)
                }
                // The next hop: the sender's relay host, relayhost, or the domain.
                var relay: String?
                if let sr = rp.senderRelay {
                    switch senderAnswer(sr, sender, nullKey: nullSenderKey) {
                    case .value(let r): relay = r
                    case .dunno, .none: break
                    case .failed: return lookupFailure(sr.name)
                    }
                }
                res.nexthop = relay ?? (rp.relayhost.isEmpty ? domain : rp.relayhost)
            }
        } else {
            if let l = virtualAliasDomains, l.matches(domain) {
                Msg.warn("do not list domain \(domain) in BOTH mydestination and virtual_alias_domains")
            }
            if let l = virtualMailboxDomains, l.matches(domain) {
                Msg.warn("do not list domain \(domain) in BOTH mydestination and virtual_mailbox_domains")
            }
            res.transport = rp.localTransport.value
            res.nexthop = domain
            blame = rp.localTransport.name
            res.flags.insert(.local)
        }

        // A main.cf "transport:nexthop" value overrides the next hop.
        if let colon = res.transport.firstIndex(of: ":") {
            let hop = String(res.transport[res.transport.index(after: colon)...])
            res.transport = String(res.transport[..<colon])
            if !hop.isEmpty { res.nexthop = hop }
        }
        if res.transport.isEmpty {
            Msg.warn("file \(config.configDirectory)/main.cf: parameter \(blame): null transport is not allowed")
            res.flags.insert(.fail)
            return res
        }

        // transport_maps may override, except for virtual alias domains.
        if let tm = rp.transport, !res.flags.contains(.alias) {
            if !tm.lookup(recipient: res.recipient, domain: domain, transport: &res.transport, nexthop: &res.nexthop),
               tm.maps.error != nil {
                return lookupFailure(rp.transportName)
            }
        }

        // Recipients that moved bounce, whatever their class.
        if let rel = relocated {
            if let newLocation = rel.finder.find(res.recipient) {
                res.transport = "error"
                res.nexthop = "5.1.6 User has moved to \(newLocation)"
            } else if rel.maps.error != nil {
                return lookupFailure("relocated_maps")
            }
        }

        // A recipient that starts with "-" could pass for a command option.
        if !allowMinUser && res.recipient.hasPrefix("-") {
            res.flags.insert(.error)
        }
        return res
    }
}
