// BounceClient: requests to the bounce, defer and trace services (one bounce program
// under three service names): per-recipient log records, and the notifications built from
// them (non-delivery, delay warnings, delivery status reports).
// Mirrors Postfix global/bounce.c, defer.c, trace.c, abounce.c with rcpt_buf/dsn_buf
// (the attribute lists of a recipient and of a delivery status) and mail_command_client.c.
import MailUtil

/// One recipient as the delivery status services see it (RECIPIENT).
public struct RecipientInfo: Sendable, Equatable {
    public var originalRecipient: String
    public var address: String
    /// The file offset of its R record (0 when unknown).
    public var offset: Int
    public var dsnOriginalRecipient: String
    public var notify: Int

    public init(originalRecipient: String, address: String, offset: Int = 0, dsnOriginalRecipient: String = "",
                notify: Int = 0) {
        self.originalRecipient = originalRecipient
        self.address = address
        self.offset = offset
        self.dsnOriginalRecipient = dsnOriginalRecipient
        self.notify = notify
    }

    func append(to list: inout AttrList) {
        list.append(MailAttr.originalRecipient, originalRecipient)
        list.append(MailAttr.recipient, address)
        list.append(MailAttr.offset, long: Int64(offset))
        list.append(MailAttr.dsnOriginalRecipient, dsnOriginalRecipient)
        list.append(MailAttr.dsnNotifyFlags, int: notify)
    }
}

/// A delivery status (DSN): the RFC 3463 status, the remote diagnostic, and the action.
public struct DeliveryStatus: Sendable, Equatable {
    public var status: String
    public var diagnosticType: String
    public var diagnosticText: String
    public var mtaType: String
    public var mtaName: String
    /// delivered, relayed, expanded, failed, delayed (empty: the service's default).
    public var action: String
    public var reason: String

    public init(status: String, action: String = "", reason: String, diagnosticType: String = "",
                diagnosticText: String = "", mtaType: String = "", mtaName: String = "") {
        self.status = status
        self.action = action
        self.reason = reason
        self.diagnosticType = diagnosticType
        self.diagnosticText = diagnosticText
        self.mtaType = mtaType
        self.mtaName = mtaName
    }

    func append(to list: inout AttrList) {
        list.append(MailAttr.status, status)
        list.append(MailAttr.dsnDiagType, diagnosticType)
        list.append(MailAttr.dsnDiagText, diagnosticText)
        list.append(MailAttr.dsnMTAType, mtaType)
        list.append(MailAttr.dsnMTAName, mtaName)
        list.append(MailAttr.action, action)
        list.append(MailAttr.reason, reason)
    }
}

/// BOUNCE_CMD_*.
public enum BounceCommand: Int, Sendable {
    case append = 0, flush = 1, warn = 2, verp = 3, one = 4, trace = 5
}

/// BOUNCE_FLAG_*.
public struct BounceFlags: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// On error, remove the logfile.
    public static let clean = BounceFlags(rawValue: 1)
    /// Mark the bounced recipients done in the queue file.
    public static let deleteRecipients = BounceFlags(rawValue: 2)
}

public enum BounceClient {
    /// One request to private/SERVICE; 0 on success, -1 on failure (logged as Postfix's
    /// client logs it).
    public static func request(service: String, _ list: AttrList, config: MailConfig) -> Int {
        let client: AttrClient
        do {
            client = try AttrClient(serviceClass: MailClass.private, name: service, timeout: config.time("ipc_timeout"))
        } catch let e as SystemError {
            Msg.warn("connect to \(MailClass.private)/\(service): \(errnoText(e.errno))")
            return -1
        } catch {
            return -1
        }
        do {
            try client.expectProtocol(MailProtocol.bounce)
            let reply = try client.request(list)
            var sc = reply.scanner()
            return try sc.int(MailAttr.status) == 0 ? 0 : -1
        } catch {
            Msg.warn("\(MailClass.private)/\(service): \(error)")
            return -1
        }
    }

    /// BOUNCE_CMD_APPEND to the bounce, defer or trace service.
    public static func append(service: String, flags: Int, queueID: String, recipient: RecipientInfo,
                              status: DeliveryStatus, config: MailConfig) -> Int {
        var list = AttrList()
        list.append(MailAttr.nrequest, int: BounceCommand.append.rawValue)
        list.append(MailAttr.flags, int: flags)
        list.append(MailAttr.queueID, queueID)
        recipient.append(to: &list)
        status.append(to: &list)
        return request(service: service, list, config: config)
    }

    /// trace_append: a "delivered/expanded" record for sendmail -v/-bv and NOTIFY=SUCCESS.
    @discardableResult
    public static func traceAppend(flags: Int, queueID: String, recipient: RecipientInfo, relay: String,
                                   status: DeliveryStatus, config: MailConfig) -> Int {
        let service = config.string("trace_service_name")
        if append(service: service, flags: flags, queueID: queueID, recipient: recipient, status: status, config: config) != 0 {
            Msg.warn("\(queueID): \(service) service failure")
            return -1
        }
        return 0
    }

    /// BOUNCE_CMD_FLUSH, WARN, TRACE and VERP: notifications from a logfile.
    public static func notify(_ command: BounceCommand, service: String, flags: Int, queueName: String, queueID: String,
                              encoding: String, sendopts: Int, sender: String, envelopeID: String, retFlags: Int,
                              verpDelimiters: String? = nil, config: MailConfig) -> Int {
        var list = AttrList()
        list.append(MailAttr.nrequest, int: command.rawValue)
        list.append(MailAttr.flags, int: flags)
        list.append(MailAttr.queueName, queueName)
        list.append(MailAttr.queueID, queueID)
        list.append(MailAttr.encoding, encoding)
        list.append(MailAttr.sendOptions, int: sendopts)
        list.append(MailAttr.sender, sender)
        list.append(MailAttr.dsnEnvelopeID, envelopeID)
        list.append(MailAttr.dsnRetFlags, int: retFlags)
        if let verpDelimiters { list.append(MailAttr.verpDelimiters, verpDelimiters) }
        return request(service: service, list, config: config)
    }
}
