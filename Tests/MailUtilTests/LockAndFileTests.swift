import Testing
import TestSupport
import Glibc
@testable import MailUtil

@Suite struct LockAndFileTests {
    func tempDir() -> String {
        var t = Array("/tmp/swallow-lock-XXXXXX".utf8CString)
        let p = t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: p!)
    }

    @Test(arguments: LockStyle.allCases)
    func exclusiveLockBlocksSecondOpen(style: LockStyle) throws {
        let dir = tempDir()
        let path = dir + "/f"
        let a = open(path, O_RDWR | O_CREAT, 0o600)
        try FileLock.apply(a, style: style, .exclusive, wait: false)
        // A second open file description (fcntl locks are per process, so use a child).
        var pid: pid_t = 0
        let script = style == .flock ? "flock -n \(path) true" : "python3 -c 'import fcntl,sys; f=open(\"\(path)\",\"r+\"); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)'"
        let args: [String] = ["/bin/sh", "-c", script]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(status != 0, "the second locker must fail while the lock is held")
        try FileLock.apply(a, style: style, .unlock)
        close(a)
    }

    @Test func dotLockIsExclusive() throws {
        let dir = tempDir()
        let lock = try DotLock.acquire(dir + "/mbox", attempts: 1)
        #expect(throws: SystemError.self) { try DotLock.acquire(dir + "/mbox", attempts: 1) }
        lock.release()
        let again = try DotLock.acquire(dir + "/mbox", attempts: 1)
        again.release()
    }

    @Test func atomicWriteReplaces() throws {
        let dir = tempDir()
        let path = dir + "/main.cf"
        try SafeFile.atomicWrite(path, bytes("one\n"), mode: 0o640)
        try SafeFile.atomicWrite(path, bytes("two\n"))
        #expect(try SafeFile.read(path) == bytes("two\n"))
        var st = stat()
        stat(path, &st)
        #expect(st.st_mode & 0o777 == 0o640)
        #expect(throws: SystemError.self) { try SafeFile.read(dir + "/missing") }
    }

    @Test func editFileCommits() throws {
        let dir = tempDir()
        let path = dir + "/main.cf"
        try SafeFile.atomicWrite(path, bytes("old\n"))
        let e = try EditFile(path: path)
        try e.write(bytes("new\n"))
        try e.commit()
        #expect(try SafeFile.read(path) == bytes("new\n"))
        #expect(access(path + ".tmp", F_OK) != 0)
    }
}
