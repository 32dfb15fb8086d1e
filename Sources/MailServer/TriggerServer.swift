// TriggerServer: services woken by short trigger messages.
// Mirrors Postfix master/trigger_server.c: a trigger arrives on a FIFO or as a short-lived
// UNIX-socket connection; one read of up to 1024 bytes (waiting at most trigger_timeout on a
// socket) is handed to the service between TAKEN and AVAIL. The daemon may add its own
// timers and descriptors to the context's event loop (qmgr, pickup).
import Glibc
import MailUtil
import MailGlobal

public enum TriggerServer {
    public static let bufferSize = 1024

    public static func run(_ arguments: [String], _ desc: ServerDescription,
                           service: @escaping ([UInt8], ServerContext) -> Void) -> Never {
        let ctx = MailServer.start(arguments, desc, kind: .trigger)
        var idleTimer: Int?
        func armIdle() {
            if let t = idleTimer { ctx.loop.cancel(t) }
            idleTimer = ctx.maxIdle > 0 ? ctx.loop.after(Double(ctx.maxIdle)) { ctx.exit() } : nil
        }
        func deliver(_ bytes: [UInt8]) {
            MasterStatus.report(available: false)
            service(bytes, ctx)
            ctx.useCount += 1
            if !MasterStatus.report(available: true) { ctx.exit() }
            if ctx.maxUse > 0 && ctx.useCount >= ctx.maxUse { ctx.exit() }
            armIdle()
        }
        if ctx.options.standalone {
            let data = (try? SafeFile.readAll(fd: 0)) ?? []
            service(Array(data.prefix(bufferSize)), ctx)
            ctx.exit()
        }
        let timeout = ctx.config.time("trigger_timeout")
        for lfd in ctx.listenFDs {
            ctx.loop.onReadable(lfd) {
                var buf = [UInt8](repeating: 0, count: bufferSize)
                if ctx.transport == "fifo" {
                    let n = read(lfd, &buf, buf.count)
                    if n > 0 { deliver(Array(buf[0..<n])) }
                    return
                }
                guard let fd = MailServer.accept(ctx, lfd) else { return }
                defer { close(fd) }
                // One read, then close: Postfix's unix_trigger() client writes its request
                // and waits for the server to close, so reading on until end of input
                // would stall both for trigger_timeout.
                guard FileDescriptor.waitReadable(fd, milliseconds: Int32(clamping: timeout * 1000)) else { return }
                let n = read(fd, &buf, bufferSize)
                if n > 0 { deliver(Array(buf[0..<n])) }
            }
        }
        ctx.loop.onReadable(MasterStatus.statusFD) { ctx.exit() }
        armIdle()
        ctx.loop.run()
        ctx.exit()
    }
}
