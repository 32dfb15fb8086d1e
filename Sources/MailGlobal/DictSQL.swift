// DictSQL: sqlite: and pgsql: tables: a query template filled in with the lookup key,
// every value of the result rows formatted and joined with commas.
// Mirrors Postfix global/cfg_parser.c, db_common.c, dict_sqlite.c and dict_pgsql.c (3.7):
// the same configuration syntax (a file of "name = value", or main.cf parameters with a
// prefix), %s %u %d %1-%9 %S %U %D expansion with SQL quoting, result_format, domain,
// expansion_limit, and the same messages. Beyond Postfix: an SQL statement that cannot
// be prepared is a temporary failure for the caller, never the end of the daemon. The
// client libraries are loaded when a table first needs them.
import Glibc
import CShim
import MailUtil
import MailDict

/// The settings of an SQL table: a "name = value" file, or "NAME_param" in main.cf.
final class CfgParser {
    let name: String
    let values: [String: String]
    let prefix: String?
    let config: MailConfig

    init(_ name: String, config: MailConfig) throws(DictOpenError) {
        self.name = name
        self.config = config
        if name.hasPrefix("/") || name.hasPrefix(".") {
            guard let content = try? SafeFile.read(name) else {
                throw DictOpenError("open \(name): \(errnoText(errno))")
            }
            var v: [String: String] = [:]
            for line in LogicalLine.read(content, path: name) {
                switch ConfigFile.splitNameValue(line.text) {
                case .success(let nv):
                    if let old = v[nv.name], old != nv.value {
                        Msg.warn("\(name), line \(line.firstLine): overriding earlier entry: \(nv.name)=\(old)")
                    }
                    v[nv.name] = nv.value
                case .failure(let e):
                    throw DictOpenError("\(name), line \(line.firstLine): \(e): \"\(line.string)\"")
                }
            }
            values = v
            prefix = nil
        } else {
            values = [:]
            prefix = name
        }
    }

    func raw(_ param: String) -> String? {
        if let p = prefix {
            let full = "\(p)_\(param)"
            return config.isSet(full) ? config.expand(config.rawValue(full) ?? "") : nil
        }
        return values[param]
    }

    func string(_ param: String, default def: String, min: Int = 0) throws(DictOpenError) -> String {
        let v = raw(param) ?? def
        if v.utf8.count < min {
            let shown = prefix.map { "\($0)_\(param)" } ?? param
            throw DictOpenError((prefix == nil ? "\(name): " : "") + "bad string length \(v.utf8.count) < \(min): \(shown) = \(v)")
        }
        return v
    }

    func int(_ param: String, default def: Int) throws(DictOpenError) -> Int {
        guard let v = raw(param) else { return def }
        guard let n = ConfigValue.parseInt(v) else {
            let shown = prefix.map { "\($0)_\(param)" } ?? param
            throw DictOpenError((prefix == nil ? "\(name): " : "") + "bad numerical configuration: \(shown) = \(v)")
        }
        return n
    }
}

/// Query and result templates (Postfix's db_common).
struct SQLTemplate {
    var needsLocal = false
    var needsDomain = false
    var domainLabels = 0

    static func validate(_ t: String, result: Bool, name: String) throws(DictOpenError) -> SQLTemplate {
        var info = SQLTemplate()
        let b = Array(t.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%") {
                guard i + 1 < b.count else {
                    throw DictOpenError("db_common_parse: \(name): Invalid \(result ? "result" : "query") template: \(t)")
                }
                let c = b[i + 1]
                switch c {
                case UInt8(ascii: "%"), UInt8(ascii: "s"), UInt8(ascii: "S"): break
                case UInt8(ascii: "u"):
                    if !result { info.needsLocal = true }
                case UInt8(ascii: "U"): info.needsLocal = true
                case UInt8(ascii: "d"):
                    if !result { info.needsDomain = true }
                case UInt8(ascii: "D"): info.needsDomain = true
                case UInt8(ascii: "1")...UInt8(ascii: "9") where !result:
                    info.needsDomain = true
                    info.domainLabels = max(info.domainLabels, Int(c - 0x30))
                default:
                    throw DictOpenError("db_common_parse: \(name): Invalid \(result ? "result" : "query") template: \(t)")
                }
                i += 2
            } else {
                i += 1
            }
        }
        return info
    }

    static func split(_ s: String) -> (local: String?, domain: String?) {
        guard let at = s.lastIndex(of: "@") else { return (s, nil) }
        return (String(s[..<at]), String(s[s.index(after: at)...]))
    }

    /// Expands a template; nil when a needed part is missing (the query is not made or
    /// the value is skipped). `quote` escapes inserted text.
    static func expand(_ t: String, value: String, key: String, result: Bool, quote: (String) -> String?) -> String? {
        let (vl, vd) = split(value)
        let (kl, kd) = split(key)
        var out = ""
        var b = Substring(t)
        while let pct = b.firstIndex(of: "%") {
            out += b[..<pct]
            let c = b[b.index(after: pct)]
            b = b[b.index(pct, offsetBy: 2)...]
            var piece: String?
            switch c {
            case "%":
                out += "%"
                continue
            case "s": piece = value
            case "u": piece = (vl?.isEmpty ?? true) ? nil : vl
            case "d": piece = (vd?.isEmpty ?? true) ? nil : vd
            case "S": piece = key
            case "U": piece = (kl?.isEmpty ?? true) ? nil : kl
            case "D": piece = (kd?.isEmpty ?? true) ? nil : kd
            default:
                guard let n = c.wholeNumberValue, let d = vd else { return nil }
                let labels = d.split(separator: ".").map(String.init)
                guard n <= labels.count else { return nil }
                piece = labels[labels.count - n]
            }
            guard let p = piece else { return nil }
            guard let q = quote(p) else { return nil }
            out += q
        }
        out += b
        return out
    }
}

