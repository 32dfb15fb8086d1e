// MailDate: the date format of Received:, Date: and bounce headers.
// Mirrors Postfix global/mail_date.c: "Sat,  1 Nov 2026 10:00:00 +0100 (CET)"; and the
// asctime() form of mailq, postcat and From_ lines.
import Glibc

public enum MailDate {
    public static func format(_ when: time_t) -> String {
        var t = when
        var lt = tm()
        localtime_r(&t, &lt)
        var buf = [CChar](repeating: 0, count: 128)
        let n = strftime(&buf, buf.count, "%a, %e %b %Y %H:%M:%S ", &lt)
        var s = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var off = lt.tm_gmtoff / 60
        let sign = off < 0 ? "-" : "+"
        off = abs(off)
        let hh = off / 60, mm = off % 60
        s += sign + (hh < 10 ? "0" : "") + String(hh) + (mm < 10 ? "0" : "") + String(mm)
        let zn = strftime(&buf, buf.count, " (%Z)", &lt)
        s += String(decoding: buf[0..<zn].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return s
    }

    /// asctime(localtime(t)) without its newline: "Wed Dec  2 15:17:44 2026".
    public static func asctime(_ when: time_t) -> String {
        var t = when
        var lt = tm()
        localtime_r(&t, &lt)
        var buf = [CChar](repeating: 0, count: 64)
        asctime_r(&lt, &buf)
        let bytes = buf.prefix(while: { $0 != 0 && $0 != 0x0A }).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
