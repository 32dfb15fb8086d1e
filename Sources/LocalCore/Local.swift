// local(8): delivery to local recipients: aliases (with :include:, |command, /file and
// forwarding), .forward files, the mailbox (mbox in the spool or home directory, Maildir,
// mailbox_command, mailbox_transport), and what happens to unknown users (fallback
// transport, luser_relay, bounce).
// Mirrors Postfix local/local.c, recipient.c, alias.c, dotforward.c, token.c, include.c,
// resolve.c, indirect.c, mailbox.c, maildir.c, file.c, command.c, unknown.c,
// delivered.c and local_expand.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailServer
import DeliverCore

/// Whose rights a delivery uses.
struct UserAttr {
    var uid: uid_t = 0
    var gid: gid_t = 0
    var home: String?
    var logname: String?
    var shell: String?
}

/// How an address came about (for allow_mail_to_commands/files).
struct ExpandType: OptionSet {
    let rawValue: Int
    static let alias = ExpandType(rawValue: 1)
    static let forward = ExpandType(rawValue: 2)
    static let include = ExpandType(rawValue: 4)
}

/// DELIVER_ATTR: the recipient being worked on, and how we got there.
struct LocalAttr {
    var level = 0
    var rcpt: QueueRecipient
    var sender: String
    var delivered: String?
    var local = ""
    var user = ""
    var domain = ""
    var ext: String?
    var unmatched: String?
    var owner: String?
    var expType: ExpandType = []
    var expFrom: String?
}

struct Password {
    let name: String
    let uid: uid_t
    let gid: gid_t
    let home: String
    let shell: String

    static func lookup(_ name: String) -> Password? {
        guard let p = getpwnam(name) else { return nil }
        return Password(name: String(cString: p.pointee.pw_name), uid: p.pointee.pw_uid, gid: p.pointee.pw_gid,
                        home: String(cString: p.pointee.pw_dir), shell: String(cString: p.pointee.pw_shell))
    }

    static func lookup(uid: uid_t) -> Password? {
        guard let p = getpwuid(uid) else { return nil }
        return Password(name: String(cString: p.pointee.pw_name), uid: p.pointee.pw_uid, gid: p.pointee.pw_gid,
                        home: String(cString: p.pointee.pw_dir), shell: String(cString: p.pointee.pw_shell))
    }
}

final class LocalSettings {
    let config: MailConfig
    let aliasMaps: Maps?
    let aliasNames: [String]
    let forwardPath: [String]
    let homeMailbox: String
    let spoolDirectory: String
    let mailboxCommand: String
    let mailboxCommandMaps: Maps?
    let mailboxTransport: String
    let mailboxTransportMaps: Maps?
    let fallbackTransport: String
    let fallbackTransportMaps: Maps?
    let luserRelay: String
    let commandMask: ExpandType
    let fileMask: ExpandType
    let deliveredHeaders: Set<String>
    let defaultPrivs: Password?
    let recipientDelimiter: String
    let ownerRequestSpecial: Bool
    let expandOwnerAlias: Bool
    let frozenDelivered: Bool
    let strictMailboxOwnership: Bool
    let commandShell: String
    let commandDirectory: String
    let commandTimeLimit: Int
    let commandFilter: Set<Character>
    let exportEnvironment: [String]
    let locks: LockSettings
    let propagateAliasExtension: Bool
    let relay: String
    let extension_: AddressExtension
    let rewrite: TrivialRewriteClient

