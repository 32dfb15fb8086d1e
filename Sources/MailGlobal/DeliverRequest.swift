// DeliverRequest: the request the queue manager sends a delivery agent over
// private/<transport>, its recipients, the time stamps it carries (MSG_STATS), and the
// agent's final reply; both sides of the conversation.
// Mirrors Postfix global/deliver_request.c, deliver_request.h, msg_stats.h and
// qmgr/qmgr_deliver.c. The MSG_STATS blob has the native LP64 layout Postfix uses, so
// either side may be Postfix's.
import Glibc
import MailUtil

/// DEL_REQ_FLAG_*: what the queue manager asks of the agent.
public struct DeliverFlags: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Mark delivered recipients done in the queue file.
    public static let success = DeliverFlags(rawValue: 1 << 0)
    /// Mark bounced recipients done in the queue file.
    public static let bounce = DeliverFlags(rawValue: 1 << 1)
    /// An address verification probe: report, do not deliver.
    public static let mtaVerify = DeliverFlags(rawValue: 1 << 8)
    /// sendmail -bv: report what would happen.
    public static let userVerify = DeliverFlags(rawValue: 1 << 9)
    /// sendmail -v: deliver and report.
    public static let record = DeliverFlags(rawValue: 1 << 10)
    public static let connLoad = DeliverFlags(rawValue: 1 << 11)
    public static let connStore = DeliverFlags(rawValue: 1 << 12)
    public static let recordDelaySent = DeliverFlags(rawValue: 1 << 13)

    public static let `default`: DeliverFlags = [.success, .bounce]
    /// The flags that come from the message's trace_flags.
    public static let traceMask: DeliverFlags = [.mtaVerify, .userVerify, .record, .recordDelaySent]
    /// Trace-only requests: nothing is really delivered.
    public var traceOnly: Bool { !isDisjoint(with: [.mtaVerify, .userVerify]) }
}

/// The time stamps of a message on its way (MSG_STATS).
public struct MsgStats: Sendable {
    public var incomingArrival = timeval()
    public var activeArrival = timeval()
    public var agentHandoff = timeval()
    public var connSetupDone = timeval()
    public var deliverDone = timeval()
    public var reuseCount = 0

    public init() {}

    /// The blob as Postfix sends it: five struct timeval and an int, padded to 88 bytes.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        func le64(_ v: Int) { withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 } }
        for tv in [incomingArrival, activeArrival, agentHandoff, connSetupDone, deliverDone] {
            le64(Int(tv.tv_sec))
            le64(Int(tv.tv_usec))
        }
        withUnsafeBytes(of: Int32(reuseCount).littleEndian) { out += $0 }
        out += [0, 0, 0, 0]
        return out
    }

    public init?(encoded b: [UInt8]) {
        guard b.count == 88 else { return nil }
        func le64(_ i: Int) -> Int {
            var v: Int64 = 0
            for k in 0..<8 { v |= Int64(b[i + k]) << (8 * k) }
            return Int(v)
        }
        var tvs: [timeval] = []
        for k in 0..<5 {
            var tv = timeval()
            tv.tv_sec = time_t(le64(k * 16))
            tv.tv_usec = suseconds_t(le64(k * 16 + 8))
            tvs.append(tv)
        }
        incomingArrival = tvs[0]
        activeArrival = tvs[1]
        agentHandoff = tvs[2]
        connSetupDone = tvs[3]
        deliverDone = tvs[4]
        reuseCount = Int(Int32(b[80]) | Int32(b[81]) << 8 | Int32(b[82]) << 16 | Int32(b[83]) << 24)
    }
}

/// One delivery request.
public struct DeliverRequest: Sendable {
    public var flags: DeliverFlags = .default
    public var queueName = ""
    public var queueID = ""
    public var dataOffset = 0
    public var dataSize = 0
    public var nexthop = ""
    public var encoding = ""
    public var sendopts = 0
    public var sender = ""
    public var envelopeID = ""
    public var retFlags = 0
    public var stats = MsgStats()
    public var clientName = ""
    public var clientAddress = ""
    public var clientPort = ""
    public var clientProtocol = ""
    public var clientHelo = ""
    public var saslMethod = ""
    public var saslUsername = ""
    public var saslSender = ""
    public var logIdent = ""
    public var rewriteContext = ""
    public var recipients: [QueueRecipient] = []

    public init() {}

    /// The attribute lists qmgr sends: the request, then one list per recipient.
    public var encoded: [AttrList] {
        var l = AttrList()
        l.append(MailAttr.flags, int: flags.rawValue)
        l.append(MailAttr.queueName, queueName)
        l.append(MailAttr.queueID, queueID)
        l.append(MailAttr.offset, long: Int64(dataOffset))
        l.append(MailAttr.size, long: Int64(dataSize))
        l.append(MailAttr.nexthop, nexthop)
        l.append(MailAttr.encoding, encoding)
        l.append(MailAttr.sendOptions, int: sendopts)
        l.append(MailAttr.sender, sender)
        l.append(MailAttr.dsnEnvelopeID, envelopeID)
        l.append(MailAttr.dsnRetFlags, int: retFlags)
        l.append(MailAttr.time, data: stats.encoded)
        l.append(MailAttr.logClientName, clientName)
        l.append(MailAttr.logClientAddress, clientAddress)
        l.append(MailAttr.logClientPort, clientPort)
        l.append(MailAttr.logProtocolName, clientProtocol)
        l.append(MailAttr.logHeloName, clientHelo)
        l.append(MailAttr.saslMethod, saslMethod)
        l.append(MailAttr.saslUsername, saslUsername)
        l.append(MailAttr.saslSender, saslSender)
        l.append(MailAttr.logIdent, logIdent)
        l.append(MailAttr.rewriteContext, rewriteContext)
        l.append(MailAttr.recipientCount, int: recipients.count)
        var out = [l]
        for r in recipients {
            var rl = AttrList()
            rl.append(MailAttr.originalRecipient, r.originalRecipient)
            rl.append(MailAttr.recipient, r.address)
            rl.append(MailAttr.offset, long: Int64(r.offset))
            rl.append(MailAttr.dsnOriginalRecipient, r.dsnOriginalRecipient)
            rl.append(MailAttr.dsnNotifyFlags, int: r.notify)
            out.append(rl)
        }
        return out
    }

