// MailDictSetup: the table types that need mail-system knowledge (proxy:, sqlite:,
// pgsql:), registered next to the basic ones of MailDict.
// Mirrors Postfix global/mail_dict.c.
import MailUtil
import MailDict

public enum MailDictSetup {
    nonisolated(unsafe) static var done = false

    /// Registers the mail-system table types; call once the configuration is read.
    public static func registerGlobalTypes(_ config: MailConfig) {
        guard !done else { return }
        done = true
        DictRegistry.utf8Enabled = config.bool("smtputf8_enable")
        DictRegistry.register("sqlite") { n, m, f throws(DictOpenError) in try DictSQLite.open(n, m, f, config: config) }
        DictRegistry.register("pgsql") { n, m, f throws(DictOpenError) in try DictPgSQL.open(n, m, f, config: config) }
    }
}
