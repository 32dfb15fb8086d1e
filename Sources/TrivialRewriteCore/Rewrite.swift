// Rewrite: the "rewrite" request of trivial-rewrite: an address in canonical form.
// Mirrors Postfix trivial-rewrite/rewrite.c: a source route is dropped; an address
// without '@' becomes user@domain from "domain!user" (swap_bangpath) or "user%domain"
// (allow_percent_hack), or gets "@$myorigin" (append_at_myorigin); a domain without a
// dot gets ".$mydomain" (append_dot_mydomain); one trailing dot goes. The "remote" context
// uses remote_header_rewrite_domain for both, so with it empty nothing is appended.
import MailUtil
import MailGlobal

/// The parameters one rewrite context uses.
struct RewriteContext {
    let origin: String
    let domain: String
}

struct RewriteSettings {
    var appendAtMyorigin: Bool
    var appendDotMydomain: Bool
    var swapBangpath: Bool
    var percentHack: Bool
    var local: RewriteContext
    var remote: RewriteContext

    init(config: MailConfig) {
        appendAtMyorigin = config.bool("append_at_myorigin")
        appendDotMydomain = config.bool("append_dot_mydomain")
        swapBangpath = config.bool("swap_bangpath")
        percentHack = config.bool("allow_percent_hack")
        local = RewriteContext(origin: config.string("myorigin"), domain: config.string("mydomain"))
        let r = config.string("remote_header_rewrite_domain")
        remote = RewriteContext(origin: r, domain: r)
    }
}

enum Rewriter {
    /// Rewrites the tokens of one address in place (rewrite_tree).
    static func rewrite(_ a: inout AddressTokens, _ ctx: RewriteContext, _ s: RewriteSettings) {
        if a.tokens.isEmpty { return }
        // An empty quoted string is the null address, and stays as it is.
        if a.tokens.count == 1 && a.tokens[0].type == Tok822.Kind.quotedString && a.tokens[0].text.isEmpty { return }
        // A lone "@" is the null address.
        if a.tokens.count == 1 && a.tokens[0].type == AddressTokens.at {
            a.tokens = []
            return
        }
        // Drop a source route: "@a,@b:user@c" is "user@c".
        if a.tokens[0].type == AddressTokens.at, let colon = a.first(AddressTokens.colon),
           colon != a.tokens.count - 1 {
            a.tokens.removeSubrange(0...colon)
        }
        var domainAt = a.last(AddressTokens.at)
        if domainAt == nil {
            if s.swapBangpath, let bang = a.first(AddressTokens.bang) {
                // "host!user" becomes "user@host" (only the first "!"); as in Postfix,
                // that domain gets no ".$mydomain".
                let host = Array(a.tokens[..<bang])
                let user = AddressTokens.owned(Array(a.tokens[(bang + 1)...]))
                a.tokens = user + [AddressTokens.op("@")] + host
            } else if s.percentHack, let pct = a.last(AddressTokens.percent) {
                a.tokens[pct].type = AddressTokens.at
                domainAt = pct
            } else if s.appendAtMyorigin && !ctx.origin.isEmpty {
                domainAt = a.tokens.count
                a.tokens.append(AddressTokens.op("@"))
                a.tokens += AddressTokens.parts(ctx.origin)
            }
        }
        // Append ".$mydomain" to a domain without a dot, but leave "user@" alone.
        if let at = domainAt, s.appendDotMydomain && !ctx.domain.isEmpty, at + 1 < a.tokens.count {
            let domain = a.tokens[(at + 1)...]
            if !domain.contains(where: { $0.type == Tok822.Kind.domainLiteral || $0.type == AddressTokens.dot }) {
                a.tokens.append(AddressTokens.op("."))
                a.tokens += AddressTokens.parts(ctx.domain)
            }
        }
        // Strip one trailing dot, but not from "..", nor "@.".
        if let last = a.tokens.last, last.type == AddressTokens.dot, a.tokens.count >= 2 {
            let prev = a.tokens[a.tokens.count - 2].type
            if prev != AddressTokens.dot && prev != AddressTokens.at { a.tokens.removeLast() }
        }
    }

    /// The rewrite request: the quoted result for a quoted address.
    static func rewrite(_ address: String, rule: String, _ s: RewriteSettings) -> String? {
        let ctx: RewriteContext
        switch rule {
        case "local": ctx = s.local
        case "remote": ctx = s.remote
        default: return nil
        }
        if address.isEmpty {
            Msg.warn("rewrite_addr: null address")
            return address
        }
        var a = AddressTokens(address)
        rewrite(&a, ctx, s)
        return a.externalForm
    }
}
