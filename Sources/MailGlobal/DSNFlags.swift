// DSNFlags: the RFC 3461 NOTIFY and RET values as Postfix stores them in queue files and
// passes them between daemons.
// Mirrors Postfix global/dsn_mask.h.

/// NOTIFY= bits (notify_flags).
public enum DSNNotify {
    public static let never = 1
    public static let success = 2
    public static let failure = 4
    public static let delay = 8
    /// What a recipient without NOTIFY gets: failures and delays.
    public static let `default` = failure | delay
    public static let any = success | failure | delay
}

/// RET= values (ret_flags).
public enum DSNRet {
    public static let full = 1
    public static let headers = 2
}
