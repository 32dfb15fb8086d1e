// Check: what "postfix check" (and "postfix start") verify.
// Mirrors the check-fatal and check-warn parts of Postfix conf/postfix-script (Debian 3.7):
// create missing queue directories, require master.cf and a postlog service when
// maillog_file is set, then warn about ownerships, writable files, set-gid programs,
// stale copies of system files in the queue tree and damaged messages, with the paths
// written as find(1) writes them ("/var/spool/postfix/./active"). Beyond Postfix: unused
// main.cf and master.cf settings are reported with the parameter name they most likely
// meant, and master.cf services whose program is missing.
import Glibc
import MailUtil
import MailGlobal
import PostconfCore

extension PostfixScript {
    /// Fatal problems; false after the message (the caller exits 1).
    func checkFatal() -> Bool {
        if !PostfixFiles.createMissing(config) {
            fatal("unable to create missing queue directories")
        }
        let masterCF = config.configDirectory + "/master.cf"
        if access(masterCF, F_OK) != 0 {
            fatal("no \(masterCF) file found")
        }
        if !config.string("maillog_file").isEmpty {
            let services = MasterCF.entries((try? SafeFile.read(masterCF)) ?? [], path: masterCF)
            if !services.contains(where: { $0.fields.count > 1 && $0.fields[0] == "postlog" && $0.fields[1] == "unix-dgram" }) {
                fatal("missing 'postlog' service in master.cf - run 'postfix upgrade-configuration'")
            }
        }
        // The queue structure check belongs to postsuper; run it when it is installed.
        let postsuper = config.string("command_directory") + "/postsuper"
        if access(postsuper, X_OK) == 0 && execute(postsuper, []) != 0 { return false }
        return true
    }

