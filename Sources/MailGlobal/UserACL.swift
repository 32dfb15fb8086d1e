// UserACL: who may submit mail, list the queue or flush it (authorized_submit_users,
// authorized_mailq_users, authorized_flush_users).
// Mirrors Postfix global/user_acl.c: a "static:" list allows everyone without looking the
// user up; otherwise the login name of the uid (or "unknown" when it has none) is matched
// against the list as a string list.
import Glibc
import MailUtil

public enum UserACL {
    /// The user name that the ACL in `parameter` denies, or nil when `uid` is allowed.
    public static func denied(_ config: MailConfig, parameter: String, uid: uid_t) -> String? {
        let acl = config.string(parameter)
        if acl.hasPrefix("static:") { return nil }
        let name = getpwuid(uid).map { String(cString: $0.pointee.pw_name) } ?? "unknown"
        let list = MatchList(name: parameter, kind: .string, options: [], text: acl)
        return list.matches(name) ? nil : name
    }
}
