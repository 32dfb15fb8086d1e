// PostmapBuild: making a table from text: postmap's "key whitespace value" records and
// postalias's aliases(5) records.
// Mirrors Postfix postmap.c (postmap), postalias.c (postalias) and global/mkmap_*.c: the
// source is read as the owner of the source file (when run by root), a new table gets
// the source file's group/other read bits, signals wait until the table is complete.
import Glibc
import CShim
import MailUtil
import MailDict
import MailGlobal

extension PostmapTool {
    func build(_ spec: String) {
        let (type, name) = split(spec)
        if type == "proxy" && !o.incremental { Msg.fatal("can't create maps via the proxy service") }
        guard DictRegistry.isRegistered(type) else { Msg.fatal("unsupported dictionary type: \(type). Is the postfix-\(type) package installed?") }
        guard DictRegistry.canBuild(type) else {
            Msg.fatal("unsupported dictionary type: \(type) does not support bulk-mode creation.")
        }

        // The source: the named file, or standard input for -i.
        let sourceFD: Int32
        let sourcePath: String
        if o.incremental {
            sourceFD = 0
            sourcePath = "stdin"
        } else {
            sourceFD = Glibc.open(name, O_RDONLY | O_CLOEXEC)
            if sourceFD < 0 { Msg.fatal("open \(name): \(errnoText(errno))") }
            sourcePath = name
        }
        var st = stat()
        if fstat(sourceFD, &st) < 0 { Msg.fatal("fstat \(sourcePath): \(errnoText(errno))") }

        // Work as the owner of the source, so that a user cannot make root write where
        // that user may not (postmap -o keeps root's privileges).
        let switched = o.asOwner && getuid() == 0 && (st.st_uid != geteuid() || st.st_gid != getegid())
        if switched { setEffectiveIDs(uid: st.st_uid, gid: st.st_gid) }
        let savedMask = umask(0o022)
        if !o.incremental && o.savePermissions && st.st_mode & S_IFMT == S_IFREG {
            umask(0o022 | (~st.st_mode & 0o077))
        }

        var blocked = sigset_t()
        _ = cshim_sigmask_all(1, &blocked)
        let map = MkMap.open(type: type, name: name, incremental: o.incremental, flags: o.dictFlags,
                             aliasSignature: o.alias)
        umask(savedMask)
        let content: [UInt8]
        do {
            content = try SafeFile.readAll(fd: sourceFD, path: sourcePath)
        } catch let e as SystemError where e.errno == EISDIR {
            content = []
        } catch {
            Msg.fatal("read \(sourcePath): \(errnoText(errno))")
        }
        if sourceFD != 0 { Glibc.close(sourceFD) }

        let utf8Checks = o.dictFlags.contains(.utf8Request) && DictRegistry.utf8Enabled
        for line in LogicalLine.read(content, path: sourcePath) {
            if utf8Checks && !UTF8Check.isValid(line.text) {
                Msg.warn("\(sourcePath), line \(line.firstLine): non-UTF-8 input \"\(line.string)\" -- ignoring this line")
                continue
            }
            let record = o.alias ? aliasRecord(line, path: sourcePath) : mapRecord(line, path: sourcePath)
            guard let (key, parsedValue) = record else { continue }
            var value = parsedValue
            if o.fileValues && !o.alias {
                guard let encoded = fileContents(value, path: sourcePath, line: line.firstLine) else { continue }
                value = encoded
            }
            map.put(key, value)
        }
        if o.alias { map.addAliasSignature(myhostname: config.string("myhostname"), incremental: o.incremental) }
        map.finish()
        if switched { setEffectiveIDs(uid: 0, gid: 0) }
        _ = cshim_sigmask_all(0, &blocked)
    }

    /// postmap: "key whitespace value"; the key may contain quoted or escaped white space.
    func mapRecord(_ line: LogicalLine, path: String) -> (String, String)? {
        let b = line.text
        var i = 0
        var quoted = false
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\") {
                if i + 1 >= b.count { i = b.count; break }
                i += 2
                continue
            }
            if c == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if !quoted && isSpace(c) {
                break
            }
            i += 1
        }
        if quoted {
            Msg.warn("\(path), line \(line.firstLine): unbalanced '\"' in '\(line.string)' -- ignoring this line")
            return nil
        }
        let key = b[0..<i]
        var s = i
        while s < b.count && isSpace(b[s]) { s += 1 }
        var e = b.count
        while e > s && isSpace(b[e - 1]) { e -= 1 }
        if key.isEmpty || s >= e {
            Msg.warn("\(path), line \(line.firstLine): expected format: key whitespace value")
            return nil
        }
        let keyText = String(decoding: key, as: UTF8.self)
        if keyText.hasSuffix(":") {
            Msg.warn("\(path), line \(line.firstLine): record is in \"key: value\" format; is this an alias file?")
        }
        return (keyText, String(decoding: b[s..<e], as: UTF8.self))
    }

    /// postalias: "name: value, value..." tokenized as RFC 822 text; the name in internal
    /// form, the value re-serialized in external form.
    func aliasRecord(_ line: LogicalLine, path: String) -> (String, String)? {
        let tokens = Address822.scan(line.string)
        if tokens.isEmpty { return nil }
        for (a, b) in zip(tokens, tokens.dropFirst()) {
            a.next = b
            b.prev = a
        }
        tokens.last?.next = nil
        guard let colon = tokens.firstIndex(where: { $0.type == Int(UInt8(ascii: ":")) }),
              colon > 0, colon < tokens.count - 1,
              !tokens[..<colon].contains(where: { $0.type == Int(UInt8(ascii: ",")) }) else {
            Msg.warn("\(path), line \(line.firstLine): need name:value pair")
            return nil
        }
        if tokens[..<colon].contains(where: { $0.type == Int(UInt8(ascii: "@")) || $0.type == Int(UInt8(ascii: "%")) }) {
            Msg.warn("\(path), line \(line.firstLine): name must be local")
            return nil
        }
        tokens[colon - 1].next = nil
        let key = Address822.internalize(tokens[0])
        let value = Address822.externalize(tokens[colon + 1])
        return (key, value)
    }

    /// -F: the named files' contents (joined by newlines), base64-encoded.
    func fileContents(_ names: String, path: String, line: Int) -> String? {
        var data: [UInt8] = []
        for (i, file) in Tokens.split(names).enumerated() {
            guard let bytes = try? SafeFile.read(file) else {
                Msg.warn("\(path), line \(line): open \(file): \(errnoText(errno)): skipping this entry")
                return nil
            }
            if i > 0 { data.append(0x0A) }
            data += bytes
        }
        return String(decoding: Base64.encode(data), as: UTF8.self)
    }

    func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }

    /// Effective user and group only, so that root can return (Postfix's set_eugid).
    func setEffectiveIDs(uid: uid_t, gid: gid_t) {
        if geteuid() != 0 && seteuid(0) < 0 { Msg.fatal("seteuid(0): \(errnoText(errno))") }
        var g = gid
        if setegid(gid) < 0 { Msg.fatal("setegid(\(gid)): \(errnoText(errno))") }
        if setgroups(1, &g) < 0 { Msg.fatal("setgroups(1, [\(gid)]): \(errnoText(errno))") }
        if seteuid(uid) < 0 { Msg.fatal("seteuid(\(uid)): \(errnoText(errno))") }
    }
}
