// Sendmail: the Sendmail-compatible front end, sendmail(1), also run as mailq and
// newaliases. Mirrors Postfix sendmail/sendmail.c: every Sendmail option Postfix accepts,
// with the same meaning (most of them ignored, as Postfix ignores them); mail is handed to
// postdrop as a record stream (envelope from the command line, content from standard
// input, recipients from the headers with -t), and the other modes run postqueue,
// postalias, postfix or a stand-alone smtpd in our place.
import Glibc
import MailUtil
import MailGlobal

public enum Sendmail {
    enum Mode { case enqueue, newAliases, mailq, daemon, user, flushQueue, ignore }

    /// Delivery request trace flags that sendmail may ask for.
    static let userVerify = 1 << 9
    static let record = 1 << 10

    static let optionSpec = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"

    struct Options {
        var mode = Mode.enqueue
        var archaicEOF = true
        var extractRecipients = false
        var traceFlags = 0
        var sender: String?
        var fullName: String?
        var encoding: String?
        var envelopeID: String?
        var notify = 0
        var ret = 0
        var rewriteContext = MailAttr.rewriteLocal
        var verp: String?
        var siteToFlush: String?
        var idToFlush: String?
        var queueTime: String?
        var aliasDatabase: String?
        var recipients: [String] = []
    }

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        if !openStandardDescriptors() { Msg.fatal(status: EX.osErr, "open /dev/null: \(errnoText(errno))") }
        // A parent's descriptors (the CDE calendar manager...) must not reach postdrop.
        for fd in Int32(3)..<100 { close(fd) }
        if getenv("MAIL_VERBOSE") != nil { Msg.verbose = 1 }
        var args = arguments
        let program = basename(of: args.first ?? "sendmail")
        args[0] = program
        MailLog.setupEarly(program: "sendmail", stderrTag: program)
        Msg.sleepBeforeFatalExit = false
        // As msg_cleanup(tempfail): every fatal error, whatever status it names, ends with
        // EX_TEMPFAIL, so that a mailer retries rather than loses the message.
        Msg.cleanup = { _exit(EX.tempFail) }

        if geteuid() == 0 && getuid() != 0 {
            Msg.warn("the Postfix sendmail command has set-uid root file permissions")
            Msg.warn("or the command is run from a set-uid root process")
            Msg.warn("the Postfix sendmail command must be installed without set-uid root file permissions")
            if setgid(getgid()) < 0 || setuid(getuid()) < 0 { Msg.fatal("set_ugid: \(errnoText(errno))") }
        }
        // -C names the configuration before anything else is read.
        // (getopt complains here too, so a bad option is reported twice, as by Postfix.)
        let (_, early) = GetOpt.parse(Array(args.dropFirst()), spec: optionSpec, atArgument: { a, i in a[i] == "-q" }) { c, v in
            guard c == "C", let v else { return }
            let dir = basename(of: v) == "main.cf" ? dirname(of: v) : v
            setenv(MailConfig.configEnvironment, dir, 1)
        }
        if let early { writeAll(2, Array((GetOpt.message(early, program: program) + "\n").utf8)) }
        let config = MailConfig.load(processName: program)
        MailParams.check(config)
        MailLog.setup(config, program: "sendmail", stderrTag: program)
        let queueDirectory = config.string("queue_directory")
        if chdir(queueDirectory) < 0 {
            Msg.fatal(status: EX.unavailable, "chdir \(queueDirectory): \(errnoText(errno))")
        }
        signal(SIGPIPE, SIG_IGN)