    /// Reads a request as an agent does (deliver_request_get): the 23 request attributes,
    /// then each recipient's 5.
    public static func read(_ reader: AttrReader) throws -> DeliverRequest {
        guard let list = try reader.readList() else { throw AttrError.truncated }
        var sc = list.scanner(strict: true)
        var r = DeliverRequest()
        r.flags = DeliverFlags(rawValue: try sc.int(MailAttr.flags))
        r.queueName = try sc.string(MailAttr.queueName)
        r.queueID = try sc.string(MailAttr.queueID)
        r.dataOffset = Int(try sc.long(MailAttr.offset))
        r.dataSize = Int(try sc.long(MailAttr.size))
        r.nexthop = try sc.string(MailAttr.nexthop)
        r.encoding = try sc.string(MailAttr.encoding)
        r.sendopts = try sc.int(MailAttr.sendOptions)
        r.sender = try sc.string(MailAttr.sender)
        r.envelopeID = try sc.string(MailAttr.dsnEnvelopeID)
        r.retFlags = try sc.int(MailAttr.dsnRetFlags)
        guard let stats = MsgStats(encoded: try sc.data(MailAttr.time)) else {
            throw AttrError.malformed("bad \(MailAttr.time) attribute")
        }
        r.stats = stats
        r.clientName = try sc.string(MailAttr.logClientName)
        r.clientAddress = try sc.string(MailAttr.logClientAddress)
        r.clientPort = try sc.string(MailAttr.logClientPort)
        r.clientProtocol = try sc.string(MailAttr.logProtocolName)
        r.clientHelo = try sc.string(MailAttr.logHeloName)
        r.saslMethod = try sc.string(MailAttr.saslMethod)
        r.saslUsername = try sc.string(MailAttr.saslUsername)
        r.saslSender = try sc.string(MailAttr.saslSender)
        r.logIdent = try sc.string(MailAttr.logIdent)
        r.rewriteContext = try sc.string(MailAttr.rewriteContext)
        let count = try sc.int(MailAttr.recipientCount)
        guard sc.atEnd else { throw AttrError.malformed("unexpected attribute in delivery request") }
        guard count >= 0 && count <= 100_000 else { throw AttrError.malformed("bad recipient count \(count)") }
        for _ in 0..<count {
            guard let rl = try reader.readList() else { throw AttrError.truncated }
            var rs = rl.scanner(strict: true)
            let orcpt = try rs.string(MailAttr.originalRecipient)
            let addr = try rs.string(MailAttr.recipient)
            let off = Int(try rs.long(MailAttr.offset))
            let dsn = try rs.string(MailAttr.dsnOriginalRecipient)
            let notify = try rs.int(MailAttr.dsnNotifyFlags)
            guard rs.atEnd else { throw AttrError.malformed("unexpected attribute in recipient") }
            r.recipients.append(QueueRecipient(offset: off, address: addr, originalRecipient: orcpt,
                                               dsnOriginalRecipient: dsn, notify: notify))
        }
        return r
    }
}

/// The agent's final answer: trouble with the destination as a whole (empty when there
/// was none) and whether any recipient is still to do.
public struct DeliverReply: Sendable, Equatable {
    public var hop: DeliveryStatus?
    /// 0 when every recipient reached a final state; DEL_STAT_DEFER (-1) otherwise.
    public var status: Int

    public init(hop: DeliveryStatus? = nil, status: Int) {
        self.hop = hop
        self.status = status
    }

    public var encoded: AttrList {
        var l = AttrList()
        let h = hop ?? DeliveryStatus(status: "", reason: "")
        l.append(MailAttr.dsnStatus, h.status)
        l.append(MailAttr.dsnDiagType, h.diagnosticType)
        l.append(MailAttr.dsnDiagText, h.diagnosticText)
        l.append(MailAttr.dsnMTAType, h.mtaType)
        l.append(MailAttr.dsnMTAName, h.mtaName)
        l.append(MailAttr.dsnAction, h.action)
        l.append(MailAttr.reason, h.reason)
        // Postfix's DEL_STAT_DEFER is -1, sent as an unsigned int.
        l.append(MailAttr.status, long: Int64(UInt32(bitPattern: Int32(truncatingIfNeeded: status))))
        return l
    }

    public static func decode(_ list: AttrList) throws -> DeliverReply {
        var sc = list.scanner()
        let st = try sc.string(MailAttr.dsnStatus)
        let dt = try sc.string(MailAttr.dsnDiagType)
        let dx = try sc.string(MailAttr.dsnDiagText)
        let mt = try sc.string(MailAttr.dsnMTAType)
        let mn = try sc.string(MailAttr.dsnMTAName)
        let ac = try sc.string(MailAttr.dsnAction)
        let re = try sc.string(MailAttr.reason)
        let status = try sc.long(MailAttr.status)
        let hop = re.isEmpty && st.isEmpty ? nil
            : DeliveryStatus(status: st, action: ac, reason: re, diagnosticType: dt, diagnosticText: dx, mtaType: mt, mtaName: mn)
        return DeliverReply(hop: hop, status: status == 0 ? 0 : -1)
    }
}
