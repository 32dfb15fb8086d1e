// EventServer and DgramServer: daemons that manage their connections themselves
// (postscreen, tlsproxy) and datagram services (postlogd).
// Mirrors Postfix master/event_server.c and dgram_server.c.
import Glibc
import MailUtil
import MailGlobal

public enum EventServer {
    /// The service owns each accepted descriptor and reports progress through the loop;
    /// it calls `done` when a connection ends so that max_use and idle time are counted.
    public static func run(_ arguments: [String], _ desc: ServerDescription,
                           service: @escaping (Int32, ServerContext, _ done: @escaping () -> Void) -> Void) -> Never {
        let ctx = MailServer.start(arguments, desc, kind: .event)
        var active = 0
        var idleTimer: Int?
        var masterGone = false
        func armIdle() {
            if let t = idleTimer { ctx.loop.cancel(t) }
            idleTimer = (ctx.maxIdle > 0 && active == 0) ? ctx.loop.after(Double(ctx.maxIdle)) { ctx.exit() } : nil
        }
        for lfd in ctx.listenFDs {
            ctx.loop.onReadable(lfd) {
                guard !masterGone, let fd = MailServer.accept(ctx, lfd) else { return }
                active += 1
                MasterStatus.report(available: false)
                armIdle()
                service(fd, ctx) {
                    active -= 1
                    ctx.useCount += 1
                    if !masterGone && !MasterStatus.report(available: true) { masterGone = true }
                    if active == 0 && (masterGone || (ctx.maxUse > 0 && ctx.useCount >= ctx.maxUse)) { ctx.exit() }
                    armIdle()
                }
            }
        }
        ctx.loop.onReadable(MasterStatus.statusFD) {
            masterGone = true
            ctx.loop.remove(MasterStatus.statusFD)
            if active == 0 { ctx.exit() }
        }
        armIdle()
        ctx.loop.run()
        ctx.exit()
    }
}

public enum DgramServer {
    /// Longer datagrams are truncated, as Postfix's dgram_server truncates them.
    public static let maxDatagram = 4096

    /// Hands each datagram received on the listen socket to `service`.
    public static func run(_ arguments: [String], _ desc: ServerDescription,
                           service: @escaping ([UInt8], ServerContext) -> Void) -> Never {
        let ctx = MailServer.start(arguments, desc, kind: .dgram)
        var idleTimer: Int?
        func armIdle() {
            if let t = idleTimer { ctx.loop.cancel(t) }
            idleTimer = ctx.maxIdle > 0 ? ctx.loop.after(Double(ctx.maxIdle)) { ctx.exit() } : nil
        }
        for lfd in ctx.listenFDs {
            FileDescriptor.setNonBlocking(lfd)
            ctx.loop.onReadable(lfd) {
                var buf = [UInt8](repeating: 0, count: maxDatagram)
                while true {
                    // A retired server leaves the rest to its successor (a reload after a
                    // log rotation must not write to the old file).
                    if ctx.masterGone { ctx.exit() }
                    let n = recv(lfd, &buf, buf.count, 0)
                    if n < 0 { break }
                    MasterStatus.report(available: false)
                    service(Array(buf[0..<n]), ctx)
                    ctx.useCount += 1
                    if !MasterStatus.report(available: true) { ctx.exit() }
                }
                armIdle()
            }
        }
        ctx.loop.onReadable(MasterStatus.statusFD) { ctx.exit() }
        armIdle()
        ctx.loop.run()
        ctx.exit()
    }
}
