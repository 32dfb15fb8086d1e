// ServerOptions: the command line every daemon receives from master.
// Mirrors the getopt loop shared by Postfix master/single_server.c ("+cdDi:lm:n:o:r:s:St:uvVz"),
// multi_server.c, trigger_server.c, event_server.c ("+cdDi:lm:n:o:s:St:uvVz") and
// dgram_server.c ("+cdDi:lm:n:o:s:t:uvVz"). Errors are reported as Postfix reports them
// ("invalid option: x"): getopt itself stays silent.
import MailUtil
import MailGlobal

/// The server skeletons; they differ in the options and transports they accept.
public enum ServerKind: Sendable {
    case single, multi, trigger, event, dgram

    /// Option letters; a following ":" means the option takes a value.
    var optionString: String {
        switch self {
        case .single: return "cdDi:lm:n:o:r:s:St:uvVz"
        case .multi, .trigger, .event: return "cdDi:lm:n:o:s:St:uvVz"
        case .dgram: return "cdDi:lm:n:o:s:t:uvVz"
        }
    }

    /// Transport types the skeleton can serve (compared without regard to case).
    var transports: [String] {
        switch self {
        case .single, .multi, .event: return ["inet", "unix", "pass"]
        case .trigger: return ["inet", "unix", "fifo", "pass"]
        case .dgram: return ["unix-dgram"]
        }
    }
}

public struct ServerOptions {
    /// -c: chroot to the queue directory.
    public var chroot = false
    /// -d: not started as a daemon (skips the "by hand" check).
    public var foreground = false
    /// -D: run under the debugger.
    public var debugger = false
    /// -l: the service has a process limit of 1.
    public var solitary = false
    /// -n: the master.cf service name (default: the program name).
    public var serviceName: String?
    /// -o name=value, -i (max_idle) and -m (max_use): main.cf overrides, in order.
    public var overrides: [(name: String, value: String)] = []
    /// -s: number of listen descriptors from fd 6 on.
    public var socketCount = 1
    /// -S: stand-alone: serve one client on standard input and output.
    public var standalone = false
    /// -t: transport type (inet, unix, fifo, pass, unix-dgram).
    public var transport: String?
    /// -u: drop privileges to mail_owner.
    public var unprivileged = false
    /// -v: more verbose logging.
    public var verbose = 0
    /// -V: also log to standard error.
    public var logToStderr = false
    /// -z: the service has no process limit.
    public var unlimited = false
    /// -r: retire after this many seconds (single server only).
    public var retire: Int?
    /// Arguments after the options, for the daemon itself.
    public var operands: [String] = []

    /// Parses daemon arguments (argv[1...]) as getopt with a leading "+" does, stopping
    /// at the first non-option. Errors are fatal with Postfix's texts.
    public static func parse(_ args: [String], kind: ServerKind) -> ServerOptions {
        var o = ServerOptions()
        let (operands, problem) = GetOpt.parse(args, spec: kind.optionString) { c, v in
            let value = v ?? ""
            switch c {
            case "c": o.chroot = true
            case "d": o.foreground = true
            case "D": o.debugger = true
            case "i": o.overrides.append(("max_idle", value))
            case "l": o.solitary = true
            case "m": o.overrides.append(("max_use", value))
            case "n": o.serviceName = value
            case "o":
                switch ConfigFile.splitNameValue(Array(value.utf8)) {
                case .success(let nv): o.overrides.append((nv.name, nv.value))
                case .failure(let e): Msg.fatal("invalid \"-o \(value)\" option value: \(e)")
                }
            case "r":
                guard let n = atoi(value), n > 0 else { Msg.fatal("invalid retirement time: \(value)") }
                o.retire = n
            case "s":
                guard let n = atoi(value), n > 0 else { Msg.fatal("invalid socket_count: \(value)") }
                o.socketCount = n
            case "S": o.standalone = true
            case "t": o.transport = value
            case "u": o.unprivileged = true
            case "v": o.verbose += 1
            case "V": o.logToStderr = true
            case "z": o.unlimited = true
            default: Msg.fatal("invalid option: \(c)")
            }
        }
        switch problem {
        case .unknown(let c)?, .missingArgument(let c)?: Msg.fatal("invalid option: \(c)")
        case nil: break
        }
        o.operands = operands
        return o
    }

    /// C atoi: optional sign and leading digits; nil when there are none.
    static func atoi(_ s: String) -> Int? {
        var t = Substring(s.drop { $0 == " " || $0 == "\t" })
        var sign = 1
        if t.first == "-" || t.first == "+" {
            if t.first == "-" { sign = -1 }
            t = t.dropFirst()
        }
        let digits = t.prefix { $0.isASCII && $0.isNumber }
        guard let n = Int(digits.prefix(18)) else { return digits.isEmpty ? 0 : nil }
        return sign * n
    }
}
