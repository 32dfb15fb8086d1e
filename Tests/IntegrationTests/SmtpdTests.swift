// smtpd and cleanup on a running instance: an SMTP session as a client sees it (replies,
// relay and unknown-user refusals, access tables, DATA and BDAT, smuggling attempts,
// limits), the queue file cleanup writes (read back record by record, and by the
// reference postcat when it is unpacked), and the log lines; and our cleanup's queue files
// compared with the reference cleanup's for the same input.
import Foundation
import Glibc
import Testing
import MailUtil
import MailGlobal

/// An SMTP client that speaks CRLF and reads multi-line replies.
final class SMTPClient {
    let stream: FDStream

    init(port: UInt16) throws {
        let fd = try InetSocket.connect(SocketAddress(family: AF_INET, address: [127, 0, 0, 1], port: port), timeout: 5)
        stream = FDStream(fd: fd, timeout: 20, closeOnDeinit: true)
    }

    /// A whole reply, lines joined with "\n".
    func reply() throws -> String {
        var lines: [String] = []
        while let l = try stream.readLine(limit: 4096) {
            let s = String(decoding: l.bytes, as: UTF8.self)
            lines.append(s)
            if s.count < 4 || s[s.index(s.startIndex, offsetBy: 3)] != "-" { break }
        }
        return lines.joined(separator: "\n")
    }

    func raw(_ bytes: String) throws {
        try stream.write(bytes)
        try stream.flush()
    }

    func ask(_ line: String) throws -> String {
        try raw(line + "\r\n")
        return try reply()
    }
}

@Suite(.serialized)
struct SmtpdTests {
    /// The queue ID of a "250 2.0.0 Ok: queued as ID" reply.
    func queued(_ reply: String) -> String? {
        guard let r = reply.range(of: "queued as ") else { return nil }
        return String(reply[r.upperBound...])
    }

    /// A new directory holding a self-signed key.pem and cert.pem for test.example.com
    /// (the caller removes it).
    func certificateDirectory(_ name: String) throws -> String {
        let dir = "/tmp/swallow-\(name)-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        let gen = Instance.run("/usr/bin/openssl", ["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=test.example.com",
                                                    "-newkey", "rsa:2048", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"])
        try #require(gen.status == 0, "\(gen.stderr)")
        return dir
    }

    func instance(_ extra: String = "", port: UInt16, master more: String = "", smtpdArgs: String = "",
                  beforeStart: (Instance) throws -> Void = { _ in }) throws -> Instance {
        let inst = try Instance(main: """
        mydomain = example.com
        mynetworks = 192.0.2.0/24
        alias_maps =
        local_recipient_maps = inline:{ alice=yes, bob=yes }
        message_size_limit = 20000
        smtpd_error_sleep_time = 0
        header_checks = inline:{ {/^Subject: reject me/ REJECT bad subject} }

        """ + extra, master: """
        127.0.0.1:\(port) inet n - n - - smtpd \(smtpdArgs)
        cleanup   unix  n - n - 0 cleanup
        rewrite   unix  - - n - - trivial-rewrite
        proxymap  unix  - - n - - proxymap
        postlog   unix-dgram n - n - 1 postlogd
        """ + more)
        // header_checks uses a regexp table: inline: keys are literal, so use regexp.
        let main = inst.configDirectory + "/main.cf"
        var text = try String(contentsOfFile: main, encoding: .utf8)
        try "/^Subject: reject me/ REJECT bad subject\n".write(toFile: inst.root + "/header_checks", atomically: true, encoding: .utf8)
        chmod(inst.root, 0o755)
        chmod(inst.root + "/header_checks", 0o644)
        text = text.replacingOccurrences(of: "header_checks = inline:{ {/^Subject: reject me/ REJECT bad subject} }",
                                         with: "header_checks = regexp:\(inst.root)/header_checks")
        try text.write(toFile: main, atomically: true, encoding: .utf8)
        try beforeStart(inst)
        try inst.startMaster()
        return inst
    }

    func queueFile(_ inst: Instance, _ id: String) -> [Record] {
        let path = inst.queueDirectory + "/incoming/" + id
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return (try? RecordCodec.decode([UInt8](data))) ?? []
    }

