// PostfixFiles: the installed directories and files with their owners and modes, and the
// operations on them: create what is missing, set every permission.
// Mirrors Postfix conf/postfix-files and conf/post-install (create-missing,
// set-permissions): records "path:type:owner:group:mode:flags" where the path starts with
// a $parameter, owner and group may be $mail_owner / $setgid_group, "-" leaves a group
// alone, and the flags say c (create when missing), r (owner and group recursively),
// u (updated by upgrades).
import Glibc
import MailUtil
import MailGlobal

struct FileRecord {
    enum Kind { case directory, file }
    let path: String
    let kind: Kind
    let owner: String
    let group: String
    let mode: mode_t
    let flags: Set<Character>
}

enum PostfixFiles {
    static let queueSubdirectories = ["active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                                      "incoming", "saved", "trace"]
    /// Programs installed set-gid setgid_group.
    static let setgidCommands = ["postdrop", "postqueue", "postlog"]

    /// The records, in postfix-files order.
    static var records: [FileRecord] {
        var r: [FileRecord] = [
            FileRecord(path: "$config_directory", kind: .directory, owner: "root", group: "-", mode: 0o755, flags: ["u"]),
            FileRecord(path: "$data_directory", kind: .directory, owner: "$mail_owner", group: "-", mode: 0o700, flags: ["u", "c"]),
            FileRecord(path: "$daemon_directory", kind: .directory, owner: "root", group: "-", mode: 0o755, flags: ["u"]),
            FileRecord(path: "$queue_directory", kind: .directory, owner: "root", group: "-", mode: 0o755, flags: ["u", "c"]),
        ]
        for d in queueSubdirectories {
            r.append(FileRecord(path: "$queue_directory/\(d)", kind: .directory, owner: "$mail_owner", group: "-",
                                mode: 0o700, flags: ["u", "c", "r"]))
        }
        r += [
            FileRecord(path: "$queue_directory/private", kind: .directory, owner: "$mail_owner", group: "-", mode: 0o700, flags: ["u", "c"]),
            FileRecord(path: "$queue_directory/maildrop", kind: .directory, owner: "$mail_owner", group: "$setgid_group", mode: 0o730, flags: ["u", "c"]),
            FileRecord(path: "$queue_directory/public", kind: .directory, owner: "$mail_owner", group: "$setgid_group", mode: 0o710, flags: ["u", "c"]),
            FileRecord(path: "$queue_directory/pid", kind: .directory, owner: "root", group: "-", mode: 0o755, flags: ["u", "c"]),
            FileRecord(path: "$config_directory/main.cf", kind: .file, owner: "root", group: "-", mode: 0o644, flags: ["p"]),
            FileRecord(path: "$config_directory/master.cf", kind: .file, owner: "root", group: "-", mode: 0o644, flags: ["p"]),
        ]
        for c in setgidCommands {
            r.append(FileRecord(path: "$command_directory/\(c)", kind: .file, owner: "root", group: "$setgid_group",
                                mode: 0o2755, flags: ["u"]))
        }
        return r
    }

    /// The record's path with its $parameter replaced.
    static func expand(_ path: String, _ config: MailConfig) -> String {
        guard path.hasPrefix("$") else { return path }
        let rest = path.dropFirst()
        let name = rest.prefix { $0 != "/" }
        return config.string(String(name)) + rest.dropFirst(name.count)
    }

    /// The uid and gid a record asks for; in single-user mode everything belongs to the
    /// invoking user.
    static func ids(_ rec: FileRecord, _ config: MailConfig) -> (uid_t, gid_t?)? {
        if geteuid() != 0 { return (geteuid(), nil) }
        let ownerName = rec.owner == "$mail_owner" ? config.string("mail_owner") : rec.owner
        guard let pw = getpwnam(ownerName) else { return nil }
        var gid: gid_t?
        if rec.group != "-" {
            let groupName = rec.group == "$setgid_group" ? config.string("setgid_group") : rec.group
            guard let gr = getgrnam(groupName) else { return nil }
            gid = gr.pointee.gr_gid
        }
        return (pw.pointee.pw_uid, gid)
    }

    /// post-install create-missing: makes the missing "c" directories with their owner,
    /// group and mode. Returns false (after saying why) when one cannot be made.
    static func createMissing(_ config: MailConfig) -> Bool {
        for rec in records where rec.kind == .directory && rec.flags.contains("c") {
            let path = expand(rec.path, config)
            var st = stat()
            if stat(path, &st) == 0 { continue }
            if mkdir(path, rec.mode) < 0 {
                writeAll(2, Array("mkdir \(path): \(errnoText(errno))\n".utf8))
                return false
            }
            if let (uid, gid) = ids(rec, config), geteuid() == 0 {
                _ = chown(path, uid, gid ?? gid_t.max)
            }
            _ = chmod(path, rec.mode)
        }
        return true
    }

    /// post-install set-permissions: owner, group and mode of every record that exists,
    /// recursively where the record says "r" (modes only on directories).
    static func setPermissions(_ config: MailConfig) -> Bool {
        var ok = true
        for rec in records {
            let path = expand(rec.path, config)
            var st = stat()
            if lstat(path, &st) < 0 { continue }
            guard let (uid, gid) = ids(rec, config) else {
                writeAll(2, Array("unknown owner or group for \(path)\n".utf8))
                ok = false
                continue
            }
            func apply(_ p: String, _ isDir: Bool, top: Bool) {
                if geteuid() == 0 && lchown(p, uid, gid ?? gid_t.max) < 0 {
                    writeAll(2, Array("chown \(p): \(errnoText(errno))\n".utf8))
                    ok = false
                }
                if top || isDir {
                    if chmod(p, rec.mode) < 0 {
                        writeAll(2, Array("chmod \(p): \(errnoText(errno))\n".utf8))
                        ok = false
                    }
                }
            }
            apply(path, rec.kind == .directory, top: true)
            if rec.flags.contains("r") && rec.kind == .directory {
                TreeWalk.walk(path) { p, st in
                    let mode = st.st_mode & S_IFMT
                    if mode == S_IFLNK { return }
                    apply(p, mode == S_IFDIR, top: false)
                }
            }
        }
        return ok
    }
}

/// A recursive directory walk in find(1)'s style: every entry below `root` (not `root`
/// itself), children in name order, paths joined with "/", symlinks not followed.
enum TreeWalk {
    static func walk(_ root: String, _ visit: (String, stat) -> Void) {
        guard let dir = opendir(root) else { return }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names.sorted() {
            let p = root.hasSuffix("/") ? root + name : root + "/" + name
            var st = stat()
            if lstat(p, &st) < 0 { continue }
            visit(p, st)
            if st.st_mode & S_IFMT == S_IFDIR { walk(p, visit) }
        }
    }
}
