// MatchList: the pattern lists of parameters like mydestination, relay_domains and
// mynetworks: strings, domains, host names and addresses, "!" exceptions, "/file"
// includes and "type:table" members.
// Mirrors Postfix util/match_list.c and match_ops.c with global/string_list,
// domain_list, namadr_list, addr_match_list and match_parent_style.c (3.7): the first
// pattern that matches decides (an exception as much as an inclusion); matching ignores
// case (full Unicode folding with smtputf8_enable); a table member matches when it has
// the key, whatever the value; a table that fails makes the whole match fail.
import Glibc
import MailUtil
import MailDict

public final class MatchList {
    public enum Kind: Sendable {
        /// Exact strings (mydestination, virtual_*_domains).
        case string
        /// Host names with parent-domain matching (relay_domains).
        case domain
        /// A host name, then its address (mynetworks).
        case nameAddress
        /// Addresses and networks only.
        case address
    }

    public struct Options: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// "example.com" also matches its subdomains (parent_domain_matches_subdomains).
        public static let parent = Options(rawValue: 1)
        /// A failing table makes the match fail (error set) instead of ending the process.
        public static let returnErrors = Options(rawValue: 2)
    }

    enum Pattern {
        case text(String, positive: Bool)
        case table(Dict, spec: String, positive: Bool)
    }

    public let name: String
    let kind: Kind
    let options: Options
    var patterns: [Pattern] = []
    /// Why the last match failed, when a table failed.
    public private(set) var error: DictError?

    /// `name` is the parameter name used in messages.
    public init(name: String, kind: Kind, options: Options, text: String) {
        self.name = name
        self.kind = kind
        self.options = options
        parse(text, positive: true)
    }

    /// The list's parent style, as Postfix decides it per feature name.
    public static func parentStyle(_ feature: String, config: MailConfig) -> Options {
        let list = Tokens.split(config.string("parent_domain_matches_subdomains")).map { MatchList.fold($0) }
        return list.contains(MatchList.fold(feature)) ? .parent : []
    }

    static func fold(_ s: String) -> String {
        DictRegistry.utf8Enabled ? CaseFold.fold(s) : CaseFold.lowercaseASCII(s)
    }

    func parse(_ text: String, positive initial: Bool) {
        let tokens = Tokens.splitQuoted(text)
        for (index, token) in tokens.enumerated() {
            if token.hasPrefix("#") {
                Msg.warn("\(name): comment at end of line is not supported: \(tokens[index...].joined(separator: " "))")
                return
            }
            var positive = initial
            var item = Substring(token)
            while item.first == "!" {
                positive.toggle()
                item = item.dropFirst()
            }
            if item.isEmpty { Msg.fatal("\(name): no pattern after '!'") }
            if item.first == "/" {
                let path = String(item)
                guard let content = try? SafeFile.read(path) else {
                    let reason = "open \(path): \(errnoText(errno))"
                    let d = DictRegistry.surrogate(type: "non-existent", name: path, mode: .readOnly, flags: [], reason: reason)
                    patterns.append(.table(d, spec: "non-existent:\(path)", positive: true))
                    continue
                }
                for line in LogicalLine.read(content, path: path) { parse(line.string, positive: positive) }
            } else if item.first != "[" && item.contains(":") {
                let spec = String(item)
                let (_, d) = DictCache.open(spec, flags: [.lock, .utf8Request])
                patterns.append(.table(d, spec: spec, positive: positive))
            } else {
                patterns.append(.text(MatchList.fold(String(item)), positive: positive))
            }
        }
    }

    /// Matches a string (string and domain lists) or a host name and address.
    public func matches(_ name: String, address: String? = nil) -> Bool {
        error = nil
        let folded = MatchList.fold(name)
        let addr = address.map { MatchList.fold($0) }
        for p in patterns {
            let positive: Bool
            switch p {
            case .text(_, let pos), .table(_, _, let pos): positive = pos
            }
            var hit = false
            switch kind {
            case .string:
                hit = matchString(folded, p)
            case .domain:
                hit = matchHostname(folded, p)
            case .nameAddress:
                hit = matchHostname(folded, p)
                if !hit && error == nil, let a = addr { hit = matchHostaddr(a, p) }
            case .address:
                hit = matchHostaddr(folded, p)
            }
            if error != nil { return false }
            if hit { return positive }
        }
        return false
    }

    func tableHas(_ dict: Dict, spec: String, _ key: String) -> Bool {
        do {
            return try dict.lookup(key) != nil
        } catch let e {
            let text = "\(name): \(spec): table lookup problem"
            if options.contains(.returnErrors) {
                Msg.warn(text)
                error = e
                return false
            }
            Msg.fatal(text)
        }
    }

    func matchString(_ s: String, _ p: Pattern) -> Bool {
        switch p {
        case .table(let d, let spec, _): return tableHas(d, spec: spec, s)
        case .text(let t, _): return s == t
        }
    }

    func matchHostname(_ host: String, _ p: Pattern) -> Bool {
        switch p {
        case .table(let d, let spec, _):
            var entry = Substring(host)
            while true {
                if entry.count == host.count || d.flags.contains(.fixed) {
                    if tableHas(d, spec: spec, String(entry)) { return true }
                    if error != nil { return false }
                }
                guard let dot = entry.dropFirst().firstIndex(of: ".") else { return false }
                entry = options.contains(.parent) ? entry[entry.index(after: dot)...] : entry[dot...]
            }
        case .text(let pat, _):
            if host == pat { return true }
            if options.contains(.parent) { return host.hasSuffix("." + pat) }
            if pat.hasPrefix(".") { return host.hasSuffix(pat) && host.count > pat.count }
            return false
        }
    }

    func matchHostaddr(_ addr: String, _ p: Pattern) -> Bool {
        if !addr.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46)
            || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") }) {
            return false
        }
        switch p {
        case .table(let d, let spec, _):
            return tableHas(d, spec: spec, addr)
        case .text(let pat, _):
            if !pat.hasPrefix("[") {
                if addr == pat { return true }
            } else if pat == "[" + addr + "]" {
                return true
            }
            if addr.contains(":") != pat.contains(":") { return false }
            if !pat.contains(":") && !pat.contains("/") { return false }
            if pat.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: ".") }) { return false }
            if !pat.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || $0 == UInt8(ascii: ".")
                || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "]") || $0 == UInt8(ascii: "/") }) {
                return false
            }
            do {
                let net = try CIDRPattern.parse(pat)
                guard let bytes = CIDRPattern.parseAddress(addr) else { return false }
                return net.contains(bytes)
            } catch {
                let text = "\(name): \(error.reason)"
                if options.contains(.returnErrors) {
                    Msg.warn(text)
                    self.error = .retry
                    return false
                }
                Msg.fatal(text)
            }
        }
    }
}
