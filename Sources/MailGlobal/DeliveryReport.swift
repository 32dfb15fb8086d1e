// DeliveryReport: what a delivery agent (or the queue manager) does with the outcome for
// one recipient: the mail log line, the bounce/defer/trace/verify service records, the
// fast-flush hint, and marking the recipient done in the queue file.
// Mirrors Postfix global/log_adhoc.c, util/format_tv.c, global/sent.c, bounce.c
// (bounce_append), defer.c (defer_append), trace.c (trace_append), verify.c
// (verify_append), deliver_completed.c and dsn_util.c (dsn_valid).
import Glibc
import MailUtil

/// The relay name of agents that talk to no other host (NO_RELAY_AGENT).
public let noRelayAgent = "none"

public enum FormatTV {
    /// A time with `sigDigits` significant digits and at most `maxDigits` decimals, as
    /// Postfix prints delays (format_tv).
    public static func format(sec: Int, usec: Int, sigDigits: Int = 2, maxDigits: Int) -> String {
        let million = 1_000_000
        let pow10 = [1, 10, 100, 1000, 10000, 100000, 1000000]
        let maxD = min(max(maxDigits, 0), 6)
        var sec = max(sec, 0), usec = min(max(usec, 0), million)
        var ures = million / pow10[maxD]
        let wid = pow10[min(max(sigDigits, 1), 6)]
        if ures < million {
            if sec > 0 {
                var n = 1
                while sec >= n && n <= wid / 10 { n *= 10 }
                ures = (million / wid) * n
            } else {
                while usec >= wid * ures { ures *= 10 }
            }
        }
        if ures > 1 {
            usec += ures / 2
            if usec >= million {
                sec += 1
                usec -= million
            }
        }
        var out = String(sec)
        if usec >= ures {
            out += "."
            var rem = usec
            var n = million / 10
            while rem >= ures && n > 0 {
                out += String(rem / n)
                rem %= n
                n /= 10
            }
        }
        return out
    }
}

public enum DSNCode {
    /// dsn_valid: "d.ddd.ddd" with class 2, 4 or 5.
    public static func isValid(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let c = parts[0].first, parts[0].count == 1, "245".contains(c) else { return false }
        return parts[1...].allSatisfy { (1...3).contains($0.count) && $0.allSatisfy(\.isASCIIDigitByte) }
    }

    /// Splits "X.Y.Z text" into the code and the text (dsn_split), with `defaultCode`
    /// when the text does not start with a valid code.
    public static func split(_ text: String, defaultCode: String) -> (code: String, text: String) {
        var t = Substring(text)
        while t.first == " " || t.first == "\t" { t = t.dropFirst() }
        let word = t.prefix { $0 != " " && $0 != "\t" }
        if isValid(String(word)) {
            var rest = t.dropFirst(word.count)
            while rest.first == " " || rest.first == "\t" { rest = rest.dropFirst() }
            return (String(word), String(rest))
        }
        return (defaultCode, String(t))
    }
}

extension Character {
    var isASCIIDigitByte: Bool { isASCII && isNumber }
}

public enum LogAdhoc {
    static func delta(_ a: timeval, _ b: timeval) -> (Int, Int) {
        var s = Int(a.tv_sec) - Int(b.tv_sec)
        var u = Int(a.tv_usec) - Int(b.tv_usec)
        while u < 0 { u += 1_000_000; s -= 1 }
        while u >= 1_000_000 { u -= 1_000_000; s += 1 }
        return s < 0 ? (0, 0) : (s, u)
    }