    init(config: MailConfig, service: String) {
        self.config = config
        func maps(_ name: String) -> Maps? {
            let v = config.string(name)
            return v.isEmpty ? nil : Maps(title: name, mapNames: v, flags: [.lock, .foldFix])
        }
        aliasMaps = maps("alias_maps")
        aliasNames = Tokens.splitQuoted(config.string("alias_maps"))
        forwardPath = config.list("forward_path")
        homeMailbox = config.string("home_mailbox")
        spoolDirectory = config.string("mail_spool_directory")
        mailboxCommand = config.string("mailbox_command")
        mailboxCommandMaps = maps("mailbox_command_maps")
        mailboxTransport = config.string("mailbox_transport")
        mailboxTransportMaps = maps("mailbox_transport_maps")
        fallbackTransport = config.string("fallback_transport")
        fallbackTransportMaps = maps("fallback_transport_maps")
        luserRelay = config.string("luser_relay")
        func mask(_ name: String) -> ExpandType {
            var m: ExpandType = []
            for w in config.list(name) {
                switch w.lowercased() {
                case "alias": m.insert(.alias)
                case "forward": m.insert(.forward)
                case "include": m.insert(.include)
                default: Msg.fatal("\(name): unknown value: \(w)")
                }
            }
            return m
        }
        commandMask = mask("allow_mail_to_commands")
        fileMask = mask("allow_mail_to_files")
        deliveredHeaders = Set(config.list("prepend_delivered_header").map { $0.lowercased() })
        let privs = config.string("default_privs")
        defaultPrivs = Password.lookup(privs)
        if defaultPrivs == nil { Msg.fatal("unknown \(privs) user: default_privs") }
        recipientDelimiter = config.string("recipient_delimiter")
        ownerRequestSpecial = config.bool("owner_request_special")
        expandOwnerAlias = config.bool("expand_owner_alias")
        frozenDelivered = config.bool("frozen_delivered_to")
        strictMailboxOwnership = config.bool("strict_mailbox_ownership")
        commandShell = config.string("local_command_shell")
        commandDirectory = config.string("command_execution_directory")
        commandTimeLimit = config.time("command_time_limit")
        commandFilter = Set(config.string("command_expansion_filter"))
        exportEnvironment = config.list("export_environment")
        locks = LockSettings(config: config, parameter: "mailbox_delivery_lock")
        propagateAliasExtension = config.list("propagate_unmatched_extensions").contains { $0.lowercased() == "alias" }
        relay = service
        extension_ = AddressExtension(config: config)
        rewrite = TrivialRewriteClient(config: config)
    }
}

public enum Local {
    public static func main(_ arguments: [String]) -> Never {
        ExecHelper.runIfRequested(arguments)
        var desc = ServerDescription()
        desc.program = "local"
        desc.privileged = true
        var settings: LocalSettings?
        desc.preInit = { ctx in
            settings = LocalSettings(config: ctx.config, service: ctx.serviceName)
            // mailbox_size_limit, as a file size limit: writes past it fail with EFBIG.
            signal(SIGXFSZ, SIG_IGN)
            signal(SIGPIPE, SIG_IGN)
            let limit = ctx.config.long("mailbox_size_limit")
            if limit > 0 {
                var rl = rlimit(rlim_cur: rlim_t(limit), rlim_max: rlim_t(limit))
                if setrlimit(Int32(RLIMIT_FSIZE.rawValue), &rl) < 0 { Msg.warn("setrlimit: \(errnoText(errno))") }
            }
        }
        SingleServer.run(arguments, desc) { client, ctx in
            guard let settings else { return }
            DeliveryAgent.serve(client, ctx) { job in
                LocalDelivery(job: job, settings: settings).deliverAll()
            }
        }
    }
}

/// The delivery of one request.
final class LocalDelivery {
    let job: DeliveryJob
    let s: LocalSettings
    /// Delivered-To values in the message (lower case), for loop detection.
    let loopInfo: Set<String>
    var dupFilter = Set<String>()
    let forwarder = Forwarder()

    init(job: DeliveryJob, settings: LocalSettings) {
        self.job = job
        s = settings
        loopInfo = LoopInfo.deliveredTo(job)
    }

    func deliverAll() -> Int {
        var result = 0
        for rcpt in job.request.recipients {
            dupFilter.removeAll()
            var attr = LocalAttr(rcpt: rcpt, sender: job.request.sender)
            var st = deliverRecipient(&attr, UserAttr())
            st |= forwarder.finish(job, recipient: rcpt, deliveredHeader: s.deliveredHeaders.contains("forward"))
            if st == 0 && job.request.flags.contains(.success) {
                DeliveryReport.completed(fd: job.fd, path: job.path, offset: rcpt.offset)
            }
            result |= st
        }
        return result
    }

    // MARK: Reports for the recipient at hand

    func bounce(_ a: LocalAttr, _ status: String, _ reason: String) -> Int {
        job.report.bounce(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: info(a),
                          relay: s.relay, dsn: DeliveryStatus(status: status, reason: reason))
    }

    func `defer`(_ a: LocalAttr, _ status: String, _ reason: String) -> Int {
        job.report.defer(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: info(a),
                         relay: s.relay, dsn: DeliveryStatus(status: status, reason: reason))
    }

