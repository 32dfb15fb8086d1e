// CleanupStatus: the flags a client sends to the cleanup service and the status bits it
// answers with, with the SMTP reply each status stands for.
// Mirrors Postfix global/cleanup_user.h and cleanup_strerror.c.
import MailUtil

/// CLEANUP_FLAG_*: what the client asks of cleanup.
public struct CleanupFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let bounce = CleanupFlags(rawValue: 1 << 0)
    public static let filter = CleanupFlags(rawValue: 1 << 1)
    public static let hold = CleanupFlags(rawValue: 1 << 2)
    public static let discard = CleanupFlags(rawValue: 1 << 3)
    public static let bccOK = CleanupFlags(rawValue: 1 << 4)
    public static let mapOK = CleanupFlags(rawValue: 1 << 5)
    public static let milter = CleanupFlags(rawValue: 1 << 6)
    public static let smtpReply = CleanupFlags(rawValue: 1 << 7)
    public static let smtputf8 = CleanupFlags(rawValue: 1 << 8)
    public static let autoUTF8 = CleanupFlags(rawValue: 1 << 9)
    public static let requireTLS = CleanupFlags(rawValue: 1 << 10)

    public static let external: CleanupFlags = [.filter, .milter, .bccOK, .mapOK]
    /// Flags a client may change in an 'f' record in the middle of the stream.
    public static let extra: CleanupFlags = [.hold, .discard]
    /// What the client may set at all (bits above are cleanup's own).
    public static let clientMask = CleanupFlags(rawValue: 0xffff)

    /// receive_override_options applied to these flags.
    public func overridden(by options: [String]) -> CleanupFlags {
        var f = self
        for o in options {
            switch o.lowercased() {
            case "no_unknown_recipient_checks": break
            case "no_address_mappings": f.subtract([.bccOK, .mapOK])
            case "no_header_body_checks": f.remove(.filter)
            case "no_milters": f.remove(.milter)
            default: Msg.warn("unknown receive_override_options value: \(o)")
            }
        }
        return f
    }
}

/// CLEANUP_STAT_*: why a message was not accepted (0 = accepted).
public struct CleanupStatus: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let ok = CleanupStatus([])
    public static let bad = CleanupStatus(rawValue: 1 << 0)
    public static let write = CleanupStatus(rawValue: 1 << 1)
    public static let size = CleanupStatus(rawValue: 1 << 2)
    public static let content = CleanupStatus(rawValue: 1 << 3)
    public static let hops = CleanupStatus(rawValue: 1 << 4)
    public static let recipients = CleanupStatus(rawValue: 1 << 6)
    public static let proxy = CleanupStatus(rawValue: 1 << 7)
    public static let deferred = CleanupStatus(rawValue: 1 << 8)
    public static let noPermission = CleanupStatus(rawValue: 1 << 9)
    public static let bareLF = CleanupStatus(rawValue: 1 << 16)
    /// Errors a bounce cannot help with.
    public static let cantBounce: CleanupStatus = [.bad, .write, .deferred, .recipients]

    /// The reply for the most important status bit.
    public struct Detail: Sendable, Equatable {
        public let status: CleanupStatus
        public let smtp: Int
        public let dsn: String
        public let text: String
    }

    static let details: [Detail] = [
        Detail(status: .bareLF, smtp: 521, dsn: "5.5.2", text: "bare <LF> received"),
        Detail(status: .deferred, smtp: 451, dsn: "4.7.1", text: "service unavailable"),
        Detail(status: .proxy, smtp: 451, dsn: "4.3.0", text: "queue file write error"),
        Detail(status: .bad, smtp: 451, dsn: "4.3.0", text: "internal protocol error"),
        Detail(status: .recipients, smtp: 550, dsn: "5.1.0", text: "no recipients specified"),
        Detail(status: .write, smtp: 451, dsn: "4.3.0", text: "queue file write error"),
        Detail(status: .size, smtp: 552, dsn: "5.3.4", text: "message file too big"),
        Detail(status: .content, smtp: 550, dsn: "5.7.1", text: "message content rejected"),
        Detail(status: .hops, smtp: 554, dsn: "5.4.0", text: "too many hops"),
        Detail(status: .noPermission, smtp: 550, dsn: "5.7.1", text: "service denied"),
    ]

    /// cleanup_stat_detail: the first matching entry, in Postfix's order of importance.
    public var detail: Detail {
        for d in Self.details where !isDisjoint(with: d.status) { return d }
        return Detail(status: .ok, smtp: 250, dsn: "2.0.0", text: "Success")
    }
}
