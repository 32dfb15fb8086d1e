// MailConfig: a process's view of main.cf: explicit settings, -o overrides and built-in
// defaults, with $name expansion at the time of use and typed, range-checked access.
// Mirrors Postfix global/mail_conf.c, mail_conf_{str,int,long,bool,time,nint,nbool,raw}.c
// and mail_params.c. Bad values end the process with Postfix's messages, as a daemon
// cannot go on with them; configuration is read once per process and never changes.
import Glibc
import MailUtil

public final class MailConfig {
    public static let defaultConfigDirectory = "/etc/postfix"
    /// Environment variable naming the configuration directory.
    public static let configEnvironment = "MAIL_CONFIG"

    public let configDirectory: String
    /// Settings from main.cf and -o overrides, in file order.
    public private(set) var entries: ConfigEntries
    /// basename(argv[0]) (process_name).
    public var processName: String
    /// The master.cf service this process runs as (service_name).
    public var serviceName: String = ""

    private var rawCache: [String: String] = [:]
    private var valueCache: [String: String] = [:]
    private var computing: Set<String> = []

    public init(configDirectory: String, entries: ConfigEntries, processName: String) {
        self.configDirectory = configDirectory
        self.entries = entries
        self.processName = processName
    }

    /// The configuration directory in effect: `explicit` (-c), else $MAIL_CONFIG, else
    /// /etc/postfix. The second value tells whether it was named explicitly.
    public static func configDirectory(explicit: String?) -> (path: String, named: Bool) {
        if let e = explicit { return (e, true) }
        if let env = getenv(configEnvironment) { return (String(cString: env), true) }
        return (defaultConfigDirectory, false)
    }

    /// Reads DIR/main.cf and applies overrides ("name=value" strings, as -o gives them).
    /// A named configuration directory becomes the config_directory setting, as in Postfix.
    /// A missing main.cf is fatal ("open DIR/main.cf: No such file or directory").
    public static func load(configDirectory explicit: String? = nil, overrides: [String] = [],
                            processName: String) -> MailConfig {
        let (dir, named) = configDirectory(explicit: explicit)
        let path = dir + "/main.cf"
        var entries = ConfigEntries()
        if named { entries["config_directory"] = dir }
        do {
            try ConfigFile.load(path: path, into: &entries)
        } catch {
            Msg.fatal("\(error)")
        }
        for o in overrides {
            guard let (name, value) = splitOverride(o) else {
                Msg.fatal("bad parameter override: \(o)")
            }
            entries[name] = value
        }
        return MailConfig(configDirectory: dir, entries: entries, processName: processName)
    }

    /// Splits "name=value" (white space around both trimmed).
    public static func splitOverride(_ text: String) -> (String, String)? {
        switch ConfigFile.splitNameValue(Array(text.utf8)) {
        case .success(let nv): return (nv.name, nv.value)
        case .failure: return nil
        }
    }

    /// Sets or replaces a parameter (e.g. stress=yes from master, or a daemon's own value).
    public func set(_ name: String, _ value: String) {
        entries[name] = value
        rawCache.removeAll()
        valueCache.removeAll()
    }

    // MARK: Raw values and expansion

    /// True when main.cf or an override sets `name`.
    public func isSet(_ name: String) -> Bool { entries.contains(name) }

    /// The unexpanded text of a parameter: its setting, else its default (computed ones
    /// included); nil for a name that is neither set nor built in.
    public func rawValue(_ name: String) -> String? {
        if let v = entries[name] { return v }
        if let v = rawCache[name] { return v }
        let v: String?
        switch name {
        case "process_name": v = processName
        case "process_id": v = String(getpid())
        case "service_name": v = serviceName
        case "config_directory": v = configDirectory
        default:
            guard let def = ParamTable.definition(name) else { return nil }
            v = def.defaultValue ?? computedDefault(name)
        }
        if let v { rawCache[name] = v }
        return v
    }

    private func computedDefault(_ name: String) -> String? {
        if computing.contains(name) { return nil }
        computing.insert(name)
        defer { computing.remove(name) }
        let result = Self.hostDefault(name, settings: { self.entries[$0] }, fullValue: { self.value($0) })
        switch result {
        case .success(let v): return v
        case .failure(let e): Msg.fatal(e.message)
        case nil: return nil
        }
    }

