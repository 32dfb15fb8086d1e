// virtual(8): delivery to mailboxes of virtual domains: virtual_mailbox_maps gives the
// mailbox (a Maildir when it ends in "/") under virtual_mailbox_base, virtual_uid_maps
// and virtual_gid_maps the rights to write it with.
// Mirrors Postfix virtual/virtual.c, recipient.c, mailbox.c, maildir.c and unknown.c.
import Glibc
import MailUtil
import MailGlobal
import MailServer

public enum VirtualAgent {
    final class Settings {
        let config: MailConfig
        let base: String
        let mailboxMaps: MailAddrFinder?
        let uidMaps: MailAddrFinder?
        let gidMaps: MailAddrFinder?
        let minimumUID: Int
        let locks: LockSettings
        let hostname: String

        init(config: MailConfig) {
            self.config = config
            base = config.string("virtual_mailbox_base")
            let ext = AddressExtension(config: config)
            func finder(_ name: String) -> MailAddrFinder? {
                let v = config.string(name)
                if v.isEmpty { return nil }
                return MailAddrFinder(maps: Maps(title: name, mapNames: v, flags: [.lock, .foldFix]), local: nil, extension: ext)
            }
            mailboxMaps = finder("virtual_mailbox_maps")
            uidMaps = finder("virtual_uid_maps")
            gidMaps = finder("virtual_gid_maps")
            minimumUID = config.int("virtual_minimum_uid")
            locks = LockSettings(config: config, parameter: "virtual_mailbox_lock")
            hostname = config.string("myhostname")
        }
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "virtual"
        desc.privileged = true
        var settings: Settings?
        desc.preInit = { ctx in
            settings = Settings(config: ctx.config)
            signal(SIGXFSZ, SIG_IGN)
            let limit = ctx.config.long("virtual_mailbox_limit")
            if limit > 0 {
                var rl = rlimit(rlim_cur: rlim_t(limit), rlim_max: rlim_t(limit))
                _ = setrlimit(Int32(RLIMIT_FSIZE.rawValue), &rl)
            }
        }
        desc.postInit = { _ in
            if let s = settings, !s.base.hasPrefix("/") {
                Msg.fatal("do not specify relative pathname: virtual_mailbox_base = \(s.base)")
            }
        }
        SingleServer.run(arguments, desc) { client, ctx in
            guard let settings else { return }
            DeliveryAgent.serve(client, ctx) { job in
                var result = 0
                let loops = LoopInfo.deliveredTo(job)
                for rcpt in job.request.recipients {
                    let st = deliver(job, rcpt, settings, loops)
                    if st == 0 && job.request.flags.contains(.success) {
                        DeliveryReport.completed(fd: job.fd, path: job.path, offset: rcpt.offset)
                    }
                    result |= st
                }
                return result
            }
        }
    }

    static func report(_ job: DeliveryJob, _ r: QueueRecipient, _ status: String, _ reason: String) -> Int {
        let dsn = DeliveryStatus(status: status, reason: reason)
        switch status.first {
        case "2": return job.report.sent(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: r.info, relay: job.service, dsn: dsn)
        case "5": return job.report.bounce(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: r.info, relay: job.service, dsn: dsn)
        default: return job.report.defer(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: r.info, relay: job.service, dsn: dsn)
        }
    }

    static func fail(_ job: DeliveryJob, _ r: QueueRecipient, _ dsn: DeliveryStatus) -> Int {
        dsn.status.first == "4"
            ? job.report.defer(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: r.info, relay: job.service, dsn: dsn)
            : job.report.bounce(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: r.info, relay: job.service, dsn: dsn)
    }