    func sent(_ a: LocalAttr, _ reason: String, status: String = "2.0.0", action: String = "") -> Int {
        job.report.sent(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: info(a),
                        relay: s.relay, dsn: DeliveryStatus(status: status, action: action, reason: reason))
    }

    /// bounce_workaround: a failure goes to the defer or bounce log by its DSN class.
    func fail(_ a: LocalAttr, _ dsn: DeliveryStatus) -> Int {
        dsn.status.first == "4"
            ? job.report.defer(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: info(a),
                               relay: s.relay, dsn: dsn)
            : job.report.bounce(flags: job.flags, id: job.queueID, stats: job.request.stats, recipient: info(a),
                                relay: s.relay, dsn: dsn)
    }

    func info(_ a: LocalAttr) -> RecipientInfo {
        var r = a.rcpt.info
        // Per-recipient offsets matter to the top-level recipient only.
        r.offset = a.level == 0 ? a.rcpt.offset : a.rcpt.offset
        return r
    }

    var traceOnly: Bool { job.request.flags.traceOnly }

    // MARK: recipient.c

    func deliverRecipient(_ a0: inout LocalAttr, _ usr: UserAttr) -> Int {
        var a = a0
        a.level += 1
        if a.level > 100 {
            Msg.warn("recipient nesting limit exceeded for \(a.rcpt.address)")
            return bounce(a, "5.4.6", "recipient nesting limit exceeded")
        }
        if !dupFilter.insert("recipient \(a.level) \(a.rcpt.address)").inserted { return 0 }
        if loopInfo.contains(CaseFold.fold(a.rcpt.address)) {
            return bounce(a, "5.4.6", "mail forwarding loop for \(a.rcpt.address)")
        }
        if a.delivered == nil { a.delivered = a.rcpt.address }
        var local = CaseFold.fold(a.rcpt.address)
        if let at = local.lastIndex(of: "@") {
            a.domain = String(local[local.index(after: at)...])
            local = String(local[..<at])
        } else {
            Msg.warn("no @ in recipient address: \(local)")
        }
        a.local = local
        a.user = local
        a.ext = nil
        if !s.recipientDelimiter.isEmpty, let split = s.extension_.splitPoint(local) {
            let ext = String(local[local.index(after: split)...])
            if ext.contains("/") {
                Msg.warn("\(job.queueID): address with illegal extension: \(local)")
                a.local = String(local[..<split])
                a.user = a.local
            } else {
                a.user = String(local[..<split])
                a.ext = ext
            }
        }
        a.unmatched = a.ext
        if a.user.isEmpty {
            return bounce(a, "5.1.3", "null username in \"\(a.rcpt.address)\"")
        }
        return deliverSwitch(&a, usr)
    }

    func deliverSwitch(_ a: inout LocalAttr, _ usr: UserAttr) -> Int {
        a.level += 1
        var status = 0
        a.unmatched = nil
        if deliverAlias(&a, usr, a.local, &status) { return status }
        if a.ext != nil {
            if s.propagateAliasExtension { a.unmatched = a.ext }
            if deliverAlias(&a, usr, a.user, &status) { return status }
            a.unmatched = a.ext
        }
        if let owner = a.owner, CaseFold.fold(owner) != CaseFold.fold(a.user) { return deliverIndirect(a) }
        if a.expType.contains(.include) { return deliverIndirect(a) }
        if deliverDotForward(&a, usr, &status) { return status }
        if deliverMailbox(&a, usr, &status) { return status }
        return deliverUnknown(&a, usr)
    }

    // MARK: alias.c