    /// Warnings only.
    func checkWarn() {
        let queue = config.string("queue_directory")
        let owner = config.string("mail_owner")
        let group = config.string("setgid_group")
        let singleUser = geteuid() != 0
        // In single-user mode the invoking user stands in for root.
        let rootName = singleUser ? (getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? "root") : "root"
        let rootUID: uid_t = singleUser ? geteuid() : 0
        let ownerUID = getpwnam(owner)?.pointee.pw_uid ?? uid_t.max
        let groupGID = getgrnam(group)?.pointee.gr_gid ?? gid_t.max

        func stat(_ p: String) -> stat? {
            var st = Glibc.stat()
            return lstat(p, &st) == 0 ? st : nil
        }
        func writable(_ st: stat) -> Bool { st.st_mode & 0o022 != 0 }

        // 1. The queue directory and pid/ belong to root.
        for p in [queue + "/.", queue + "/pid"] {
            guard let st = stat(p) else { continue }
            if st.st_uid != rootUID { warn("not owned by \(rootName): \(p)") }
            if writable(st) { warn("group or other writable: \(p)") }
        }

        // 2. Configuration and program trees belong to root and are not writable.
        var todo = [config.configDirectory + "/.", config.string("daemon_directory") + "/.",
                    config.string("meta_directory") + "/."]
        let shlib = config.string("shlib_directory")
        if shlib != "no" && !shlib.isEmpty { todo.append(shlib + "/.") }
        todo = Array(Set(todo)).sorted()
        for top in todo {
            guard let st = stat(top) else { continue }
            var entries: [(String, Glibc.stat)] = [(top, st)]
            TreeWalk.walk(top) { p, s in entries.append((p, s)) }
            for (p, s) in entries where s.st_uid != rootUID { warn("not owned by \(rootName): \(p)") }
            for (p, s) in entries {
                var target = s
                if s.st_mode & S_IFMT == S_IFLNK {
                    var t = Glibc.stat()
                    if lstatFollow(p, &t) != 0 { continue }
                    target = t
                }
                if writable(target) { warn("group or other writable: \(p)") }
            }
            for (p, s) in entries where s.st_mode & S_IFMT == S_IFLNK {
                if let link = try? readLink(p), link.contains("/") { warn("symlink leaves directory: \(p)") }
            }
        }

        // 3. The data directory belongs to mail_owner.
        let data = config.string("data_directory") + "/."
        if let st = stat(data) {
            var entries: [(String, Glibc.stat)] = [(data, st)]
            TreeWalk.walk(data) { p, s in entries.append((p, s)) }
            for (p, s) in entries where s.st_uid != ownerUID { warn("not owned by \(owner): \(p)") }
            for (p, s) in entries where writable(s) && s.st_mode & S_IFMT != S_IFLNK { warn("group or other writable: \(p)") }
        }

        // 4. Queue files belong to mail_owner (sockets and FIFOs aside).
        for d in ["saved", "incoming", "active", "defer", "deferred", "bounce", "hold", "trace", "corrupt",
                  "public", "private", "flush"] {
            let top = queue + "/" + d
            guard let st = stat(top) else { continue }
            var entries: [(String, Glibc.stat)] = [(top, st)]
            TreeWalk.walk(top) { p, s in entries.append((p, s)) }
            for (p, s) in entries {
                let kind = s.st_mode & S_IFMT
                if kind == S_IFSOCK || kind == S_IFIFO { continue }
                if s.st_uid != ownerUID { warn("not owned by \(owner): \(p)") }
            }
        }
        // 5. maildrop itself.
        if let st = stat(queue + "/maildrop"), st.st_uid != ownerUID {
            warn("not owned by \(owner): \(queue)/maildrop")
        }

        // 6, 7. The set-gid group and programs.
        let commands = config.string("command_directory")
        let setgidPrograms = ["postqueue", "postdrop"].map { commands + "/" + $0 }
        if !singleUser {
            for p in [queue + "/public", queue + "/maildrop"] + setgidPrograms {
                if let st = stat(p), st.st_gid != groupGID { warn("not owned by group \(group): \(p)") }
            }
            for p in setgidPrograms {
                if let st = stat(p), st.st_mode & 0o2111 != 0o2111 {
                    warn("not set-gid or not owner+group+world executable: \(p)")
                }
            }
        }

        // 8. Copies of system files in the queue tree (for chrooted daemons).
        for d in ["bin", "etc", "lib", "sbin", "usr"] {
            let top = queue + "/" + d
            guard let st = stat(top) else { continue }
            var entries: [(String, Glibc.stat)] = [(top, st)]
            TreeWalk.walk(top) { p, s in entries.append((p, s)) }
            for (p, s) in entries where s.st_uid != rootUID { warn("not owned by \(rootName): \(p)") }
            for (p, s) in entries where s.st_mode & S_IFMT == S_IFREG {
                let system = String(p.dropFirst(queue.count))
                if access(system, F_OK) == 0, (try? SafeFile.read(system)) != (try? SafeFile.read(p)) {
                    warn("\(p) and \(system) differ")
                }
            }
        }

        // 9. Damaged messages.
        TreeWalk.walk(queue + "/corrupt") { p, s in
            if s.st_mode & S_IFMT == S_IFREG { warn("damaged message: corrupt/\(p.dropFirst(queue.count + 9))") }
        }

        // 10. Two sendmail programs that differ.
        if access("/usr/sbin/sendmail", F_OK) == 0 && access("/usr/lib/sendmail", F_OK) == 0,
           (try? SafeFile.read("/usr/lib/sendmail")) != (try? SafeFile.read("/usr/sbin/sendmail")) {
            warn("/usr/lib/sendmail and /usr/sbin/sendmail differ")
            warn("Replace one by a symbolic link to the other")
        }

        checkPrograms()

        // Beyond Postfix: settings nothing uses, most often misspelled names.
        for u in ParameterAudit.unusedParameters(configDirectory: config.configDirectory) {
            let hint = u.suggestion.map { " (did you mean \"\($0)\"?)" } ?? ""
            warn("\(u.file): unused parameter: \(u.name)=\(u.value)\(hint)")
        }
    }

    /// Beyond Postfix: master.cf services whose program is not there (master would only
    /// find out when a client comes, and then throttle the service).
    func checkPrograms() {
        let masterCF = config.configDirectory + "/master.cf"
        guard let bytes = try? SafeFile.read(masterCF) else { return }
        let daemons = config.string("daemon_directory")
        for e in MasterCF.entries(bytes, path: masterCF) where e.fields.count >= MasterCF.minimumFields {
            let program = daemons + "/" + e.fields[7]
            let what = "\(masterCF): line \(e.line): service \(e.fields[0])/\(e.fields[1]): program \(program)"
            var st = stat()
            if lstatFollow(program, &st) != 0 {
                warn("\(what) is missing")
            } else if access(program, X_OK) != 0 || st.st_mode & S_IFMT != S_IFREG {
                warn("\(what) is not executable")
            }
        }
    }

    func readLink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        if n < 0 { throw SystemError.current("readlink \(path)") }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// stat(2), following symlinks.
func lstatFollow(_ path: String, _ st: inout stat) -> Int32 {
    fstatat(AT_FDCWD, path, &st, 0)
}
