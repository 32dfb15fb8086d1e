// SingleServer: one client at a time, one process per client.
// Mirrors Postfix master/single_server.c: serialised accept under pid/<type>.<service>,
// TAKEN before and AVAIL after each client, exit after max_use clients, after max_idle
// seconds without one, or when master goes away (never in the middle of a client).
// Used by smtpd, cleanup, local, smtp, bounce, showq and the other per-client daemons.
import Glibc
import MailUtil
import MailGlobal

public enum SingleServer {
    /// What the service function gets for each client.
    public struct Client {
        /// The connection (standard input and output in stand-alone mode).
        public let stream: FDStream
        /// The descriptor of the connection (0 in stand-alone mode).
        public let fd: Int32
    }

    /// Runs the daemon; `service` handles one client and returns when done with it.
    public static func run(_ arguments: [String], _ desc: ServerDescription,
                           service: (Client, ServerContext) -> Void) -> Never {
        let ctx = MailServer.start(arguments, desc, kind: .single)
        if ctx.options.standalone {
            let stream = FDStream(fd: 0, writeFD: 1)
            service(Client(stream: stream, fd: 0), ctx)
            try? stream.flush()
            ctx.exit()
        }
        let flowDelay = desc.inFlowDelay ? ctx.config.time("in_flow_delay") : 0
        let retireAt = ctx.options.retire.map { monotonicNanos() + UInt64($0) * 1_000_000_000 }
        while true {
            if ctx.maxUse > 0 && ctx.useCount >= ctx.maxUse {
                Msg.debug("use count limit -- exiting")
                ctx.exit()
            }
            if let r = retireAt, monotonicNanos() >= r {
                Msg.debug("time to retire -- exiting")
                ctx.exit()
            }
            // max_idle counts from the end of the last client, lock wait included.
            let idleUntil = ctx.maxIdle > 0 ? monotonicNanos() + UInt64(ctx.maxIdle) * 1_000_000_000 : nil
            if !MailServer.lock(ctx, until: idleUntil) {
                Msg.debug("idle timeout -- exiting")
                ctx.exit()
            }
            guard let ready = MailServer.waitForClient(ctx, until: idleUntil) else {
                MailServer.unlock(ctx)
                Msg.debug("idle timeout -- exiting")
                ctx.exit()
            }
            ctx.description.preAccept?(ctx)
            let fd = MailServer.accept(ctx, ready)
            MailServer.unlock(ctx)
            guard let fd else { continue }
            MasterStatus.report(available: false)
            Msg.debug("connection established")
            if flowDelay > 0 && !MailFlow.get(1) { sleep(UInt32(flowDelay)) }
            let stream = FDStream(fd: fd, closeOnDeinit: true)
            service(Client(stream: stream, fd: fd), ctx)
            try? stream.flush()
            ctx.useCount += 1
            Msg.debug("connection closed")
            if !MasterStatus.report(available: true) {
                Msg.debug("master disconnect -- exiting")
                ctx.exit()
            }
        }
    }
}
