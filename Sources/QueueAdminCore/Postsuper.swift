// Postsuper: postsuper(1), the superuser's queue maintenance command.
// Mirrors Postfix postsuper/postsuper.c (3.7): repairs first (-p purges stale temporary
// files; -s puts every file in the subdirectory its name and hash_queue_* ask for and
// renames files whose name does not match their inode, through a "#FIX" name, in two
// passes; -S also checks long names), then -d, -e, -f, -h, -H and -r in the order given,
// each on one queue ID, on "ALL", or on IDs read from standard input ("-"). Works as
// mail_owner, as the daemons do, and reports counts as Postfix does.
import Glibc
import MailUtil
import MailGlobal

public enum Postsuper {
    struct Action: OptionSet {
        let rawValue: Int
        static let structure = Action(rawValue: 1 << 0)
        static let purge = Action(rawValue: 1 << 1)
        static let deleteOne = Action(rawValue: 1 << 2)
        static let deleteAll = Action(rawValue: 1 << 3)
        static let requeueOne = Action(rawValue: 1 << 4)
        static let requeueAll = Action(rawValue: 1 << 5)
        static let holdOne = Action(rawValue: 1 << 6)
        static let holdAll = Action(rawValue: 1 << 7)
        static let releaseOne = Action(rawValue: 1 << 8)
        static let releaseAll = Action(rawValue: 1 << 9)
        static let structureLong = Action(rawValue: 1 << 10)
        static let expireOne = Action(rawValue: 1 << 11)
        static let expireAll = Action(rawValue: 1 << 12)
        static let expireReleaseOne = Action(rawValue: 1 << 13)
        static let expireReleaseAll = Action(rawValue: 1 << 14)

        static let byQueueID: Action = [.deleteOne, .requeueOne, .holdOne, .releaseOne, .expireOne, .expireReleaseOne]
        static let byWildcard: Action = [.deleteAll, .requeueAll, .holdAll, .releaseAll, .expireAll, .expireReleaseAll]
        static let repair: Action = [.purge, .structure, .structureLong]
    }

    /// Each directory postsuper knows: whether it holds messages (ready files have all
    /// owner bits) or per-message logs, and whether it may have subdirectories.
    struct QueueInfo {
        let name: String
        let messages: Bool
        let recurse: Bool
    }

    static let queueInfo: [QueueInfo] = [
        QueueInfo(name: QueueName.maildrop, messages: true, recurse: false),
        QueueInfo(name: QueueName.incoming, messages: true, recurse: true),
        QueueInfo(name: QueueName.active, messages: true, recurse: true),
        QueueInfo(name: QueueName.deferred, messages: true, recurse: true),
        QueueInfo(name: QueueName.hold, messages: true, recurse: true),
        QueueInfo(name: QueueName.trace, messages: false, recurse: true),
        QueueInfo(name: QueueName.defer, messages: false, recurse: true),
        QueueInfo(name: QueueName.bounce, messages: false, recurse: true),
        QueueInfo(name: QueueName.flush, messages: false, recurse: true),
    ]
    /// Log directories before message directories, so that renaming a message can find
    /// its logs in the right place.
    static let defaultQueues = [QueueName.defer, QueueName.bounce, QueueName.maildrop, QueueName.incoming,
                                QueueName.active, QueueName.deferred, QueueName.hold, QueueName.flush]
    static let logQueues = [QueueName.bounce, QueueName.defer, QueueName.trace]
    /// Not a valid queue ID, so that a live queue manager leaves such files alone.
    static let fixSuffix = "#FIX"
    static let maxTempAge = 7 * 24 * 3600

    static let usageText = "[-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] "
        + "[-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] [-H queue_id (un-hold)] "
        + "[-p (purge temporary files)] [-r queue_id (requeue)] [-s (structure fix)] "
        + "[-S (redundant structure fix)][-v (verbose)] [queue...]"

    struct Counts {
        var requeued = 0, held = 0, released = 0, deleted = 0, expired = 0
        var inodeFixed = 0, inodeMismatch = 0, positionMismatch = 0
        var repairing: Bool { inodeMismatch > 0 || inodeFixed > 0 || positionMismatch > 0 }
    }

