// swallow-fuzz: libFuzzer targets for the parsers that read what others send or write.
// Built only by bench/fuzz.sh (SWALLOW_FUZZ=1 in the environment adds the product; the
// build uses `--sanitize fuzzer --sanitize address`); SWALLOW_FUZZ_TARGET picks the target:
//   smtp-command  the SMTP command tokenizer and address extraction of smtpd
//   data          the line reader under smtpd's DATA and BDAT (limits, bare CR/LF)
//   address       the RFC 822 address tokenizer and parser (tok822)
//   attr          the attribute protocol decoder, in all three encodings
//   record        the queue file record reader
//   mime          the MIME and header parser of cleanup
//   regexp, pcre, cidr, texthash   the table file parsers (a file, then a lookup)
// Inputs that make a target crash, trap or leak are kept by libFuzzer (crash-*); each one
// found becomes a regression test under Tests/.
import Glibc
import MailUtil
import MailDict
import MailGlobal
@testable import SmtpdCore

nonisolated(unsafe) let target: String = {
    guard let t = getenv("SWALLOW_FUZZ_TARGET") else {
        let text = Array("swallow-fuzz: set SWALLOW_FUZZ_TARGET\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(2)
    }
    return String(cString: t)
}()

nonisolated(unsafe) var scratch: String = {
    var tmpl = Array("/tmp/swallow-fuzz-XXXXXX".utf8CString)
    guard let p = mkdtemp(&tmpl) else { exit(2) }
    return String(cString: p)
}()

/// Data through a pipe into an FDStream (inputs are cut to what a pipe holds).
func stream(_ data: [UInt8]) -> FDStream? {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return nil }
    let n = min(data.count, 60000)
    _ = data.withUnsafeBytes { write(fds[1], $0.baseAddress, n) }
    close(fds[1])
    return FDStream(fd: fds[0], timeout: 1, closeOnDeinit: true)
}

nonisolated(unsafe) var logging: Bool = {
    // Warnings and fatal errors on standard error, so that a fatal exit can be seen.
    Msg.initStderr(tag: "swallow-fuzz")
    Msg.sleepBeforeFatalExit = false
    return true
}()

func fuzz(_ data: [UInt8]) {
    _ = logging
    switch target {
    case "smtp-command":
        let argv = SMTPTokenizer.split(data)
        for t in argv {
            _ = t.text
            _ = Address822.internalAddresses(t.text, limit: 100)
        }
    case "data":
        for (limit, overflow) in [(64, LineOverflow.truncate), (2048, .split)] {
            guard let s = stream(data) else { return }
            var lines = 0
            while lines < 10_000, let line = try? s.readLine(limit: limit, overflow: overflow) {
                _ = line.ending
                _ = HeaderText.isHeader(String(decoding: line.bytes, as: UTF8.self))
                lines += 1
            }
        }
    case "address":
        let text = String(decoding: data, as: UTF8.self)
        let tree = Address822.parse(text, limit: 200)
        _ = Address822.internalize(tree)
        _ = Address822.externalize(tree, lineBreaks: true)
        for a in Tok822.addresses(tree) { _ = Address822.internalize(a.head) }
        _ = Quote822.quote822(text)
    case "attr":
        for enc in [AttrEncoding.attr0, .plain, .attr64] {
            guard let s = stream(data) else { return }
            let r = AttrReader(s, encoding: enc)
            var lists = 0
            while lists < 100, let l = try? r.readList() {
                var sc = l.scanner()
                _ = try? sc.string("request")
                _ = try? sc.int("status")
                _ = try? sc.data("session")
                lists += 1
            }
        }
    case "record":
        if let records = try? RecordCodec.decode(data, maxLength: 100_000) {
            for r in records { _ = r.text }
        }
    case "mime":
        let m = MimeState(options: [.reportEncodingDomain, .reportTruncatedHeader, .reportNesting, .downgrade],
                          headerLimit: 2048, nestingLimit: 20, boundaryLimit: 2048,
                          headOut: { _, _, _, _ in }, headEnd: {}, bodyOut: { _, _, _ in }, bodyEnd: {},
                          errorOut: { _, _ in })
        var start = 0
        for (i, b) in data.enumerated() where b == 0x0A {
            m.update(.normalText, Array(data[start..<i]))
            start = i + 1
        }
        if start < data.count { m.update(.normalText, Array(data[start...])) }
        m.update(nil, [])
        for line in data.split(separator: 0x0A) { _ = HeaderInfo.of(Array(line)) }
    case "regexp", "pcre", "cidr", "texthash":
        let path = "\(scratch)/table"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return }
        _ = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        // texthash waits while a file is younger than a second (it may be being written).
        var times = [timeval(tv_sec: time(nil) - 10, tv_usec: 0), timeval(tv_sec: time(nil) - 10, tv_usec: 0)]
        utimes(path, &times)
        // A duplicate key would make the table a surrogate that ends the process, as in Postfix.
        let d = DictRegistry.open("\(target):\(path)", flags: [.utf8Request, .duplicateIgnore])
        for key in ["user@example.com", "192.0.2.1", "2001:db8::1", "Subject: x", ""] { _ = try? d.lookup(key) }
    default:
        let text = Array("swallow-fuzz: unknown target \(target)\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(2)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzz(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