/// What sqlite: and pgsql: share: settings, key checks, result formatting.
class SQLDict: Dict {
    let cfg: CfgParser
    let query: String
    let queryInfo: SQLTemplate
    let resultFormat: String
    let resultInfo: SQLTemplate
    let expansionLimit: Int
    let domain: MatchList?

    init(type: String, name: String, flags: DictFlags, config: MailConfig, legacy: (CfgParser) throws(DictOpenError) -> String?) throws(DictOpenError) {
        let cfg = try CfgParser(name, config: config)
        self.cfg = cfg
        var q = try cfg.string("query", default: "")
        if q.isEmpty {
            if let l = try legacy(cfg) {
                q = l
            } else {
                let table = try cfg.string("table", default: "", min: 1)
                let select = try cfg.string("select_field", default: "", min: 1)
                let whereField = try cfg.string("where_field", default: "", min: 1)
                let extra = try cfg.string("additional_conditions", default: "")
                q = "SELECT \(select) FROM \(table) WHERE \(whereField)='%s' \(extra)"
            }
        }
        query = q
        resultFormat = try cfg.string("result_format", default: "%s", min: 1)
        expansionLimit = try cfg.int("expansion_limit", default: 0)
        var qi = try SQLTemplate.validate(query, result: false, name: name)
        resultInfo = try SQLTemplate.validate(resultFormat, result: true, name: name)
        qi.needsLocal = qi.needsLocal || resultInfo.needsLocal
        qi.needsDomain = qi.needsDomain || resultInfo.needsDomain
        queryInfo = qi
        let d = try cfg.string("domain", default: "")
        domain = d.isEmpty ? nil : MatchList(name: "domain", kind: .string, options: .returnErrors, text: d)
        super.init(type: type, name: name, flags: flags.union(.fixed))
    }

    /// The key as the query sees it, or nil when no query should be made.
    func queryKey(_ key: String) throws(DictError) -> String? {
        let k = flags.contains(.foldFix) ? CaseFold.lowercaseASCII(folded(key)) : key
        let (local, dom) = SQLTemplate.split(k)
        if let list = domain {
            guard let d = dom, !d.isEmpty, let l = local, !l.isEmpty else { return nil }
            if !list.matches(d) {
                if let e = list.error { throw e }
                return nil
            }
        }
        if queryInfo.needsLocal && (local?.isEmpty ?? true) { return nil }
        if queryInfo.needsDomain {
            guard let d = dom, !d.isEmpty else { return nil }
            if d.split(separator: ".").count < queryInfo.domainLabels { return nil }
        }
        if k.hasPrefix("@") && (queryInfo.needsLocal || queryInfo.needsDomain) { return nil }
        return k
    }

    /// Formats one value into `results`; false when the expansion limit was passed.
    func add(_ value: String, key: String, to results: inout [String], function: String, limitText: String) -> Bool {
        if value.isEmpty {
            Msg.warn("table \"\(type):\(name)\": empty lookup result for: \"\(key)\" -- ignored")
            return true
        }
        guard let formatted = SQLTemplate.expand(resultFormat, value: value, key: key, result: true, quote: { $0 }) else {
            return true
        }
        results.append(formatted)
        if expansionLimit > 0 && results.count > expansionLimit {
            Msg.warn("\(function): \(name): \(limitText)")
            return false
        }
        return true
    }
}

