// Options: postconf's command line: options, major modes and the compatibility matrix.
// Mirrors Postfix postconf/postconf.c (pcf_incompat_options, pcf_compat_options, usage).
// Options are parsed as glibc getopt does with a leading "+": parsing stops at the first
// operand, clusters like "-nc dir" work, and errors are worded as glibc words them.
import MailUtil

/// What postconf was asked to do; the bit positions are Postfix's, which fixes nothing
/// visible but keeps the tables below easy to compare with it.
struct Mode: OptionSet {
    let rawValue: UInt32
    static let showNondef = Mode(rawValue: 1 << 0)     // -n
    static let showDefs = Mode(rawValue: 1 << 1)       // -d
    static let hideName = Mode(rawValue: 1 << 2)       // -h
    static let showMaps = Mode(rawValue: 1 << 3)       // -m
    static let editConf = Mode(rawValue: 1 << 4)       // -e
    static let showLocks = Mode(rawValue: 1 << 5)      // -l
    static let showEval = Mode(rawValue: 1 << 6)       // -x
    static let saslServer = Mode(rawValue: 1 << 7)     // -a
    static let saslClient = Mode(rawValue: 1 << 8)     // -A
    static let commentOut = Mode(rawValue: 1 << 9)     // -#
    static let masterEntry = Mode(rawValue: 1 << 10)   // -M
    static let foldLine = Mode(rawValue: 1 << 11)      // -f
    static let editExclude = Mode(rawValue: 1 << 12)   // -X
    static let masterField = Mode(rawValue: 1 << 13)   // -F
    static let mainParam = Mode(rawValue: 1 << 14)     // -p
    static let expandTemplates = Mode(rawValue: 1 << 15) // -b
    static let paramClass = Mode(rawValue: 1 << 16)    // -C (never set: it selects, it is no mode)
    static let mainOverride = Mode(rawValue: 1 << 17)  // -o
    static let dumpTemplates = Mode(rawValue: 1 << 18) // -t
    static let masterParam = Mode(rawValue: 1 << 19)   // -P
    static let hideValue = Mode(rawValue: 1 << 20)     // -H
    static let showTLS = Mode(rawValue: 1 << 21)       // -T

    static let major: Mode = [.saslServer, .saslClient, .expandTemplates, .showLocks, .showMaps, .dumpTemplates,
                              .mainParam, .masterEntry, .masterField, .masterParam, .showTLS]
    static let master: Mode = [.masterEntry, .masterField, .masterParam]
    static let edits: Mode = [.editConf, .commentOut, .editExclude]

    /// Option letters in the order Postfix names them in messages.
    static let names: [(String, Mode)] = [
        ("-a", .saslServer), ("-A", .saslClient), ("-b", .expandTemplates), ("-C", .paramClass),
        ("-d", .showDefs), ("-e", .editConf), ("-f", .foldLine), ("-F", .masterField), ("-h", .hideName),
        ("-H", .hideValue), ("-l", .showLocks), ("-m", .showMaps), ("-M", .masterEntry), ("-n", .showNondef),
        ("-o", .mainOverride), ("-p", .mainParam), ("-P", .masterParam), ("-t", .dumpTemplates),
        ("-T", .showTLS), ("-x", .showEval), ("-X", .editExclude), ("-#", .commentOut),
    ]

    func names() -> String {
        Mode.names.filter { contains($0.1) }.map(\.0).joined(separator: " ")
    }

    /// Groups of options of which at most one may be given.
    static let exclusive: [Mode] = [
        major,
        [.showDefs, .editConf, .showNondef, .commentOut, .editExclude],
        [.foldLine, .editConf, .commentOut, .editExclude],
        [.showEval, .editConf, .commentOut, .editExclude],
        [.mainOverride, .showDefs, .editConf, .commentOut, .editExclude],
        [.hideName, .editConf, .commentOut, .editExclude, .hideValue],
    ]

    /// Each major mode and the options it may be combined with.
    static let compatible: [(Mode, Mode)] = [
        (.saslServer, []), (.saslClient, []), (.expandTemplates, []), (.showLocks, []), (.showMaps, []),
        (.showTLS, []), (.dumpTemplates, []),
        (.mainParam, [.editConf, .editExclude, .commentOut, .foldLine, .hideName, .paramClass, .showEval,
                      .showDefs, .showNondef, .mainOverride, .hideValue]),
        (.masterEntry, [.editConf, .editExclude, .commentOut, .foldLine, .mainOverride, .showEval]),
        (.masterField, [.editConf, .foldLine, .hideName, .mainOverride, .showEval, .hideValue]),
        (.masterParam, [.editConf, .editExclude, .foldLine, .hideName, .mainOverride, .showEval, .hideValue]),
        (.paramClass, [.mainParam, .showDefs, .showNondef]),
    ]

