// MasterService: a master.cf entry with every column resolved.
// Mirrors Postfix master/master_ent.c: "-" takes the column default (private y, unpriv y,
// chroot n from compatibility level 1 on, wakeup never, maxproc default_process_limit),
// the command is found in daemon_directory, "{ ... }" arguments lose their braces, and
// inet endpoints are resolved against inet_interfaces and inet_protocols.
import Glibc
import MailUtil

public enum ServiceType: String, Sendable, CaseIterable {
    case inet, unix, fifo, pass
    case unixDgram = "unix-dgram"
}

public struct MasterService: Sendable {
    public var name: String
    public var type: ServiceType
    public var isPrivate: Bool
    public var unprivileged: Bool
    public var chroot: Bool
    /// Seconds between wakeup triggers (0 = none); conditional waits for the first process.
    public var wakeup: Int
    public var wakeupConditional: Bool
    /// Process limit; 0 = unlimited.
    public var maxProcesses: Int
    /// The command as written, and its full path.
    public var command: String
    public var path: String
    /// Arguments after the command, braces stripped.
    public var arguments: [String]
    public var line: Int
    /// inet: the addresses to listen on.
    public var inetAddresses: [SocketAddress] = []
    /// Other types: the endpoint relative to the queue directory ("private/smtp").
    public var endpoint: String = ""
    /// Postfix's internal name, the identity across reloads: the endpoint path, or
    /// "port" / "[addr]:port" for inet.
    public var identity: String = ""
    /// All endpoints are on this host (no stress mode).
    public var localOnly: Bool = true
    /// inet: the port; nil when the service name is not known (an error at listen time).
    public var port: UInt16?

    /// "-n name" is passed when the service name differs from the program name.
    public var programName: String { basename(of: command) }
}

public enum MasterConfig {
    /// Reads master.cf and resolves every enabled entry, as Postfix's master does: the
    /// first error is fatal, naming the file and line. `startupInterfaces` is the
    /// inet_interfaces value master started with; a different current value is ignored
    /// with a warning per inet service (sockets cannot move without a restart).
    public static func load(_ config: MailConfig, startupInterfaces: String? = nil) -> [MasterService] {
        let path = config.configDirectory + "/master.cf"
        let content: [UInt8]
        do {
            content = try SafeFile.read(path)
        } catch let e as SystemError {
            Msg.fatal("open \(path): \(e.reason)")
        } catch {
            Msg.fatal("open \(path): \(error)")
        }
        var disable = config.string("master_service_disable")
        let families: [Int32]
        switch HostDefaults.families(inetProtocols: config.string("inet_protocols")) {
        case .success(let f): families = f
        case .failure(let e): Msg.fatal(e.message)
        }
        if families.isEmpty {
            Msg.warn("all network protocols are disabled (inet_protocols = \(config.string("inet_protocols")))")
            Msg.warn("disabling all type \"inet\" services in master.cf")
            disable += " inet"
        }
        let context = Context(config: config, path: path, families: families,
                              interfaces: startupInterfaces ?? config.string("inet_interfaces"),
                              interfacesChanged: startupInterfaces.map { $0 != config.string("inet_interfaces") } ?? false)
        var out: [MasterService] = []
        var seen: [String: Int] = [:]
        for entry in MasterCF.entries(content, path: path) {
            let svc: MasterService?
            switch resolve(entry, context, disable: disable) {
            case .failure(let e): Msg.fatal(e.message)
            case .success(let s): svc = s
            }
            guard let svc else { continue }
            let key = svc.identity + "/" + svc.type.rawValue
            if let i = seen[key] {
                Msg.warn("duplicate master.cf entry for service \"\(svc.name)\" (\(svc.identity)) -- using the last entry")
                out[i] = svc
            } else {
                seen[key] = out.count
                out.append(svc)
            }
        }
        return out
    }

    /// What resolving an entry needs besides the entry.
    public struct Context {
        public var config: MailConfig
        public var path: String
        public var families: [Int32]
        public var interfaces: String
        public var interfacesChanged: Bool