/// sqlite:/etc/postfix/sqlite-aliases.cf
final class DictSQLite: SQLDict {
    let db: UnsafeMutableRawPointer

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags, config: MailConfig) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("sqlite:\(name) map requires O_RDONLY access mode") }
        var err = [CChar](repeating: 0, count: 512)
        if cshim_sqlite_load(&err, err.count) != 0 {
            throw DictOpenError("unsupported dictionary type: sqlite (\(String(cString: err)))")
        }
        return try DictSQLite(name: name, flags: flags, config: config)
    }

    init(name: String, flags: DictFlags, config: MailConfig) throws(DictOpenError) {
        let dbpath = try CfgParser(name, config: config).string("dbpath", default: "", min: 1)
        var handle: UnsafeMutableRawPointer?
        if cshim_sqlite_open(dbpath, &handle) != CSHIM_SQLITE_OK || handle == nil {
            let msg = handle.map { String(cString: cshim_sqlite_errmsg($0)) } ?? "out of memory"
            if let h = handle { cshim_sqlite_close(h) }
            throw DictOpenError("sqlite:\(name): Can't open database: \(msg)\n")
        }
        db = handle!
        try super.init(type: "sqlite", name: name, flags: flags, config: config) { _ throws(DictOpenError) in nil }
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        guard let k = try queryKey(key) else { return nil }
        guard let sql = SQLTemplate.expand(query, value: k, key: k, result: false, quote: { s in
            guard let q = cshim_sqlite_quote(s) else { return nil }
            defer { cshim_sqlite_free(q) }
            return String(cString: q)
        }) else { return nil }
        let function = "dict_sqlite_lookup"
        var stmt: UnsafeMutableRawPointer?
        var tail: UnsafePointer<CChar>?
        if cshim_sqlite_prepare(db, sql, &stmt, &tail) != CSHIM_SQLITE_OK {
            try brokenQuery("\(function): \(name): SQL prepare failed: \(String(cString: cshim_sqlite_errmsg(db)))\n")
        }
        if let t = tail, t.pointee != 0 {
            Msg.debug("\(function): \(name): Ignoring text at end of query: \(String(cString: t))")
        }
        var results: [String] = []
        var failure: DictError?
        while true {
            let status = cshim_sqlite_step(stmt)
            if status == CSHIM_SQLITE_DONE { break }
            if status != CSHIM_SQLITE_ROW {
                Msg.warn("\(function): \(name): SQL step failed for query '\(sql)': \(String(cString: cshim_sqlite_errmsg(db)))\n")
                failure = .retry
                break
            }
            guard let text = cshim_sqlite_column_text(stmt, 0) else { continue }
            if !add(String(cString: text), key: k, to: &results, function: function,
                    limitText: "Expansion limit exceeded for key '\(k)'") {
                failure = .retry
                break
            }
        }
        if cshim_sqlite_finalize(stmt) != CSHIM_SQLITE_OK {
            try brokenQuery("\(function): \(name): SQL finalize failed for query '\(sql)': \(String(cString: cshim_sqlite_errmsg(db)))\n")
        }
        if let f = failure { throw f }
        return results.isEmpty ? nil : results.joined(separator: ",")
    }

    /// A query the database refuses: fatal for a command (as in Postfix), a configuration
    /// error for a daemon's caller (Postfix would end the daemon).
    func brokenQuery(_ text: String) throws(DictError) -> Never {
        if !DictRegistry.allowSurrogate { Msg.fatal(text) }
        Msg.warn(text)
        throw .config
    }

    override func close() { cshim_sqlite_close(db) }
}

/// pgsql:/etc/postfix/pgsql-aliases.cf: servers tried in order (UNIX sockets first), a
/// failed server avoided for a minute.
final class DictPgSQL: SQLDict {
    struct Host {
        let text: String
        let isUnix: Bool
        var conn: UnsafeMutableRawPointer?
        var failedAt: time_t = 0
    }

    var hosts: [Host]
    let user: String
    let password: String
    let dbname: String

    static func open(_ name: String, _ mode: DictOpenMode, _ flags: DictFlags, config: MailConfig) throws(DictOpenError) -> Dict {
        if mode != .readOnly { throw DictOpenError("pgsql:\(name) map requires O_RDONLY access mode") }
        var err = [CChar](repeating: 0, count: 512)
        if cshim_pq_load(&err, err.count) != 0 {
            throw DictOpenError("unsupported dictionary type: pgsql (\(String(cString: err)))")
        }
        return try DictPgSQL(name: name, flags: flags, config: config)
    }

