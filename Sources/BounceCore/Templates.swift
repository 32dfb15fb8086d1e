// Templates: the text of non-delivery, delay, success and verification notices: the
// built-in ones, and those of bounce_template_file, with $name expansion.
// Mirrors Postfix bounce/bounce_templates.c and bounce_template.c.
import Glibc
import MailUtil
import MailGlobal

/// Which kind of notice a template is for.
enum TemplateClass: String {
    case failure, delay, success, verify
}

struct Template {
    var kind: TemplateClass
    var origin = "[built-in]"
    var charset = "us-ascii"
    var from = "Mail Delivery System <MAILER-DAEMON>"
    var subject: String
    var postmasterSubject: String?
    var body: [String]

    static func builtIn(_ kind: TemplateClass) -> Template {
        let head = ["This is the mail system at host $myhostname.", ""]
        let help = ["For further assistance, please send mail to postmaster.", "",
                    "If you do so, please include this problem report. You can",
                    "delete your own text from the attached returned message.", ""]
        let sig = "                   The mail system"
        switch kind {
        case .failure:
            return Template(kind: kind, subject: "Undelivered Mail Returned to Sender",
                            postmasterSubject: "Postmaster Copy: Undelivered Mail",
                            body: head + ["I'm sorry to have to inform you that your message could not",
                                          "be delivered to one or more recipients. It's attached below.", ""] + help + [sig])
        case .delay:
            return Template(kind: kind, subject: "Delayed Mail (still being retried)",
                            postmasterSubject: "Postmaster Warning: Delayed Mail",
                            body: head + ["####################################################################",
                                          "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
                                          "####################################################################", "",
                                          "Your message could not be delivered for more than $delay_warning_time_hours hour(s).",
                                          "It will be retried until it is $maximal_queue_lifetime_days day(s) old.", ""]
                                + help + [sig])
        case .success:
            return Template(kind: kind, subject: "Successful Mail Delivery Report", postmasterSubject: nil,
                            body: head + ["Your message was successfully delivered to the destination(s)",
                                          "listed below. If the message was delivered to mailbox you will",
                                          "receive no further notifications. Otherwise you may still receive",
                                          "notifications of mail delivery errors from other systems.", "", sig])
        case .verify:
            return Template(kind: kind, subject: "Mail Delivery Status Report", postmasterSubject: nil,
                            body: head + ["Enclosed is the mail delivery report that you requested.", "", sig])
        }
    }

    /// Replaces this template's parts with the text of a template file entry.
    mutating func load(origin: String, text: String) {
        self.origin = origin
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var sawPostmasterSubject = false
        while let first = lines.first {
            lines.removeFirst()
            if first.allSatisfy({ $0 == " " || $0 == "\t" }) { break }
            guard let colon = first.firstIndex(of: ":") else {
                Msg.fatal("\(origin): malformed \(kind.rawValue) template header: \(first)")
            }
            let name = first[..<colon].lowercased()
            var value = Substring(first[first.index(after: colon)...])
            while value.first == " " || value.first == "\t" { value = value.dropFirst() }
            switch name {
            case "charset": charset = String(value)
            case "from": from = String(value)
            case "subject": subject = String(value)
            case "postmaster-subject":
                if kind == .success || kind == .verify {
                    Msg.warn("\(origin): ignoring Postmaster-Subject header in \(kind.rawValue) template")
                } else {
                    postmasterSubject = String(value)
                    sawPostmasterSubject = true
                }
            default:
                Msg.fatal("\(origin): unknown \(kind.rawValue) template header: \(first)")
            }
        }
        _ = sawPostmasterSubject
        body = lines
        while body.last == "" { body.removeLast() }
    }

    /// The body with $name and ${name} replaced: main.cf parameters, and the time
    /// parameters in other units (delay_warning_time_hours, maximal_queue_lifetime_days...).
    func expand(config: MailConfig) -> [String] {
        body.map { MacroLine.expand($0, config: config, origin: origin, kind: kind.rawValue) }
    }
}

