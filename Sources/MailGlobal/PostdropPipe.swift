// PostdropPipe: postdrop(1) run as a child, records to its standard input and its
// answers from its standard output: how sendmail and "sendmail -bs" (smtpd -S) submit.
// Mirrors Postfix global/mail_stream.c (mail_stream_command).
import Glibc
import MailUtil

/// postdrop as a child with pipes on its standard input and output (mail_stream_command).
public final class PostdropPipe {
    public let pid: pid_t
    public let input: FDStream
    public let output: FDStream
    public let reader: AttrReader

    public init(path: String, argv: [String], environment: [String]) throws {
        var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else { throw SystemError.current("pipe") }
        defer {
            close(toChild[0])
            close(fromChild[1])
        }
        pid = try Spawn.run(path, argv: argv, environment: environment,
                            descriptors: [0: toChild[0], 1: fromChild[1], 2: 2])
        _ = fcntl(toChild[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fromChild[0], F_SETFD, FD_CLOEXEC)
        input = FDStream(fd: toChild[1])
        output = FDStream(fd: fromChild[0], closeOnDeinit: true)
        reader = AttrReader(output, encoding: .attr0)
    }

    /// The [protocol, queue_id] announcement.
    public func readQueueID() -> String? {
        guard let list = try? reader.readList() else { return nil }
        var sc = list.scanner()
        guard (try? sc.expect(MailAttr.proto, equals: MailProtocol.postdrop)) != nil else { return nil }
        return try? sc.string(MailAttr.queueID)
    }

    public func readStatus() -> CleanupStatus? {
        guard let list = try? reader.readList() else { return nil }
        var sc = list.scanner()
        guard let s = try? sc.int(MailAttr.status) else { return nil }
        return CleanupStatus(rawValue: s)
    }

    /// Closes our end and reaps the child; its exit status (or 128+signal).
    public func wait() -> Int32 {
        close(input.fd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}
