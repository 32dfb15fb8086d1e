// MailParams: the start-up checks every program makes of the global parameters.
// Mirrors Postfix global/mail_params.c (mail_params_init): every global parameter must
// parse as its type and lie in its range, the host and domain names must be valid, and the
// mail_owner account and setgid_group must exist, differ, and not be privileged.
import Glibc
import MailUtil

/// Account facts resolved at start-up.
public struct MailAccounts: Sendable {
    public var ownerUID: uid_t
    public var ownerGID: gid_t
    public var setgidGID: gid_t
}

public enum MailParams {
    /// Checks the global parameters of `config`; bad values are fatal, with Postfix's words.
    @discardableResult
    public static func check(_ config: MailConfig) -> MailAccounts {
        for def in ParamTable.all where def.global {
            switch def.kind {
            case .string, .raw: _ = config.string(def.name)
            case .int, .nint: _ = config.int(def.name)
            case .long: _ = config.long(def.name)
            case .bool, .nbool: _ = config.bool(def.name)
            case .time: _ = config.time(def.name)
            }
        }
        let main = "\(config.configDirectory)/main.cf"
        for name in ["myhostname", "mydomain"] {
            let v = config.string(name)
            if !ValidHostname.isValid(v, gripe: { Msg.warn($0) }) {
                Msg.fatal("file \(main): parameter \(name): bad parameter value: \(v)")
            }
        }
        let owner = config.string("mail_owner")
        guard let pw = getpwnam(owner) else {
            Msg.fatal("file \(main): parameter mail_owner: unknown user name value: \(owner)")
        }
        let ownerUID = pw.pointee.pw_uid, ownerGID = pw.pointee.pw_gid
        let group = config.string("setgid_group")
        guard let gr = getgrnam(group) else {
            Msg.fatal("file \(main): parameter setgid_group: unknown group name: \(group)")
        }
        let setgidGID = gr.pointee.gr_gid
        let singleUser = ownerUID == geteuid() && geteuid() != 0
        if !singleUser {
            if ownerUID == 0 { Msg.fatal("file \(main): parameter mail_owner: user \(owner) has privileged user ID") }
            if ownerGID == 0 { Msg.fatal("file \(main): parameter mail_owner: user \(owner) has privileged group ID") }
            if setgidGID == 0 { Msg.fatal("file \(main): parameter setgid_group: group \(group) has privileged group ID") }
            if let other = getpwuid(ownerUID), String(cString: other.pointee.pw_name) != owner {
                Msg.fatal("file \(main): parameter mail_owner: user \(owner) has same user ID as \(String(cString: other.pointee.pw_name))")
            }
            if setgidGID == ownerGID {
                Msg.fatal("file \(main): parameters mail_owner and setgid_group: user \(owner) has same group ID as \(group)")
            }
        }
        return MailAccounts(ownerUID: ownerUID, ownerGID: ownerGID, setgidGID: setgidGID)
    }
}
