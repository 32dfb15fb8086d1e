// MasterCF: splitting master.cf into entries and fields.
// Mirrors the shared part of Postfix master/master_ent.c and postconf/postconf_master.c:
// logical lines as in main.cf, fields separated by white space except inside balanced
// "{...}" (braces are kept here; callers strip them where Postfix does).
import MailUtil

public struct MasterCFEntry: Sendable {
    /// Fields as written: service, type, private, unprivileged, chroot, wakeup,
    /// process_limit, command, then the command's arguments.
    public var fields: [String]
    /// The logical line (continuations joined).
    public var text: String
    /// Number of its first physical line.
    public var line: Int
}

public enum MasterCF {
    /// Column names, as postconf -F names them.
    public static let fieldNames = ["service", "type", "private", "unprivileged", "chroot", "wakeup",
                                    "process_limit", "command"]
    public static let minimumFields = 8
    public static let transportTypes: Set<String> = ["unix", "fifo", "inet", "pass", "unix-dgram"]

    /// Splits a logical line into fields; braces group words and stay in the result.
    public static func split(_ text: String) -> [String] {
        Tokens.splitQuoted(text, separators: spaceSeparators)
    }

    /// Reads every entry of a master.cf text; `path` is used in warnings.
    public static func entries(_ content: [UInt8], path: String) -> [MasterCFEntry] {
        ConfigFile.logicalLines(content, path: path).map {
            MasterCFEntry(fields: split($0.string), text: $0.string, line: $0.firstLine)
        }
    }
}