        public init(config: MailConfig, path: String, families: [Int32], interfaces: String, interfacesChanged: Bool = false) {
            self.config = config
            self.path = path
            self.families = families
            self.interfaces = interfaces
            self.interfacesChanged = interfacesChanged
        }
    }

    /// master_service_disable: "type" or "name/type" patterns, without regard to case;
    /// the first match decides and "!pattern" keeps the service.
    static func isDisabled(name: String, type: String, patterns: String) -> Bool {
        let full = "\(name)/\(type)".lowercased()
        let type = type.lowercased()
        for p in Tokens.split(patterns) {
            var pat = p.lowercased()
            let negate = pat.hasPrefix("!")
            if negate { pat.removeFirst() }
            if pat == type || pat == full { return !negate }
        }
        return false
    }

    /// Resolves one entry, checking fields in Postfix's order; nil when it is disabled.
    public static func resolve(_ e: MasterCFEntry, _ ctx: Context, disable: String = "") -> Result<MasterService?, ConfigError> {
        func bad(_ text: String) -> Result<MasterService?, ConfigError> {
            .failure(ConfigError("\(ctx.path): line \(e.line): \(text)"))
        }
        var fields = e.fields[...]
        let name = fields.removeFirst()
        enum FieldError: Error { case missing(String), noDefault(String), badValue(String, String) }
        func text(_ field: String, _ def: String?) throws -> String {
            guard let v = fields.popFirst() else { throw FieldError.missing(field) }
            if v != "-" { return v }
            guard let def else { throw FieldError.noDefault(field) }
            return def
        }
        func flag(_ field: String, _ def: String) throws -> Bool {
            let v = try text(field, def)
            if v == "y" { return true }
            if v == "n" { return false }
            throw FieldError.badValue(field, v)
        }
        func number(_ field: String, _ def: String) throws -> (Int, String) {
            let v = try text(field, def)
            // Postfix: the first character must be a digit, then atoi().
            guard let c = v.utf8.first, c >= 0x30 && c <= 0x39 else { throw FieldError.badValue(field, v) }
            let digits = v.utf8.prefix { $0 >= 0x30 && $0 <= 0x39 }
            return (Int(String(decoding: digits.prefix(9), as: UTF8.self)) ?? 0, v)
        }
        do {
            let transport = try text("transport type", nil)
            if isDisabled(name: name, type: transport, patterns: disable) { return .success(nil) }
            guard let type = ServiceType(rawValue: transport) else { return bad("bad transport type: \(transport)") }
            var svc = MasterService(name: name, type: type, isPrivate: false, unprivileged: true, chroot: false,
                                    wakeup: 0, wakeupConditional: false, maxProcesses: 0,
                                    command: "", path: "", arguments: [], line: e.line)
            if type == .inet {
                if ctx.interfacesChanged {
                    Msg.warn("service \(name): ignoring inet_interfaces change")
                    Msg.warn("to change inet_interfaces, stop and start Postfix")
                }
                switch inetEndpoints(name, ctx) {
                case .failure(let err): return bad(err.message)
                case .success(let r):
                    svc.inetAddresses = r.addresses
                    svc.identity = r.identity
                    svc.port = r.port
                }
                svc.localOnly = svc.inetAddresses.allSatisfy { $0.isLoopback }
            }
            svc.isPrivate = try flag("private", "y")
            if type == .inet {
                if svc.isPrivate { return bad("inet service cannot be private") }
                if svc.inetAddresses.isEmpty { return bad("no valid IP address found: \(name)") }
            } else {
                svc.endpoint = (svc.isPrivate ? MailClass.private : MailClass.public) + "/" + name
                svc.identity = svc.endpoint
                // A pass service hands over connections from remote clients.
                svc.localOnly = type != .pass
            }
            svc.unprivileged = try flag("unprivileged", "y")
            let compat = CompatLevel.parse(ctx.config.string("compatibility_level"), warn: { _ in }) ?? CompatLevel(major: 0)
            if compat < CompatLevel(major: 1) && fields.first == "-" {
                Msg.info("\(ctx.path): line \(e.line): using backwards-compatible default setting chroot=y")
            }
            svc.chroot = try flag("chroot", compat < CompatLevel(major: 1) ? "y" : "n")
            let (wakeup, wakeText) = try number("wakeup_time", "0")
            svc.wakeup = wakeup
            svc.wakeupConditional = wakeup > 0 && wakeText.hasSuffix("?")
            svc.maxProcesses = try number("max_proc", String(ctx.config.int("default_process_limit"))).0
            svc.command = try text("command", nil)
            svc.path = ctx.config.string("daemon_directory") + "/" + svc.command
            for a in fields {
                if a.hasPrefix("{") {
                    let (inner, err) = Tokens.extractBraced(a, strip: true)
                    if let err { return bad(err) }
                    svc.arguments.append(inner)
                } else {
                    svc.arguments.append(a)
                }
            }
            return .success(svc)
        } catch FieldError.missing(let f) {
            return bad("missing \"\(f)\" field")
        } catch FieldError.noDefault(let f) {
            return bad("field \"\(f)\" has no default value")
        } catch FieldError.badValue(let f, let v) {
            return bad("field \"\(f)\": bad value: \"\(v)\"")
        } catch {
            return bad("\(error)")
        }
    }