    init(name: String, flags: DictFlags, config: MailConfig) throws(DictOpenError) {
        let cfg = try CfgParser(name, config: config)
        var list = Tokens.split(try cfg.string("hosts", default: ""))
        if list.isEmpty { list = ["localhost"] }
        hosts = list.map { h in
            Host(text: h, isUnix: h.hasPrefix("unix:") || h.hasPrefix("/"))
        }
        hosts = hosts.filter { $0.isUnix } + hosts.filter { !$0.isUnix }
        user = try cfg.string("user", default: "")
        password = try cfg.string("password", default: "")
        dbname = try cfg.string("dbname", default: "", min: 1)
        try super.init(type: "pgsql", name: name, flags: flags, config: config) { c throws(DictOpenError) in
            let fn = try c.string("select_function", default: "")
            return fn.isEmpty ? nil : "SELECT \(fn)('%s')"
        }
    }

    /// Connects to one server; nil after a warning.
    func connect(_ h: Host) -> UnsafeMutableRawPointer? {
        let conn: UnsafeMutableRawPointer?
        if h.text.hasPrefix("postgresql://") || h.text.hasPrefix("postgres://") {
            conn = cshim_pq_connectdb(h.text)
        } else {
            var spec = h.text
            for p in ["unix:", "inet:"] where spec.hasPrefix(p) { spec.removeFirst(p.count) }
            var host = spec
            var port: String?
            if let colon = spec.lastIndex(of: ":") {
                host = String(spec[..<colon])
                port = String(spec[spec.index(after: colon)...])
            }
            conn = cshim_pq_setdblogin(host, port, dbname, user, password)
        }
        if cshim_pq_status_ok(conn) == 0 {
            Msg.warn("connect to pgsql server \(h.text): \(String(cString: cshim_pq_error_message(conn)))")
            cshim_pq_finish(conn)
            return nil
        }
        if cshim_pq_set_client_encoding(conn, "LATIN1") != 0 {
            Msg.warn("dict_pgsql: cannot set the encoding to LATIN1, skipping \(h.text)")
            cshim_pq_finish(conn)
            return nil
        }
        return conn
    }

    override func lookup(_ key: String) throws(DictError) -> String? {
        guard let k = try queryKey(key) else { return nil }
        let now = time(nil)
        // Connected servers first, then those not failed in the last minute.
        let order = hosts.indices.filter { hosts[$0].conn != nil }
            + hosts.indices.filter { hosts[$0].conn == nil && now - hosts[$0].failedAt >= 60 }
        for i in order {
            if hosts[i].conn == nil {
                guard let c = connect(hosts[i]) else {
                    hosts[i].failedAt = time(nil)
                    continue
                }
                hosts[i].conn = c
            }
            let conn = hosts[i].conn!
            var escapeFailed = false
            guard let sql = SQLTemplate.expand(query, value: k, key: k, result: false, quote: { s in
                var out = [CChar](repeating: 0, count: s.utf8.count * 2 + 1)
                if cshim_pq_escape(conn, &out, s, s.utf8.count) != 0 {
                    Msg.warn("dict pgsql: (host \(hosts[i].text)) cannot escape input string: \(String(cString: cshim_pq_error_message(conn)))")
                    escapeFailed = true
                    return nil
                }
                return String(cString: out)
            }) else {
                if escapeFailed { throw .retry }
                return nil
            }
            let res = cshim_pq_exec(conn, sql)
            defer { cshim_pq_clear(res) }
            let status = cshim_pq_result_status(res)
            switch status {
            case 2:     // PGRES_TUPLES_OK
                var results: [String] = []
                for row in 0..<cshim_pq_ntuples(res) {
                    for col in 0..<cshim_pq_nfields(res) {
                        let v = String(cString: cshim_pq_getvalue(res, row, col))
                        if !add(v, key: k, to: &results, function: "dict_pgsql_lookup",
                                limitText: "Expansion limit exceeded for key: '\(k)'") {
                            throw .retry
                        }
                    }
                }
                return results.isEmpty ? nil : results.joined(separator: ",")
            case 1, 0:  // PGRES_COMMAND_OK, PGRES_EMPTY_QUERY: no rows
                return nil
            case 7:     // PGRES_FATAL_ERROR
                Msg.warn("pgsql query failed: fatal error from host \(hosts[i].text): \(String(cString: cshim_pq_result_error_message(res)))")
                throw .retry
            case -1, 5: // no result, PGRES_BAD_RESPONSE: the connection is gone
                Msg.warn("pgsql query failed: protocol error, host \(hosts[i].text)")
                cshim_pq_finish(conn)
                hosts[i].conn = nil
                hosts[i].failedAt = time(nil)
                continue
            default:
                Msg.warn("pgsql query failed: unknown code 0x\(String(status, radix: 16)) from host \(hosts[i].text)")
                throw .retry
            }
        }
        throw .retry
    }

    override func close() {
        for h in hosts { cshim_pq_finish(h.conn) }
    }
}