    nonisolated(unsafe) static var counts = Counts()
    nonisolated(unsafe) static var queue = MailQueue()

    public static func main(_ arguments: [String]) -> Never {
        umask(0o022)
        if !openStandardDescriptors() { Msg.fatal("open /dev/null: \(errnoText(errno))") }
        if getenv("MAIL_VERBOSE") != nil { Msg.verbose = 1 }
        let program = basename(of: arguments.first ?? "postsuper")
        MailLog.setupEarly(program: program, stderrTag: program)
        Msg.sleepBeforeFatalExit = false
        if getuid() != geteuid() || getgid() != getegid() {
            Msg.fatal("this postfix command must not run as a set-uid process")
        }
        if getuid() != 0 { Msg.fatal("use of this command is reserved for the superuser") }

        // First learn what is asked, then act in the order given.
        var action: Action = []
        var steps: [(Character, String)] = []
        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: "c:d:e:f:h:H:pr:sSv") { c, v in
            let all = v == "ALL"
            switch c {
            case "c":
                guard let v, v.hasPrefix("/") else { Msg.fatal("-c requires absolute pathname") }
                setenv(MailConfig.configEnvironment, v, 1)
            case "d": action.insert(all ? .deleteAll : .deleteOne)
            case "e": action.insert(all ? .expireAll : .expireOne)
            case "f": action.insert(all ? .expireReleaseAll : .expireReleaseOne)
            case "h": action.insert(all ? .holdAll : .holdOne)
            case "H": action.insert(all ? .releaseAll : .releaseOne)
            case "p": action.insert(.purge)
            case "r": action.insert(all ? .requeueAll : .requeueOne)
            case "S": action.formUnion([.structureLong, .structure])
            case "s": action.insert(.structure)
            case "v": Msg.verbose += 1
            default: break
            }
            if "defhHr".contains(c), let v { steps.append((c, v)) }
        }
        if let problem {
            _ = writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal("usage: \(program) \(usageText)")
        }
        let config = MailConfig.load(processName: program)
        let accounts = MailParams.check(config)
        ImportEnvironment.apply(config)
        MailLog.setup(config, program: program, stderrTag: program, fileFallback: true)
        let queueDirectory = config.string("queue_directory")
        if chdir(queueDirectory) < 0 { Msg.fatal("chdir \(queueDirectory): \(errnoText(errno))") }
        queue = MailQueue(config: config)
        let hashed = Set(config.list("hash_queue_names"))
        let depth = config.int("hash_queue_depth")
        let longIDs = config.bool("enable_long_queue_ids")

        // Every change is made as the mail system owner, as the daemons make them.
        var gid = accounts.ownerGID
        if setgid(gid) < 0 || setgroups(1, &gid) < 0 || setuid(accounts.ownerUID) < 0 {
            Msg.fatal("set user/group ID: \(errnoText(errno))")
        }
        signal(SIGINT, interrupted)
        signal(SIGQUIT, interrupted)
        // A signal the parent ignored stays ignored.
        for sig in [SIGTERM, SIGHUP] where unsafeBitCast(signal(sig, SIG_IGN), to: Int.self) == unsafeBitCast(SIG_DFL, to: Int.self) {
            signal(sig, interrupted)
        }
        Msg.cleanup = { interrupted(0) }

