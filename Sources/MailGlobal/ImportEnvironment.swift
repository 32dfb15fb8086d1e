// ImportEnvironment: the environment Postfix programs pass on: import_environment (and
// export_environment, what sendmail gives postdrop).
// Mirrors Postfix util/clean_env.c and master/master.c: the value is a list of "NAME"
// (keep that variable when it is set) and "NAME=value" (set it) items, "{ ... }" grouping
// allowed; every other variable goes.
import Glibc
import MailUtil

public enum ImportEnvironment {
    /// The "NAME=value" strings that import_environment keeps or sets, in list order.
    public static func filtered(_ config: MailConfig, parameter: String = "import_environment") -> [String] {
        var env: [String: String] = [:]
        var order: [String] = []
        for word in Tokens.splitQuoted(config.string(parameter)) {
            let item = word.hasPrefix("{") ? Tokens.extractBraced(word).inner : word
            let (name, value): (String, String?)
            if let eq = item.firstIndex(of: "=") {
                (name, value) = (String(item[..<eq]), String(item[item.index(after: eq)...]))
            } else {
                (name, value) = (item, getenv(item).map { String(cString: $0) })
            }
            guard let value else { continue }
            if env[name] == nil { order.append(name) }
            env[name] = value
        }
        return order.map { "\($0)=\(env[$0]!)" }
    }

    /// Replaces this process's environment with the filtered one (clean_env).
    public static func apply(_ config: MailConfig) {
        let keep = filtered(config)
        clearenv()
        for item in keep {
            let eq = item.firstIndex(of: "=")!
            setenv(String(item[..<eq]), String(item[item.index(after: eq)...]), 1)
        }
    }
}
