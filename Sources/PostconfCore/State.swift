// State: what one postconf run knows: main.cf, master.cf, and the name space of valid
// parameters with their classes and defaults.
// Mirrors Postfix postconf/postconf_node.c, postconf_lookup.c, postconf_builtin.c,
// postconf_service.c and postconf_misc.c.
import Glibc
import MailUtil
import MailGlobal

/// Class of a parameter name, as -C selects them.
struct ParamClass: OptionSet {
    let rawValue: Int
    static let builtin = ParamClass(rawValue: 1)
    static let service = ParamClass(rawValue: 2)
    static let user = ParamClass(rawValue: 4)
    static let all: ParamClass = [.builtin, .service, .user]
}

/// One valid parameter name.
final class ParamNode {
    var classes: ParamClass
    let raw: Bool
    let readOnly: Bool
    let legacy: Bool
    /// The default expression; nil when computed (see `computedDefault`).
    let defaultExpression: String?
    var cachedDefault: String?

    init(classes: ParamClass, raw: Bool = false, readOnly: Bool = false, legacy: Bool = false, defaultExpression: String?) {
        self.classes = classes
        self.raw = raw
        self.readOnly = readOnly
        self.legacy = legacy
        self.defaultExpression = defaultExpression
    }
}

/// A master.cf entry as postconf sees it.
final class MasterEntry {
    /// Fields 1-8 then the command arguments, after option normalisation.
    var argv: [String]
    let line: Int
    /// "service/type".
    var nameSpace: String { argv[0] + "/" + argv[1] }
    /// The -o settings, shared by entries with the same service and type.
    var params: ParamsBox?
    /// Names that are valid in this entry only.
    var validNames: Set<String> = []

    init(argv: [String], line: Int) {
        self.argv = argv
        self.line = line
    }

    /// process_name and service_name as a daemon of this entry would see them.
    func readOnlyValue(_ name: String) -> String? {
        switch name {
        case "process_name": return basename(of: argv[7])
        case "service_name": return argv[0]
        default: return nil
        }
    }
}

final class ParamsBox {
    var dict = HashedDict()
}

/// Buffered standard output, flushed in 4096-byte writes, at exit, and before the
/// warnings that Postfix flushes it for.
final class Output {
    private var buf: [UInt8] = []

    func write(_ text: String) {
        buf.append(contentsOf: text.utf8)
        if buf.count >= 4096 { flush() }
    }

    func flush() {
        guard !buf.isEmpty else { return }
        buf.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(1, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    Msg.fatal("write error on standard output: \(errnoText(errno))")
                }
                off += n
            }
        }
        buf.removeAll(keepingCapacity: true)
    }
}

final class PostconfState {
    let argv0: String
    let processName: String
    var mode: Mode
    let configDirectory: String
    /// main.cf settings and -o overrides (Postfix's CONFIG_DICT).
    var main = HashedDict()
    var nodes: [String: ParamNode] = [:]
    var master: [MasterEntry] = []
    var masterRead = false
    let out = Output()
    /// Restriction class names from main.cf's smtpd_restriction_classes.
    var restrictionClasses: Set<String> = []
    /// type:path client files already checked.
    var checkedClientFiles: Set<String> = []

    /// Old names that built-in defaults still refer to (e.g. "${virtual_maps}"): known, empty,
    /// and listed only when main.cf sets them.
    static let legacyNames = ["authorized_verp_clients", "fallback_relay", "lmtp_per_record_deadline",
                              "postscreen_blacklist_action", "postscreen_dnsbl_ttl",
                              "postscreen_dnsbl_whitelist_threshold", "postscreen_whitelist_interfaces",
                              "smtp_per_record_deadline", "smtpd_client_connection_limit_exceptions",
                              "smtpd_per_record_deadline", "tlsproxy_client_level", "tlsproxy_client_policy",
                              "virtual_maps"]
    static let readOnlyNames: Set<String> = ["process_name", "process_id", "service_name"]

    init(argv0: String, mode: Mode, configDirectory: String) {
        self.argv0 = argv0
        self.processName = basename(of: argv0)
        self.mode = mode
        self.configDirectory = configDirectory
        main["config_directory"] = configDirectory
    }

    var mainPath: String { configDirectory + "/main.cf" }
    var masterPath: String { configDirectory + "/master.cf" }

    // MARK: main.cf