        var o = Options()
        switch program {
        case "mailq": o.mode = .mailq
        case "newaliases": o.mode = .newAliases
        case "smtpd": o.mode = .daemon
        default: break
        }
        o.aliasDatabase = config.string("alias_database")
        let verpDefault = config.string("default_verp_delimiters")
        let (operands, problem) = GetOpt.parse(Array(args.dropFirst()), spec: optionSpec, atArgument: { a, i in
            if a[i] == "-q" {
                if o.mode == .daemon { Msg.warn("ignoring -q option in daemon mode") } else { o.mode = .flushQueue }
                return true
            }
            if a[i] == "-V" && i + 1 < a.count && a[i + 1].utf8.count == 2 {
                Msg.warn("option -V is deprecated with Postfix 2.3; specify -XV instead")
                a[i] = "-XV"
            }
            if a[i].hasPrefix("-V") && a[i].utf8.count == 4 {
                Msg.warn("option \(a[i]) is deprecated with Postfix 2.3; specify -X\(a[i].dropFirst()) instead")
                a[i] = "-X" + a[i].dropFirst()
            }
            if a[i] == "-XV" {
                o.verp = verpDefault
                return true
            }
            return false
        }) { c, v in
            let arg = v ?? ""
            switch c {
            case "n": Msg.fatal(status: EX.usage, "-n option not supported")
            case "B":
                if arg == "8BITMIME" { o.encoding = MailAttr.encoding8bit }
                else if arg == "7BIT" { o.encoding = MailAttr.encoding7bit }
                else { Msg.fatal(status: EX.usage, "-B option needs 8BITMIME or 7BIT") }
            case "F": o.fullName = arg
            case "G": o.rewriteContext = MailAttr.rewriteRemote
            case "I": o.mode = .newAliases
            case "N":
                o.notify = DSNNotify.mask(arg) ?? 0
                if o.notify == 0 { Msg.warn("bad -N option value -- ignored") }
            case "R":
                switch arg.uppercased() {
                case "FULL": o.ret = DSNRet.full
                case "HDRS": o.ret = DSNRet.headers
                default: Msg.warn("bad -R option value -- ignored")
                }
            case "V":
                if arg.utf8.count > 100 { Msg.warn("too long -V option value -- ignored") }
                else if !arg.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) { Msg.warn("bad syntax in -V option value -- ignored") }
                else { o.envelopeID = arg }
            case "X":
                guard arg.first == "V" else { Msg.fatal(status: EX.usage, "unsupported: -X\(arg.prefix(1))") }
                let delims = String(arg.dropFirst())
                if !verpDelimitersOK(delims, filter: config.string("verp_delimiter_filter")) {
                    Msg.fatal(status: EX.usage, "-V requires two characters from \(config.string("verp_delimiter_filter"))")
                }
                o.verp = delims
            case "b":
                switch arg.first {
                case "d":
                    if o.mode == .flushQueue { Msg.warn("ignoring -q option in daemon mode") }
                    o.mode = .daemon
                case "h", "H": o.mode = .ignore
                case "i": o.mode = .newAliases
                case "m": o.mode = .enqueue
                case "p": o.mode = .mailq
                case "s": o.mode = .user
                case "v": o.traceFlags |= userVerify
                default: Msg.fatal(status: EX.usage, "unsupported: -b\(arg.prefix(1))")
                }
            case "f", "r": o.sender = arg
            case "i": o.archaicEOF = false
            case "o":
                switch arg.first {
                case "A":
                    if arg.utf8.count == 1 { Msg.fatal(status: EX.usage, "-oA requires pathname") }
                    o.aliasDatabase = String(arg.dropFirst())
                case "i": o.archaicEOF = false
                default: if Msg.verbose > 0 { Msg.info("-o\(arg.prefix(1)) option ignored") }
                }
            case "q":
                if let f = arg.utf8.first, f >= 0x30 && f <= 0x39 {
                    o.queueTime = arg
                } else if arg.first == "R" {
                    o.siteToFlush = String(arg.dropFirst())
                    if o.siteToFlush!.isEmpty { Msg.fatal(status: EX.usage, "specify: -qRsitename") }
                } else if arg.first == "I" {
                    o.idToFlush = String(arg.dropFirst())
                    if o.idToFlush!.isEmpty { Msg.fatal(status: EX.usage, "specify: -qIqueueid") }
                } else {
                    Msg.fatal(status: EX.usage, "-q\(arg.prefix(1)) is not implemented")
                }
            case "t": o.extractRecipients = true
            case "v": Msg.verbose += 1
            default: if Msg.verbose > 0 { Msg.info("-\(c) option ignored") }
            }
        }
        if let problem {
            writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal(status: EX.usage, "usage: \(program) [options]")
        }
        o.recipients = operands

        if o.extractRecipients && o.mode != .enqueue { Msg.fatal(status: EX.usage, "-t can be used only in delivery mode") }
        if o.siteToFlush != nil && o.mode != .enqueue { Msg.fatal(status: EX.usage, "-qR can be used only in delivery mode") }
        if o.idToFlush != nil && o.mode != .enqueue { Msg.fatal(status: EX.usage, "-qI can be used only in delivery mode") }
        if o.traceFlags & userVerify != 0 {
            if o.extractRecipients { Msg.fatal(status: EX.usage, "-t option cannot be used with -bv") }
            if o.notify != 0 { Msg.fatal(status: EX.usage, "-N option cannot be used with -bv") }
            if Msg.verbose == 1 { Msg.fatal(status: EX.usage, "-v option cannot be used with -bv") }
        }
        // One -v asks for a delivery report; more ask for verbose logging.
        if Msg.verbose == 1 && o.mode == .enqueue {
            Msg.verbose = 0
            o.traceFlags |= record
        }
        if o.queueTime != nil && o.mode != .daemon { exit(0) }

        let commandDirectory = config.string("command_directory")
        let verbose = Array(repeating: "-v", count: Msg.verbose)
        func noRecipients(_ what: String) {
            if !o.recipients.isEmpty { Msg.fatal(status: EX.usage, what) }
        }
        switch o.mode {
        case .enqueue:
            if let site = o.siteToFlush {
                noRecipients("flush site requires no recipient")
                replace(commandDirectory, ["postqueue", "-s", site] + verbose)
            }
            if let id = o.idToFlush {
                noRecipients("flush queue_id requires no recipient")
                replace(commandDirectory, ["postqueue", "-i", id] + verbose)
            }
            Enqueue(config: config, options: o).run()
            exit(0)
        case .mailq:
            noRecipients("display queue mode requires no recipient")
            replace(commandDirectory, ["postqueue", "-p"] + verbose)
        case .flushQueue:
            noRecipients("flush queue mode requires no recipient")
            replace(commandDirectory, ["postqueue", "-f"] + verbose)
        case .daemon:
            noRecipients("daemon mode requires no recipient")
            let argv = ["postfix"] + verbose + ["start"]
            do {
                _ = try Spawn.run(commandDirectory + "/postfix", argv: argv, environment: Spawn.currentEnvironment)
                exit(0)
            } catch {
                Msg.warn("\(error)")
                exit(1)
            }
        case .newAliases:
            noRecipients("alias initialization mode requires no recipient")
            let maps = (o.aliasDatabase ?? "").split(whereSeparator: { " ,\t\r\n".contains($0) }).map(String.init)
            if maps.isEmpty { exit(0) }
            replace(commandDirectory, ["postalias"] + verbose + ["--"] + maps)
        case .user:
            noRecipients("stand-alone mode requires no recipient")
            let uid = getuid()
            if let who = UserACL.denied(config, parameter: "authorized_submit_users", uid: uid) {
                Msg.fatal(status: EX.noPerm, "User \(who)(\(uid)) is not allowed to submit mail")
            }
            replace(config.string("daemon_directory"), ["smtpd", "-S"] + verbose)
        case .ignore:
            exit(0)
        }
    }

    /// mail_run_replace: becomes DIR/argv[0].
    static func replace(_ dir: String, _ argv: [String]) -> Never {
        let path = dir + "/" + argv[0]
        var cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        execv(path, &cargv)
        Msg.fatal("execv \(path): \(errnoText(errno))")
    }

    /// verp_delims_verify: two characters, both allowed by verp_delimiter_filter.
    static func verpDelimitersOK(_ delims: String, filter: String) -> Bool {
        let d = Array(delims.utf8)
        let allowed = Set(filter.utf8)
        return d.count == 2 && d.allSatisfy { allowed.contains($0) }
    }
}

