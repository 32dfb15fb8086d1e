// MailDictSetup: the table types that need mail-system knowledge (proxy:, sqlite:,
// pgsql:), registered next to the basic ones of MailDict.
// Mirrors Postfix global/mail_dict.c.
import CShim
import MailUtil
import MailDict

public enum MailDictSetup {
    nonisolated(unsafe) static var done = false

    /// Registers the mail-system table types; call once the configuration is read.
    public static func registerGlobalTypes(_ config: MailConfig) {
        guard !done else { return }
        done = true
        DictRegistry.utf8Enabled = config.bool("smtputf8_enable")
        DictRegistry.register("proxy") { n, m, f throws(DictOpenError) in try DictProxy.open(n, m, f, config: config) }
        DictRegistry.register("sqlite") { n, m, f throws(DictOpenError) in try DictSQLite.open(n, m, f, config: config) }
        DictRegistry.register("pgsql") { n, m, f throws(DictOpenError) in try DictPgSQL.open(n, m, f, config: config) }
    }

    /// The types that work in this process (postconf -m): every built-in type, and the
    /// SQL types whose client library can be loaded.
    public static func workingTypes(_ config: MailConfig) -> [String] {
        registerGlobalTypes(config)
        var err = [CChar](repeating: 0, count: 256)
        return DictRegistry.typeNames.filter { type in
            switch type {
            case "sqlite": return cshim_sqlite_load(&err, err.count) == 0
            case "pgsql": return cshim_pq_load(&err, err.count) == 0
            default: return true
            }
        }
    }
}
