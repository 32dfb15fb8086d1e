// AccessWalk: the keys an access table (check_*_access) is searched with, and in what
// order: a host name and its parent domains, an IP address and its shorter prefixes,
// an address, its domain, parents and "localpart@".
// Mirrors check_domain_access, check_addr_access and check_mail_access in Postfix
// smtpd/smtpd_check.c (3.7). The first key with any answer ends the search, even when the
// answer is DUNNO; only the first key goes to pattern tables (regexp, pcre, cidr).
import MailUtil
import MailDict

/// An answer and the key it was found under (the "datum" Postfix names in warnings).
public struct AccessHit: Equatable, Sendable {
    public var answer: MapsAnswer
    public var key: String

    public init(answer: MapsAnswer, key: String) {
        self.answer = answer
        self.key = key
    }
}

public enum AccessWalk {
    /// "mail.example.com", then "example.com", "com" (parent style), or ".example.com",
    /// ".com"; an address literal is looked up once.
    public static func domainHit(_ maps: Maps, _ domain: String, parentStyle: Bool) -> AccessHit {
        var name = Substring(domain)
        var filter: DictFlags = []
        let numeric = CIDRPattern.parseAddress(domain) != nil
        while true {
            let a = maps.lookup(String(name), filter: filter)
            if a != .notFound { return AccessHit(answer: a, key: String(name)) }
            if numeric { return AccessHit(answer: .notFound, key: domain) }
            guard let dot = name.dropFirst().firstIndex(of: ".") else { return AccessHit(answer: .notFound, key: domain) }
            name = parentStyle ? name[name.index(after: dot)...] : name[dot...]
            filter = .fixed
        }
    }

    /// "192.0.2.10", "192.0.2", "192.0", "192" (or cut at ":" for IPv6).
    public static func addressHit(_ maps: Maps, _ address: String) -> AccessHit {
        let delim: Character = address.contains(":") ? ":" : "."
        var addr = Substring(address)
        var filter: DictFlags = []
        while true {
            let a = maps.lookup(String(addr), filter: filter)
            if a != .notFound { return AccessHit(answer: a, key: String(addr)) }
            filter = .fixed
            guard let cut = addr.lastIndex(of: delim) else { return AccessHit(answer: .notFound, key: address) }
            addr = addr[..<cut]
        }
    }

    /// A host name walk, then the address walk, unless the name had an answer.
    public static func nameAddressHit(_ maps: Maps, name: String, address: String, parentStyle: Bool) -> AccessHit {
        let a = domainHit(maps, name, parentStyle: parentStyle)
        if a.answer != .notFound { return a }
        return addressHit(maps, address)
    }

    /// A sender or recipient: the address, without extension, the domain and its parents,
    /// then "user+ext@" and "user@".
    public static func mail(_ finder: MailAddrFinder, _ address: String, parentStyle: Bool) -> MapsAnswer {
        var strategy: MailAddrStrategy = [.full, .noExtension, .domain, .localPartAt]
        strategy.insert(parentStyle ? .parentDomains : .dotParentDomains)
        if let v = finder.find(address, strategy: strategy) { return .found(v) }
        if let e = finder.maps.error { return .failed(e) }
        return .notFound
    }

    public static func domain(_ maps: Maps, _ domain: String, parentStyle: Bool) -> MapsAnswer {
        domainHit(maps, domain, parentStyle: parentStyle).answer
    }

    public static func address(_ maps: Maps, _ address: String) -> MapsAnswer {
        addressHit(maps, address).answer
    }

    public static func nameAddress(_ maps: Maps, name: String, address: String, parentStyle: Bool) -> MapsAnswer {
        nameAddressHit(maps, name: name, address: address, parentStyle: parentStyle).answer
    }
}
