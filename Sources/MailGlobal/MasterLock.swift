// MasterLock: is a master running for this queue? The question "master -t" answers, and
// postfix status/stop/reload ask.
// Mirrors Postfix master/master.c (-t) and conf/postfix-script: a running master holds an
// exclusive flock(2) on $queue_directory/pid/master.pid, which holds its pid.
import Glibc
import MailUtil

public enum MasterLock {
    /// The pid file, relative to the queue directory.
    public static let pidFile = "pid/master.pid"

    /// True when a master holds the lock (an unreadable pid file counts as running, as
    /// "master -t" fails then).
    public static func isRunning(queueDirectory: String) -> Bool {
        let fd = open(queueDirectory + "/" + pidFile, O_RDWR | O_CLOEXEC)
        if fd < 0 { return errno != ENOENT }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) != 0
    }

    /// The first word of the pid file, as postfix-script reads it.
    public static func pid(queueDirectory: String) -> pid_t? {
        guard let bytes = try? SafeFile.read(queueDirectory + "/" + pidFile) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first.flatMap { pid_t($0) }
    }
}