/// Stops run-away accidents (not an attack): no file may grow past message_size_limit.
func limitFileSize(_ config: MailConfig) {
    let sizeLimit = config.int("message_size_limit")
    guard sizeLimit > 0 else { return }
    var rl = rlimit()
    if getrlimit(Int32(RLIMIT_FSIZE.rawValue), &rl) == 0, rl.rlim_cur > rlim_t(sizeLimit) {
        rl.rlim_cur = rlim_t(sizeLimit)
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &rl)
    }
}

/// One message from standard input through postdrop.
struct Enqueue {
    let config: MailConfig
    let o: Sendmail.Options
    let uid = getuid()
    let lineLimit: Int

    init(config: MailConfig, options: Sendmail.Options) {
        self.config = config
        o = options
        lineLimit = max(config.int("line_length_limit"), 1)
    }

    func run() {
        if let who = UserACL.denied(config, parameter: "authorized_submit_users", uid: uid) {
            Msg.fatal(status: EX.noPerm, "User \(who)(\(uid)) is not allowed to submit mail")
        }
        limitFileSize(config)
        let sender: String
        if let given = o.sender {
            let addrs = Tok822.addresses(Address822.parse(given))
            sender = addrs.first.map { Address822.internalize($0.head) } ?? ""
            if addrs.count > 1 { Msg.warn("-f option specified malformed sender: \(given)") }
        } else {
            guard let pw = getpwuid(uid) else {
                Msg.fatal(status: EX.osErr, "no login name found for user ID \(uid)")
            }
            sender = String(cString: pw.pointee.pw_name)
        }
        let who = "\(sender)(\(uid))"

        let command = config.string("command_directory") + "/postdrop"
        let commandText = ([command, "-r"] + Array(repeating: "-v", count: Msg.verbose)).joined(separator: " ")
        let drop: PostdropPipe
        do {
            drop = try PostdropPipe(path: command, argv: [command, "-r"] + Array(repeating: "-v", count: Msg.verbose),
                                    environment: ImportEnvironment.filtered(config, parameter: "export_environment"))
        } catch {
            Msg.fatal(status: EX.unavailable, "\(who): unable to execute \(commandText): \(error)")
        }
        guard drop.readQueueID() != nil else {
            let status = drop.wait()
            if status != 0 { Msg.warn("command \"\(commandText)\" exited with status \(status)") }
            Msg.fatal(status: EX.unavailable, "\(who): unable to execute \(commandText): Application error")
        }

        let out = RecordOut(drop.input, who: who)
        if let envid = o.envelopeID { out.attr(MailAttr.dsnEnvelopeID, envid) }
        if o.ret != 0 { out.attr(MailAttr.dsnRetFlags, String(o.ret)) }
        out.attr(MailAttr.rewriteContext, o.rewriteContext)
        if let name = o.fullName ?? Self.fullName(uid) { out.put(.fullName, name) }
        out.put(.sender, sender)
        if o.verp != nil && sender.isEmpty {
            Msg.fatal(status: EX.usage, "\(who): -V option requires non-null sender address")
        }
        if let encoding = o.encoding { out.attr(MailAttr.encoding, encoding) }
        if o.traceFlags != 0 { out.attr(MailAttr.traceFlags, String(o.traceFlags)) }
        if let verp = o.verp { out.put(.verp, verp) }
        var count = 0
        // Each argument is read as a header would be: "a, b" and "Name <addr>" work.
        for arg in o.recipients {
            let addrs = Tok822.addresses(Address822.parse(arg))
            for a in addrs {
                if o.notify != 0 { out.attr(MailAttr.dsnNotifyFlags, String(o.notify)) }
                out.put(.recipient, Address822.internalize(a.head))
                count += 1
            }
            if addrs.isEmpty {
                out.put(.recipient, "")
                count += 1
            }
        }

        out.put(.messageStart, "")
        var extractor: HeaderRecipients?
        if o.traceFlags & Sendmail.userVerify != 0 {
            if !sender.isEmpty { out.put(.normalText, "From: \(sender)") }
            out.put(.normalText, "Subject: probe")
            if !o.recipients.isEmpty {
                out.put(.continuedText, "To:")
                for (i, r) in o.recipients.enumerated() {
                    out.put(.normalText, "\t\(r)\(i + 1 < o.recipients.count ? "," : "")")
                }
            }
        } else {
            extractor = o.extractRecipients ? HeaderRecipients(config: config, lineLimit: lineLimit, out: { t, d in out.put(t, d) }) : nil
            copyContent(out, extractor: extractor, who: who)
        }

        out.put(.extractedStart, "")
        if let extractor {
            for r in extractor.result {
                if o.notify != 0 { out.attr(MailAttr.dsnNotifyFlags, String(o.notify)) }
                out.put(.recipient, r)
                count += 1
            }
        }
        if count == 0 {
            Msg.fatal(status: EX.usage, o.extractRecipients
                ? "\(who): No recipient addresses found in message header"
                : "\(who): Recipient addresses must be specified on the command line or via the -t option")
        }
        out.put(.end, "")
        out.flush()

        var status = out.failed ? CleanupStatus.write : drop.readStatus() ?? .write
        if drop.wait() != 0 { status.insert(.write) }
        if status != .ok {
            let code = status.contains(.bad) ? EX.software : status.contains(.write) ? EX.tempFail : EX.unavailable
            Msg.fatal(status: code, "\(who): \(status.detail.text)")
        }
        if o.traceFlags != 0 {
            writeAll(1, Array("Mail Delivery Status Report will be mailed to <\(sender)>.\n".utf8))
        }
    }