    /// The delivery log line: `ID: to=<...>, [orig_to=<...>, ]relay=..., delay=..., delays=a/b/c/d, dsn=..., status=... (...)`.
    public static func line(id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                            dsn: DeliveryStatus, status: String, resolution: Int, now: timeval? = nil) -> String {
        var out = "\(id): to=<\(logAddress(recipient.address))>"
        if !recipient.originalRecipient.isEmpty
            && CaseFold.fold(recipient.address) != CaseFold.fold(recipient.originalRecipient) {
            out += ", orig_to=<\(logAddress(recipient.originalRecipient))>"
        }
        out += ", relay=\(relay)"
        if stats.reuseCount > 0 { out += ", conn_use=\(stats.reuseCount + 1)" }
        let stamped = { (t: timeval) in t.tv_sec > 0 }
        var tnow = timeval()
        if stamped(stats.deliverDone) { tnow = stats.deliverDone } else if let now { tnow = now } else { gettimeofday(&tnow, nil) }
        let delay = delta(tnow, stats.incomingArrival)
        var p = (0, 0), a = (0, 0), s = (0, 0), x = (0, 0)
        if stamped(stats.activeArrival) {
            p = delta(stats.activeArrival, stats.incomingArrival)
            if stamped(stats.agentHandoff) {
                a = delta(stats.agentHandoff, stats.activeArrival)
                if stamped(stats.connSetupDone) {
                    s = delta(stats.connSetupDone, stats.agentHandoff)
                    x = delta(tnow, stats.connSetupDone)
                } else {
                    x = delta(tnow, stats.agentHandoff)
                }
            } else {
                a = delta(tnow, stats.activeArrival)
            }
        } else {
            p = delta(tnow, stats.incomingArrival)
        }
        func f(_ d: (Int, Int)) -> String { FormatTV.format(sec: d.0, usec: d.1, maxDigits: resolution) }
        out += ", delay=\(f(delay)), delays=\(f(p))/\(f(a))/\(f(s))/\(f(x))"
        out += ", dsn=\(dsn.status), status=\(status) (\(dsn.reason))"
        return out
    }

    /// Addresses in log lines (info_log_address_format=external).
    public static func logAddress(_ address: String) -> String {
        address.isEmpty ? "" : Quote822.quote822(address)
    }

    public static func log(id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                           dsn: DeliveryStatus, status: String, config: MailConfig) {
        Msg.info(line(id: id, stats: stats, recipient: recipient, relay: relay, dsn: dsn, status: status,
                      resolution: config.int("delay_logging_resolution_limit")))
    }
}

/// DEL_RCPT_STAT_*: what the verify service records for an address.
public enum VerifyStatus: Int, Sendable {
    case ok = 0, deferred = 1, bounced = 2, todo = 3
}

public enum VerifyClient {
    /// A connection to the verify service, past its protocol announcement.
    static func connect(_ config: MailConfig) throws -> AttrClient {
        let c = try AttrClient(serviceClass: MailClass.private, name: config.string("address_verify_service_name"),
                               timeout: config.time("ipc_timeout"))
        _ = try c.expectProtocol(MailProtocol.verify)
        return c
    }

    /// request=query: the address's recipient status and its text; nil when the
    /// service fails.
    public static func query(address: String, config: MailConfig) -> (status: VerifyStatus, reason: String)? {
        do {
            let c = try connect(config)
            var l = AttrList()
            l.append(MailAttr.request, "query")
            l.append(MailAttr.address, address)
            let r = try c.request(l)
            var sc = r.scanner()
            guard try sc.int(MailAttr.status) == 0 else { return nil }
            guard let st = VerifyStatus(rawValue: try sc.int(MailAttr.recipientStatus)) else { return nil }
            return (st, try sc.string(MailAttr.reason))
        } catch {
            return nil
        }
    }

    /// request=update; true when the service took it.
    public static func update(address: String, status: VerifyStatus, reason: String, config: MailConfig) -> Bool {
        do {
            let c = try connect(config)
            var l = AttrList()
            l.append(MailAttr.request, "update")
            l.append(MailAttr.address, address)
            l.append(MailAttr.recipientStatus, int: status.rawValue)
            l.append(MailAttr.reason, reason)
            let r = try c.request(l)
            var sc = r.scanner()
            return try sc.int(MailAttr.status) == 0
        } catch {
            return false
        }
    }
}

/// The per-recipient outcomes, as the agents report them. Each returns 0 when the
/// recipient reached a final state (and may be marked done), -1 when it stays to do.
public struct DeliveryReport {
    public let config: MailConfig
    let softBounce: Bool
    let bounceService: String
    let deferService: String
    let traceService: String
    let verifyNegativeCache: Bool

    /// The agent's delivery status filter (smtp_delivery_status_filter and the like).
    nonisolated(unsafe) public static var statusFilter: Maps?

    /// Opens `parameter`'s tables as the status filter of this process.
    public static func useStatusFilter(_ config: MailConfig, parameter: String) {
        let v = config.string(parameter)
        statusFilter = v.isEmpty ? nil : Maps(title: parameter, mapNames: v, flags: .lock)
    }

