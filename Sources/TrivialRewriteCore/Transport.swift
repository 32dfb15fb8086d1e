// Transport: transport_maps, which may override the transport and next hop that the
// address class gave.
// Mirrors Postfix trivial-rewrite/transport.c: the recipient (also without its
// extension), then its domain and parent domains (".domain" entries, or "domain" for
// subdomains in parent style), then the "*" wildcard; the null recipient is looked up as
// transport_null_address_lookup_key. A value is "transport:nexthop"; an empty transport
// keeps the one chosen, an empty next hop resets it to the recipient domain (or a fixed
// text for the error and retry transports).
import Glibc
import MailUtil
import MailDict
import MailGlobal

final class TransportMaps {
    let maps: Maps
    let ext: AddressExtension
    let parentStyle: Bool
    /// The "*" entry and when to look it up again (it is read at most every 30 seconds).
    var wildcard: (transport: String, nexthop: String)?
    var wildcardError: DictError?
    var wildcardExpires: time_t = 0

    init(_ mapNames: String, title: String, config: MailConfig) {
        // "$1" in a result could let a sender choose a transport: not allowed.
        maps = Maps(title: title, mapNames: mapNames, flags: [.lock, .foldFix, .noRegsub, .utf8Request])
        ext = AddressExtension(config: config)
        parentStyle = !MatchList.parentStyle("transport_maps", config: config).isEmpty
        loadWildcard()
    }

    /// Looks up the "*" entry (at start-up, then again after 30 seconds or a failure).
    func loadWildcard() {
        wildcard = nil
        wildcardError = nil
        if let v = maps.find("*", filter: []) {
            wildcard = TransportMaps.split(v)
        } else {
            wildcardError = maps.error
        }
        wildcardExpires = time(nil) + 30
    }

    /// Splits "transport:nexthop" at the first colon.
    static func split(_ value: String) -> (transport: String, nexthop: String) {
        guard let colon = value.firstIndex(of: ":") else { return (value, "") }
        return (String(value[..<colon]), String(value[value.index(after: colon)...]))
    }

    /// Applies an entry's value to the current transport and next hop: ":" changes
    /// nothing, ":nexthop" only the next hop, "transport" resets the next hop to the
    /// domain (the error and retry transports get a reason instead).
    static func update(_ entry: (transport: String, nexthop: String), domain: String,
                       transport: inout String, nexthop: inout String) {
        if entry.transport.isEmpty {
            if !entry.nexthop.isEmpty { nexthop = entry.nexthop }
        } else {
            transport = entry.transport
            if !entry.nexthop.isEmpty {
                nexthop = entry.nexthop
            } else if entry.transport != "error" && entry.transport != "retry" {
                nexthop = domain
            } else {
                nexthop = "Address is undeliverable"
            }
        }
    }

    /// Looks the recipient up; true when an entry applied, false when none did (then
    /// `maps.error` tells whether a table failed).
    func lookup(recipient: String, domain: String, transport: inout String, nexthop: inout String) -> Bool {
        func apply(_ v: String) -> Bool {
            TransportMaps.update(TransportMaps.split(v), domain: domain, transport: &transport, nexthop: &nexthop)
            return true
        }
        func found(_ key: String, _ filter: DictFlags) -> Bool {
            guard let v = maps.find(key, filter: filter) else { return false }
            return apply(v)
        }
        /// An address: its quoted form first, then as it is.
        func foundAddress(_ key: String, _ filter: DictFlags) -> Bool {
            let quoted = Quote822.quote822(key)
            if found(quoted, filter) { return true }
            if maps.error != nil || quoted == key { return false }
            return found(key, filter)
        }
        if recipient.isEmpty {
            Msg.warn("transport_lookup: null address - skipping table lookup")
            return false
        }
        guard let at = recipient.lastIndex(of: "@"), recipient.index(after: at) < recipient.endIndex else {
            Msg.panic("transport_lookup: bad address: \"\(recipient)\"")
        }
        // The whole address (pattern tables too), then without its extension.
        if foundAddress(recipient, []) { return true }
        if maps.error != nil { return false }
        if let stripped = ext.strip(recipient) {
            if foundAddress(stripped.bare, .fixed) { return true }
            if maps.error != nil { return false }
        }
        // The domain, then ".parent" (or "parent" in parent style) names.
        var name = Substring(recipient[recipient.index(after: at)...])
        while !name.isEmpty {
            if found(String(name), .fixed) { return true }
            if maps.error != nil { return false }
            guard let dot = name.dropFirst().firstIndex(of: ".") else { break }
            name = parentStyle ? name[name.index(after: dot)...] : name[dot...]
        }
        // The "*" entry.
        if wildcardError != nil || time(nil) > wildcardExpires { loadWildcard() }
        if let e = wildcardError {
            maps.forceError(e)
            return false
        }
        if let w = wildcard {
            TransportMaps.update(w, domain: domain, transport: &transport, nexthop: &nexthop)
            return true
        }
        return false
    }
}
