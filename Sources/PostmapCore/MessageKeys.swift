// MessageKeys: the lookup keys of "postmap -h/-b [-m] -q -": the logical header lines
// and/or body lines of a message on standard input, as header_checks and body_checks see
// them.
// Mirrors the use of Postfix global/mime_state.c by postmap.c: without -m only the
// primary headers are headers and everything after them is body; with -m the headers of
// MIME parts (multipart/* sections, message/rfc822 attachments) are headers too and are
// kept out of the body lines.
import Glibc
import MailUtil

enum MessageKeys {
    static func iterator(fd: Int32, headers: Bool, body: Bool, mime: Bool) -> AnyIterator<[UInt8]> {
        let lines = StdinLines.iterator(fd: fd)
        var pending: [[UInt8]] = []
        var inHeaders = true
        var current: [UInt8]?
        var boundaries: [[UInt8]] = []
        var partType: [UInt8] = []
        var nextIsMessage = false

        func contentTypeBoundary(_ header: [UInt8]) {
            let lower = header.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
            let prefix = Array("content-type:".utf8)
            guard lower.starts(with: prefix) else { return }
            partType = Array(lower.dropFirst(prefix.count))
            let key = Array("boundary=".utf8)
            guard let at = (0...max(0, lower.count - key.count)).first(where: { lower[$0...].starts(with: key) }),
                  lower.count >= key.count else { return }
            var b = Array(header[(at + key.count)...])
            if b.first == UInt8(ascii: "\"") {
                b.removeFirst()
                if let q = b.firstIndex(of: UInt8(ascii: "\"")) { b = Array(b[..<q]) }
            } else if let e = b.firstIndex(where: { $0 == UInt8(ascii: ";") || $0 == 0x20 || $0 == 0x09 || $0 == 0x0A }) {
                b = Array(b[..<e])
            }
            if !b.isEmpty { boundaries.append(b) }
        }

        func partTypeIs(_ t: String) -> Bool {
            String(decoding: partType, as: UTF8.self).trimmingCharacters(" \t").hasPrefix(t)
        }

        func endHeader() {
            if let h = current {
                if mime { contentTypeBoundary(h) }
                if headers { pending.append(h) }
            }
            current = nil
        }

        return AnyIterator {
            while pending.isEmpty {
                guard let line = lines.next() else {
                    endHeader()
                    return pending.isEmpty ? nil : pending.removeFirst()
                }
                if inHeaders {
                    if line.isEmpty {
                        endHeader()
                        inHeaders = false
                        if partTypeIs("message/rfc822") && mime {
                            nextIsMessage = true
                        }
                        if body { pending.append(line) }
                        if nextIsMessage {
                            nextIsMessage = false
                            inHeaders = true
                            partType = []
                        }
                        continue
                    }
                    if let first = line.first, first == 0x20 || first == 0x09, current != nil {
                        current! += [0x0A] + line
                        continue
                    }
                    endHeader()
                    current = line
                    continue
                }
                // Body: with -m, a boundary line starts the headers of the next part.
                if mime, line.count >= 2, line[0] == UInt8(ascii: "-"), line[1] == UInt8(ascii: "-"),
                   boundaries.contains(where: { line.dropFirst(2).starts(with: $0) }) {
                    if body { pending.append(line) }
                    let isClose = boundaries.contains { line.dropFirst(2 + $0.count).starts(with: [0x2D, 0x2D]) }
                    if !isClose {
                        inHeaders = true
                        partType = []
                    }
                    continue
                }
                if body { pending.append(line) }
            }
            return pending.removeFirst()
        }

    }
}

extension String {
    func trimmingCharacters(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