    func deliverAlias(_ a: inout LocalAttr, _ usr0: UserAttr, _ name: String, _ status: inout Int) -> Bool {
        a.level += 1
        guard let maps = s.aliasMaps else { return false }
        if let from = a.expFrom, CaseFold.fold(from) == CaseFold.fold(name) { return false }
        if a.level > 100 {
            Msg.warn("alias database loop for \(name)")
            status = bounce(a, "5.4.6", "alias database loop for \(name)")
            return true
        }
        a.expFrom = name
        var found: (String, String)?
        for n in maps.names {
            guard let d = DictCache.handle(n) else { continue }
            do {
                if let v = try d.lookup(name) {
                    found = (n, v)
                    break
                }
            } catch {
                Msg.warn("\(d.type):\(d.name) lookup error for \"\(name)\"")
                status = self.defer(a, "4.3.0", "alias database unavailable")
                return true
            }
        }
        guard let (dictName, value) = found else { return false }
        if job.request.flags.contains(.mtaVerify) {
            status = sent(a, "aliased to \(value)")
            return true
        }
        a.expType = .alias
        var usr = UserAttr()
        if let dict = DictCache.handle(dictName), case .untrusted(let uid) = dict.owner, uid != 0 {
            guard let pw = Password.lookup(uid: uid) else {
                Msg.warn("cannot find alias database owner for \(dictName)")
                status = self.defer(a, "4.3.0", "cannot find alias database owner")
                return true
            }
            usr = UserAttr(uid: pw.uid, gid: pw.gid, home: pw.home, logname: pw.name, shell: pw.shell)
        }
        _ = usr0
        var canonOwner: String?
        if s.ownerRequestSpecial {
            let owner = "owner-" + name
            if let rhs = maps.find(owner) {
                canonOwner = s.rewrite.rewrite(s.expandOwnerAlias ? rhs : owner, rule: "local")
                a.owner = canonOwner
                a.sender = canonOwner!
            } else {
                a.owner = nil
            }
        }
        if s.frozenDelivered == false { a.delivered = a.rcpt.address }
        let savedNotify = a.rcpt.notify
        a.rcpt.notify = savedNotify == DSNNotify.success ? DSNNotify.never : savedNotify & ~DSNNotify.success
        if canonOwner != nil {
            a.rcpt.dsnOriginalRecipient = ""
            a.rcpt.originalRecipient = ""
        }
        var count = 0
        status = deliverTokens(&a, usr, value, &count)
        if count < 1 {
            Msg.warn("no recipient in alias lookup result for \(name)")
            status = self.defer(a, "4.3.0", "alias database unavailable")
        } else if savedNotify & DSNNotify.success != 0 {
            var t = a
            t.rcpt.notify = savedNotify
            _ = job.report.traceAppend(flags: [], id: job.queueID, stats: job.request.stats, recipient: info(t),
                                       relay: s.relay,
                                       dsn: DeliveryStatus(status: "2.0.0", action: canonOwner != nil ? "delivered" : "expanded",
                                                           reason: "alias expanded"))
        }
        return true
    }

    // MARK: token.c, include.c, resolve.c, indirect.c

    func deliverTokens(_ a: inout LocalAttr, _ usr: UserAttr, _ text: String, _ count: inout Int) -> Int {
        var status = 0
        for tree in Tok822.addresses(Address822.parse(text)) {
            count += 1
            let addr = Address822.internalize(tree.head)
            var b = a
            status |= deliverToken(&b, usr, addr, tree)
        }
        return status
    }

    func deliverToken(_ a: inout LocalAttr, _ usr: UserAttr, _ addr: String, _ tree: Tok822) -> Int {
        if addr.hasPrefix("/") { return deliverFile(&a, usr, addr) }
        if addr.hasPrefix("~") {
            if !addr.hasPrefix("~/") { return bounce(a, "5.1.3", "bad home directory syntax for: \(addr)") }
            guard let home = usr.home else { return bounce(a, "5.1.3", "unknown home directory for: \(addr)") }
            return deliverFile(&a, usr, home == "/" ? String(addr.dropFirst()) : home + addr.dropFirst())
        }
        if addr.hasPrefix("|") {
            if s.commandMask.isDisjoint(with: a.expType) { return bounce(a, "5.7.1", "mail to command is restricted") }
            return deliverCommand(&a, usr, String(addr.dropFirst()))
        }
        if addr.lowercased().hasPrefix(":include:") {
            return deliverInclude(&a, usr, String(addr.dropFirst(9)))
        }
        return deliverResolve(&a, usr, addr)
    }

    func deliverResolve(_ a: inout LocalAttr, _ usr: UserAttr, _ addr: String) -> Int {
        a.level += 1
        let canon = s.rewrite.rewriteInternal(addr, rule: MailAttr.rewriteLocal)
        let reply = s.rewrite.resolve(canon, sender: a.sender)
        if reply.flags.contains(.fail) { return self.defer(a, "4.3.0", "address resolver failure") }
        if reply.flags.contains(.error) { return bounce(a, "5.1.3", "bad recipient address syntax: \(reply.recipient)") }
        var recipient = reply.recipient
        if let u = a.unmatched, let d = s.recipientDelimiter.first {
            if let at = recipient.lastIndex(of: "@") {
                recipient = recipient[..<at] + String(d) + u + recipient[at...]
            } else {
                recipient += String(d) + u
            }
        }
        a.rcpt.address = recipient
        if reply.transport == s.relay { return deliverRecipient(&a, usr) }
        return deliverIndirect(a)
    }