    /// Reads main.cf into the dictionary (pcf_read_parameters).
    func readParameters() {
        let content: [UInt8]
        do {
            content = try SafeFile.read(mainPath)
        } catch {
            Msg.fatal("\(error)")
        }
        for (name, value, line) in ConfigFile.parsePairs(content, path: mainPath) {
            if let old = main[name], old != value {
                Msg.warn("\(mainPath), line \(line): overriding earlier entry: \(name)=\(old)")
            }
            main[name] = value
        }
    }

    /// Applies -o overrides (pcf_set_parameters).
    func setParameters(_ overrides: [String]) {
        for o in overrides {
            switch ConfigFile.splitNameValue(Array(o.utf8)) {
            case .success(let nv): main[nv.name] = nv.value
            case .failure(let err): Msg.fatal("invalid parameter override: \(o): \(err)")
            }
        }
    }

    // MARK: Registration

    func registerBuiltinParameters() {
        for def in ParamTable.all {
            nodes[def.name] = ParamNode(classes: .builtin, raw: def.kind == .raw,
                                        readOnly: PostconfState.readOnlyNames.contains(def.name),
                                        defaultExpression: def.defaultValue)
        }
        for name in PostconfState.legacyNames where nodes[name] == nil {
            nodes[name] = ParamNode(classes: [], legacy: true, defaultExpression: "")
        }
    }

    func registerServiceParameters() {
        for entry in master {
            for (name, base) in ParamTable.serviceParameters(service: entry.argv[0], command: entry.argv[7]) {
                if let node = nodes[name] {
                    node.classes = .service
                } else {
                    nodes[name] = ParamNode(classes: .service, defaultExpression: "$" + base)
                }
            }
        }
    }

    /// Registers a name that main.cf defines as a valid user parameter.
    func registerUserParameter(_ name: String) {
        if nodes[name] == nil {
            nodes[name] = ParamNode(classes: .user, defaultExpression: nil)
        }
    }

    // MARK: Values

    /// The default of a node, computed once (defaults with side effects run once).
    func defaultValue(_ name: String, _ node: ParamNode) -> String? {
        if let v = node.cachedDefault { return v }
        var v: String?
        switch name {
        case "process_name": v = processName
        case "process_id": v = String(getpid())
        default:
            if let e = node.defaultExpression {
                v = e
            } else if let r = computedDefault(name) {
                v = r
            } else if node.classes.contains(.user) {
                v = main[name]
            }
        }
        node.cachedDefault = v
        return v
    }

    /// The value postconf shows for a parameter: with -d or when main.cf does not set it
    /// (and not -n) the default, else the setting; nil means "do not show".
    func lookupValue(_ mode: Mode, _ name: String, _ node: ParamNode) -> String? {
        if mode.contains(.showDefs) || (main[name] == nil && !mode.contains(.showNondef)) {
            return defaultValue(name, node)
        }
        return main[name]
    }

    /// Expands $name in a value (-x), looking names up in the master.cf entry first when
    /// given; a syntax error or loop is fatal.
    func expand(_ text: String, mode: Mode, entry: MasterEntry? = nil) -> String {
        let m = mode.subtracting(.showNondef)
        let ex = MacroExpander(recurse: true) { [unowned self] name, _ in
            if let e = entry {
                if let v = e.params?.dict[name] { return v }
                if let v = e.readOnlyValue(name) { return v }
            }
            // main.cf settings count even for names not (yet) known to be valid.
            if !m.contains(.showDefs), let v = self.main[name] { return v }
            guard let node = self.nodes[name] else { return nil }
            return self.defaultValue(name, node)
        }
        let (out, status) = ex.expand(text)
        if status.contains(.error) { Msg.fatal("macro processing error") }
        return out
    }

    /// myhostname, mydomain and mynetworks: from the host, using main.cf settings (not with
    /// -d) for the inputs, as Postfix's built-in default functions do.
    func computedDefault(_ name: String) -> String? {
        let useMain = !mode.contains(.showDefs)
        let result = MailConfig.hostDefault(name, settings: { [unowned self] n in useMain ? self.main[n] : nil },
                                            fullValue: { [unowned self] n in
            guard let node = self.nodes[n], let v = self.lookupValue(self.mode.subtracting(.showNondef), n, node) else {
                return nil
            }
            return self.expand(v, mode: self.mode)
        })
        switch result {
        case .success(let v): return v
        case .failure(let e): Msg.fatal(e.message)
        case nil: return nil
        }
    }
}