    /// The message from standard input, as records: lines cut at line_length_limit, a
    /// leading "From " line dropped, CRs before the newline removed per
    /// sendmail_fix_line_endings, and (unless -i) a line with a lone "." ends it.
    func copyContent(_ out: RecordOut, extractor: HeaderRecipients?, who: String) {
        enum StripCR { case unknown, yes, no }
        var strip: StripCR
        switch config.string("sendmail_fix_line_endings") {
        case "always": strip = .yes
        case "strict": strip = .unknown
        case "never": strip = .no
        default: Msg.fatal(status: EX.usage, "invalid sendmail_fix_line_endings value: \(config.string("sendmail_fix_line_endings"))")
        }
        let input = FDStream(fd: 0)
        var skipFrom = true
        var prevType: RecordType?
        // rec_streamlf_get: at most line_length_limit bytes a record; a newline right
        // after a full record comes as an empty line record of its own.
        var pendingNewline = false
        while true {
            var line: [UInt8]
            let type: RecordType
            if pendingNewline {
                pendingNewline = false
                (line, type) = ([], .normalText)
            } else {
                let piece: (bytes: [UInt8], found: Bool, overflow: Bool)
                do {
                    piece = try input.read(through: 0x0A, maxCount: lineLimit)
                } catch {
                    Msg.fatal(status: EX.dataErr, "\(who): error reading input: \(error)")
                }
                line = piece.bytes
                if !piece.found && line.isEmpty { break }
                if piece.found && line.count == lineLimit {
                    pendingNewline = true
                    type = .continuedText
                } else {
                    type = piece.found ? .normalText : .continuedText
                }
            }
            defer { prevType = type }
            if strip == .unknown && type == .normalText {
                strip = line.last == 0x0D ? .yes : .no
            }
            if skipFrom {
                if type == .normalText {
                    let rest = line.drop(while: { $0 == UInt8(ascii: ">") })
                    if rest.starts(with: Array("From ".utf8)) { continue }
                }
                skipFrom = false
            }
            if strip == .yes && type == .normalText {
                while line.last == 0x0D { line.removeLast() }
            }
            if o.archaicEOF && prevType != .continuedText && line == [UInt8(ascii: ".")] { break }
            if let extractor {
                extractor.mime.update(type, line)
                if !extractor.mime.errors.isEmpty {
                    Msg.fatal(status: EX.dataErr, "\(who): unable to extract recipients: \(extractor.mime.errors.text)")
                }
            } else {
                out.put(type, line)
            }
        }
        if let extractor {
            extractor.mime.update(nil, [])
            if !extractor.mime.errors.isEmpty {
                Msg.fatal(status: EX.dataErr, "\(who): unable to extract recipients: \(extractor.mime.errors.text)")
            }
        }
    }

