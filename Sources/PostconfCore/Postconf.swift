// Postconf: the postconf(1) command.
import MailUtil
import MailGlobal

public enum Postconf {
    public static func main(_ args: [String]) -> Int32 {
        return 0
    }
}
