// Addresses: envelope and header address processing: canonicalization through
// trivial-rewrite, canonical and virtual alias tables, masquerading, BCC tables.
// Mirrors Postfix cleanup/cleanup_addr.c, cleanup_map11.c, cleanup_map1n.c,
// cleanup_masq.c and cleanup_rewrite.c.
import MailUtil
import MailGlobal
import MailDict

extension CleanupState {
    /// Canonical form of an internal address with the "local" or "remote" rule set.
    func rewrite(_ address: String, rule: String) -> String {
        settings.rewriter.rewriteInternal(address, rule: rule)
    }

    /// A table failure defers the message (cleanup_map11 / map1n "map lookup problem").
    func lookupFailed(_ title: String, _ address: String) {
        Msg.warn("\(queueID): \(title) map lookup problem for \(address) -- message not accepted, try again later")
        errors.insert(.write)
        if reason.isEmpty { reason = "4.3.0 \(title) map lookup problem" }
    }

    /// mail_addr_map_internal, results made canonical by trivial-rewrite.
    func mapAddress(_ address: String, _ finder: MailAddrFinder, propagate: Bool) -> [String]? {
        finder.map(address, propagate: propagate) { rewrite($0, rule: MailAttr.rewriteLocal) }
    }

    /// cleanup_map11: one-to-one mapping (canonical tables), repeated until the address
    /// maps to itself or to nothing (at most 10 times).
    func map11(_ address: String, _ map: AddressMap) -> String {
        var a = address
        for _ in 0..<10 {
            guard let list = mapAddress(a, map.finder, propagate: settings.propagateCanonical) else {
                if map.finder.maps.error != nil { lookupFailed(map.title, a) }
                return a
            }
            guard let first = list.first else { return a }
            if list.count > 1 { Msg.warn("\(queueID): multi-valued \(map.title) entry for \(a)") }
            let same = first.lowercased() == a.lowercased()
            a = first
            if same { return a }
        }
        Msg.warn("\(queueID): unreasonable \(map.title) map nesting for \(a) -- message not accepted, try again later")
        errors.insert(.write)
        return a
    }

    /// Sender or recipient through the canonical tables for class `cls`.
    func canonicalize(_ address: String, sender: Bool, _ cls: MapClasses) -> String {
        guard flags.contains(.mapOK) else { return address }
        var a = address
        if let m = sender ? settings.senderCanonical : settings.recipientCanonical, !m.classes.isDisjoint(with: cls) {
            a = map11(a, m)
        }
        if let m = settings.canonical, !m.classes.isDisjoint(with: cls) {
            a = map11(a, m)
        }
        if !settings.masqueradeDomains.isEmpty && !settings.masqueradeClasses.isDisjoint(with: cls) {
            a = masquerade(a)
        }
        return a
    }