    @Test func sessionRepliesAndQueueFile() throws {
        let port = freePort()
        let inst = try instance(port: port)
        let c = try SMTPClient(port: port)
        #expect(try c.reply() == "220 test.example.com ESMTP Swallow")
        #expect(try c.ask("EHLO client.example.org") == """
        250-test.example.com
        250-PIPELINING
        250-SIZE 20000
        250-VRFY
        250-ETRN
        250-ENHANCEDSTATUSCODES
        250-8BITMIME
        250-DSN
        250-SMTPUTF8
        250 CHUNKING
        """)
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "503 5.5.1 Error: need MAIL command")
        #expect(try c.ask("MAIL FROM:<sender@example.org> SIZE=30000") == "552 5.3.4 Message size exceeds fixed limit")
        // As in Postfix, a refused SIZE stays until RSET.
        #expect(try c.ask("MAIL FROM:<sender@example.org>") == "552 5.3.4 Message size exceeds fixed limit")
        #expect(try c.ask("RSET") == "250 2.0.0 Ok")
        #expect(try c.ask("MAIL FROM:<sender@example.org> FOO=1") == "555 5.5.4 Unsupported option: FOO=1")
        #expect(try c.ask("MAIL FROM:<a b@example.org>") == "501 5.1.7 Bad sender address syntax")
        #expect(try c.ask("MAIL FROM:<sender@example.org> BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef") == "250 2.1.0 Ok")
        #expect(try c.ask("MAIL FROM:<again@example.org>") == "503 5.5.1 Error: nested MAIL command")
        #expect(try c.ask("RCPT TO:<x@elsewhere.example>") == "454 4.7.1 <x@elsewhere.example>: Relay access denied")
        #expect(try c.ask("RCPT TO:<nobody@test.example.com>")
                == "550 5.1.1 <nobody@test.example.com>: Recipient address rejected: User unknown in local recipient table")
        #expect(try c.ask("RCPT TO:<alice@test.example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice+40test.example.com") == "250 2.1.5 Ok")
        #expect(try c.ask("RCPT TO:<bob@test.example.com> NOTIFY=BOGUS") == "501 5.5.4 Error: Bad NOTIFY parameter syntax")
        #expect(try c.ask("DATA extra") == "501 5.5.4 Syntax: DATA")
        #expect(try c.ask("DATA") == "354 End data with <CR><LF>.<CR><LF>")
        try c.raw("Subject: hello\r\nTo: alice@test.example.com\r\n\r\nline one\r\n..dotted\r\n.\r\n")
        let queued = try c.reply()
        #expect(queued.hasPrefix("250 2.0.0 Ok: queued as "))
        let id = try #require(self.queued(queued))
        #expect(try c.ask("NOOP") == "250 2.0.0 Ok")
        #expect(try c.ask("WHAT") == "500 5.5.2 Error: command not recognized")
        #expect(try c.ask("VRFY alice") == "252 2.0.0 alice")
        #expect(try c.ask("QUIT") == "221 2.0.0 Bye")

        // The queue file: complete (0700), with the envelope smtpd sent and cleanup's
        // additions, and the content with smtpd's Received: header first.
        var st = stat()
        #expect(stat(inst.queueDirectory + "/incoming/" + id, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o700)
        let records = queueFile(inst, String(id))
        #expect(records.first?.type == .size)
        #expect(records.last?.type == .end)
        let texts = records.map { "\($0.type)\($0.text)" }
        #expect(texts.contains("Ssender@example.org"))
        #expect(texts.contains("Aenvelope_id=abc+def"))
        #expect(texts.contains("Aret_flags=2"))
        #expect(texts.contains("Aencoding=8bit"))
        #expect(texts.contains("Arewrite_context=local"))
        #expect(texts.contains("Alog_ident=\(id)"))
        #expect(texts.contains("Anotify_flags=6"))
        #expect(texts.contains("Adsn_orig_rcpt=rfc822;Alice@test.example.com"))
        #expect(texts.contains("Ralice@test.example.com"))
        #expect(texts.contains("NReceived: from client.example.org (localhost [127.0.0.1])"))
        #expect(texts.contains("N\tby test.example.com (Swallow) with ESMTP id \(id)"))
        #expect(texts.contains(".dotted".isEmpty ? "" : "N.dotted"))
        #expect(texts.contains("Nline one"))
        // Mail from a local client gets the missing headers (local_header_rewrite_clients).
        #expect(texts.contains { $0.hasPrefix("NMessage-Id: <") && $0.hasSuffix(".\(id)@test.example.com>") })
        #expect(texts.contains("NFrom: sender@example.org"))
        let size = records[0].text.split(separator: " ").compactMap { Int($0) }
        #expect(size.count == 6 && size[2] == 1 && size[3] == (6 << 1))

        inst.expectLog("smtpd[")
        inst.expectLog("connect from localhost[127.0.0.1]")
        inst.expectLog("\(id): client=localhost[127.0.0.1]")
        inst.expectLog("\(id): message-id=<")
        inst.expectLog("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 <x@elsewhere.example>: Relay access denied; from=<sender@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<client.example.org>")
        inst.expectLog("disconnect from localhost[127.0.0.1] ehlo=1 mail=1/6 rcpt=1/5 data=1/2 rset=1 noop=1 vrfy=1 quit=1 unknown=0/1 commands=8/19")

        // The reference postcat reads the file as Postfix's own.
        if let ref = Instance.reference {
            let r = Instance.run(ref + "/usr/sbin/postcat", ["-c", inst.configDirectory, inst.queueDirectory + "/incoming/" + id],
                                 env: ["PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=\(ref)/usr/lib/postfix"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("sender: sender@example.org"))
            #expect(r.stdout.contains("recipient: alice@test.example.com"))
            #expect(r.stdout.contains("*** MESSAGE FILE END"))
        }
    }

    @Test func chunkingSmugglingAndContentChecks() throws {
        let port = freePort()
        let inst = try instance("smtpd_sender_restrictions = check_sender_access inline:{ {evil@example.org=REJECT go away} }\n", port: port)
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        _ = try c.ask("EHLO client.example.org")
        // A sender refused by an access table, at RCPT time (smtpd_delay_reject).
        #expect(try c.ask("MAIL FROM:<evil@example.org>") == "250 2.1.0 Ok")
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "554 5.7.1 <evil@example.org>: Sender address rejected: go away")
        #expect(try c.ask("RSET") == "250 2.0.0 Ok")

        // BDAT in two chunks.
        _ = try c.ask("MAIL FROM:<sender@example.org>")
        _ = try c.ask("RCPT TO:<bob@test.example.com>")
        let part1 = "Subject: chunks\r\n\r\nfirst "
        let part2 = "line\r\n.not stuffed\r\n"
        try c.raw("BDAT \(part1.utf8.count)\r\n" + part1)
        #expect(try c.reply() == "250 2.0.0 Ok: \(part1.utf8.count) bytes")
        try c.raw("BDAT \(part2.utf8.count) LAST\r\n" + part2)
        let last = try c.reply()
        let id = try #require(queued(last))
        let texts = queueFile(inst, String(id)).map { "\($0.type)\($0.text)" }
        #expect(texts.contains("Nfirst line"))
        #expect(texts.contains("N.not stuffed"))

        // A bare-LF "end of data" does not end the message (SMTP smuggling).
        _ = try c.ask("MAIL FROM:<sender@example.org>")
        _ = try c.ask("RCPT TO:<alice@test.example.com>")
        #expect(try c.ask("DATA").hasPrefix("354"))
        try c.raw("Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n")
        let smuggled = try c.reply()
        let sid = try #require(queued(smuggled))
        let stexts = queueFile(inst, String(sid)).map { "\($0.type)\($0.text)" }
        #expect(stexts.contains("NMAIL FROM:<evil@example.org>"))

        // header_checks REJECT comes back at the end of DATA with cleanup's text.
        _ = try c.ask("MAIL FROM:<sender@example.org>")
        _ = try c.ask("RCPT TO:<alice@test.example.com>")
        #expect(try c.ask("DATA").hasPrefix("354"))
        try c.raw("Subject: reject me\r\n\r\nbody\r\n.\r\n")
        #expect(try c.reply() == "550 5.7.1 bad subject")

        // Too big: the rest is read, then refused.
        _ = try c.ask("MAIL FROM:<sender@example.org>")
        _ = try c.ask("RCPT TO:<alice@test.example.com>")
        #expect(try c.ask("DATA").hasPrefix("354"))
        try c.raw("Subject: big\r\n\r\n" + String(repeating: String(repeating: "x", count: 99) + "\r\n", count: 300) + ".\r\n")
        #expect(try c.reply() == "552 5.3.4 Error: message file too big")
        #expect(try c.ask("QUIT") == "221 2.0.0 Bye")
        inst.expectLog("reject: header Subject: reject me from localhost[127.0.0.1]; from=<sender@example.org> to=<alice@test.example.com> proto=ESMTP helo=<client.example.org>: 5.7.1 bad subject")
        inst.expectLog("disconnect from localhost[127.0.0.1] ehlo=1 mail=5 rcpt=4/5 data=1/3 bdat=2 rset=1 quit=1 commands=15/18")
        // Rejected messages leave no queue file behind (cleanup drops an abandoned one
        // when smtpd closes the connection, a moment later).
        func files() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming")) ?? []).sorted()
        }
        try? inst.waitFor("abandoned queue files to go") { files().count == 2 }
        #expect(files() == [String(id), String(sid)].sorted())
    }

    @Test func errorLimitsAndForbiddenCommands() throws {
        let port = freePort()
        let inst = try instance("smtpd_hard_error_limit = 3\n", port: port)
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        #expect(try c.ask("BOGUS1") == "500 5.5.2 Error: command not recognized")
        #expect(try c.ask("BOGUS2") == "500 5.5.2 Error: command not recognized")
        #expect(try c.ask("BOGUS3") == "500 5.5.2 Error: command not recognized")
        #expect(try c.ask("NOOP") == "421 4.7.0 test.example.com Error: too many errors")
        let d = try SMTPClient(port: port)
        _ = try d.reply()
        #expect(try d.ask("GET / HTTP/1.0") == "221 2.7.0 Error: I can break rules, too. Goodbye.")
        inst.expectLog("too many errors after UNKNOWN from localhost[127.0.0.1]")
        inst.expectLog("warning: non-SMTP command from localhost[127.0.0.1]: GET / HTTP/1.0")
    }

    /// A small queue file system: below queue_minfree MAIL gets 452; a message that fills
    /// the file system while cleanup writes it gets 451 and leaves no file; what got a 250
    /// before stays whole. (Cleanup once answered that with "internal error 3": the write
    /// error did not count as an error at the end.)
    @Test(.enabled(if: geteuid() == 0)) func fullQueueFileSystem() throws {
        let port = freePort()
        let inst = try instance("message_size_limit = 0\nqueue_minfree = 1000000\n", port: port) {
            try $0.mountQueueTmpfs(size: "4m")
        }
        let queue = inst.queueDirectory
        func freeBytes() -> Int {
            var st = statvfs()
            statvfs(queue, &st)
            return Int(st.f_bavail) * Int(st.f_frsize)
        }
        /// Grows a filler file until `leave` bytes are free.
        func fill(leave: Int) throws {
            let fd = open(queue + "/filler", O_WRONLY | O_CREAT, 0o600)
            defer { close(fd) }
            var st = stat()
            fstat(fd, &st)
            let want = Int(st.st_size) + freeBytes() - leave
            try #require(posix_fallocate(fd, 0, off_t(max(want, 0))) == 0)
        }
        func incoming() -> [String] {
            (try? FileManager.default.contentsOfDirectory(atPath: queue + "/incoming")) ?? []
        }
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        #expect(try c.ask("EHLO client.example").hasPrefix("250"))
        #expect(try c.ask("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok")
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "250 2.1.5 Ok")
        #expect(try c.ask("DATA").hasPrefix("354"))
        let kept = queued(try c.ask("Subject: first\r\n\r\nkept\r\n."))
        #expect(kept != nil)
        // Without message_size_limit an announced size is not held against the free
        // space (as in the reference); queue_minfree is.
        #expect(try c.ask("MAIL FROM:<a@example.com> SIZE=3500000") == "250 2.1.0 Ok")
        #expect(try c.ask("RSET") == "250 2.0.0 Ok")
        try fill(leave: 900_000)
        #expect(try c.ask("MAIL FROM:<a@example.com>") == "452 4.3.1 Insufficient system storage")
        inst.expectLog("warning: not enough free space in mail queue:")
        // Room above queue_minfree, but not for this message.
        unlink(queue + "/filler")
        try fill(leave: 1_100_000)
        #expect(try c.ask("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok")
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "250 2.1.5 Ok")
        #expect(try c.ask("DATA").hasPrefix("354"))
        let line = String(repeating: "x", count: 998) + "\r\n"
        for _ in 0..<1500 { try c.stream.write(line) }
        #expect(try c.ask(".") == "451 4.3.0 Error: queue file write error")
        inst.expectLog("write queue file: No space left on device")
        #expect(incoming().count == 1, "\(incoming())")
        if let kept { #expect(incoming().contains { $0.hasSuffix(kept) }) }
        // With room again the same message is taken.
        unlink(queue + "/filler")
        #expect(try c.ask("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok")
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "250 2.1.5 Ok")
        #expect(try c.ask("DATA").hasPrefix("354"))
        for _ in 0..<1500 { try c.stream.write(line) }
        #expect(queued(try c.ask(".")) != nil)
        #expect(incoming().count == 2)
    }

    /// smtpd_per_request_deadline: a command trickled a byte at a time is cut off after
    /// smtpd_timeout in all, though each read is quick; without it, it is served.
    @Test func perRequestDeadlineCutsOffTricklingClients() throws {
        let port = freePort(), port2 = freePort()
        let inst = try instance("smtpd_timeout = 2s\n", port: port,
                         master: "\n127.0.0.1:\(port2) inet n - n - - smtpd -o smtpd_per_request_deadline=yes\n")
        func trickle(_ port: UInt16) throws -> (String, Double) {
            let c = try SMTPClient(port: port)
            _ = try c.reply()
            let t0 = monotonicNanos()
            for b in "HELO slow.client.example\r\n".utf8 {
                if FileDescriptor.waitReadable(c.stream.fd, milliseconds: 250) { break }
                try c.raw(String(UnicodeScalar(b)))
            }
            let r = try c.reply()
            return (r, Double(monotonicNanos() - t0) / 1e9)
        }
        let (plain, _) = try trickle(port)
        #expect(plain == "250 test.example.com")
        let (cut, took) = try trickle(port2)
        #expect(cut == "421 4.4.2 test.example.com Error: timeout exceeded")
        #expect(took > 1.5 && took < 3.5, "\(took) s")
        inst.expectLog("timeout after CONNECT from localhost[127.0.0.1]")
    }

    /// Real SMTP clients: swaks (with PIPELINING and a DSN request) and Python's smtplib
    /// (SMTPUTF8, BDAT-less 8BITMIME, several recipients) get their mail queued whole.
    @Test func realClientsSwaksAndSmtplib() throws {
        let port = freePort()
        let inst = try instance(port: port)
        func queuedFiles() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming")) ?? []).sorted()
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/swaks") {
            let r = Instance.run("/usr/bin/swaks", ["--server", "127.0.0.1", "--port", String(port), "--pipeline",
                                                   "--from", "sender@example.org", "--to", "alice@test.example.com",
                                                   "--helo", "swaks.example.org", "--header", "Subject: from swaks",
                                                   "--body", "swaks body line"])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("<-  250 2.0.0 Ok: queued as "), "\(r.stdout)")
            let id = try #require(queuedFiles().first)
            let texts = queueFile(inst, id).map { "\($0.type)\($0.text)" }
            #expect(texts.contains("Ssender@example.org"))
            #expect(texts.contains("Ralice@test.example.com"))
            #expect(texts.contains("NSubject: from swaks"))
            #expect(texts.contains("Nswaks body line"))
            #expect(texts.last == "E")
            inst.expectLog("disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")
        } else {
            print("skipped swaks: /usr/bin/swaks is not installed")
        }
        let script = """
        import smtplib, sys
        c = smtplib.SMTP("127.0.0.1", \(port))
        c.ehlo("python.example.org")
        assert c.has_extn("pipelining") and c.has_extn("smtputf8") and c.has_extn("chunking")
        msg = "Subject: from smtplib\\r\\nFrom: j\u{f6}rg@example.org\\r\\n\\r\\ncaf\u{e9} body\\r\\n"
        refused = c.sendmail("j\u{f6}rg@example.org", ["alice@test.example.com", "bob@test.example.com", "nobody@test.example.com"],
                             msg.encode("utf-8"), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        print(sorted(refused.items()))
        c.quit()
        """
        let path = inst.root + "/client.py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let before = Set(queuedFiles())
        let r = Instance.run("/usr/bin/python3", [path])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("nobody@test.example.com"), "the unknown user is refused: \(r.stdout)")
        let id = try #require(Set(queuedFiles()).subtracting(before).first)
        let texts = queueFile(inst, id).map { "\($0.type)\($0.text)" }
        #expect(texts.contains("Sj\u{f6}rg@example.org"))
        #expect(texts.contains("Ralice@test.example.com") && texts.contains("Rbob@test.example.com"))
        #expect(!texts.contains("Rnobody@test.example.com"))
        #expect(texts.contains("Aencoding=8bit"))
        #expect(texts.contains("Ncaf\u{e9} body"))
        #expect(texts.contains("N\tby test.example.com (Swallow) with UTF8SMTP id \(id);"))
        let size = queueFile(inst, id)[0].text.split(separator: " ").compactMap { Int($0) }
        #expect(size.count == 6 && size[5] & 1 == 1, "SMTPUTF8 is in the queue file's send options")
    }

    /// STARTTLS with the clients people use: swaks --tls, openssl s_client -starttls smtp,
    /// Python's smtplib; the message says it came over TLS (ESMTPS).
    @Test func starttlsWithRealClients() throws {
        let port = freePort()
        let dir = try certificateDirectory("tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let inst = try instance("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = \(dir)/cert.pem\n" +
                                "smtpd_tls_key_file = \(dir)/key.pem\nsmtpd_tls_loglevel = 1\n", port: port)
        func queuedFiles() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming")) ?? []).sorted()
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/swaks") {
            let r = Instance.run("/usr/bin/swaks", ["--server", "127.0.0.1", "--port", String(port), "--tls",
                                                   "--from", "sender@example.org", "--to", "alice@test.example.com",
                                                   "--header", "Subject: swaks over TLS"])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("<-  220 2.0.0 Ready to start TLS"), "\(r.stdout)")
            #expect(r.stdout.contains("=== TLS started with cipher TLSv1.3"), "\(r.stdout)")
            let id = try #require(queuedFiles().first)
            let texts = queueFile(inst, id).map { "\($0.type)\($0.text)" }
            #expect(texts.contains("N\tby test.example.com (Swallow) with ESMTPS id \(id)"), "\(texts)")
            inst.expectLog("Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
        } else {
            print("skipped swaks: /usr/bin/swaks is not installed")
        }
        let input = inst.root + "/s_client.in"
        try "EHLO openssl.example.org\r\nQUIT\r\n".write(toFile: input, atomically: true, encoding: .utf8)
        let o = Instance.run("/bin/sh", ["-c", "/usr/bin/openssl s_client -starttls smtp -connect 127.0.0.1:\(port) -quiet -crlf < \(input)"])
        #expect(o.stdout.contains("250-test.example.com") && !o.stdout.contains("STARTTLS") && o.stdout.contains("221 2.0.0 Bye"),
                "\(o.stdout)\(o.stderr)")
        let script = """
        import smtplib, ssl
        c = smtplib.SMTP("127.0.0.1", \(port))
        c.ehlo("python.example.org")
        assert c.has_extn("starttls")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(context=ctx)
        c.ehlo("python.example.org")
        assert not c.has_extn("starttls")
        c.sendmail("sender@example.org", ["bob@test.example.com"], b"Subject: smtplib over TLS\\r\\n\\r\\nbody\\r\\n")
        c.quit()
        """
        let path = inst.root + "/tls.py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let before = Set(queuedFiles())
        let p = Instance.run("/usr/bin/python3", [path])
        #expect(p.status == 0, "\(p.stdout)\(p.stderr)")
        let id = try #require(Set(queuedFiles()).subtracting(before).first)
        #expect(queueFile(inst, id).map { "\($0.type)\($0.text)" }.contains("NSubject: smtplib over TLS"))
    }

    /// Session tickets under keys from tlsmgr: a client resumes its TLS session with
    /// another smtpd process (max_use = 1: every connection gets a new one), and without
    /// tlsmgr's keys (smtpd_tls_session_cache_timeout = 0: no tickets) it cannot.
    @Test func tlsSessionsResumeAcrossSmtpdProcesses() throws {
        let dir = try certificateDirectory("tkt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = """
        import smtplib, ssl, sys
        port = int(sys.argv[1])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        session, reused = None, []
        for _ in range(2):
            c = smtplib.SMTP("127.0.0.1", port)
            c.ehlo("python.example.org")
            c.starttls(context=ctx) if session is None else None
            if session is not None:
                c.putcmd("STARTTLS"); c.getreply()
                c.sock = ctx.wrap_socket(c.sock, session=session)
                c.file = None
            c.ehlo("python.example.org")
            reused.append(c.sock.session_reused)
            session = c.sock.session
            c.quit()
        print(" ".join(str(r) for r in reused))
        """
        let path = dir + "/resume.py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        for (timeout, expected) in [("3600s", "False True"), ("0", "False False")] {
            let port = freePort()
            let inst = try instance("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = \(dir)/cert.pem\n" +
                                    "smtpd_tls_key_file = \(dir)/key.pem\nsmtpd_tls_session_cache_timeout = \(timeout)\n",
                                    port: port, master: "\ntlsmgr unix - - n 1000? 1 tlsmgr\n", smtpdArgs: "-o max_use=1")
            let p = Instance.run("/usr/bin/python3", [path, String(port)])
            #expect(p.status == 0, "\(p.stdout)\(p.stderr)")
            #expect(p.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected, "timeout \(timeout): \(p.stdout)\(p.stderr)\n\(inst.log)")
        }
    }

    /// AUTH PLAIN and LOGIN over STARTTLS with real clients (swaks, Python's smtplib), with
    /// users made by saslpasswd2 in a sasldb read through Cyrus SASL; with
    /// smtpd_tls_auth_only, AUTH on the plaintext session is refused. (Dovecot's side is the
    /// sasl-dovecot dialogue, against a real Dovecot auth service.)
    @Test func authWithRealClients() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/saslpasswd2") else {
            print("skipped: /usr/sbin/saslpasswd2 is not installed (sasl2-bin)")
            return
        }
        let port = freePort()
        let dir = try certificateDirectory("sasl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let add = Instance.run("/bin/sh", ["-c", "printf s3cret | /usr/sbin/saslpasswd2 -c -p -f \(dir)/sasldb2 -u test.example.com carol"])
        try #require(add.status == 0, "\(add.stderr)")
        chmod(dir + "/sasldb2", 0o644)
        try "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: \(dir)/sasldb2\nmech_list: PLAIN LOGIN\n"
            .write(toFile: dir + "/smtpd.conf", atomically: true, encoding: .utf8)
        let inst = try instance("""
            smtpd_tls_security_level = may
            smtpd_tls_cert_file = \(dir)/cert.pem
            smtpd_tls_key_file = \(dir)/key.pem
            smtpd_sasl_auth_enable = yes
            cyrus_sasl_config_path = \(dir)
            smtpd_tls_auth_only = yes
            smtpd_relay_restrictions = permit_sasl_authenticated, reject

            """, port: port)
        func queuedFiles() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming")) ?? []).sorted()
        }
        // Plaintext: AUTH is neither offered nor accepted, and relaying is refused.
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        let ehlo = try c.ask("EHLO client.example.org")
        #expect(!ehlo.contains("AUTH"), "\(ehlo)")
        #expect(try c.ask("AUTH PLAIN AGNhcm9sAHMzY3JldA==") == "503 5.5.1 Error: authentication not enabled")
        _ = try c.ask("QUIT")
        for mech in ["PLAIN", "LOGIN"] {
            let before = Set(queuedFiles())
            let r = Instance.run("/usr/bin/swaks", ["--server", "127.0.0.1", "--port", String(port), "--tls",
                                                   "--auth", mech, "--auth-user", "carol", "--auth-password", "s3cret",
                                                   "--from", "carol@example.org", "--to", "someone@elsewhere.example",
                                                   "--header", "Subject: swaks AUTH \(mech)"])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("<~  235 2.7.0 Authentication successful"), "\(r.stdout)")
            let id = try #require(Set(queuedFiles()).subtracting(before).first)
            let texts = queueFile(inst, id).map { "\($0.type)\($0.text)" }
            #expect(texts.contains("Asasl_method=\(mech)") && texts.contains("Asasl_username=carol"), "\(texts)")
            #expect(texts.contains("N\tby test.example.com (Swallow) with ESMTPSA id \(id)"), "\(texts)")
            inst.expectLog("\(id): client=localhost[127.0.0.1], sasl_method=\(mech), sasl_username=carol")
        }
        // openssl s_client: STARTTLS, then AUTH PLAIN typed in.
        let sIn = inst.root + "/s_client_auth.in"
        try "EHLO openssl.example.org\nAUTH PLAIN AGNhcm9sAHMzY3JldA==\nQUIT\n".write(toFile: sIn, atomically: true, encoding: .utf8)
        let so = Instance.run("/bin/sh", ["-c", "/usr/bin/openssl s_client -starttls smtp -connect 127.0.0.1:\(port) -quiet -crlf < \(sIn)"])
        #expect(so.stdout.contains("250-AUTH PLAIN LOGIN") && so.stdout.contains("235 2.7.0 Authentication successful"),
                "\(so.stdout)\(so.stderr)")
        // A wrong password: 535, and nothing relayed.
        let bad = Instance.run("/usr/bin/swaks", ["--server", "127.0.0.1", "--port", String(port), "--tls",
                                                 "--auth", "PLAIN", "--auth-user", "carol", "--auth-password", "wrong",
                                                 "--from", "carol@example.org", "--to", "someone@elsewhere.example"])
        #expect(bad.status != 0 && bad.stdout.contains("<~* 535 5.7.8 Error: authentication failed: authentication failure"), "\(bad.stdout)")
        let script = """
        import smtplib, ssl
        c = smtplib.SMTP("127.0.0.1", \(port))
        c.ehlo("python.example.org")
        assert not c.has_extn("auth")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(context=ctx)
        c.ehlo("python.example.org")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], c.esmtp_features
        c.login("carol", "s3cret")
        c.sendmail("carol@example.org", ["someone@elsewhere.example"], b"Subject: smtplib AUTH\\r\\n\\r\\nbody\\r\\n")
        c.quit()
        """
        let path = inst.root + "/auth.py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let before = Set(queuedFiles())
        let p = Instance.run("/usr/bin/python3", [path])
        #expect(p.status == 0, "\(p.stdout)\(p.stderr)")
        let id = try #require(Set(queuedFiles()).subtracting(before).first)
        #expect(queueFile(inst, id).map { "\($0.type)\($0.text)" }.contains("NSubject: smtplib AUTH"))
    }

    /// A session with a software error (a restriction the server does not know) sends the
    /// postmaster its transcript (notify_classes = resource, software).
    @Test func postmasterGetsTheTranscriptOfAFailedSession() throws {
        let port = freePort()
        let inst = try instance("smtpd_recipient_restrictions = permit_mynetworks, no_such_restriction, reject\n", port: port)
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        _ = try c.ask("HELO client.example.org")
        _ = try c.ask("MAIL FROM:<a@example.org>")
        #expect(try c.ask("RCPT TO:<alice@test.example.com>") == "451 4.3.5 Server configuration error")
        #expect(try c.ask("QUIT") == "221 2.0.0 Bye")
        var notice: [Record] = []
        try inst.waitFor("the postmaster notice") {
            let ids = (try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming")) ?? []
            notice = ids.map { queueFile(inst, $0) }.first { $0.last?.type == .end } ?? []
            return !notice.isEmpty
        }
        let texts = notice.map { "\($0.type)\($0.text)" }
        #expect(texts.contains("Sdouble-bounce@test.example.com"))
        #expect(texts.contains("Rpostmaster@test.example.com"))
        #expect(texts.contains("Alog_message_origin=local"))
        for line in ["NFrom: Mail Delivery System <MAILER-DAEMON@test.example.com>",
                     "NTo: Postmaster <postmaster@test.example.com>",
                     "NSubject: Swallow SMTP server: errors from localhost[127.0.0.1]",
                     "NTranscript of session follows.",
                     "N Out: 220 test.example.com ESMTP Swallow",
                     "N In:  HELO client.example.org",
                     "N In:  RCPT TO:<alice@test.example.com>",
                     "N Out: 451 4.3.5 Server configuration error",
                     "N Out: 221 2.0.0 Bye",
                     "NFor other details, see the local mail logfile"] {
            #expect(texts.contains(line), "\(line) in \(texts)")
        }
        // Protocol errors alone (not in notify_classes) send nothing.
        let before = (try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming"))?.count ?? 0
        let d = try SMTPClient(port: port)
        _ = try d.reply()
        #expect(try d.ask("BOGUS") == "500 5.5.2 Error: command not recognized")
        _ = try d.ask("QUIT")
        inst.expectLog("disconnect from localhost[127.0.0.1] quit=1 unknown=0/1 commands=1/2")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: inst.queueDirectory + "/incoming"))?.count ?? 0) == before)
    }

    /// in_flow_delay: cleanup takes a token from the master's flow pipe per connection and
    /// waits in_flow_delay without one; the queue manager keeps default_process_limit
    /// tokens there while it is not taking mail from the incoming queue.
    @Test func cleanupWaitsForFlowTokens() throws {
        func elapsed(_ body: () throws -> Void) rethrows -> Double {
            let t0 = monotonicNanos()
            try body()
            return Double(monotonicNanos() - t0) / 1e9
        }
        let port = freePort()
        let inst = try instance("in_flow_delay = 1s\n", port: port)
        let c = try SMTPClient(port: port)
        _ = try c.reply()
        _ = try c.ask("EHLO client.example.org")
        // No queue manager, no tokens: the first accepted RCPT, which opens a cleanup
        // connection, waits.
        var reply = ""
        _ = try c.ask("MAIL FROM:<a@example.org>")
        let slow = try elapsed { reply = try c.ask("RCPT TO:<alice@test.example.com>") }
        #expect(reply == "250 2.1.5 Ok")
        #expect(slow >= 0.9, "cleanup waited \(slow) s without a token")
        #expect(try c.ask("RSET") == "250 2.0.0 Ok")
        // One token in the pipe (through smtpd's end of it, fd 4): no wait.
        let smtpd = try #require(inst.processes(named: "smtpd").first)
        let w = open("/proc/\(smtpd)/fd/4", O_WRONLY | O_NONBLOCK)
        #expect(w >= 0)
        #expect(write(w, "x", 1) == 1)
        close(w)
        _ = try c.ask("MAIL FROM:<a@example.org>")
        let fast = try elapsed { reply = try c.ask("RCPT TO:<alice@test.example.com>") }
        #expect(reply == "250 2.1.5 Ok")
        #expect(fast < 0.8, "cleanup waited \(fast) s with a token")
        _ = try c.ask("QUIT")

        // With a queue manager, the pipe fills up to default_process_limit tokens.
        let q = try Instance(main: "in_flow_delay = 1s\ndefault_process_limit = 37\n", master: """
        qmgr      unix  n - n 300 1 qmgr
        cleanup   unix  n - n - 0 cleanup
        rewrite   unix  - - n - - trivial-rewrite
        postlog   unix-dgram n - n - 1 postlogd
        """)
        try q.startMaster()
        var tokens: Int32 = -1
        try q.waitFor("37 flow tokens") {
            guard let qmgr = q.processes(named: "qmgr").first else { return false }
            let r = open("/proc/\(qmgr)/fd/3", O_RDONLY | O_NONBLOCK)
            guard r >= 0 else { return false }
            defer { close(r) }
            _ = ioctl(r, UInt(FIONREAD), &tokens)
            return tokens == 37
        }
        #expect(tokens == 37, "\(q.log)")
    }

    /// The same record stream into our cleanup and the reference cleanup: the queue files
    /// say the same (IDs, times and generated Message-Ids aside).
    @Test func cleanupMatchesReference() throws {
        guard let ref = Instance.reference else {
            print("skipped: the reference Postfix is not unpacked (tools/fetch-reference)")
            return
        }
        let tables = "/tmp/swallow-cl-\(getpid())"
        try FileManager.default.createDirectory(atPath: tables, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tables) }
        let inst = try Instance(main: """
        mydomain = example.com
        virtual_alias_maps = inline:{ {carol@test.example.com=c1@ex.com, c2@ex.com} }
        canonical_maps = inline:{ alice@test.example.com=Alice.Smith@example.com }
        import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=\(ref)/usr/lib/postfix

        """, master: """
        cleanup    unix n - n - 0 cleanup
        refcleanup unix n - n - 0 ref-cleanup
        rewrite    unix - - n - - trivial-rewrite
        postlog    unix-dgram n - n - 1 postlogd
        """)
        try FileManager.default.createSymbolicLink(atPath: inst.programDirectory + "/ref-cleanup",
                                                   withDestinationPath: ref + "/usr/lib/postfix/sbin/cleanup")
        try inst.startMaster()
        let now = Int(time(nil))
        let envelope: [(RecordType, String)] = [
            (.time, "\(now) 0"), (.attribute, "rewrite_context=local"), (.sender, "alice"),
            (.attribute, "log_client_name=localhost"), (.attribute, "notify_flags=6"),
            (.attribute, "dsn_orig_rcpt=rfc822;bob@example.net"), (.recipient, "bob@example.net"),
            (.recipient, "carol"), (.recipient, "carol"), (.recipient, "Dave@x"),
            (.originalRecipient, "zed"), (.recipient, "other@ex.com"),
            (.messageStart, ""), (.normalText, "Received: by x"), (.normalText, "Subject: hi"),
            (.normalText, "To: carol, dave@x"), (.normalText, "Cc: \"Some One\" <someone>"), (.normalText, ""),
            (.normalText, "body"), (.extractedStart, ""), (.end, ""),
        ]
        func submit(_ service: String, flags: Int) throws -> String {
            let c = try AttrClient(path: inst.queueDirectory + "/public/" + service)
            var sc = try c.expectProtocol(MailProtocol.cleanup).scanner()
            _ = try sc.string("protocol")
            let id = try sc.string(MailAttr.queueID)
            var f = AttrList()
            f.append(MailAttr.flags, int: flags)
            try c.send(f)
            try c.stream.write(RecordCodec.encode(envelope.map { Record($0.0, $0.1) }))
            try c.stream.flush()
            var r = try c.receive().scanner()
            #expect(try r.int(MailAttr.status) == 0)
            return id
        }
        func postcat(_ id: String) -> String {
            let r = Instance.run(ref + "/usr/sbin/postcat", ["-c", inst.configDirectory, inst.queueDirectory + "/incoming/" + id],
                                 env: ["PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=\(ref)/usr/lib/postfix"])
            return r.stdout.split(separator: "\n").filter {
                !$0.contains("arrival_time") && !$0.contains("create_time") && !$0.hasPrefix("Date:") && !$0.hasPrefix("Message-Id:")
            }.joined(separator: "\n").replacingOccurrences(of: id, with: "QUEUEID")
        }
        for flags in [114, 0] {
            let theirs = postcat(try submit("refcleanup", flags: flags))
            let ours = postcat(try submit("cleanup", flags: flags))
            #expect(ours == theirs)
            #expect(ours.contains("recipient: c2@ex.com") == (flags != 0))
        }
    }
}