    func deliverIndirect(_ a: LocalAttr) -> Int {
        if !dupFilter.insert("indirect \(a.rcpt.address)").inserted { return 0 }
        if traceOnly { return sent(a, "forwards to \(a.rcpt.address)") }
        var r = a.rcpt
        r.offset = a.rcpt.offset
        forwarder.append(sender: a.sender, delivered: a.delivered ?? a.rcpt.address, recipient: r)
        return 0
    }

    func deliverInclude(_ a: inout LocalAttr, _ usr: UserAttr, _ path: String) -> Int {
        a.level += 1
        if !dupFilter.insert("include \(path)").inserted { return 0 }
        if path.isEmpty || !path.hasPrefix("/") {
            return bounce(a, "5.3.5", ":include:\(path) uses a relative path")
        }
        if s.fileMask.isDisjoint(with: a.expType) && s.commandMask.isDisjoint(with: a.expType) && false {
            return 0
        }
        var st = stat()
        let privs = usr.uid == 0 ? (s.defaultPrivs.map { UserAttr(uid: $0.uid, gid: $0.gid) } ?? usr) : usr
        let fd: Int32 = Mailbox.asUser(Rights(uid: privs.uid, gid: privs.gid)) { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        if fd < 0 {
            let e = errno
            return fail(a, DeliveryStatus(status: e == ENOENT ? "5.3.5" : "4.3.0",
                                          reason: "cannot open include file \(path): \(errnoText(e))"))
        }
        defer { close(fd) }
        if fstat(fd, &st) < 0 || st.st_mode & S_IFMT != S_IFREG {
            return bounce(a, "5.3.5", "not a regular include file: \(path)")
        }
        if st.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            return self.defer(a, "4.7.1", "mail is not delivered to group or world writable include file \(path)")
        }
        var incUsr = usr
        if st.st_uid != 0, let pw = Password.lookup(uid: st.st_uid) {
            incUsr = UserAttr(uid: pw.uid, gid: pw.gid, home: pw.home, logname: pw.name, shell: pw.shell)
        }
        guard let data = try? SafeFile.readAll(fd: fd, path: path) else {
            return self.defer(a, "4.3.0", "cannot read include file \(path)")
        }
        a.expType = .include
        a.owner = nil
        var count = 0
        var status = 0
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            status |= deliverTokens(&a, incUsr, String(line), &count)
            if status != 0 { break }
        }
        return status
    }

    // MARK: dotforward.c

    func deliverDotForward(_ a: inout LocalAttr, _ usr0: UserAttr, _ status: inout Int) -> Bool {
        a.level += 1
        if s.forwardPath.isEmpty { return false }
        if a.expType.contains(.forward) && a.owner.map({ CaseFold.fold($0) == CaseFold.fold(a.user) }) == true {
            return false
        }
        if !dupFilter.insert("forward \(a.local)").inserted { return false }
        guard let pw = Password.lookup(a.user) else { return false }
        let usr = UserAttr(uid: pw.uid, gid: pw.gid, home: pw.home, logname: pw.name, shell: pw.shell)
        var lookupStatus = false
        for pattern in s.forwardPath {
            guard let path = expand(pattern, a, usr, filter: false), !path.isEmpty else { continue }
            let fd: Int32 = Mailbox.asUser(Rights(uid: usr.uid, gid: usr.gid)) { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
            if fd < 0 { continue }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if st.st_uid != 0 && st.st_uid != pw.uid {
                Msg.warn("file \(path) has bad owner uid \(st.st_uid) -- ignored")
                continue
            }
            guard let data = try? SafeFile.readAll(fd: fd, path: path) else { continue }
            lookupStatus = true
            if job.request.flags.contains(.mtaVerify) {
                status = sent(a, "forwarded to \(path)")
                return true
            }
            a.expType = .forward
            a.owner = a.user
            if !s.frozenDelivered { a.delivered = a.rcpt.address }
            var count = 0
            status = 0
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
                status |= deliverTokens(&a, usr, String(line), &count)
                if status != 0 { break }
            }
            if count == 0 { lookupStatus = false }
            break
        }
        return lookupStatus
    }

    // MARK: mailbox.c, maildir.c

    func deliverMailbox(_ a: inout LocalAttr, _ usr0: UserAttr, _ status: inout Int) -> Bool {
        a.level += 1
        if !dupFilter.insert("mailbox \(a.local)").inserted { return true }
        if let m = s.mailboxTransportMaps {
            if let t = m.find(a.user) {
                var r = a.rcpt
                r.offset = -1
                status = DeliverPass.pass(job, to: t, recipient: r)
                return true
            } else if m.error != nil {
                status = self.defer(a, "4.3.0", "table lookup failure")
                return true
            }
        }
        if !s.mailboxTransport.isEmpty {
            var r = a.rcpt
            r.offset = -1
            status = DeliverPass.pass(job, to: s.mailboxTransport, recipient: r)
            return true
        }
        guard let pw = Password.lookup(a.user) else { return false }
        let usr = UserAttr(uid: pw.uid, gid: pw.gid, home: pw.home, logname: pw.name, shell: pw.shell)
        if let m = s.mailboxCommandMaps {
            if let c = m.find(a.user) {
                status = deliverCommand(&a, usr, c)
                return true
            } else if m.error != nil {
                status = self.defer(a, "4.3.0", "table lookup failure")
                return true
            }
        }
        if !s.mailboxCommand.isEmpty {
            status = deliverCommand(&a, usr, s.mailboxCommand)
        } else if s.homeMailbox.hasSuffix("/") {
            status = deliverMaildir(&a, usr, pw.home + "/" + s.homeMailbox)
        } else if s.spoolDirectory.hasSuffix("/") {
            status = deliverMaildir(&a, usr, s.spoolDirectory + a.user + "/")
        } else {
            status = deliverMailboxFile(&a, usr)
        }
        return true
    }

    func source(_ a: LocalAttr) -> CopySource {
        CopySource(queueFD: job.fd, offset: job.request.dataOffset, sender: a.sender,
                   originalRecipient: a.rcpt.originalRecipient, delivered: a.delivered ?? a.rcpt.address)
    }

    var fileCopyFlags: CopyFlags {
        var f = CopyFlags.mbox
        if !s.deliveredHeaders.contains("file") { f.remove(.delivered) }
        return f
    }

    func deliverMailboxFile(_ a: inout LocalAttr, _ usr: UserAttr) -> Int {
        a.level += 1
        if traceOnly { return sent(a, "delivers to mailbox") }
        if !s.frozenDelivered { a.delivered = a.rcpt.address }
        let mailbox: String
        var spoolUID = usr.uid, spoolGID = usr.gid
        if !s.homeMailbox.isEmpty {
            mailbox = (usr.home ?? "") + "/" + s.homeMailbox
        } else {
            mailbox = s.spoolDirectory + "/" + a.user
            var st = stat()
            if stat(s.spoolDirectory, &st) == 0 && st.st_mode & S_IWOTH == 0 {
                if st.st_mode & S_IWGRP != 0 {
                    spoolGID = st.st_gid
                } else {
                    spoolUID = 0
                    spoolGID = 0
                }
            }
        }
        let chown = spoolUID != usr.uid
        let result: DeliveryStatus? = Mailbox.asUser(Rights(uid: spoolUID, gid: spoolGID)) {
            Mailbox.append(path: mailbox, source: source(a), flags: fileCopyFlags, locks: s.locks,
                           writer: Rights(uid: usr.uid, gid: usr.gid),
                           chownTo: chown ? Rights(uid: usr.uid, gid: usr.gid) : nil,
                           requireOwner: s.strictMailboxOwnership ? usr.uid : nil)
        }
        if let why = result {
            var d = why
            d.reason = "cannot update mailbox \(mailbox) for user \(a.user). \(why.reason)"
            return fail(a, d)
        }
        return sent(a, "delivered to mailbox")
    }

    func deliverMaildir(_ a: inout LocalAttr, _ usr: UserAttr, _ path: String) -> Int {
        a.level += 1
        if traceOnly { return sent(a, "delivers to maildir") }
        if !s.frozenDelivered { a.delivered = a.rcpt.address }
        var flags: CopyFlags = [.toFile, .returnPath, .delivered, .originalRecipient]
        if !s.deliveredHeaders.contains("file") { flags.remove(.delivered) }
        let src = source(a)
        let host = s.config.string("myhostname")
        let failure: DeliveryStatus? = Mailbox.asUser(Rights(uid: usr.uid, gid: usr.gid)) {
            Mailbox.maildir(path, source: src, flags: flags, hostname: host)
        }
        if let why = failure {
            var d = why
            d.reason = "maildir delivery failed: \(why.reason)"
            return fail(a, d)
        }
        return sent(a, "delivered to maildir")
    }

    // MARK: file.c

    func deliverFile(_ a: inout LocalAttr, _ usr0: UserAttr, _ path: String) -> Int {
        a.level += 1
        if !dupFilter.insert("file \(a.level) \(path)").inserted { return 0 }
        if traceOnly { return sent(a, "delivers to file: \(path)") }
        if s.fileMask.isDisjoint(with: a.expType) { return bounce(a, "5.7.1", "mail to file is restricted") }
        var usr = usr0
        if usr.uid == 0, let d = s.defaultPrivs { usr = UserAttr(uid: d.uid, gid: d.gid, home: usr.home) }
        if path.hasSuffix("/") {
            var flags: CopyFlags = [.toFile, .returnPath, .delivered, .originalRecipient]
            if !s.deliveredHeaders.contains("file") { flags.remove(.delivered) }
            let src = source(a)
            let host = s.config.string("myhostname")
            let failure: DeliveryStatus? = Mailbox.asUser(Rights(uid: usr.uid, gid: usr.gid)) {
                Mailbox.maildir(path, source: src, flags: flags, hostname: host)
            }
            if let why = failure {
                var d = why
                d.reason = "maildir delivery failed: \(why.reason)"
                return fail(a, d)
            }
            return sent(a, "delivered to maildir")
        }
        let failure: DeliveryStatus? = Mailbox.asUser(Rights(uid: usr.uid, gid: usr.gid)) {
            Mailbox.append(path: path, source: source(a), flags: fileCopyFlags, locks: s.locks,
                           writer: Rights(uid: usr.uid, gid: usr.gid), chownTo: nil, requireOwner: nil,
                           rejectExecutable: true)
        }
        if let why = failure {
            var d = why
            d.reason = "cannot append message to file \(path): \(why.reason)"
            return fail(a, d)
        }
        return sent(a, "delivered to file: \(path)")
    }

    // MARK: command.c

    func deliverCommand(_ a: inout LocalAttr, _ usr0: UserAttr, _ command: String, expandMacros: Bool = false) -> Int {
        a.level += 1
        if !dupFilter.insert("command \(a.level) \(command)").inserted { return 0 }
        if traceOnly { return sent(a, "delivers to command: \(command)") }
        var usr = usr0
        if usr.uid == 0, let d = s.defaultPrivs { usr = UserAttr(uid: d.uid, gid: d.gid, home: usr.home, shell: usr.shell) }
        var cmd = command
        if expandMacros {
            guard let e = expand(command, a, usr, filter: true) else {
                return self.defer(a, "4.3.5", "mailbox_command: bad macro syntax in \"\(command)\"")
            }
            cmd = e
        }
        let r = job.request
        var env: [String] = []
        for name in s.exportEnvironment {
            if let eq = name.firstIndex(of: "=") {
                env.append(name)
                _ = eq
            } else if let v = getenv(name) {
                env.append("\(name)=\(String(cString: v))")
            }
        }
        if let h = usr.home { env.append("HOME=\(h)") }
        env += ["LOGNAME=\(a.user)", "USER=\(a.user)", "SENDER=\(a.sender)", "RECIPIENT=\(a.rcpt.address)", "LOCAL=\(a.local)"]
        if let sh = usr.shell { env.append("SHELL=\(sh)") }
        if !a.domain.isEmpty { env.append("DOMAIN=\(a.domain)") }
        if let e = a.ext { env.append("EXTENSION=\(e)") }
        if !a.rcpt.originalRecipient.isEmpty { env.append("ORIGINAL_RECIPIENT=\(a.rcpt.originalRecipient)") }
        for (n, v) in [("CLIENT_HOSTNAME", r.clientName), ("CLIENT_ADDRESS", r.clientAddress), ("CLIENT_HELO", r.clientHelo),
                       ("CLIENT_PROTOCOL", r.clientProtocol), ("SASL_METHOD", r.saslMethod), ("SASL_SENDER", r.saslSender),
                       ("SASL_USERNAME", r.saslUsername), ("ENVID", r.envelopeID)] where !v.isEmpty {
            env.append("\(n)=\(v)")
        }
        env.append("PATH=/usr/bin:/bin")
        let argv: [String]
        if s.commandShell.isEmpty {
            argv = ["/bin/sh", "-c", cmd]
        } else {
            var sh = Tokens.split(s.commandShell)
            if sh.first.map({ !$0.hasPrefix("/") }) == true { sh[0] = "/bin/" + sh[0] }
            argv = sh + [cmd]
        }
        var dir = s.commandDirectory.isEmpty ? (usr.home ?? "/") : (expand(s.commandDirectory, a, usr, filter: false) ?? "/")
        if dir.isEmpty { dir = "/" }
        if !s.frozenDelivered { a.delivered = a.rcpt.address }
        var flags: CopyFlags = [.from, .returnPath, .originalRecipient]
        if s.deliveredHeaders.contains("command") { flags.insert(.delivered) }
        let pc = PipeCommand(argv: argv, display: cmd, uid: usr.uid, gid: usr.gid, directory: dir, environment: env,
                             timeLimit: s.commandTimeLimit, copyFlags: flags)
        let (st, dsn) = pc.run(queueFD: job.fd, offset: r.dataOffset, sender: a.sender,
                               originalRecipient: a.rcpt.originalRecipient, delivered: a.delivered ?? a.rcpt.address)
        switch st {
        case .ok: return sent(a, "delivered to command: \(cmd)")
        case .bounce, .defer: return fail(a, dsn)
        case .corrupt: return -1
        }
    }

    // MARK: unknown.c

    func deliverUnknown(_ a: inout LocalAttr, _ usr: UserAttr) -> Int {
        a.level += 1
        if let m = s.fallbackTransportMaps {
            if let t = m.find(a.user) {
                var r = a.rcpt
                r.offset = -1
                return DeliverPass.pass(job, to: t, recipient: r)
            } else if m.error != nil {
                return self.defer(a, "4.3.0", "table lookup failure")
            }
        }
        if !s.fallbackTransport.isEmpty {
            var r = a.rcpt
            r.offset = -1
            return DeliverPass.pass(job, to: s.fallbackTransport, recipient: r)
        }
        if !s.luserRelay.isEmpty {
            a.unmatched = nil
            guard let target = expand(s.luserRelay, a, usr, filter: false) else {
                return self.defer(a, "4.3.5", "luser_relay: bad macro syntax")
            }
            return deliverResolve(&a, usr, target)
        }
        if a.local == "mailer-daemon" || a.local == "postmaster" {
            Msg.warn("required alias not found: \(a.local)")
            return sent(a, "discarded")
        }
        return bounce(a, "5.1.1", "unknown user: \"\(a.local)\"")
    }

    // MARK: Helpers

    /// local_expand: $user, $extension, $home, $shell, $recipient, $local, $domain,
    /// $mailbox, $recipient_delimiter and main.cf parameters; ${name?text} and
    /// ${name:text} conditionals. With `filter`, characters outside
    /// command_expansion_filter are replaced by "_".
    func expand(_ text: String, _ a: LocalAttr, _ usr: UserAttr, filter: Bool) -> String? {
        var vars: [String: String] = [
            "user": a.user, "local": a.local, "recipient": a.rcpt.address, "domain": a.domain,
            "mailbox": a.local, "recipient_delimiter": a.ext != nil ? String(s.recipientDelimiter.prefix(1)) : "",
        ]
        if let e = a.ext { vars["extension"] = e }
        if let h = usr.home { vars["home"] = h }
        if let sh = usr.shell { vars["shell"] = sh }
        let ex = MacroExpander(recurse: false) { name, _ in
            if let v = vars[name] {
                return filter ? String(v.map { self.s.commandFilter.contains($0) ? $0 : "_" }) : v
            }
            if ["extension", "home", "shell"].contains(name) { return nil }
            return self.s.config.rawValue(name)
        }
        let (out, status) = ex.expand(text)
        if status.contains(.error) { return nil }
        return out
    }


}
