// Postmap: postmap(1) and postalias(1): build, query, delete from and dump lookup tables.
// Mirrors Postfix postmap/postmap.c and postalias/postalias.c (3.7): the same options,
// input syntax, messages and exit statuses (0: done or found, 1: not found or failed).
//
// Beyond Postfix: a full rebuild of a hash: or btree: file writes a new file next to the
// old one and renames it into place, so readers never see a half-built table and a
// failed build leaves the old one intact; Postfix rewrites the file in place under a
// lock. Postfix's daemons notice the replacement (the old file's link count drops to 0)
// as they notice an in-place rewrite. postmap -i still updates in place under the lock.
import Glibc
import CShim
import MailUtil
import MailDict
import MailGlobal

public struct PostmapOptions {
    public var alias = false
    var dictFlags: DictFlags = [.duplicateWarn, .foldFix, .utf8Request]
    var query: String?
    var delete: String?
    var dump = false
    var incremental = false
    var asOwner = true
    var savePermissions = true
    var headerKeys = false
    var bodyKeys = false
    var mimeKeys = false
    var keepUTF8Checks = false
    var fileValues = false
    var tables: [String] = []
}

public enum Postmap {
    public static func main(_ arguments: [String], alias: Bool) -> Never {
        umask(0o022)
        openStandardDescriptors()
        let program = alias ? "postalias" : "postmap"
        MailLog.setupEarly(program: program, stderrTag: program)
        Msg.sleepBeforeFatalExit = false
        if getenv("MAIL_VERBOSE") != nil { Msg.verbose += 1 }

        var o = PostmapOptions()
        o.alias = alias
        let usage = alias
            ? "usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
            : "usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
        let spec = alias ? "Nc:d:finopq:rsuvw" : "bc:d:fFhimnNopq:rsuUvw"
        let (operands, problem) = GetOpt.parse(Array(arguments.dropFirst()), spec: spec) { c, v in
            switch c {
            case "N":
                o.dictFlags.insert(.try1Null)
                o.dictFlags.remove(.try0Null)
            case "n":
                o.dictFlags.insert(.try0Null)
                o.dictFlags.remove(.try1Null)
            case "c": setenv(MailConfig.configEnvironment, v ?? "", 1)
            case "d":
                if o.dump || o.query != nil || o.delete != nil { Msg.fatal("specify only one of -s -q or -d") }
                o.delete = v
            case "f": o.dictFlags.remove(.foldFix)
            case "F": o.fileValues = true
            case "i": o.incremental = true
            case "o": o.asOwner = false
            case "p": o.savePermissions = false
            case "q":
                if o.dump || o.query != nil || o.delete != nil { Msg.fatal("specify only one of -s -q or -d") }
                o.query = v
            case "r":
                o.dictFlags.remove([.duplicateIgnore, .duplicateWarn])
                o.dictFlags.insert(.duplicateReplace)
            case "s":
                if o.query != nil || o.delete != nil { Msg.fatal("specify only one of -s or -q or -d") }
                o.dump = true
            case "u": o.dictFlags.remove(.utf8Request)
            case "U": o.keepUTF8Checks = true
            case "v": Msg.verbose += 1
            case "w":
                o.dictFlags.remove([.duplicateReplace, .duplicateWarn])
                o.dictFlags.insert(.duplicateIgnore)
            case "b": o.bodyKeys = true
            case "h": o.headerKeys = true
            case "m": o.mimeKeys = true
            default: break
            }
        }
        if let problem {
            writeAll(2, Array((GetOpt.message(problem, program: program) + "\n").utf8))
            Msg.fatal(usage)
        }
        o.tables = operands

        let config = MailConfig.load(processName: program)
        MailLog.setup(config, program: program, stderrTag: program)
        DictRegistry.utf8Enabled = config.bool("smtputf8_enable")
        DictDB.cacheSize = config.int("berkeley_db_read_buffer_size")
        MailDictSetup.registerGlobalTypes(config)
        if (o.headerKeys || o.bodyKeys || o.mimeKeys) && o.query != "-" {
            Msg.fatal("specify -b -h or -m only with \"-q -\"")
        }
        if o.mimeKeys && !o.headerKeys && !o.bodyKeys {
            Msg.warn("ignoring -m option without -b or -h")
            o.mimeKeys = false
        }
        if (o.headerKeys || o.bodyKeys) && !o.keepUTF8Checks { o.dictFlags.remove(.utf8Request) }

        let tool = PostmapTool(options: o, config: config, program: program)
        if o.dump {
            guard let first = o.tables.first else { exit(1) }
            exit(tool.dump(first))
        }
        if o.tables.isEmpty { Msg.fatal(usage) }
        if let q = o.query {
            exit(q == "-" ? tool.queryStdin() : tool.query(q))
        }
        if let d = o.delete {
            exit(d == "-" ? tool.deleteStdin() : tool.delete(d))
        }
        DictDB.cacheSize = config.int("berkeley_db_create_buffer_size")
        for t in o.tables { tool.build(t) }
        exit(0)
    }
}