    static func deliver(_ job: DeliveryJob, _ rcpt: QueueRecipient, _ s: Settings, _ loops: Set<String>) -> Int {
        let user = CaseFold.fold(rcpt.address)
        if loops.contains(user) {
            return report(job, rcpt, "5.4.6", "mail forwarding loop for \(rcpt.address)")
        }
        guard let maps = s.mailboxMaps, let mailboxRes = maps.find(user, strategy: [.full, .noExtension, .atDomain]) else {
            if let m = s.mailboxMaps, m.maps.error != nil {
                return report(job, rcpt, "4.3.0", "mail system configuration error")
            }
            if job.request.flags.traceOnly { return report(job, rcpt, "2.0.0", "delivers to unknown recipient") }
            return report(job, rcpt, "5.1.1", "unknown user: \"\(user)\"")
        }
        let mailbox = s.base + "/" + mailboxRes
        guard let uidRes = s.uidMaps?.find(user, strategy: [.full, .noExtension, .atDomain]) else {
            Msg.warn("recipient \(user): uid not found in virtual_uid_maps")
            return report(job, rcpt, "4.3.5", "mail system configuration error")
        }
        guard let uid = Int(uidRes), uid >= s.minimumUID else {
            Msg.warn("recipient \(user): bad uid \(uidRes) in virtual_uid_maps")
            return report(job, rcpt, "4.3.5", "mail system configuration error")
        }
        guard let gidRes = s.gidMaps?.find(user, strategy: [.full, .noExtension, .atDomain]) else {
            Msg.warn("recipient \(user): gid not found in virtual_gid_maps")
            return report(job, rcpt, "4.3.5", "mail system configuration error")
        }
        guard let gid = Int(gidRes), gid > 0 else {
            Msg.warn("recipient \(user): bad gid \(gidRes) in virtual_gid_maps")
            return report(job, rcpt, "4.3.5", "mail system configuration error")
        }
        let rights = Rights(uid: uid_t(uid), gid: gid_t(gid))
        let src = CopySource(queueFD: job.fd, offset: job.request.dataOffset, sender: job.request.sender,
                             originalRecipient: rcpt.originalRecipient, delivered: rcpt.address)
        if mailbox.hasSuffix("/") {
            if job.request.flags.traceOnly { return report(job, rcpt, "2.0.0", "delivers to maildir") }
            let why: DeliveryStatus? = Mailbox.asUser(rights) {
                Mailbox.maildir(mailbox, source: src, flags: [.toFile, .returnPath, .delivered, .originalRecipient],
                                hostname: s.hostname)
            }
            if var d = why {
                d.reason = "maildir delivery failed: \(d.reason)"
                return fail(job, rcpt, d)
            }
            return report(job, rcpt, "2.0.0", "delivered to maildir")
        }
        if job.request.flags.traceOnly { return report(job, rcpt, "2.0.0", "delivers to mailbox") }
        let why: DeliveryStatus? = Mailbox.asUser(rights) {
            Mailbox.append(path: mailbox, source: src, flags: .mbox, locks: s.locks, writer: rights, chownTo: nil,
                           requireOwner: nil)
        }
        if var d = why {
            d.reason = "delivery failed to mailbox \(mailbox): \(d.reason)"
            return fail(job, rcpt, d)
        }
        return report(job, rcpt, "2.0.0", "delivered to mailbox")
    }
}

public enum LoopInfo {
    /// The Delivered-To values of the message's headers, case-folded (delivered_hdr).
    public static func deliveredTo(_ job: DeliveryJob) -> Set<String> {
        var out = Set<String>()
        let reader = QueueFileReader(fd: job.fd)
        reader.seek(job.request.dataOffset)
        var prevNormal = true
        while let (_, r) = try? reader.next(maxLength: 0) {
            if r.type != .normalText && r.type != .continuedText { break }
            if prevNormal {
                let t = r.text
                if !(t.first == " " || t.first == "\t") && !HeaderText.isHeader(t) { break }
                if t.count > 13 && t.prefix(13).lowercased() == "delivered-to:" {
                    var v = Substring(t.dropFirst(13))
                    while v.first == " " || v.first == "\t" { v = v.dropFirst() }
                    out.insert(CaseFold.fold(String(v)))
                }
            }
            prevNormal = r.type == .normalText
        }
        return out
    }
}