    /// fullname(): $NAME, else the GECOS field up to the first "," ";" or "%", with "&"
    /// standing for the login name capitalised.
    static func fullName(_ uid: uid_t) -> String? {
        if let n = getenv("NAME") { return String(cString: n) }
        guard let pw = getpwuid(uid) else { return nil }
        let login = String(cString: pw.pointee.pw_name)
        var out = ""
        for c in String(cString: pw.pointee.pw_gecos) {
            if c == "," || c == ";" || c == "%" { break }
            if c == "&" {
                if let f = login.first { out += f.uppercased() + login.dropFirst() }
            } else {
                out.append(c)
            }
        }
        return out
    }
}

/// sendmail -t: the primary headers go out as they came, and the addresses of To, Cc and
/// Bcc (or of the Resent- versions, once one is seen) are collected.
final class HeaderRecipients {
    var recipients: [String] = []
    var resentRecipients: [String] = []
    var resent = false
    var mime: MimeState!

    static let plain: Set<String> = ["to", "cc", "bcc"]
    static let resentNames: Set<String> = ["resent-to", "resent-cc", "resent-bcc"]

    var result: [String] { resent ? resentRecipients : recipients }

    init(config: MailConfig, lineLimit: Int, out: @escaping (RecordType, [UInt8]) -> Void) {
        mime = MimeState(options: [.disableMIME, .reportTruncatedHeader], headerLimit: config.int("header_size_limit"),
                         nestingLimit: config.int("mime_nesting_limit"), boundaryLimit: config.int("mime_boundary_length_limit"),
                         headOut: { [unowned self] cls, info, buffer, _ in
                             if cls == .primary, let info { self.collect(info.name, buffer) }
                             for line in buffer.split(separator: 0x0A, omittingEmptySubsequences: false) {
                                 var rest = ArraySlice(line)
                                 while rest.count > lineLimit {
                                     out(.continuedText, Array(rest.prefix(lineLimit)))
                                     rest = rest.dropFirst(lineLimit)
                                 }
                                 out(.normalText, Array(rest))
                             }
                         },
                         headEnd: {},
                         bodyOut: { type, text, _ in out(type, Array(text)) },
                         bodyEnd: {},
                         errorOut: { _, _ in })
    }