        if action.isEmpty { action = [.structure, .purge] }
        let queues = operands.isEmpty ? defaultQueues : operands
        let infos = queues.map { name -> QueueInfo in
            guard let qi = queueInfo.first(where: { $0.name == name }) else { Msg.fatal("invalid directory name: \(name)") }
            return qi
        }
        let walker = Walker(infos: infos, hashed: hashed, depth: depth, longIDs: longIDs)
        let repair = action.intersection(.repair)
        if !repair.isEmpty { walker.run(repair) }
        // Files renamed to NEWID#FIX on the first pass get their final name now.
        if counts.inodeMismatch > 0 { walker.run(repair) }
        if !action.intersection(.byQueueID).isEmpty && (counts.inodeMismatch > 0 || counts.inodeFixed > 0) {
            Msg.error("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
            Msg.fatal("CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND")
        }
        for (c, arg) in steps {
            let (all, one): (Action, (String) -> Void)
            switch c {
            case "d": (all, one) = (.deleteAll, { deleteOne(infos, $0) })
            case "e": (all, one) = (.expireAll, { expireOne(infos, $0) })
            case "f": (all, one) = (.expireReleaseAll, { expireOne(infos, $0); releaseOne(infos, $0) })
            case "h": (all, one) = (.holdAll, { holdOne(infos, $0) })
            case "H": (all, one) = (.releaseAll, { releaseOne(infos, $0) })
            default: (all, one) = (.requeueAll, { requeueOne(infos, $0) })
            }
            if arg == "ALL" {
                walker.run(all)
            } else if arg == "-" {
                let input = FDStream(fd: 0)
                while let line = try? input.readLine(limit: 1 << 20) {
                    one(String(decoding: line.bytes, as: UTF8.self))
                }
            } else {
                one(arg)
            }
        }

        func report(_ what: String, _ n: Int) { Msg.info("\(what): \(n) message\(n != 1 ? "s" : "")") }
        if !action.isDisjoint(with: [.requeueOne, .requeueAll]) { report("Requeued", counts.requeued) }
        if !action.isDisjoint(with: [.deleteOne, .deleteAll]) { report("Deleted", counts.deleted) }
        if !action.isDisjoint(with: [.expireOne, .expireAll, .expireReleaseOne, .expireReleaseAll]) {
            report("Force-expired", counts.expired)
        }
        if !action.isDisjoint(with: [.holdOne, .holdAll]) { report("Placed on hold", counts.held) }
        if !action.isDisjoint(with: [.releaseOne, .releaseAll, .expireReleaseOne, .expireReleaseAll]) {
            report("Released from hold", counts.released)
        }
        if counts.inodeFixed > 0 { report("Renamed to match inode number", counts.inodeFixed) }
        if counts.inodeMismatch > 0 || counts.inodeFixed > 0 {
            Msg.warn("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
        }
        exit(0)
    }

    /// Signals (and fatal errors) in the middle of a repair leave a warning.
    nonisolated(unsafe) static var stopping = false
    static let interrupted: @convention(c) (Int32) -> Void = { sig in
        if stopping { return }
        stopping = true
        for s in [SIGINT, SIGQUIT, SIGTERM, SIGHUP] { signal(s, SIG_IGN) }
        if counts.repairing { Msg.warn("OPERATION INCOMPLETE -- RERUN COMMAND TO FIX THE QUEUE FIRST") }
        if sig != 0 { _exit(sig) }
    }

    // MARK: file operations "with extreme prejudice"

    /// Removes a file; any failure but "not there" is fatal.
    @discardableResult
    static func remove(_ path: String) -> Bool {
        if unlink(path) < 0 {
            if errno != ENOENT { Msg.fatal("remove file \(path): \(errnoText(errno))") }
            return false
        }
        Msg.debug("removed file \(path)")
        return true
    }

    /// Renames a file, creating missing directories; any failure but "not there" is fatal.
    @discardableResult
    static func rename(_ old: String, _ new: String) -> Bool {
        if Glibc.rename(old, new) == 0 {
            Msg.debug("renamed file \(old) as \(new)")
            return true
        }
        if errno == ENOENT {
            let dir = String(new[..<(new.lastIndex(of: "/") ?? new.startIndex)])
            if !dir.isEmpty, (try? queue.makeDirectories(dir)) != nil, Glibc.rename(old, new) == 0 {
                Msg.debug("renamed file \(old) as \(new)")
                return true
            }
        }
        if errno != ENOENT { Msg.fatal("rename file \(old) as \(new): \(errnoText(errno))") }
        return false
    }

    /// Sets the force-expire bit on a complete message file that does not have it yet.
    static func expire(_ path: String) -> Bool {
        let fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            if errno != ENOENT { Msg.warn("expire file \(path): cannot open file: \(errnoText(errno))") }
            return false
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) < 0 || st.st_mode & S_IFMT != S_IFREG || st.st_nlink != 1 {
            Msg.warn("expire file \(path): file is not a regular file with one link")
            return false
        }
        if !QueueFileMode.isReady(st.st_mode) || st.st_mode & QueueFileMode.expire != 0 { return false }
        if fchmod(fd, (st.st_mode | QueueFileMode.expire) & ~S_IFMT) < 0 {
            Msg.warn("expire file \(path): cannot set permission: \(errnoText(errno))")
            return false
        }
        return true
    }