enum MacroLine {
    static let timeParameters = ["bounce_queue_lifetime", "maximal_queue_lifetime", "delay_warning_time"]
    static let units: [(String, Int)] = [("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400), ("weeks", 604800)]

    /// A parameter's value; a time parameter with a unit suffix is converted, with
    /// Postfix's warnings when the unit makes the number useless.
    static func value(_ name: String, config: MailConfig, origin: String, kind: String) -> String {
        for p in timeParameters where name.hasPrefix(p + "_") {
            let unit = String(name.dropFirst(p.count + 1))
            guard let u = units.first(where: { $0.0 == unit }) else {
                Msg.fatal("\(origin): unrecognized suffix \"\(unit)\" in parameter \"\(name)\"")
            }
            let seconds = config.time(p)
            let result = seconds / u.1
            if result > 999 && u.1 < 86400 {
                Msg.warn("\(origin): excessive result \"\(result)\" in \(kind) template conversion of parameter \"\(name)\"")
                Msg.warn("please increase time unit \"\(unit)\" of \"\(name)\" in \(kind) template")
                Msg.warn("for instructions see the bounce(5) manual")
            } else if result == 0 && seconds != 0 && u.1 > 1 {
                Msg.warn("\(origin): zero result in \(kind) template conversion of parameter \"\(name)\"")
                Msg.warn("please reduce time unit \"\(unit)\" of \"\(name)\" in \(kind) template")
                Msg.warn("for instructions see the bounce(5) manual")
            }
            return String(result)
        }
        if let v = config.value(name) { return v }
        Msg.fatal("\(origin): unknown parameter name: \(name)")
    }

    static func expand(_ line: String, config: MailConfig, origin: String, kind: String) -> String {
        var out = ""
        var i = line.startIndex
        while i < line.endIndex {
            let c = line[i]
            guard c == "$" else {
                out.append(c)
                i = line.index(after: i)
                continue
            }
            var j = line.index(after: i)
            var name = ""
            if j < line.endIndex && (line[j] == "{" || line[j] == "(") {
                let close: Character = line[j] == "{" ? "}" : ")"
                j = line.index(after: j)
                while j < line.endIndex && line[j] != close {
                    name.append(line[j])
                    j = line.index(after: j)
                }
                if j < line.endIndex { j = line.index(after: j) }
            } else {
                while j < line.endIndex && (line[j].isLetter || line[j].isNumber || line[j] == "_") && line[j].isASCII {
                    name.append(line[j])
                    j = line.index(after: j)
                }
            }
            if name.isEmpty {
                out.append("$")
                i = line.index(after: i)
                continue
            }
            out += value(name, config: config, origin: origin, kind: kind)
            i = j
        }
        return out
    }
}

/// The four templates in use.
struct TemplateSet {
    var failure = Template.builtIn(.failure)
    var delay = Template.builtIn(.delay)
    var success = Template.builtIn(.success)
    var verify = Template.builtIn(.verify)

    /// Loads bounce_template_file ("name_template = <<EOF ... EOF" entries).
    mutating func load(path: String) {
        guard let data = try? SafeFile.read(path) else {
            Msg.fatal("open \(path): \(errnoText(errno))")
        }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var i = 0
        while i < lines.count {
            let line = lines[i]
            i += 1
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.first == "#" { continue }
            guard let eq = line.firstIndex(of: "=") else {
                Msg.fatal("\(path), line \(i): missing '=' after attribute name: \"\(line)\"")
            }
            let name = String(line[..<eq]).trimmingCharacters()
            var value = String(line[line.index(after: eq)...]).trimmingCharacters()
            if value.hasPrefix("<<") {
                let marker = String(value.dropFirst(2)).trimmingCharacters()
                if marker.isEmpty { Msg.fatal("\(path), line \(i): missing end marker after <<") }
                var text: [String] = []
                var found = false
                while i < lines.count {
                    let l = lines[i]
                    i += 1
                    if l == marker {
                        found = true
                        break
                    }
                    text.append(l)
                }
                if !found { Msg.warn("\(path), line \(i): missing \"\(marker)\" end marker") }
                value = text.joined(separator: "\n")
            }
            switch name {
            case "failure_template": failure.load(origin: path, text: value)
            case "delay_template": delay.load(origin: path, text: value)
            case "success_template": success.load(origin: path, text: value)
            case "verify_template": verify.load(origin: path, text: value)
            default: Msg.warn("\(path), line \(i): unknown template name: \(name) -- ignoring this template")
            }
        }
    }
}
