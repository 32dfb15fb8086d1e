// ConfigValue: conversion of configuration text to numbers, times and booleans.
// Mirrors Postfix global/conv_time.c and the strtol-based checks of get_mail_conf_int.c,
// get_mail_conf_long.c and get_mail_conf_bool.c. Returns nil for text Postfix rejects; the
// caller words the error with the parameter name.
import Glibc

public enum ConfigValue {
    /// Seconds per time unit letter, as accepted in time values.
    public static let timeUnits: [UInt8: Int] = [
        UInt8(ascii: "s"): 1, UInt8(ascii: "m"): 60, UInt8(ascii: "h"): 3600,
        UInt8(ascii: "d"): 86400, UInt8(ascii: "w"): 604800,
    ]

    /// Parses a time value as Postfix's conv_time(): a decimal number (strtol rules) with
    /// an optional one-letter unit (s, m, h, d, w); without one, `defaultUnit` applies.
    /// Returns seconds, or nil for junk, a bad unit, a negative value or an overflow.
    public static func parseTime(_ text: String, defaultUnit: UInt8 = UInt8(ascii: "s")) -> Int? {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { return nil }
        let (value, end) = strtol(bytes)
        guard let value, value >= 0, value <= Int(Int32.max) else { return nil }
        if end < bytes.count && end + 1 < bytes.count { return nil }
        let unit = end < bytes.count ? bytes[end] : defaultUnit
        guard let mult = timeUnits[unit] else { return nil }
        if mult == 1 { return value }
        return value < Int(Int32.max) / mult ? value * mult : nil
    }

    /// strtol(3) in base 10: skips leading white space, takes an optional sign and digits.
    /// Returns the value (nil on overflow) and the index where parsing stopped; without
    /// digits the value is 0 and the index is 0, as strtol sets endptr to the input.
    static func strtol(_ bytes: [UInt8]) -> (Int?, Int) {
        var i = 0
        while i < bytes.count && isSpace(bytes[i]) { i += 1 }
        var negative = false
        if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) {
            negative = bytes[i] == UInt8(ascii: "-")
            i += 1
        }
        let digitsStart = i
        var value = 0
        var overflow = false
        while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 {
            let d = Int(bytes[i] - 0x30)
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            if o1 || o2 { overflow = true } else { value = s }
            i += 1
        }
        if i == digitsStart { return (0, 0) }
        return (overflow ? nil : value, i)
    }

    /// Parses an integer the way strtol(3) does for Postfix (optional leading white space
    /// and sign, decimal digits, nothing after), within Int32. Returns nil otherwise.
    public static func parseInt(_ text: String) -> Int? {
        guard let v = parseLong(text), v >= Int(Int32.min), v <= Int(Int32.max) else { return nil }
        return v
    }

    /// As `parseInt`, within Int64 (Postfix's "long" parameters such as message_size_limit).
    public static func parseLong(_ text: String) -> Int? {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { return nil }
        let (value, end) = strtol(bytes)
        guard let value, end == bytes.count else { return nil }
        return value
    }

    /// Parses a size in bytes (message_size_limit, queue_minfree, ...): Postfix takes a plain
    /// non-negative decimal number, without unit suffixes.
    public static func parseSize(_ text: String) -> Int? {
        guard let v = parseLong(text), v >= 0 else { return nil }
        return v
    }

    /// Parses "yes" or "no" in any letter case.
    public static func parseBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "yes": return true
        case "no": return false
        default: return nil
        }
    }

    @inline(__always)
    static func isSpace(_ b: UInt8) -> Bool {
        b == 0x20 || (b >= 0x09 && b <= 0x0D)
    }
}
