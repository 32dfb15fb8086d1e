// ParamTable: the built-in parameters: name, default expression, type and range.
// Mirrors the CONFIG_*_TABLE declarations spread over Postfix's daemons, collected in one
// place (as postconf does). The data is in ParamTable+Data.swift, generated from facts about
// Postfix 3.7.11; Swallow's intended differences are listed in tools/gen-param-table.py.

/// How a parameter's text is interpreted.
public enum ParamKind: Sendable, Equatable {
    /// Text, $name-expanded.
    case string
    /// Text that is never $name-expanded when read (e.g. forward_path, expanded later).
    case raw
    case int
    case long
    /// yes or no.
    case bool
    /// Seconds, written with an optional unit letter; the default unit when none is given.
    case time(unit: UInt8)
    /// An int whose default is an expression ($name, ${stress?...}).
    case nint
    /// A bool whose default is an expression.
    case nbool
}

public struct ParamDef: Sendable {
    public let name: String
    public let kind: ParamKind
    /// Lowest and highest accepted value (0 = no limit); string lengths for text kinds.
    public let min: Int
    public let max: Int
    /// Read and checked by every program at start-up (Postfix's mail_params.c tables).
    public let global: Bool
    /// The default expression, nil when the default is computed at run time.
    public let defaultValue: String?
}

public enum ParamTable {
    /// Every built-in parameter, sorted by name.
    public static let all: [ParamDef] = parse(text)

    /// Lookup by name.
    public static let byName: [String: ParamDef] = {
        var d = [String: ParamDef](minimumCapacity: all.count)
        for p in all { d[p.name] = p }
        return d
    }()

    public static func definition(_ name: String) -> ParamDef? { byName[name] }

    /// Reads the tab-separated table (name, kind, unit, min, max, scope, default) with one
    /// pass over the bytes: every program does this at start-up, so it must be cheap.
    static func parse(_ text: String) -> [ParamDef] {
        var text = text
        return text.withUTF8 { buf -> [ParamDef] in
            var out: [ParamDef] = []
            out.reserveCapacity(900)
            var i = 0
            let n = buf.count
            while i < n {
                var fields: [Range<Int>] = []
                fields.reserveCapacity(7)
                var start = i
                while i < n && buf[i] != 0x0A {
                    if buf[i] == 0x09 && fields.count < 6 {
                        fields.append(start..<i)
                        start = i + 1
                    }
                    i += 1
                }
                fields.append(start..<i)
                i += 1
                if fields.count == 1 && fields[0].isEmpty { continue }
                precondition(fields.count == 7, "malformed parameter table line")
                func text(_ k: Int) -> String { String(decoding: UnsafeBufferPointer(rebasing: buf[fields[k]]), as: UTF8.self) }
                func number(_ k: Int) -> Int {
                    var v = 0, neg = false
                    for j in fields[k] {
                        if buf[j] == UInt8(ascii: "-") { neg = true } else { v = v * 10 + Int(buf[j] &- 0x30) }
                    }
                    return neg ? -v : v
                }
                let unit = fields[2].isEmpty ? UInt8(ascii: "s") : buf[fields[2].lowerBound]
                let kind: ParamKind
                switch text(1) {
                case "str": kind = .string
                case "raw": kind = .raw
                case "int": kind = .int
                case "long": kind = .long
                case "bool": kind = .bool
                case "time": kind = .time(unit: unit)
                case "nint": kind = .nint
                case "nbool": kind = .nbool
                default: preconditionFailure("unknown parameter kind in table")
                }
                var value: String? = text(6)
                switch value {
                case "@COMPUTED@": value = nil
                case "@VERSION@": value = SwallowVersion.version
                case "@RELEASE_DATE@": value = SwallowVersion.releaseDate
                default: break
                }
                out.append(ParamDef(name: text(0), kind: kind, min: number(3), max: number(4),
                                    global: text(5) == "global", defaultValue: value))
            }
            return out
        }
    }

    /// Per-transport parameters that a master.cf service adds for delivery agents
    /// ("<service><suffix>", default "$<parameter>"), as postconf registers them.
    public static let deliveryServiceSuffixes: [(suffix: String, defaultParam: String)] = [
        ("_recipient_limit", "default_recipient_limit"),
        ("_extra_recipient_limit", "default_extra_recipient_limit"),
        ("_recipient_refill_limit", "default_recipient_refill_limit"),
        ("_recipient_refill_delay", "default_recipient_refill_delay"),
        ("_delivery_slot_cost", "default_delivery_slot_cost"),
        ("_delivery_slot_loan", "default_delivery_slot_loan"),
        ("_delivery_slot_discount", "default_delivery_slot_discount"),
        ("_minimum_delivery_slots", "default_minimum_delivery_slots"),
        ("_initial_destination_concurrency", "initial_destination_concurrency"),
        ("_destination_concurrency_limit", "default_destination_concurrency_limit"),
        ("_destination_recipient_limit", "default_destination_recipient_limit"),
        ("_destination_concurrency_positive_feedback", "default_destination_concurrency_positive_feedback"),
        ("_destination_concurrency_negative_feedback", "default_destination_concurrency_negative_feedback"),
        ("_destination_concurrency_failed_cohort_limit", "default_destination_concurrency_failed_cohort_limit"),
        ("_destination_rate_delay", "default_destination_rate_delay"),
        ("_transport_rate_delay", "default_transport_rate_delay"),
    ]
    /// Added for pipe(8) and spawn(8) services.
    public static let commandServiceSuffix = (suffix: "_time_limit", defaultParam: "command_time_limit")

    /// Programs whose master.cf services get delivery parameters, and those that get only
    /// the command time limit (pipe gets both).
    public static let deliveryPrograms: Set<String> = ["local", "error", "virtual", "smtp", "lmtp", "pipe"]
    public static let commandPrograms: Set<String> = ["pipe", "spawn"]

    /// The parameters a master.cf service of `command` adds, in postconf's order.
    public static func serviceParameters(service: String, command: String) -> [(name: String, defaultParam: String)] {
        var out: [(String, String)] = []
        if commandPrograms.contains(command) {
            out.append((service + commandServiceSuffix.suffix, commandServiceSuffix.defaultParam))
        }
        if deliveryPrograms.contains(command) {
            out += deliveryServiceSuffixes.map { (service + $0.suffix, $0.defaultParam) }
        }
        return out
    }
}
