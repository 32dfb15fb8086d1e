// EventLoop: a single-threaded epoll loop with descriptor handlers, timers and signals.
// Mirrors Postfix util/events.c (event_enable_read, event_request_timer, event_loop) and
// the self-pipe signal handling of master/master_sig.c. Handlers run on the loop's thread
// only; a handler may add or remove any registration, including its own.
import Glibc
import CShim

public final class EventLoop {
    public typealias Handler = () -> Void

    private let epfd: Int32
    private var readers: [Int32: Handler] = [:]
    private var writers: [Int32: Handler] = [:]
    private var timers: [(deadline: UInt64, id: Int, handler: Handler)] = []
    private var nextTimerID = 1
    private var stopped = false

    public init() {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if epfd < 0 { Msg.fatal("epoll_create: \(errnoText(errno))") }
    }

    deinit { close(epfd) }

    private func update(_ fd: Int32) {
        var ev = epoll_event()
        var mask: UInt32 = 0
        if readers[fd] != nil { mask |= EPOLLIN.rawValue }
        if writers[fd] != nil { mask |= EPOLLOUT.rawValue }
        ev.events = mask
        ev.data.fd = fd
        if mask == 0 {
            _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
            return
        }
        if epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0 {
            if errno != ENOENT || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 {
                Msg.fatal("epoll_ctl fd \(fd): \(errnoText(errno))")
            }
        }
    }

    /// Calls `handler` whenever `fd` is readable (or at EOF/error).
    public func onReadable(_ fd: Int32, _ handler: @escaping Handler) {
        readers[fd] = handler
        update(fd)
    }

    public func onWritable(_ fd: Int32, _ handler: @escaping Handler) {
        writers[fd] = handler
        update(fd)
    }

    public func removeReadable(_ fd: Int32) {
        if readers.removeValue(forKey: fd) != nil { update(fd) }
    }

    public func removeWritable(_ fd: Int32) {
        if writers.removeValue(forKey: fd) != nil { update(fd) }
    }

    /// Forgets every registration of `fd` (call before closing it).
    public func remove(_ fd: Int32) {
        readers.removeValue(forKey: fd)
        writers.removeValue(forKey: fd)
        var ev = epoll_event()
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
    }

    /// Runs `handler` once after `seconds` (fractions allowed); returns an id for cancel.
    @discardableResult
    public func after(_ seconds: Double, _ handler: @escaping Handler) -> Int {
        let id = nextTimerID
        nextTimerID += 1
        let deadline = monotonicNanos() + UInt64(max(0, seconds) * 1e9)
        timers.append((deadline, id, handler))
        timers.sort { $0.deadline < $1.deadline || ($0.deadline == $1.deadline && $0.id < $1.id) }
        return id
    }

    public func cancel(_ id: Int) {
        timers.removeAll { $0.id == id }
    }

    /// Makes `run` return after the current iteration.
    public func stop() { stopped = true }

    /// Runs one iteration: waits at most until the next timer (or `maxWait` seconds).
    public func runOnce(maxWait: Double? = nil) {
        var waitMS: Int32 = -1
        if let first = timers.first {
            let now = monotonicNanos()
            waitMS = first.deadline > now ? Int32(clamping: (first.deadline - now + 999_999) / 1_000_000) : 0
        }
        if let m = maxWait {
            let mm = Int32(clamping: Int(m * 1000))
            waitMS = waitMS < 0 ? mm : min(waitMS, mm)
        }
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        let n = epoll_wait(epfd, &events, Int32(events.count), waitMS)
        if n < 0 && errno != EINTR { Msg.fatal("epoll_wait: \(errnoText(errno))") }
        if n > 0 {
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                let mask = events[i].events
                let readable = mask & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
                let writable = mask & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
                if readable, let h = readers[fd] { h() }
                if writable, let h = writers[fd] { h() }
            }
        }
        let now = monotonicNanos()
        while let first = timers.first, first.deadline <= now {
            timers.removeFirst()
            first.handler()
        }
    }

    /// Runs until `stop()`.
    public func run() {
        stopped = false
        while !stopped { runOnce() }
    }
}

/// Signals delivered through a self-pipe so that the event loop handles them in order,
/// outside the signal handler.
public enum SignalPipe {
    nonisolated(unsafe) static var writeFD: Int32 = -1
    nonisolated(unsafe) public private(set) static var readFD: Int32 = -1

    /// Routes the given signals into the pipe; `handler` gets each signal number.
    public static func install(_ signals: [Int32], loop: EventLoop, handler: @escaping (Int32) -> Void) {
        if readFD < 0 {
            var fds: [Int32] = [0, 0]
            if cshim_pipe2_cloexec(&fds) < 0 { Msg.fatal("pipe: \(errnoText(errno))") }
            for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            readFD = fds[0]
            writeFD = fds[1]
        }
        for sig in signals {
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = { signo in
                var b = UInt8(truncatingIfNeeded: signo)
                _ = write(SignalPipe.writeFD, &b, 1)
            }
            sigemptyset(&sa.sa_mask)
            sa.sa_flags = SA_RESTART
            sigaction(sig, &sa, nil)
        }
        loop.onReadable(readFD) {
            var buf = [UInt8](repeating: 0, count: 64)
            while true {
                let n = read(readFD, &buf, buf.count)
                if n <= 0 { break }
                for b in buf[0..<n] { handler(Int32(b)) }
            }
        }
    }
}