    /// masquerade_domains: strip subdomains of a listed domain (a "!" entry stops).
    func masquerade(_ address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return address }
        let localPart = String(address[..<at]).lowercased()
        if settings.masqueradeExceptions.contains(localPart) { return address }
        let domain = String(address[address.index(after: at)...]).lowercased()
        for entry in settings.masqueradeDomains {
            let negated = entry.hasPrefix("!")
            let m = (negated ? String(entry.dropFirst()) : entry).lowercased()
            if m.isEmpty { continue }
            if domain == m && negated { return address }
            if domain.hasSuffix("." + m) {
                return negated ? address : String(address[...at]) + m
            }
        }
        return address
    }

    /// The reply when an alias cannot be expanded (a loop, or too many addresses).
    func aliasExpansionError(_ why: String, _ address: String) {
        Msg.warn("\(queueID): unreasonable virtual_alias_maps map \(why) for \(address) -- message not accepted, try again later")
        errors.insert(.deferred)
        reason = "4.6.0 Alias expansion error"
    }

    /// cleanup_map1n: one-to-many virtual alias expansion. Each address is looked up
    /// again until it maps to nothing or to itself (allowed once), within
    /// virtual_alias_recursion_limit and virtual_alias_expansion_limit.
    func expandVirtual(_ address: String, _ finder: MailAddrFinder) -> [String]? {
        var argv = [address]
        var selfExpanded = Set<String>()
        var arg = 0
        while arg < argv.count {
            if argv.count > settings.virtualExpansionLimit {
                aliasExpansionError("expansion size", address)
                return nil
            }
            var count = 0
            while true {
                if selfExpanded.contains(argv[arg].lowercased()) { break }
                if count >= settings.virtualRecursionLimit {
                    aliasExpansionError("nesting", address)
                    return nil
                }
                count += 1
                guard let lookup = mapAddress(argv[arg], finder, propagate: settings.propagateVirtual) else {
                    if finder.maps.error != nil {
                        lookupFailed("virtual_alias_maps", argv[arg])
                        return nil
                    }
                    break
                }
                let lhs = argv[arg]
                for (i, target) in lookup.enumerated() {
                    if i == 0 { argv[arg] = target } else { argv.append(target) }
                    // An address may expand into itself, once.
                    if target.lowercased() == lhs.lowercased() { selfExpanded.insert(lhs.lowercased()) }
                }
                if lookup.isEmpty { break }
            }
            arg += 1
        }
        return argv
    }

    /// A BCC recipient from sender_bcc_maps or recipient_bcc_maps, written right away in
    /// the local rewriting context, never notified about (cleanup_addr_bcc).
    func bccFor(_ address: String, _ finder: MailAddrFinder?) {
        guard flags.contains(.bccOK), !address.isEmpty, let finder else { return }
        guard let value = finder.find(address) else {
            if finder.maps.error != nil {
                Msg.warn("\(queueID): \(finder.maps.title) map lookup problem -- message not accepted, try again later")
                errors.insert(.write)
            }
            return
        }
        for a in Address822.internalAddresses(value) { outputBcc(a) }
    }

    func outputBcc(_ raw: String) {
        var a = rewrite(raw, rule: MailAttr.rewriteLocal)
        if flags.contains(.mapOK) {
            if let m = settings.recipientCanonical, m.classes.contains(.envelopeRecipient) { a = map11(a, m) }
            if let m = settings.canonical, m.classes.contains(.envelopeRecipient) { a = map11(a, m) }
            if !settings.masqueradeDomains.isEmpty && settings.masqueradeClasses.contains(.envelopeRecipient) {
                a = masquerade(a)
            }
        }
        pendingNotify = DSNNotify.never
        pendingDSNOrcpt = ""
        outputRecipient(a, original: raw, bcc: true)
        resetRecipientState()
    }

    /// The envelope sender (cleanup_addr_sender).
    func processSender(_ raw: String) -> String {
        var a = raw.isEmpty ? "" : rewrite(raw, rule: MailAttr.rewriteLocal)
        let daemon = "mailer-daemon@"
        if a.lowercased().hasPrefix(daemon) {
            let canon = rewrite("MAILER-DAEMON", rule: MailAttr.rewriteLocal)
            if a.lowercased() == canon.lowercased() { a = "" }
        }
        if !a.isEmpty { a = canonicalize(a, sender: true, .envelopeSender) }
        return a
    }

    /// An envelope recipient (cleanup_addr_recipient + cleanup_out_recipient).
    func processRecipient(_ raw: String) {
        var a = rewrite(raw.isEmpty ? settings.emptyRecipient : raw, rule: MailAttr.rewriteLocal)
        a = canonicalize(a, sender: false, .envelopeRecipient)
        let orcpt = pendingOriginal ?? raw
        outputRecipient(a, original: orcpt)
        bccFor(a, settings.recipientBcc)
    }

    /// Writes a recipient after virtual expansion and duplicate elimination
    /// (cleanup_out_recipient).
    func outputRecipient(_ recipient: String, original: String, bcc: Bool = false) {
        var notify = pendingNotify
        // Without one from the client, the DSN original recipient is the canonical address
        // (BCC recipients have none).
        let dsnOrcpt = bcc ? "" : pendingDSNOrcpt.isEmpty ? "rfc822;" + recipient : pendingDSNOrcpt
        // (enable_original_recipient does not concern cleanup in Postfix 3.7.)
        let orcpt = original
        func emit(_ r: String) {
            // The duplicate filter folds case (been_here with BH_FLAG_FOLD).
            let key = "\(dsnOrcpt)\n\(notify)\n\(orcpt)\n\(r)".lowercased()
            if duplicates.contains(key) { return }
            if duplicates.count < settings.duplicateLimit || settings.duplicateLimit == 0 { duplicates.insert(key) }
            if firstRecipientOffset == nil {
                firstRecipientOffset = out.offset
                if settings.delayWarning > 0 && !sender.isEmpty && !warnSeen {
                    out.put(.warnTime, RecordCodec.fixed15(arrivalSeconds + settings.delayWarning))
                }
            }
            if notify != 0 { out.attribute(MailAttr.dsnNotifyFlags, String(notify)) }
            if !dsnOrcpt.isEmpty { out.attribute(MailAttr.dsnOriginalRecipient, dsnOrcpt) }
            out.put(.originalRecipient, orcpt)
            out.put(.recipient, r)
            if !bcc { notifyUnion |= notify }
            recipientCount += 1
            if firstRecipient == nil { firstRecipient = r }
        }
        guard flags.contains(.mapOK), let va = settings.virtualAlias else {
            emit(recipient)
            return
        }
        guard let list = expandVirtual(recipient, va) else { return }
        // An expanded recipient that asked for success notices gets one now ("expanded").
        if notify & DSNNotify.success != 0 && (list.count > 1 || list.first != recipient) {
            let r = RecipientInfo(originalRecipient: orcpt, address: recipient, dsnOriginalRecipient: dsnOrcpt, notify: notify)
            let d = DeliveryStatus(status: "2.0.0", action: "expanded", reason: "alias expanded")
            if BounceClient.traceAppend(flags: BounceFlags.clean.rawValue, queueID: queueID, recipient: r, relay: "none",
                                        status: d, config: settings.config) != 0 {
                Msg.warn("\(queueID): trace logfile update error")
                errors.insert(.write)
            }
            notify = notify == DSNNotify.success ? DSNNotify.never : notify & ~DSNNotify.success
        }
        var done: [String] = []
        for r in list where !done.contains(r) {
            done.append(r)
            emit(r)
        }
    }
}