    func collect(_ name: String, _ buffer: [UInt8]) {
        let lower = name.lowercased()
        let isResent = Self.resentNames.contains(lower)
        guard isResent || (Self.plain.contains(lower) && !resent) else { return }
        if isResent { resent = true }
        let value = String(decoding: buffer.dropFirst(name.utf8.count + 1), as: UTF8.self)
        let addrs = Tok822.addresses(Address822.parse(value)).map { Address822.internalize($0.head) }
        if isResent { resentRecipients += addrs } else { recipients += addrs }
    }
}

/// Records to postdrop, buffered; a write error is fatal as in Postfix.
final class RecordOut {
    let stream: FDStream
    let who: String
    var failed = false
    var buffer: [UInt8] = []

    init(_ stream: FDStream, who: String) {
        self.stream = stream
        self.who = who
    }

    func put(_ type: RecordType, _ text: String) { put(type, Array(text.utf8)) }

    func put(_ type: RecordType, _ data: [UInt8]) {
        RecordCodec.append(&buffer, type, data)
        if buffer.count >= 65536 { flush() }
    }

    func attr(_ name: String, _ value: String) { put(.attribute, name + "=" + value) }

    func flush() {
        do {
            try stream.write(buffer)
            try stream.flush()
        } catch {
            Msg.fatal(status: EX.tempFail, "\(who): error writing queue file: \(error)")
        }
        buffer = []
    }
}
