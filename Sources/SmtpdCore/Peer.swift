// Peer: the client's host name, as the reverse lookup of its address names it (the
// "reverse name") and as a forward lookup of that name confirms it (the "name"), with the
// status of each lookup for the unknown-client restrictions. Trusts nothing the DNS says:
// numeric and malformed names are refused.
// Mirrors Postfix smtpd/smtpd_peer.c.
import Glibc
import MailUtil
import MailGlobal

/// SMTPD_PEER_CODE_*: how a name lookup ended.
enum PeerStatus: Int, Comparable {
    case ok = 2
    /// A temporary failure: the name may be found later.
    case temporary = 4
    /// No name.
    case permanent = 5
    /// A name whose forward lookup does not lead back to the address.
    case forged = 6

    static func < (a: PeerStatus, b: PeerStatus) -> Bool { a.rawValue < b.rawValue }
}

extension Session {
    func lookupPeerName() {
        guard let sa = SocketAddress(numeric: addr, port: 0) else { return }
        var host = [CChar](repeating: 0, count: 1025)
        let rc = sa.withSockaddr { p, len in
            getnameinfo(p, len, &host, socklen_t(host.count), nil, 0, NI_NAMEREQD)
        }
        if rc != 0 {
            nameStatus = Self.isTemporary(rc) ? .temporary : .permanent
            reverseNameStatus = nameStatus
            return
        }
        let ptr = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if ValidHostname.isAddress(ptr) {
            Msg.warn("numeric hostname: \(ptr)")
            nameStatus = .permanent
            reverseNameStatus = .permanent
            return
        }
        if !ValidHostname.isValid(ptr) {
            Msg.warn("malformed hostname: \(Msg.printable(ptr))")
            nameStatus = .permanent
            reverseNameStatus = .permanent
            return
        }
        reverseName = ptr
        name = ptr
        // The name counts only when it resolves back to the client's address.
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let err = getaddrinfo(ptr, nil, &hints, &res)
        if err != 0 {
            Msg.warn("hostname \(ptr) does not resolve to address \(addr): \(String(cString: gai_strerror(err)))")
            name = "unknown"
            nameStatus = Self.isTemporary(err) ? .temporary : .forged
            return
        }
        defer { freeaddrinfo(res) }
        var p = res
        while let ai = p {
            if let a = ai.pointee.ai_addr, let found = SocketAddress.from(a), found.address == peerBytes {
                return
            }
            p = ai.pointee.ai_next
        }
        Msg.warn("hostname \(ptr) does not resolve to address \(addr)")
        name = "unknown"
        nameStatus = .forged
    }

    static func isTemporary(_ gaiError: Int32) -> Bool {
        gaiError == EAI_AGAIN || gaiError == EAI_MEMORY || gaiError == EAI_SYSTEM
    }
}
