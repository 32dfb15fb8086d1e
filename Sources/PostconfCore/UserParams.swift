// UserParams: which parameter names that postconf does not know are still "used".
// Mirrors Postfix postconf/postconf_user.c and postconf_dbms.c: a name set in main.cf or a
// master.cf -o option is valid when some value refers to it as $name, when it names a
// restriction class, or when it is a setting of a database client table (ldap:name,
// pgsql:name, ...). Values are visited in Postfix's dictionary order, so warnings come out
// in the same order.
import Glibc
import MailUtil
import MailGlobal

extension PostconfState {
    /// Suffixes of the settings each database client table reads from "<name>_<suffix>".
    static let dbmsSuffixes: [String: [String]] = [
        "ldap": ["bind", "bind_dn", "bind_pw", "cache", "cache_expiry", "cache_size", "chase_referrals",
                 "debuglevel", "dereference", "domain", "expansion_limit", "leaf_result_attribute",
                 "query_filter", "recursion_limit", "result_attribute", "result_filter", "result_format",
                 "sasl_authz_id", "sasl_mechs", "sasl_minssf", "sasl_realm", "scope", "search_base",
                 "server_host", "server_port", "size_limit", "special_result_attribute", "start_tls",
                 "terminal_result_attribute", "timeout", "tls_ca_cert_dir", "tls_ca_cert_file", "tls_cert",
                 "tls_cipher_suite", "tls_key", "tls_random_file", "tls_require_cert", "version"],
        "mysql": ["additional_conditions", "dbname", "domain", "expansion_limit", "hosts", "option_file",
                  "option_group", "password", "query", "require_result_set", "result_format", "select_field",
                  "table", "tls_CAfile", "tls_CApath", "tls_cert_file", "tls_ciphers", "tls_key_file",
                  "tls_verify_cert", "user", "where_field"],
        "pgsql": ["additional_conditions", "dbname", "domain", "expansion_limit", "hosts", "password", "query",
                  "result_format", "select_field", "select_function", "table", "user", "where_field"],
        "sqlite": ["additional_conditions", "dbpath", "domain", "expansion_limit", "query", "result_format",
                   "select_field", "table", "where_field"],
        "memcache": ["backup", "data_size_limit", "domain", "flags", "key_format", "line_size_limit", "max_try",
                     "memcache", "retry_pause", "timeout", "ttl"],
    ]

    /// Registers user-defined names and warns about undefined references
    /// (pcf_register_user_parameters).
    func registerUserParameters() {
        for entry in master {
            if let box = entry.params, !box.dict.isEmpty {
                scan(box, local: entry)
            }
        }
        for def in ParamTable.all {
            guard let node = nodes[def.name], !node.raw, main[def.name] == nil,
                  let v = defaultValue(def.name, node) else { continue }
            for name in MacroExpander.names(in: v) { flag(name, local: nil, dbms: false) }
        }
        let mainBox = ParamsBox()
        mainBox.dict = main
        scan(mainBox, local: nil)
        main = mainBox.dict
    }

    /// pcf_register_user_parameters for one dictionary: main.cf (local == nil) or one
    /// master.cf entry's -o settings.
    private func scan(_ box: ParamsBox, local: MasterEntry?) {
        let source = local == nil ? "main.cf" : "master.cf"
        if let classes = (local == nil ? main["smtpd_restriction_classes"] : box.dict["smtpd_restriction_classes"]) {
            let dict = local == nil ? main : box.dict
            let ex = MacroExpander(recurse: true) { name, _ in dict[name] }
            for name in Tokens.split(ex.expand(classes).0) {
                if local == nil { restrictionClasses.insert(name) }
                flag(name, local: local, dbms: false)
            }
        }
        for name in box.dict.keys {
            guard let value = box.dict[name] else { continue }
            if let entry = local, restrictionClasses.contains(name) {
                entry.validNames.insert(name)
            }
            // Database client settings are looked for only in the values of built-in and
            // service parameters, as Postfix 3.7 does.
            var tableValued = false
            if let node = nodes[name] {
                tableValued = !node.classes.isDisjoint(with: [.builtin, .service])
                if node.readOnly {
                    Msg.warn("\(configDirectory)/\(source): read-only parameter assignment: \(name)=\(value)")
                    box.dict[name] = nil
                    if local == nil { main[name] = nil }
                    continue
                }
                if node.legacy { node.classes = .user }
                if node.raw { continue }
            }
            for ref in MacroExpander.names(in: value) { flag(ref, local: local, dbms: false) }
            if tableValued { scanDatabaseTables(value, local: local) }
        }
    }

