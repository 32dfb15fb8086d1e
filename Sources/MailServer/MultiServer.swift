// MultiServer: many persistent clients served by one process, request by request.
// Mirrors Postfix master/multi_server.c: connections are accepted as they come; each
// request (a readable client) is bracketed by TAKEN/AVAIL; a process retires after
// max_use closed connections or max_idle seconds without clients, and at once when master
// goes away or reloads (clients see end-of-file between requests and reconnect). Used by trivial-rewrite, proxymap, scache, anvil, verify.
import Glibc
import MailUtil
import MailGlobal

public enum MultiServer {
    /// What the service does with a connection after a request.
    public enum Disposition {
        case keep, close
    }

    /// Runs the daemon. `onConnect` runs once per new client (e.g. to send the protocol
    /// announcement); `service` handles one request from a readable client.
    public static func run(_ arguments: [String], _ desc: ServerDescription,
                           onConnect: ((FDStream, ServerContext) -> Void)? = nil,
                           service: @escaping (FDStream, ServerContext) -> Disposition) -> Never {
        let ctx = MailServer.start(arguments, desc, kind: .multi)
        var clients: [Int32: FDStream] = [:]
        var idleTimer: Int?
        var masterGone = false

        func armIdle() {
            if let t = idleTimer { ctx.loop.cancel(t) }
            idleTimer = nil
            if ctx.maxIdle > 0 && clients.isEmpty {
                idleTimer = ctx.loop.after(Double(ctx.maxIdle)) { ctx.exit() }
            }
        }
        func drop(_ fd: Int32) {
            ctx.loop.remove(fd)
            clients.removeValue(forKey: fd)
            ctx.useCount += 1
            if clients.isEmpty && (masterGone || (ctx.maxUse > 0 && ctx.useCount >= ctx.maxUse)) { ctx.exit() }
            armIdle()
        }
        func add(_ fd: Int32) {
            let stream = FDStream(fd: fd, closeOnDeinit: true)
            clients[fd] = stream
            armIdle()
            onConnect?(stream, ctx)
            try? stream.flush()
            ctx.loop.onReadable(fd) {
                guard let s = clients[fd] else { return }
                MasterStatus.report(available: false)
                // A client that closed is noticed here: no byte is readable.
                if s.bufferedInputCount == 0, (try? s.peekByte()) == nil {
                    drop(fd)
                } else {
                    // Requests a client sent back to back are all answered, in order
                    // (the later ones are already in our buffer, and the socket will
                    // not wake us for them).
                    var d = service(s, ctx)
                    try? s.flush()
                    while d == .keep && s.bufferedInputCount > 0 {
                        d = service(s, ctx)
                        try? s.flush()
                    }
                    if d == .close { drop(fd) }
                }
                if !MasterStatus.report(available: true) { masterGone = true }
                if masterGone { ctx.exit() }
            }
        }

        if ctx.options.standalone {
            add(0)
        } else {
            for lfd in ctx.listenFDs {
                ctx.loop.onReadable(lfd) {
                    ctx.description.preAccept?(ctx)
                    if let fd = MailServer.accept(ctx, lfd) { add(fd) }
                }
            }
            // Master went away or reloaded: leave at once; clients reconnect to the next
            // generation (requests are served whole, so none is cut in half).
            ctx.loop.onReadable(MasterStatus.statusFD) {
                Msg.debug("master disconnect -- exiting")
                ctx.exit()
            }
        }
        armIdle()
        ctx.loop.run()
        ctx.exit()
    }

    /// Runs a service of the attribute protocol (attr0): each new client gets the
    /// `protocol=NAME` announcement, then every request list gets the list `serve`
    /// returns; nil, or input that is not an attribute list, closes the connection.
    public static func runAttr(_ arguments: [String], _ desc: ServerDescription, protocolName: String,
                               serve: @escaping (AttrList) -> AttrList?) -> Never {
        run(arguments, desc,
            onConnect: { stream, _ in
                var hello = AttrList()
                hello.append(MailAttr.proto, protocolName)
                try? stream.write(AttrCodec.encode(hello, .attr0))
            },
            service: { stream, _ in
                let reader = AttrReader(stream, encoding: .attr0)
                do {
                    guard let request = try reader.readList(), let reply = serve(request) else { return .close }
                    try stream.write(AttrCodec.encode(reply, .attr0))
                    return .keep
                } catch {
                    Msg.warn("\(error)")
                    return .close
                }
            })
    }
}
