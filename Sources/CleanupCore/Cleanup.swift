// Cleanup: the cleanup(8) service: one message per connection, from the client's record
// stream to a complete, fsynced queue file in incoming/ (or hold/), then a wakeup for the
// queue manager, then the status to the client.
// Mirrors Postfix cleanup/cleanup.c and cleanup_api.c.
import Glibc
import MailUtil
import MailGlobal
import MailDict
import MailServer

public enum Cleanup {
    nonisolated(unsafe) static var settings: Settings!

    static func serve(_ client: SingleServer.Client, _ ctx: ServerContext) {
        let stream = client.stream
        stream.timeout = ctx.config.time("ipc_timeout")
        let created: (id: QueueID, fd: Int32)
        do {
            created = try settings.queue.create(in: QueueName.incoming)
        } catch {
            Msg.fatal("open \(QueueName.incoming) queue file: \(error)")
        }
        let id = created.id.text
        let path = settings.queue.path(QueueName.incoming, created.id)
        defer { close(created.fd) }
        // Stale logfiles of an earlier message with the same ID go.
        for q in [QueueName.defer, QueueName.bounce, QueueName.trace] {
            unlink(settings.queue.path(q, created.id))
        }
        let out = QueueFileWriter(fd: created.fd, path: path, sizeLimit: settings.messageSizeLimit,
                                  lineLimit: settings.lineLimit)
        out.queueID = id
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.cleanup)
        hello.append(MailAttr.queueID, id)
        do {
            try stream.write(AttrCodec.encode(hello, .attr0))
            try stream.flush()
        } catch {
            Msg.warn("\(id): send protocol announcement: \(error)")
            unlink(path)
            return
        }
        let reader = AttrReader(stream, encoding: .attr0)
        var requested = CleanupFlags()
        do {
            guard let list = try reader.readList() else {
                unlink(path)
                return
            }
            var sc = list.scanner()
            requested = CleanupFlags(rawValue: try sc.int(MailAttr.flags)).intersection(.clientMask)
        } catch {
            Msg.warn("\(id): cannot read flags from client: \(error)")
            unlink(path)
            return
        }
        // receive_override_options is the client's business (smtpd, pickup, qmqpd).
        let flags = requested
        let state = CleanupState(settings: settings, out: out, queueID: id, flags: flags)

        // Records until the end record; after an error the rest is read and dropped so the
        // client is not left writing into a full socket.
        let records = RecordReader(stream)
        var sawEnd = false
        while true {
            let r: Record?
            do {
                r = try records.read()
            } catch {
                Msg.warn("\(id): read record from client: \(error)")
                break
            }
            guard let r else { break }
            if r.type == .pointer || r.type == .padding {
                state.protocolError("message rejected: record type \(r.type.rawValue) not allowed")
            } else if state.status.isEmpty {
                state.process(r)
            }
            if r.type == .end && (state.phase == .done || !state.status.isEmpty) {
                sawEnd = true
                break
            }
        }
        if !sawEnd && state.status.isEmpty {
            // The client went away: nothing to answer.
            Msg.debug("\(id): the client went away before the end of the message")
            unlink(path)
            return
        }
        var status = state.finish()
        if status.isEmpty && state.flags.contains(.discard) {
            unlink(path)
        } else if !status.isEmpty {
            unlink(path)
        } else if state.flags.contains(.hold) {
            do {
                try settings.queue.move(created.id, from: QueueName.incoming, to: QueueName.hold)
            } catch {
                Msg.warn("\(id): \(error)")
                unlink(path)
                status.insert(.write)
            }
        } else {
            MailTrigger.send(serviceClass: MailClass.public, service: ctx.config.string("queue_service_name"))
        }
        reply(stream, status: status, state: state)
    }

    static func reply(_ stream: FDStream, status: CleanupStatus, state: CleanupState) {
        var reason = ""
        if !status.isEmpty {
            let d = status.detail
            reason = state.reason.isEmpty ? "\(d.dsn) \(d.text)" : state.reason
            if state.flags.contains(.smtpReply) && status.contains(.content) {
                reason = "\(d.smtp) \(reason)"
            }
        }
        var list = AttrList()
        list.append(MailAttr.status, int: status.rawValue)
        list.append(MailAttr.reason, reason)
        try? stream.write(AttrCodec.encode(list, .attr0))
        try? stream.flush()
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "cleanup"
        desc.unlimited = true
        desc.inFlowDelay = true
        desc.postInit = { ctx in
            settings = Settings(config: ctx.config)
        }
        desc.preAccept = { _ in DictCache.exitIfChanged() }
        SingleServer.run(arguments, desc, service: serve)
    }
}