    /// An inet service's listen addresses, internal name ("25", "[127.0.0.1]:10025") and port
    /// (nil when the service name is unknown; master reports that when it opens the socket).
    public struct InetEndpoints {
        public var addresses: [SocketAddress]
        public var identity: String
        public var port: UInt16?
    }

    /// Parses "port", "host:port" or "[addr]:port" as Postfix's host_port() does and finds
    /// the addresses: the host's (filtered by inet_protocols), else those of inet_interfaces.
    static func inetEndpoints(_ spec: String, _ ctx: Context) -> Result<InetEndpoints, ConfigError> {
        var host = ""
        var portText: String
        if spec.hasPrefix("[") {
            guard let close = spec.firstIndex(of: "]") else { return .failure(ConfigError("missing \"]\" in \"\(spec)\"")) }
            host = String(spec[spec.index(after: spec.startIndex)..<close])
            var rest = spec[spec.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return .failure(ConfigError("garbage after \"]\" in \"\(spec)\"")) }
                rest = rest.dropFirst()
            }
            portText = String(rest)
            if host.isEmpty { return .failure(ConfigError("missing host information in \"\(spec)\"")) }
        } else if let colon = spec.lastIndex(of: ":") {
            host = String(spec[..<colon])
            portText = String(spec[spec.index(after: colon)...])
        } else {
            portText = spec
        }
        if portText.isEmpty { return .failure(ConfigError("missing service information in \"\(spec)\"")) }
        if !host.isEmpty && !ValidHostname.isValid(host, gripe: { _ in }) && SocketAddress(numeric: host, port: 0) == nil {
            return .failure(ConfigError("valid hostname or network address required in \"\(spec)\""))
        }
        let port = InetSocket.port(portText)
        var addrs: [SocketAddress] = []
        func add(_ a: SocketAddress) { if !addrs.contains(a) { addrs.append(a) } }
        if !host.isEmpty {
            if let a = SocketAddress(numeric: host, port: port ?? 0) {
                if ctx.families.contains(a.family) { add(a) }
            } else {
                for (fam, bytes) in HostDefaults.resolve(host, families: ctx.families) {
                    add(SocketAddress(family: fam, address: bytes, port: port ?? 0))
                }
            }
            if addrs.isEmpty { return .failure(ConfigError("bad hostname or network address: \(spec)")) }
            let identity = "[\(addrs[0].host)]:\(port.map { String($0) } ?? portText)"
            return .success(InetEndpoints(addresses: addrs, identity: identity, port: port))
        }
        if ctx.interfaces.lowercased() == "all" {
            for fam in ctx.families { add(SocketAddress.any(fam, port: port ?? 0)) }
        } else {
            switch HostDefaults.interfaceAddresses(inetInterfaces: ctx.interfaces, families: ctx.families) {
            case .success(let list):
                for a in list { add(SocketAddress(family: a.family, address: a.address, port: port ?? 0)) }
            case .failure(let e):
                Msg.fatal(e.message)
            }
        }
        return .success(InetEndpoints(addresses: addrs, identity: port.map { String($0) } ?? spec, port: port))
    }
}