    // MARK: one queue ID at a time

    /// Runs `body` on the message `id` in the first listed queue that has it (mail_open_ok);
    /// a second round catches a file that moved between queues meanwhile.
    static func findOne(_ infos: [QueueInfo], _ id: String, rounds: Int = 2, skip: Set<String> = [],
                        _ body: (QueueInfo, String) -> Bool) -> Int {
        guard QueueID.isValid(id) else {
            Msg.warn("invalid mail queue id: \(id)")
            return 0
        }
        for _ in 0..<rounds {
            for qi in infos where qi.messages && !skip.contains(qi.name) {
                guard let (path, _) = queue.openable(qi.name, id) else { continue }
                if body(qi, path) { return 1 }
            }
        }
        return 0
    }

    static func target(_ queueName: String, _ id: String) -> String { queue.path(queueName, QueueID(id)!) }

    static func deleteOne(_ infos: [QueueInfo], _ id: String) {
        counts.deleted += findOne(infos, id) { _, path in
            // Logs first, so that a queue ID reused meanwhile loses nothing of its own.
            for log in logQueues { remove(target(log, id)) }
            guard remove(path) else { return false }
            Msg.info("\(id): removed")
            return true
        }
    }

    static func requeueOne(_ infos: [QueueInfo], _ id: String) {
        counts.requeued += findOne(infos, id, skip: [QueueName.maildrop]) { _, path in
            let new = target(QueueName.maildrop, id)
            guard rename(path, new) else { return false }
            if utime(new, nil) < 0 { Msg.warn("\(new): reset time stamps: \(errnoText(errno))") }
            Msg.info("\(id): requeued")
            return true
        }
    }

    /// Maildrop files are not sanitized yet and must not mix with queued mail.
    static func holdOne(_ infos: [QueueInfo], _ id: String) {
        counts.held += findOne(infos, id, skip: [QueueName.maildrop, QueueName.hold]) { _, path in
            guard rename(path, target(QueueName.hold, id)) else { return false }
            Msg.info("\(id): placed on hold")
            return true
        }
    }

    static func releaseOne(_ infos: [QueueInfo], _ id: String) {
        let others = Set(queueInfo.map(\.name)).subtracting([QueueName.hold])
        counts.released += findOne(infos, id, rounds: 1, skip: others) { _, path in
            guard rename(path, target(QueueName.deferred, id)) else { return false }
            Msg.info("\(id): released from hold")
            return true
        }
    }

    static func expireOne(_ infos: [QueueInfo], _ id: String) {
        counts.expired += findOne(infos, id, skip: [QueueName.maildrop]) { _, path in
            guard expire(path) else { return false }
            Msg.info("\(id): expired")
            return true
        }
    }

    // MARK: whole queues

    /// The walk over queue directories for repairs and "ALL" operations (super()).
    struct Walker {
        let infos: [QueueInfo]
        let hashed: Set<String>
        let depth: Int
        let longIDs: Bool

        func run(_ mode: Action) {
            var action = mode
            for qi in infos {
                Msg.debug("queue: \(qi.name)")
                let wanted = hashed.contains(qi.name) ? depth : 0
                if wanted > 0 && !qi.recurse { Msg.fatal("\(qi.name) queue must not be hashed") }
                walk(qi.name, qi, level: 0, wanted: wanted, &action)
            }
        }

        func entries(_ dir: String) -> [String] {
            guard let d = opendir(dir) else {
                if errno == ENOENT { return [] }
                Msg.fatal("open directory \(dir): \(errnoText(errno))")
            }
            defer { closedir(d) }
            var names: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            return names
        }

        func walk(_ dir: String, _ qi: QueueInfo, level: Int, wanted: Int, _ action: inout Action) {
            for entry in entries(dir) {
                if entry.utf8.count == 1 && qi.recurse {
                    walk(dir + "/" + entry, qi, level: level + 1, wanted: wanted, &action)
                    continue
                }
                file(dir, entry, qi, &action)
            }
            // Subdirectories deeper than the hash depth are emptied by the moves above.
            if level > wanted {
                if rmdir(dir) < 0 {
                    if errno != ENOENT { Msg.fatal("remove directory \(dir): \(errnoText(errno))") }
                } else {
                    Msg.debug("remove directory \(dir)")
                }
            }
        }