    /// dsn_filter_lookup: the filter's replacement for "status text", of the same class
    /// (success stays success, failure stays failure); nil when none applies.
    static func filtered(_ dsn: DeliveryStatus) -> DeliveryStatus? {
        guard let maps = statusFilter, let result = maps.find("\(dsn.status) \(dsn.reason)") else { return nil }
        let code = String(result.prefix { $0 != " " && $0 != "\t" })
        let success = dsn.status.first == "2"
        guard DSNCode.isValid(code), (code.first == "2") == success else {
            Msg.warn("\(maps.title): bad status code: \(result)")
            return nil
        }
        var out = dsn
        (out.status, out.reason) = DSNCode.split(result, defaultCode: code)
        out.action = code.first == "4" ? "delayed" : code.first == "5" ? "failed" : dsn.action
        return out
    }

    public init(config: MailConfig) {
        self.config = config
        softBounce = config.bool("soft_bounce")
        bounceService = config.string("bounce_service_name")
        deferService = config.string("defer_service_name")
        traceService = config.string("trace_service_name")
        verifyNegativeCache = config.bool("address_verify_negative_cache")
    }

    func log(_ id: String, _ stats: MsgStats, _ r: RecipientInfo, _ relay: String, _ dsn: DeliveryStatus, _ status: String) {
        LogAdhoc.log(id: id, stats: stats, recipient: r, relay: relay, dsn: dsn, status: status, config: config)
    }

    /// trace_append: a record in the trace log (sendmail -v/-bv, NOTIFY=SUCCESS).
    public func traceAppend(flags: DeliverFlags, id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                            dsn: DeliveryStatus) -> Int {
        var my = dsn
        if relay != noRelayAgent { my.reason = "delivery via \(relay): " + dsn.reason }
        if BounceClient.append(service: traceService, flags: flags.rawValue, queueID: id, recipient: recipient,
                               status: my, config: config) != 0 {
            Msg.warn("\(id): \(traceService) service failure")
            return -1
        }
        if flags.contains(.userVerify) { log(id, stats, recipient, relay, dsn, dsn.action) }
        return 0
    }

    /// verify_append: the outcome of an address probe goes to the verify service.
    public func verifyAppend(id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                             dsn: DeliveryStatus, status: VerifyStatus) -> Int {
        var my = dsn
        var ok = true
        if verifyNegativeCache || status == .ok {
            if !recipient.originalRecipient.isEmpty {
                ok = VerifyClient.update(address: recipient.originalRecipient, status: status, reason: my.reason, config: config)
            }
            if ok && CaseFold.fold(recipient.address) != CaseFold.fold(recipient.originalRecipient) {
                ok = VerifyClient.update(address: recipient.address, status: status, reason: my.reason, config: config)
            }
        } else {
            my.action = "undeliverable-but-not-cached"
        }
        if ok {
            log(id, stats, recipient, relay, my, my.action)
            return 0
        }
        Msg.warn("\(id): \(config.string("address_verify_service_name")) service failure")
        return -1
    }

