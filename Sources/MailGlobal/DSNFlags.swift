// DSNFlags: the RFC 3461 NOTIFY and RET values as Postfix stores them in queue files and
// passes them between daemons.
// Mirrors Postfix global/dsn_mask.h.

import MailUtil

/// NOTIFY= bits (notify_flags).
public enum DSNNotify {
    public static let never = 1
    public static let success = 2
    public static let failure = 4
    public static let delay = 8
    /// What a recipient without NOTIFY gets: failures and delays.
    public static let `default` = failure | delay
    public static let any = success | failure | delay

    /// dsn_notify_mask(): NEVER, SUCCESS, FAILURE, DELAY in any case, separated by commas
    /// or white space; NEVER stands alone. nil when the value is bad.
    public static func mask(_ v: String) -> Int? {
        var mask = 0
        for word in Tokens.split(v) {
            switch word.uppercased() {
            case "NEVER": mask |= never
            case "SUCCESS": mask |= success
            case "FAILURE": mask |= failure
            case "DELAY": mask |= delay
            default:
                Msg.warn("unknown DSN NOTIFY command value \"\(word)\" in \"\(v)\"")
                return nil
            }
        }
        if mask & never != 0 && mask & ~never != 0 { return nil }
        return mask
    }
}

extension DSNNotify {
    /// dsn_notify_str(): the names of the bits, comma-separated, in Postfix's order.
    public static func text(_ mask: Int) -> String {
        [(never, "NEVER"), (success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
            .filter { mask & $0.0 != 0 }.map(\.1).joined(separator: ",")
    }
}

/// RET= values (ret_flags).
public enum DSNRet {
    public static let full = 1
    public static let headers = 2
}
