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
        let external = Quote822.quote822(address)
        return Quote822.unquote822(settings.rewriter.rewrite(external, rule: rule))
    }

    /// A table failure defers the message (cleanup_map11 / map1n "map lookup problem").
    func lookupFailed(_ title: String, _ address: String) {
        Msg.warn("\(queueID): \(title) map lookup problem for \(address) -- message not accepted, try again later")
        errors.insert(.write)
        if reason.isEmpty { reason = "4.3.0 \(title) map lookup problem" }
    }

    /// Appends the extension a match without it dropped (propagate_unmatched_extensions).
    func withExtension(_ address: String, _ ext: String?, propagate: Bool) -> String {
        guard propagate, let ext, !ext.isEmpty else { return address }
        if let at = address.lastIndex(of: "@") {
            return String(address[..<at]) + ext + String(address[at...])
        }
        return address + ext
    }

    /// One-to-one mapping (canonical tables); returns the new address or the old one.
    func map11(_ address: String, _ map: AddressMap) -> String {
        var ext: String?
        guard let value = map.finder.find(address, extension: &ext) else {
            if map.finder.maps.error != nil { lookupFailed(map.title, address) }
            return address
        }
        let list = Address822.internalAddresses(value)
        guard let first = list.first else { return address }
        if list.count > 1 {
            Msg.warn("\(queueID): multi-valued \(map.title) entry for \(address)")
        }
        return withExtension(first, ext, propagate: settings.propagateCanonical)
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

    /// One-to-many virtual alias expansion, with Postfix's recursion and size limits.
    func expandVirtual(_ address: String, _ finder: MailAddrFinder) -> [String] {
        var out: [String] = []
        var seen = Set<String>()
        func expand(_ addr: String, depth: Int) {
            if errors.contains(.write) { return }
            if depth > settings.virtualRecursionLimit {
                Msg.warn("\(queueID): unreasonable virtual_alias_maps map nesting for \(address) -- message not accepted, try again later")
                errors.insert(.write)
                return
            }
            if out.count >= settings.virtualExpansionLimit {
                Msg.warn("\(queueID): unreasonable virtual_alias_maps map expansion size for \(address) -- message not accepted, try again later")
                errors.insert(.write)
                return
            }
            var ext: String?
            guard let value = finder.find(addr, extension: &ext) else {
                if finder.maps.error != nil { lookupFailed("virtual_alias_maps", addr) }
                else { out.append(addr) }
                return
            }
            for target in Address822.internalAddresses(value) {
                let t = withExtension(target, ext, propagate: settings.propagateVirtual)
                if t.lowercased() == addr.lowercased() {
                    if !out.contains(t) { out.append(t) }
                    continue
                }
                if !seen.insert(t.lowercased()).inserted { continue }
                expand(t, depth: depth + 1)
            }
        }
        seen.insert(address.lowercased())
        expand(address, depth: 0)
        if errors.contains(.write) { return [] }
        return out
    }

    /// BCC recipients for the sender or a recipient (sender_bcc_maps, recipient_bcc_maps).
    func bccFor(_ address: String, _ finder: MailAddrFinder?) {
        guard flags.contains(.bccOK), !address.isEmpty, let finder else { return }
        guard let value = finder.find(address) else {
            if finder.maps.error != nil { lookupFailed(finder.maps.title, address) }
            return
        }
        for a in Address822.internalAddresses(value) where !hiddenRecipients.contains(a) {
            hiddenRecipients.append(a)
        }
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
        bccFor(a, settings.senderBcc)
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

    /// Writes a recipient after virtual expansion and duplicate elimination.
    func outputRecipient(_ recipient: String, original: String) {
        let notify = pendingNotify
        // Without one from the client, the DSN original recipient is the address
        // before virtual expansion.
        let dsnOrcpt = pendingDSNOrcpt.isEmpty ? "rfc822;" + recipient : pendingDSNOrcpt
        func emit(_ r: String, notify: Int, type: RecordType = .recipient) {
            // The duplicate filter folds case (been_here with BH_FLAG_FOLD).
            let key = "\(dsnOrcpt)\n\(notify)\n\(original)\n\(r)".lowercased()
            if type == .recipient {
                if duplicates.contains(key) { return }
                if duplicates.count < settings.duplicateLimit || settings.duplicateLimit == 0 { duplicates.insert(key) }
            }
            if firstRecipientOffset == nil {
                firstRecipientOffset = out.offset
                if settings.delayWarning > 0 && !sender.isEmpty && !warnSeen {
                    out.put(.warnTime, RecordCodec.fixed15(arrivalSeconds + settings.delayWarning))
                }
            }
            if notify != 0 { out.attribute(MailAttr.dsnNotifyFlags, String(notify)) }
            if !dsnOrcpt.isEmpty { out.attribute(MailAttr.dsnOriginalRecipient, dsnOrcpt) }
            if settings.originalRecipient { out.put(.originalRecipient, original) }
            out.put(type, r)
            notifyUnion |= notify
            recipientCount += 1
            if firstRecipient == nil { firstRecipient = r }
        }
        if flags.contains(.mapOK), let va = settings.virtualAlias {
            let list = expandVirtual(recipient, va)
            if errors.contains(.write) { return }
            var n = notify
            if notify & DSNNotify.success != 0 && (list.count > 1 || list.first != recipient) {
                emit(recipient, notify: notify, type: .doneRecipient)
                n = notify == DSNNotify.success ? DSNNotify.never : notify & ~DSNNotify.success
            }
            for r in list { emit(r, notify: n) }
        } else {
            emit(recipient, notify: notify)
        }
    }
}