        func file(_ dir: String, _ entry: String, _ qi: QueueInfo, _ action: inout Action) {
            var name = entry
            var actual = dir + "/" + name
            var st = stat()
            if lstat(actual, &st) < 0 { return }
            let ready = QueueFileMode.isReady(st.st_mode)
            // Alien directories go (maildrop may be compromised: only warn).
            if st.st_mode & S_IFMT == S_IFDIR {
                if rmdir(actual) < 0 {
                    if errno != ENOENT { Msg.warn("remove subdirectory \(actual): \(errnoText(errno))") }
                } else {
                    Msg.debug("remove subdirectory \(actual)")
                }
                return
            }
            if action.contains(.deleteAll) {
                if remove(actual) && qi.messages && ready { counts.deleted += 1 }
                return
            }
            // Non-files, and temporary files a week old (never logs, however old).
            if st.st_mode & S_IFMT != S_IFREG
                || (action.contains(.purge) && qi.messages && !ready && time(nil) > Int(st.st_mtim.tv_sec) + maxTempAge) {
                remove(actual)
                return
            }
            // NEWID#FIX from an earlier pass: strip the suffix into the right place.
            if action.contains(.structure) && name.hasSuffix(fixSuffix) {
                name = String(name.dropLast(fixSuffix.count))
                guard let id = QueueID(name) else {
                    Msg.warn("bogus file name: \(actual)")
                    return
                }
                if qi.messages {
                    guard let inode = id.inode else {
                        Msg.warn("bogus file name: \(actual)")
                        return
                    }
                    if inode != UInt64(st.st_ino) {
                        Msg.warn("name/inode mismatch: \(actual)")
                        return
                    }
                }
                let wantedPath = queue.path(qi.name, id)
                guard rename(actual, wantedPath) else { return }
                if qi.messages { counts.inodeFixed += 1 }
                actual = wantedPath
            }
            guard let id = QueueID(name) else {
                Msg.warn("bogus file name: \(actual)")
                return
            }
            // A message whose name does not match its inode is renamed, logs first.
            if action.contains(.structure) && qi.messages {
                guard let inode = id.inode else {
                    Msg.warn("bogus file name: \(actual)")
                    return
                }
                if (id.isLong && !longIDs)
                    || (inode != UInt64(st.st_ino) && (!id.isLong || action.contains(.structureLong))) {
                    counts.inodeMismatch += 1
                    action.subtract(.byWildcard)
                    let newID = id.renamed(inode: UInt64(st.st_ino), long: longIDs)
                    for log in logQueues {
                        rename(queue.path(log, id), queue.path(log, newID) + fixSuffix)
                    }
                    rename(actual, queue.path(qi.name, newID) + fixSuffix)
                    return
                }
            }
            if action.contains(.requeueAll) && qi.messages && qi.name != QueueName.maildrop {
                if rename(actual, queue.path(QueueName.maildrop, id)) { counts.requeued += 1 }
                return
            }
            if !action.isDisjoint(with: [.expireAll, .expireReleaseAll]) && qi.messages && ready
                && qi.name != QueueName.maildrop && expire(actual) {
                counts.expired += 1
            }
            if action.contains(.holdAll) && qi.messages && qi.name != QueueName.maildrop && qi.name != QueueName.hold {
                if rename(actual, queue.path(QueueName.hold, id)) { counts.held += 1 }
                return
            }
            if !action.isDisjoint(with: [.releaseAll, .expireReleaseAll]) && qi.name == QueueName.hold {
                if rename(actual, queue.path(QueueName.deferred, id)) { counts.released += 1 }
                return
            }
            // A file in the wrong subdirectory (hash_queue_* changed) moves.
            if action.contains(.structure) {
                let wantedPath = queue.path(qi.name, id)
                if actual != wantedPath {
                    counts.positionMismatch += 1
                    rename(actual, wantedPath)
                }
            }
        }
    }
}