    /// Fatal when the options conflict, with Postfix's messages.
    func checkConflicts() {
        for group in Mode.exclusive {
            let both = intersection(group)
            if both.rawValue.nonzeroBitCount > 1 {
                Msg.fatal("specify one of \(both.names())")
            }
        }
        for (key, allowed) in Mode.compatible where contains(key) {
            let excess = subtracting(key).subtracting(allowed)
            if !excess.isEmpty {
                Msg.fatal("with option \(key.names()), do not specify \(excess.names())")
            }
        }
    }
}

/// The parsed command line.
struct CommandLine {
    var mode: Mode = []
    var configDirectory: String?
    var classes: String?
    var overrides: [String] = []
    var tlsMode: String?
    var verbose = 0
    var operands: [String] = []
}

enum OptionParser {
    static let spec = "aAbc:C:deEfFhHlmMno:pPtT:vxX#"

    static func usage(_ argv0: String) -> Never {
        Msg.fatal("usage: \(argv0) [-a (server SASL types)] [-A (client SASL types)] [-b (bounce templates)] [-c config_dir] [-c param_class] [-d (parameter defaults)] [-e (edit configuration)] [-f (fold lines)] [-F (master.cf fields)] [-h (no names)] [-H (no values)] [-l (lock types)] [-m (map types)] [-M (master.cf)] [-n (non-default parameters)] [-o name=value (override parameter value)] [-p (main.cf, default)] [-P (master.cf parameters)] [-t (bounce templates)] [-T compile-version|run-version|public-key-algorithms] [-v (verbose)] [-x (expand parameter values)] [-X (exclude)] [-# (comment-out)] [name...]")
    }

    /// Parses arguments (without argv[0]) as glibc getopt("+...") does.
    static func parse(_ args: [String], argv0: String) -> CommandLine {
        var cl = CommandLine()
        let (operands, problem) = GetOpt.parse(args, spec: spec) { c, value in
            let letter = String(c)
            switch letter {
            case "a": cl.mode.insert(.saslServer)
            case "A": cl.mode.insert(.saslClient)
            case "b":
                if cl.mode.contains(.expandTemplates) || cl.mode.contains(.dumpTemplates) {
                    Msg.fatal("specify one of -b and -t")
                }
                cl.mode.insert(.expandTemplates)
            case "c": cl.configDirectory = value
            case "C": cl.classes = value
            case "d": cl.mode.insert(.showDefs)
            case "e": cl.mode.insert(.editConf)
            case "f": cl.mode.insert(.foldLine)
            case "F": cl.mode.insert(.masterField)
            case "#": cl.mode.insert(.commentOut)
            case "h": cl.mode.insert(.hideName)
            case "H": cl.mode.insert(.hideValue)
            case "l": cl.mode.insert(.showLocks)
            case "m": cl.mode.insert(.showMaps)
            case "M": cl.mode.insert(.masterEntry)
            case "n": cl.mode.insert(.showNondef)
            case "o":
                cl.mode.insert(.mainOverride)
                cl.overrides.append(value!)
            case "p": cl.mode.insert(.mainParam)
            case "P": cl.mode.insert(.masterParam)
            case "t":
                if cl.mode.contains(.expandTemplates) || cl.mode.contains(.dumpTemplates) {
                    Msg.fatal("specify one of -b and -t")
                }
                cl.mode.insert(.dumpTemplates)
            case "T":
                if cl.mode.contains(.showTLS) { Msg.fatal("At most one -T <mode> option may be specified") }
                cl.mode.insert(.showTLS)
                cl.tlsMode = value
            case "x": cl.mode.insert(.showEval)
            case "X": cl.mode.insert(.editExclude)
            case "v": cl.verbose += 1
            default: usage(argv0)      // "-E": in the option string, but not an option
            }
        }
        if let problem {
            writeStderr(GetOpt.message(problem, program: argv0) + "\n")
            usage(argv0)
        }
        cl.operands = operands
        return cl
    }
}

/// Names in byte order (as Postfix sorts them with strcmp), each key converted once.
func byteOrder<S: Sequence>(_ names: S) -> [String] where S.Element == String {
    names.map { (Array($0.utf8), $0) }.sorted { $0.0.lexicographicallyPrecedes($1.0) }.map { $0.1 }
}

/// Writes text to standard error in one write(2).
func writeStderr(_ text: String) {
    let b = Array(text.utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

import Glibc
