// MemoryDicts: tables that live in memory or in the system: internal:, texthash:,
// inline:, static:, fail:, environ:, unix:.
// Mirrors Postfix util/dict_ht.c, dict_thash.c, dict_inline.c, dict_static.c, dict_fail.c,
// dict_env.c and dict_unix.c. The in-memory tables keep Postfix's hash order, so that
// "postmap -s" lists them as Postfix does.
import Glibc
import MailUtil

/// internal: an in-memory table (the base of texthash: and inline:).
public class DictHT: Dict {
    var table = HashedDict()
    var cursor: [String] = []
    var cursorIndex = 0

    public static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        DictHT(type: "internal", name: name, flags: flags)
    }

    override init(type: String, name: String, flags: DictFlags) {
        super.init(type: type, name: name, flags: flags.union(.fixed))
    }

    override public func lookup(_ key: String) throws(DictError) -> String? {
        table[folded(key)]
    }

    override public func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        table[folded(key)] = value
        return true
    }

    override public func delete(_ key: String) throws(DictError) -> Bool {
        let k = folded(key)
        if table[k] == nil { return false }
        table[k] = nil
        return true
    }

    override public func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? {
        if first {
            cursor = table.keys
            cursorIndex = 0
        }
        while cursorIndex < cursor.count {
            let k = cursor[cursorIndex]
            cursorIndex += 1
            if let v = table[k] { return (k, v) }
        }
        return nil
    }
}

/// texthash: a "key whitespace value" text file read into memory, postmap-style.
public enum DictTextHash {
    public static func open(_ path: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("texthash:\(path) map requires O_RDONLY access mode") }
        // A file still being written is read again once it has cooled down.
        while true {
            let before = time(nil)
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 { throw DictOpenError("open database \(path): \(errnoText(errno))") }
            let content: [UInt8]
            var st = stat()
            do {
                content = try SafeFile.readAll(fd: fd, path: path)
                fstat(fd, &st)
                Glibc.close(fd)
            } catch {
                Glibc.close(fd)
                Msg.fatal("read \(path): \(errnoText(errno))")
            }
            let dict = DictHT(type: "texthash", name: path, flags: flags)
            for line in LogicalLine.read(content, path: path) {
                guard let (key, value) = KeyValueLine.split(line.text) else {
                    Msg.warn("\(path), line \(line.firstLine): expected format: key whitespace value -- ignoring this line")
                    continue
                }
                if key.hasSuffix(":") {
                    Msg.warn("\(path), line \(line.firstLine): record is in \"key: value\" format; is this an alias file?")
                }
                if (try? dict.lookup(key)) ?? nil != nil {
                    if flags.contains(.duplicateIgnore) {
                    } else if flags.contains(.duplicateReplace) {
                        _ = try? dict.update(key, value)
                    } else if flags.contains(.duplicateWarn) {
                        Msg.warn("\(path), line \(line.firstLine): duplicate entry: \"\(key)\"")
                    } else {
                        throw DictOpenError("\(path), line \(line.firstLine): duplicate entry: \"\(key)\"")
                    }
                } else {
                    _ = try? dict.update(key, value)
                }
            }
            let after = time(nil)
            if st.st_mtim.tv_sec < before - 1 || st.st_mtim.tv_sec > after {
                dict.owner = st.st_uid == 0 ? .trusted : .untrusted(uid: st.st_uid)

                return dict
            }
            usleep(300_000)
        }
    }
}

/// Splitting "key whitespace value" lines as postmap and texthash do.
public enum KeyValueLine {
    /// Key up to the first white space, value after it, both trimmed; nil when either is
    /// missing.
    public static func split(_ text: [UInt8]) -> (key: String, value: String)? {
        var i = 0
        let n = text.count
        while i < n && !Tokens.isBlank(text[i]) { i += 1 }
        let key = text[0..<i]
        while i < n && Tokens.isBlank(text[i]) { i += 1 }
        var e = n
        while e > i && Tokens.isBlank(text[e - 1]) { e -= 1 }
        let value = text[i..<e]
        if key.isEmpty || value.isEmpty { return nil }
        return (String(decoding: key, as: UTF8.self), String(decoding: value, as: UTF8.self))
    }
}

