// Each system library target links and works: a real call into each library.
import Testing
import Glibc
import CShim
import COpenSSL
import CSASL
import CBerkeleyDB
import CPCRE2
import CResolv

@Suite struct SystemLibraryTests {
    @Test func openSSLCreatesContext() {
        let version = String(cString: OpenSSL_version(Int32(OPENSSL_VERSION)))
        #expect(version.hasPrefix("OpenSSL 3"))
        let ctx = SSL_CTX_new(TLS_server_method())
        #expect(ctx != nil)
        #expect(cssl_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1)
        SSL_CTX_free(ctx)
    }

    @Test func saslInitialises() {
        var impl: UnsafePointer<CChar>?
        var version: Int32 = 0
        sasl_version(&impl, &version)
        #expect(impl.map { String(cString: $0) } == "Cyrus SASL")
        #expect(version > 0x02010000)
    }

    @Test func berkeleyDBStoresAndFetches() throws {
        let path = "/tmp/swallow-bdb-\(getpid()).db"
        defer { unlink(path) }
        var dbp: UnsafeMutablePointer<DB>?
        #expect(db_create(&dbp, nil, 0) == 0)
        let db = try #require(dbp)
        #expect(db.pointee.open(db, nil, path, nil, DB_HASH, UInt32(DB_CREATE), 0o644) == 0)
        var key = Array("postmaster\0".utf8)
        var val = Array("root\0".utf8)
        try key.withUnsafeMutableBytes { kp in
            try val.withUnsafeMutableBytes { vp in
                var k = DBT(); k.data = kp.baseAddress; k.size = UInt32(kp.count)
                var v = DBT(); v.data = vp.baseAddress; v.size = UInt32(vp.count)
                #expect(db.pointee.put(db, nil, &k, &v, 0) == 0)
                var out = DBT()
                #expect(db.pointee.get(db, nil, &k, &out, 0) == 0)
                let got = try #require(out.data)
                #expect(String(cString: got.assumingMemoryBound(to: CChar.self)) == "root")
            }
        }
        #expect(db.pointee.close(db, 0) == 0)
    }

    @Test func pcre2Matches() throws {
        let pattern = Array("^(\\w+)@(.+)$".utf8)
        var err: Int32 = 0
        var off: Int = 0
        let code = try #require(pattern.withUnsafeBufferPointer {
            pcre2_compile_8($0.baseAddress, $0.count, UInt32(PCRE2_CASELESS), &err, &off, nil)
        })
        defer { pcre2_code_free_8(code) }
        let md = pcre2_match_data_create_from_pattern_8(code, nil)
        defer { pcre2_match_data_free_8(md) }
        let subject = Array("user@Example.COM".utf8)
        let rc = subject.withUnsafeBufferPointer { pcre2_match_8(code, $0.baseAddress, $0.count, 0, 0, md, nil) }
        #expect(rc == 3)
        let ov = pcre2_get_ovector_pointer_8(md)!
        #expect(String(decoding: subject[Int(ov[4])..<Int(ov[5])], as: UTF8.self) == "Example.COM")
    }

    @Test func resolverParsesAnswer() {
        // A canned DNS reply: one MX answer "10 mail.example.com" for example.com.
        var msg: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        let qname: [UInt8] = [7] + Array("example".utf8) + [3] + Array("com".utf8) + [0]
        msg += qname + [0, 15, 0, 1]
        msg += [0xC0, 0x0C, 0, 15, 0, 1, 0, 0, 0x0E, 0x10]
        let rdata: [UInt8] = [0, 10, 4] + Array("mail".utf8) + [0xC0, 0x0C]
        msg += [0, UInt8(rdata.count)] + rdata
        var handle = ns_msg()
        let rc = msg.withUnsafeBufferPointer { ns_initparse($0.baseAddress, Int32($0.count), &handle) }
        #expect(rc == 0)
        var rr = ns_rr()
        #expect(ns_parserr(&handle, ns_s_an, 0, &rr) == 0)
        #expect(rr.type == 15)
        var name = [CChar](repeating: 0, count: 256)
        let n = msg.withUnsafeBufferPointer {
            dn_expand($0.baseAddress, $0.baseAddress! + $0.count, rr.rdata + 2, &name, Int32(name.count))
        }
        #expect(n > 0)
        #expect(name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } == "mail.example.com")
    }

    @Test func shimPipeIsCloseOnExec() {
        var fds: [Int32] = [0, 0]
        #expect(cshim_pipe2_cloexec(&fds) == 0)
        #expect(fcntl(fds[0], F_GETFD) & FD_CLOEXEC != 0)
        close(fds[0]); close(fds[1])
        #expect(cshim_cmsg_space(4) == 24)
    }
}