    /// pcf_flag_user_parameter: `name` is referenced; make it valid where it is defined.
    private func flag(_ name: String, local: MasterEntry?, dbms: Bool) {
        var supplied = false
        if let entry = local, entry.params?.dict[name] != nil {
            supplied = true
            entry.validNames.insert(name)
        } else if main[name] != nil {
            supplied = true
            registerUserParameter(name)
        }
        if local == nil {
            for entry in master where entry.params?.dict[name] != nil {
                supplied = true
                entry.validNames.insert(name)
            }
        }
        if !supplied && !dbms && nodes[name] == nil {
            Msg.warn("\(configDirectory)/\(local == nil ? "main.cf" : "master.cf"): undefined parameter: \(name)")
        }
    }

    /// pcf_register_dbms_parameters: finds database client tables ("ldap:name",
    /// "proxy:pgsql:/file.cf", "pipemap:{...}") in an expanded value.
    private func scanDatabaseTables(_ value: String, local: MasterEntry?) {
        let expanded = expand(value, mode: mode.intersection(.showDefs), entry: local)
        scanTableWords(expanded, local: local)
    }

    private func scanTableWords(_ text: String, local: MasterEntry?) {
        for word in Tokens.splitQuoted(text, separators: listSeparators) {
            if word.hasPrefix("{") {
                scanTableWords(braceContents(word, local: local), local: local)
                continue
            }
            guard var colon = word.firstIndex(of: ":") else { continue }
            var type = String(word[..<colon])
            var rest = String(word[word.index(after: colon)...])
            while type == "proxy", let c = rest.firstIndex(of: ":") {
                colon = c
                type = String(rest[..<c])
                rest = String(rest[rest.index(after: c)...])
            }
            if rest.hasPrefix("/") {
                if PostconfState.dbmsSuffixes[type] != nil { checkClientFile(type: type, path: rest) }
            } else if rest.hasPrefix(".") {
                continue
            } else if rest.hasPrefix("{") {
                scanTableWords(braceContents(rest, local: local), local: local)
            } else if let suffixes = PostconfState.dbmsSuffixes[type] {
                for s in suffixes { flag(rest + "_" + s, local: local, dbms: true) }
            }
        }
    }

    private func braceContents(_ word: String, local: MasterEntry?) -> String {
        let (inner, err) = Tokens.extractBraced(word, strip: false)
        if let err {
            Msg.warn(local.map { "master.cf:\($0.nameSpace): \(err)" } ?? "main.cf: \(err)")
        }
        return inner
    }

    /// Reads a database client configuration file once and warns about settings the
    /// client would not use.
    private func checkClientFile(type: String, path: String) {
        let key = type + ":" + path
        guard checkedClientFiles.insert(key).inserted else { return }
        var st = stat()
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno != EACCES {
                Msg.warn("open \"\(type)\" configuration \"\(path)\": \(errnoText(errno))")
            }
            return
        }
        defer { close(fd) }
        if fstat(fd, &st) < 0 || st.st_mode & S_IFMT != S_IFREG {
            Msg.warn("open \"\(type)\" configuration \"\(path)\": not a regular file")
            return
        }
        guard let content = try? SafeFile.readAll(fd: fd, path: path) else { return }
        var dict = HashedDict()
        for (name, value, _) in ConfigFile.parsePairs(content, path: path) { dict[name] = value }
        for s in PostconfState.dbmsSuffixes[type] ?? [] { dict[s] = nil }
        for name in dict.keys {
            Msg.warn("\(key): unused parameter: \(name)=\(dict[name]!)")
        }
    }
}
