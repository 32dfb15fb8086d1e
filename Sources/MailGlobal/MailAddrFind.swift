// MailAddrFind: looking up an address in a list of tables the way Postfix does: the
// full address, then without its extension, then (for local domains) the local part,
// then "@domain", then the domain and its parents, then "localpart@".
// Mirrors Postfix global/mail_addr_find.c, strip_addr.c, split_addr.c and
// resolve_local.c (3.7): only the full address is shown to pattern tables (regexp, pcre,
// cidr); every shorter key goes to fixed-key tables only; keys keep their case (tables
// fold them); a table failure ends the search; the extension is reported only when the
// match came from a key without it.
import Glibc
import MailUtil
import MailDict

public struct MailAddrStrategy: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let full = MailAddrStrategy(rawValue: 1 << 0)
    public static let noExtension = MailAddrStrategy(rawValue: 1 << 1)
    public static let localPartIfLocal = MailAddrStrategy(rawValue: 1 << 2)
    public static let localPartAtIfLocal = MailAddrStrategy(rawValue: 1 << 3)
    public static let atDomain = MailAddrStrategy(rawValue: 1 << 4)
    public static let domain = MailAddrStrategy(rawValue: 1 << 5)
    /// "example.com" matches subdomains (parent style).
    public static let parentDomains = MailAddrStrategy(rawValue: 1 << 6)
    /// ".example.com" matches subdomains.
    public static let dotParentDomains = MailAddrStrategy(rawValue: 1 << 7)
    public static let localPartAt = MailAddrStrategy(rawValue: 1 << 8)

    public static let `default`: MailAddrStrategy = [.full, .noExtension, .localPartIfLocal, .atDomain]
}

/// How keys are written: internal (unquoted local part), external (RFC 5322 quoted), or
/// external first and internal when that differs ("legacy" form).
public enum MailAddrForm: Sendable {
    case `internal`, external, externalFirst
}

/// What decides whether a domain is local: $myorigin, $mydestination, and the addresses
/// of inet_interfaces/proxy_interfaces for "[address]" literals.
public final class LocalDomains {
    let myorigin: String
    let mydestination: MatchList
    let ownAddresses: [[UInt8]]

    public init(config: MailConfig) {
        myorigin = config.string("myorigin")
        mydestination = MatchList(name: "mydestination", kind: .string, options: .returnErrors,
                                  text: config.string("mydestination"))
        ownAddresses = HostDefaults.ownAddresses(config)
    }

    /// resolve_local: 1 local, 0 not, or the table failure of mydestination.
    public func resolveLocal(_ domain: String) -> Result<Bool, DictError> {
        var d = Substring(domain)
        if d.hasSuffix(".") && !d.hasSuffix("..") { d = d.dropLast() }
        if d.isEmpty { return .success(false) }
        if mydestination.matches(String(d)) { return .success(true) }
        if let e = mydestination.error { return .failure(e) }
        if d.hasPrefix("[") && d.hasSuffix("]") {
            var inner = d.dropFirst().dropLast()
            if inner.lowercased().hasPrefix("ipv6:") { inner = inner.dropFirst(5) }
            if let bytes = CIDRPattern.parseAddress(String(inner)), ownAddresses.contains(bytes) { return .success(true) }
        }
        return .success(false)
    }

    /// The domain is $myorigin (ignoring case) or resolves as local.
    public func isLocal(_ domain: String) -> Result<Bool, DictError> {
        if CaseFold.fold(domain) == CaseFold.fold(myorigin) { return .success(true) }
        return resolveLocal(domain)
    }
}

/// Splitting an address extension off ("user+ext" → "user", "+ext").
public struct AddressExtension: Sendable {
    public let delimiters: String
    public let ownerRequestSpecial: Bool
    public let doubleBounceSender: String

    public init(config: MailConfig) {
        delimiters = config.string("recipient_delimiter")
        ownerRequestSpecial = config.bool("owner_request_special")
        doubleBounceSender = config.string("double_bounce_sender")
    }

    public init(delimiters: String, ownerRequestSpecial: Bool = true, doubleBounceSender: String = "double-bounce") {
        self.delimiters = delimiters
        self.ownerRequestSpecial = ownerRequestSpecial
        self.doubleBounceSender = doubleBounceSender
    }

    /// split_addr_internal: where the extension of a local part starts (at its delimiter),
    /// or nil when this local part has none.
    public func splitPoint(_ local: String) -> String.Index? {
        let l = local.lowercased()
        if l == "postmaster" || l == "mailer-daemon" || CaseFold.fold(local) == CaseFold.fold(doubleBounceSender) {
            return nil
        }
        if delimiters.contains("-") && ownerRequestSpecial {
            if l.hasPrefix("owner-") { return nil }
            if l.count > 8 && l.hasSuffix("-request") { return nil }
        }
        guard let at = local.firstIndex(where: { delimiters.contains($0) }) else { return nil }
        if at == local.startIndex { return nil }
        return at
    }

    /// strip_addr_internal: the address without extension, and the extension (starting
    /// with its delimiter); nil when nothing was stripped.
    public func strip(_ address: String) -> (bare: String, ext: String)? {
        guard !delimiters.isEmpty, address.contains(where: { delimiters.contains($0) }) else { return nil }
        let at = address.lastIndex(of: "@")
        let local = String(address[..<(at ?? address.endIndex)])
        guard let split = splitPoint(local) else { return nil }
        let bare = String(local[..<split]) + (at.map { String(address[$0...]) } ?? "")
        return (bare, String(local[split...]))
    }
}