/// inline:{ key=value, { key = value with spaces }, ... }
public enum DictInline {
    public static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("inline:\(name) map requires O_RDONLY access mode") }
        let need = "\"inline:\(name)\"; need \"inline:{name=value...}\""
        let bytes = Array(name.utf8)
        let len = bytes.first == UInt8(ascii: "{") ? Tokens.balancedLength(bytes[...]) : 0
        guard len > 2, len == bytes.count else { throw DictOpenError("bad syntax: \(need)") }
        let inner = String(decoding: bytes[1..<(len - 1)], as: UTF8.self)
        let dict = DictHT(type: "inline", name: name, flags: flags)
        var count = 0
        for item in Tokens.splitQuoted(inner) {
            var text = item
            if item.hasPrefix("{") {
                let (stripped, err) = Tokens.extractBraced(item)
                if let err { throw DictOpenError("\(err): \(need)") }
                text = stripped
            }
            switch splitQNameValue(Array(text.utf8)) {
            case .success(let (k, v)):
                _ = try? dict.update(k, v)
                count += 1
            case .failure(let e):
                throw DictOpenError("\(e.reason): \(need)")
            }
        }
        if count == 0 { throw DictOpenError("empty table: \(need)") }
        return dict
    }

    /// Postfix's split_qnameval: the name may hold quoted or escaped white space and "="
    /// (quotes and backslashes are kept), then "=", then the value, white space trimmed.
    static func splitQNameValue(_ b: [UInt8]) -> Result<(String, String), DictOpenError> {
        var i = 0
        while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
        let start = i
        var quoted = false
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\") {
                i += min(2, b.count - i)
                continue
            }
            if c == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if !quoted && (Tokens.isBlank(c) || c == UInt8(ascii: "=")) {
                break
            }
            i += 1
        }
        if quoted { return .failure(DictOpenError("unbalanced '\"'")) }
        let key = b[start..<i]
        while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
        if key.isEmpty && i >= b.count { return .failure(DictOpenError("no key found; expected format: key = value")) }
        guard i < b.count, b[i] == UInt8(ascii: "=") else {
            return .failure(DictOpenError("missing '=' after attribute name"))
        }
        i += 1
        while i < b.count && Tokens.isBlank(b[i]) { i += 1 }
        var e = b.count
        while e > i && Tokens.isBlank(b[e - 1]) { e -= 1 }
        return .success((String(decoding: key, as: UTF8.self), String(decoding: b[i..<e], as: UTF8.self)))
    }
}

extension StringProtocol {
    /// Without leading and trailing blanks (space, tab, CR, LF, VT, FF).
    func trimmingBlanks() -> String {
        let b = Array(utf8)
        var s = 0, e = b.count
        while s < e && Tokens.isBlank(b[s]) { s += 1 }
        while e > s && Tokens.isBlank(b[e - 1]) { e -= 1 }
        return String(decoding: b[s..<e], as: UTF8.self)
    }
}

/// static:value, static:{ value with spaces }: every key has that value.
final class DictStatic: Dict {
    let value: String

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        var value = name
        if name.hasPrefix("{") {
            let (inner, err) = Tokens.extractBraced(name)
            if let err { throw DictOpenError("bad static:name syntax: \(err)") }
            value = inner
        }
        return DictStatic(name: name, value: value, flags: flags)
    }

    init(name: String, value: String, flags: DictFlags) {
        self.value = value
        super.init(type: "static", name: name, flags: flags.union(.pattern))
    }

    override func lookup(_ key: String) throws(DictError) -> String? { value }
}

/// fail:name: every access fails with a temporary error.
final class DictFail: Dict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        DictFail(type: "fail", name: name, flags: flags.union(.pattern))
    }

    override func lookup(_ key: String) throws(DictError) -> String? { throw .retry }
    override func update(_ key: String, _ value: String) throws(DictError) -> Bool { throw .retry }
    override func delete(_ key: String) throws(DictError) -> Bool { throw .retry }
    override func sequence(first: Bool) throws(DictError) -> (key: String, value: String)? { throw .retry }
}

/// environ:name: the process environment.
final class DictEnviron: Dict {
    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        DictEnviron(type: "environ", name: name, flags: flags.union(.fixed))
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        getenv(folded(key)).map { String(cString: $0) }
    }

    override func update(_ key: String, _ value: String) throws(DictError) -> Bool {
        if setenv(folded(key), value, 1) != 0 { Msg.fatal("setenv: \(errnoText(errno))") }
        return true
    }
}

/// unix:passwd.byname and unix:group.byname, in /etc/passwd and /etc/group line format.
final class DictUnix: Dict {
    let passwd: Bool
    nonisolated(unsafe) static var sanityChecked = false

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags) throws(DictOpenError) -> Dict {
        switch name {
        case "passwd.byname": return DictUnix(name: name, passwd: true, flags: flags)
        case "group.byname": return DictUnix(name: name, passwd: false, flags: flags)
        default: throw DictOpenError("unknown table: unix:\(name)")
        }
    }

    init(name: String, passwd: Bool, flags: DictFlags) {
        self.passwd = passwd
        super.init(type: "unix", name: name, flags: flags.union(.fixed))
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        let key = folded(key)
        if passwd {
            guard let pw = getpwnam(key) else {
                if !DictUnix.sanityChecked {
                    DictUnix.sanityChecked = true
                    errno = 0
                    if getpwuid(0) == nil {
                        Msg.warn("cannot access UNIX password database: \(errnoText(errno))")
                        throw .retry
                    }
                }
                return nil
            }
            DictUnix.sanityChecked = true
            let p = pw.pointee
            return "\(String(cString: p.pw_name)):\(String(cString: p.pw_passwd)):\(p.pw_uid):\(p.pw_gid):"
                + "\(String(cString: p.pw_gecos)):\(String(cString: p.pw_dir)):\(String(cString: p.pw_shell))"
        }
        guard let gr = getgrnam(key) else {
            if !DictUnix.sanityChecked {
                DictUnix.sanityChecked = true
                errno = 0
                if getgrgid(0) == nil {
                    Msg.warn("cannot access UNIX group database: \(errnoText(errno))")
                    throw .retry
                }
            }
            return nil
        }
        DictUnix.sanityChecked = true
        let g = gr.pointee
        var members: [String] = []
        var p = g.gr_mem
        while let m = p?.pointee {
            members.append(String(cString: m))
            p = p! + 1
        }
        return "\(String(cString: g.gr_name)):\(String(cString: g.gr_passwd)):\(g.gr_gid):" + members.joined(separator: ",")
    }
}