    /// sent: the recipient was delivered (or expanded, relayed).
    public func sent(flags: DeliverFlags, id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                     dsn: DeliveryStatus) -> Int {
        var my = dsn
        if my.status.first != "2" || !DSNCode.isValid(my.status) {
            Msg.warn("sent: ignoring dsn code \"\(my.status)\"")
            my.status = "2.0.0"
        }
        if let f = Self.filtered(my) { my = f }
        if flags.contains(.mtaVerify) {
            my.action = "deliverable"
            return verifyAppend(id: id, stats: stats, recipient: recipient, relay: relay, dsn: my, status: .ok)
        }
        if flags.contains(.userVerify) {
            my.action = "deliverable"
            return traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
        }
        if my.action.isEmpty { my.action = "delivered" }
        if (!flags.contains(.record) || traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my) == 0)
            && (recipient.notify & DSNNotify.success == 0
                || traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my) == 0) {
            log(id, stats, recipient, relay, my, "sent")
            return 0
        }
        my.reason = "\(id): \(traceService) service failed"
        my.status = "4.3.0"
        return deferIntern(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
    }

    /// bounce_append: the recipient failed permanently (deferred instead with soft_bounce).
    public func bounce(flags: DeliverFlags, bounceFlags: BounceFlags = [], id: String, stats: MsgStats,
                       recipient: RecipientInfo, relay: String, dsn: DeliveryStatus) -> Int {
        var my = dsn
        if my.status.first != "5" || !DSNCode.isValid(my.status) {
            Msg.warn("bounce_append: ignoring dsn code \"\(my.status)\"")
            my.status = "5.0.0"
        }
        if let f = Self.filtered(my) {
            if f.status.first == "4" { return deferIntern(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: f) }
            my = f
        }
        if flags.contains(.mtaVerify) {
            my.action = "undeliverable"
            return verifyAppend(id: id, stats: stats, recipient: recipient, relay: relay, dsn: my, status: .bounced)
        }
        if flags.contains(.userVerify) {
            my.action = "undeliverable"
            return traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
        }
        if softBounce && bounceFlags.contains(.clean) { return -1 }
        if softBounce {
            my.status = "4" + my.status.dropFirst()
            my.action = "delayed"
        } else {
            my.action = "failed"
        }
        let all = flags.rawValue | bounceFlags.rawValue
        if BounceClient.append(service: softBounce ? deferService : bounceService, flags: all, queueID: id,
                               recipient: recipient, status: my, config: config) == 0
            && (!flags.contains(.record) || traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my) == 0) {
            log(id, stats, recipient, relay, my, softBounce ? "SOFTBOUNCE" : "bounced")
            return softBounce ? -1 : 0
        }
        if !bounceFlags.contains(.clean) {
            my.status = "4.3.0"
            my.reason = "\(bounceService) or \(traceService) service failure"
            return deferIntern(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
        }
        return -1
    }

    /// defer_append: the recipient stays in the queue for another attempt.
    public func `defer`(flags: DeliverFlags, id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                        dsn: DeliveryStatus) -> Int {
        var my = dsn
        if my.status.first != "4" || !DSNCode.isValid(my.status) {
            Msg.warn("defer_append: ignoring dsn code \"\(my.status)\"")
            my.status = "4.0.0"
        }
        if let f = Self.filtered(my) {
            if f.status.first == "5" {
                return bounce(flags: flags, bounceFlags: [], id: id, stats: stats, recipient: recipient, relay: relay, dsn: f)
            }
            my = f
        }
        return deferIntern(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
    }

    func deferIntern(flags: DeliverFlags, id: String, stats: MsgStats, recipient: RecipientInfo, relay: String,
                     dsn: DeliveryStatus) -> Int {
        var my = dsn
        if flags.contains(.mtaVerify) {
            my.action = "undeliverable"
            return verifyAppend(id: id, stats: stats, recipient: recipient, relay: relay, dsn: my, status: .deferred)
        }
        if flags.contains(.userVerify) {
            my.action = "undeliverable"
            return traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my)
        }
        my.action = "delayed"
        if BounceClient.append(service: deferService, flags: flags.rawValue, queueID: id, recipient: recipient,
                               status: my, config: config) != 0 {
            Msg.warn("\(id): \(deferService) service failure")
        }
        log(id, stats, recipient, relay, my, "deferred")
        if flags.contains(.record) && traceAppend(flags: flags, id: id, stats: stats, recipient: recipient, relay: relay, dsn: my) != 0 {
            Msg.warn("\(id): \(traceService) service failure")
        }
        if let at = recipient.address.lastIndex(of: "@") {
            let domain = String(recipient.address[recipient.address.index(after: at)...])
            if !domain.isEmpty {
                switch FlushClient.add(site: domain, queueID: id, config: config) {
                case .ok, .denied: break
                default: Msg.warn("\(id): \(config.string("flush_service_name")) service failure")
                }
            }
        }
        return -1
    }

    /// deliver_completed: marks the recipient's R record done (offset -1: nothing to mark).
    public static func completed(fd: Int32, path: String, offset: Int) {
        if offset == -1 || offset == 0 { return }
        var b = RecordType.doneRecipient.rawValue
        if pwrite(fd, &b, 1, off_t(offset)) != 1 {
            Msg.fatal("deliver_completed: \(path): \(errnoText(errno))")
        }
    }
}
