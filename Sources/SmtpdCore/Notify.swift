// Notify: the session transcript smtpd keeps, and the postmaster notice it sends when
// the session had errors of a class named in notify_classes (by default resource and
// software errors, such as a broken configuration).
// Mirrors Postfix smtpd/smtpd_chat.c (smtp_chat_append, smtpd_chat_notify) and chat_reset()
// in smtpd/smtpd.c.
import MailUtil
import MailGlobal

extension Session {
    /// One line of the transcript ("In:  " or "Out: ").
    func remember(_ direction: String, _ text: String) {
        history.append(direction + text)
    }

    /// chat_reset: past `threshold` lines (0 at the end of the session) the transcript
    /// goes to the postmaster if it recorded a notifiable error, and starts again.
    func chatReset(_ threshold: Int) {
        guard history.count > threshold else { return }
        if !s.standalone && !errorMask.isDisjoint(with: s.notifyClasses) { notifyPostmaster() }
        errorMask = []
        history = []
    }

    func notifyPostmaster() {
        let notice: PostMail
        do {
            notice = try PostMail(config: config, sender: s.doubleBounceSender, recipient: s.errorNoticeRecipient,
                                  source: .notify)
        } catch {
            Msg.warn("postmaster notify: \(error)")
            return
        }
        do {
            try notice.line("From: Mail Delivery System <MAILER-DAEMON>")
            try notice.line("To: Postmaster <\(s.errorNoticeRecipient)>")
            try notice.line("Subject: \(s.mailName) SMTP server: errors from \(namaddr)")
            try notice.line("")
            try notice.line("Transcript of session follows.")
            try notice.line("")
            for entry in history {
                for piece in Self.wrap(Msg.printable(entry), width: 78, indent: 4) {
                    try notice.line(" " + piece)
                }
            }
            try notice.line("")
            if let reason { try notice.line("Session aborted, reason: \(reason)") }
            try notice.line("")
            try notice.line("For other details, see the local mail logfile")
            _ = try notice.close()
        } catch {
            Msg.warn("postmaster notify: \(error)")
        }
    }

    /// line_wrap: lines longer than `width` are broken at white space; continuation
    /// lines are indented.
    static func wrap(_ text: String, width: Int, indent: Int) -> [String] {
        var out: [String] = []
        var rest = Substring(text)
        var pad = ""
        while rest.count + pad.count > width {
            let limit = rest.index(rest.startIndex, offsetBy: max(width - pad.count, 1))
            guard let cut = rest[..<limit].lastIndex(of: " "), cut > rest.startIndex else { break }
            out.append(pad + rest[..<cut])
            rest = rest[rest.index(after: cut)...].drop(while: { $0 == " " })
            pad = String(repeating: " ", count: indent)
        }
        out.append(pad + rest)
        return out
    }
}