public final class MailAddrFinder {
    public let maps: Maps
    let local: LocalDomains?
    let ext: AddressExtension

    public init(maps: Maps, local: LocalDomains?, extension ext: AddressExtension) {
        self.maps = maps
        self.local = local
        self.ext = ext
    }

    /// The answer of the first key that has one; `extension` is set when that key was
    /// the address without its extension. nil with `maps.error` set after a failure.
    public func find(_ address: String, strategy: MailAddrStrategy = .default,
                     inForm: MailAddrForm = .internal, queryForm: MailAddrForm = .externalFirst,
                     outForm: MailAddrForm = .external, extension extOut: inout String?) -> String? {
        extOut = nil
        let full = inForm == .external ? Quote822.unquote822(address) : address
        var stripped: (bare: String, ext: String)?
        if strategy.contains(.noExtension) { stripped = ext.strip(full) }

        var result: String?
        func failed() -> Bool { maps.error != nil }

        func findAddr(_ key: String, filter: DictFlags, withDomain: Bool) -> String? {
            switch queryForm {
            case .internal:
                return maps.find(key, filter: filter)
            case .external, .externalFirst:
                let quoted = Quote822.quote822(key, flags: withDomain ? .eightBitClean : [.eightBitClean, .bareLocalPart])
                let r = maps.find(quoted, filter: filter)
                if r != nil || failed() || queryForm != .externalFirst || quoted == key { return r }
                return maps.find(key, filter: filter)
            }
        }

        let atSign = full.lastIndex(of: "@")
        func findLocal(atSuffix: Bool) -> String? {
            guard let at = atSign else { return nil }
            let key = String(full[..<at]) + (atSuffix ? "@" : "")
            if let r = findAddr(key, filter: .fixed, withDomain: atSuffix) { return r }
            if failed() { return nil }
            if let s = stripped, let bat = s.bare.lastIndex(of: "@") {
                let bkey = String(s.bare[..<bat]) + (atSuffix ? "@" : "")
                if let r = findAddr(bkey, filter: .fixed, withDomain: atSuffix) {
                    extOut = s.ext
                    return r
                }
            }
            return nil
        }

        if strategy.contains(.full) { result = findAddr(full, filter: [], withDomain: true) }
        if result == nil && !failed(), let s = stripped {
            result = findAddr(s.bare, filter: .fixed, withDomain: true)
            if result != nil { extOut = s.ext }
        }
        if result == nil && !failed(), let at = atSign,
           !strategy.isDisjoint(with: [.localPartIfLocal, .localPartAtIfLocal]) {
            let domain = String(full[full.index(after: at)...])
            switch local?.isLocal(domain) ?? .success(false) {
            case .success(true):
                if strategy.contains(.localPartIfLocal) { result = findLocal(atSuffix: false) }
                if result == nil && !failed() && strategy.contains(.localPartAtIfLocal) { result = findLocal(atSuffix: true) }
            case .success(false):
                break
            case .failure(let e):
                maps.forceError(e)
            }
        }
        if result == nil && !failed(), let at = atSign, strategy.contains(.atDomain) {
            result = maps.find(String(full[at...]), filter: .fixed)
        }
        if result == nil && !failed(), let at = atSign, strategy.contains(.domain) {
            if strategy.contains(.parentDomains) && strategy.contains(.dotParentDomains) {
                Msg.warn("mail_addr_find_opt: do not specify both MA_FIND_PDMS and MA_FIND_PDDMDS")
            }
            var name = Substring(full[full.index(after: at)...])
            while true {
                result = maps.find(String(name), filter: .fixed)
                if result != nil || failed() || strategy.isDisjoint(with: [.parentDomains, .dotParentDomains]) { break }
                guard let dot = name.dropFirst().firstIndex(of: ".") else { break }
                name = strategy.contains(.dotParentDomains) ? name[dot...] : name[name.index(after: dot)...]
            }
        }
        if result == nil && !failed() && strategy.contains(.localPartAt) {
            result = findLocal(atSuffix: true)
        }
        if let r = result, outForm == .internal { return Quote822.unquote822(r) }
        if result == nil { extOut = nil }
        return result
    }

    /// find() without asking for the extension.
    public func find(_ address: String, strategy: MailAddrStrategy = .default) -> String? {
        var e: String?
        return find(address, strategy: strategy, extension: &e)
    }
}

extension Maps {
    /// Records a failure found outside the tables (a broken mydestination table).
    public func forceError(_ e: DictError) {
        setError(e)
    }
}

extension MailAddrFinder {
    /// mail_addr_map_internal: the addresses the table maps `address` to, each made
    /// canonical by `canonical` (trivial-rewrite in the local context), the unmatched
    /// address extension put back when `propagate`; a result "@domain" keeps the local
    /// part. nil when the table has no entry (or failed: see the table's error).
    public func map(_ address: String, propagate: Bool, canonical: (String) -> String) -> [String]? {
        var ext: String?
        guard var value = find(address, extension: &ext) else { return nil }
        if value.hasPrefix("@") {
            var local = address.lastIndex(of: "@").map { String(address[..<$0]) } ?? address
            if let ext, !ext.isEmpty, local.hasSuffix(ext) { local = String(local.dropLast(ext.count)) }
            value = Quote822.quote822(local) + value
        }
        return Address822.internalAddresses(value).map { target in
            let c = target.isEmpty ? target : canonical(target)
            guard propagate, let ext, !ext.isEmpty else { return c }
            if let at = c.lastIndex(of: "@") { return String(c[..<at]) + ext + String(c[at...]) }
            return c + ext
        }
    }
}