    /// Computes a host-derived default (myhostname, mydomain, mynetworks) as Postfix does:
    /// inputs set in main.cf are expanded with main.cf settings only (`settings`), while
    /// mynetworks_style's default expression sees full values (`fullValue`). Returns nil
    /// for other names.
    public static func hostDefault(_ name: String, settings: @escaping (String) -> String?,
                                   fullValue: (String) -> String?) -> Result<String, ConfigError>? {
        func fileOnly(_ n: String) -> String? {
            guard let raw = settings(n) else { return nil }
            let ex = MacroExpander(recurse: true, warn: { Msg.warn($0) }) { k, _ in settings(k) }
            return ex.expand(raw).0
        }
        switch name {
        case "myhostname":
            let host = HostDefaults.hostname()
            if !ValidHostname.isValid(host, gripe: { Msg.warn($0) }) {
                return .failure(ConfigError("unable to use my own hostname"))
            }
            return .success(host.contains(".") ? host : host + "." + (fileOnly("mydomain") ?? "localdomain"))
        case "mydomain":
            let host: String
            if let h = fileOnly("myhostname") {
                host = h
            } else {
                switch hostDefault("myhostname", settings: settings, fullValue: fullValue)! {
                case .success(let h): host = h
                case .failure(let e): return .failure(e)
                }
            }
            return .success(HostDefaults.mydomain(myhostname: host))
        case "mynetworks":
            let styleText = fileOnly("mynetworks_style") ?? fullValue("mynetworks_style") ?? "host"
            return HostDefaults.families(inetProtocols: fileOnly("inet_protocols") ?? "all").flatMap { fams in
                HostDefaults.mynetworksStyle(styleText).flatMap { style in
                    HostDefaults.interfaceAddresses(inetInterfaces: fileOnly("inet_interfaces") ?? "all", families: fams)
                        .flatMap { HostDefaults.mynetworks(style: style, addresses: $0) }
                }
            }
        default:
            return nil
        }
    }

    /// A parameter's value with $name expanded recursively; nil when undefined.
    public func value(_ name: String) -> String? {
        if let v = valueCache[name] { return v }
        guard let raw = rawValue(name) else { return nil }
        if let def = ParamTable.definition(name), def.kind == .raw { return raw }
        let v = expand(raw)
        valueCache[name] = v
        return v
    }

    /// Expands $name references in any text against this configuration; a syntax error
    /// or a loop is fatal, as in Postfix ("dictionary mail_dict: macro processing error").
    public func expand(_ text: String) -> String {
        let ex = MacroExpander(recurse: true) { [unowned self] name, _ in self.rawValue(name) }
        let (out, status) = ex.expand(text)
        if status.contains(.error) {
            Msg.fatal("dictionary mail_dict: macro processing error")
        }
        return out
    }

    // MARK: Typed access (fatal on bad values)

    /// A text parameter, expanded, with its length checked against the table's range.
    public func string(_ name: String) -> String {
        let v = value(name) ?? ""
        if let def = ParamTable.definition(name) {
            let n = v.utf8.count
            if def.min > 0 && n < def.min { Msg.fatal("bad string length \(n) < \(def.min): \(name) = \(v)") }
            if def.max > 0 && n > def.max { Msg.fatal("bad string length \(n) > \(def.max): \(name) = \(v)") }
        }
        return v
    }

    /// A list parameter split on commas and white space.
    public func list(_ name: String) -> [String] {
        Tokens.split(string(name))
    }

    public func int(_ name: String) -> Int {
        let v = value(name) ?? ""
        guard let n = ConfigValue.parseInt(v) else { Msg.fatal("bad numerical configuration: \(name) = \(v)") }
        checkRange(name, n)
        return n
    }

    public func long(_ name: String) -> Int {
        let v = value(name) ?? ""
        guard let n = ConfigValue.parseLong(v) else { Msg.fatal("bad numerical configuration: \(name) = \(v)") }
        checkRange(name, n)
        return n
    }

    public func bool(_ name: String) -> Bool {
        let v = value(name) ?? ""
        guard let b = ConfigValue.parseBool(v) else { Msg.fatal("bad boolean configuration: \(name) = \(v)") }
        return b
    }

    /// A time in seconds; a bare number takes the parameter's default unit.
    public func time(_ name: String) -> Int {
        let v = value(name) ?? ""
        var unit = UInt8(ascii: "s")
        if case .time(let u)? = ParamTable.definition(name)?.kind { unit = u }
        guard let t = ConfigValue.parseTime(v, defaultUnit: unit) else {
            Msg.fatal("parameter \(name): bad time value or unit: \(v)")
        }
        checkRange(name, t)
        return t
    }

    /// A per-transport setting "<transport><suffix>" (set, or built in as for local and
    /// smtp), falling back to `fallback`
    /// (e.g. smtp_destination_concurrency_limit, then default_destination_concurrency_limit).
    public func transportInt(_ transport: String, _ suffix: String, fallback: String) -> Int {
        let name = transport + suffix
        return rawValue(name) != nil ? int(name) : int(fallback)
    }

    public func transportTime(_ transport: String, _ suffix: String, fallback: String) -> Int {
        let name = transport + suffix
        guard rawValue(name) != nil else { return time(fallback) }
        let v = value(name) ?? ""
        var unit = UInt8(ascii: "s")
        if case .time(let u)? = ParamTable.definition(fallback)?.kind { unit = u }
        guard let t = ConfigValue.parseTime(v, defaultUnit: unit) else {
            Msg.fatal("parameter \(name): bad time value or unit: \(v)")
        }
        return t
    }

    private func checkRange(_ name: String, _ n: Int) {
        guard let def = ParamTable.definition(name) else { return }
        if def.min != 0 && n < def.min { Msg.fatal("invalid \(name) parameter value \(n) < \(def.min)") }
        if def.max != 0 && n > def.max { Msg.fatal("invalid \(name) parameter value \(n) > \(def.max)") }
    }
}
