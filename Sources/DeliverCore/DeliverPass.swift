// DeliverPass: hands one recipient of the request being served to another transport
// (mailbox_transport, fallback_transport), waiting for its answer.
// Mirrors Postfix global/deliver_pass.c: "transport:nexthop" picks the agent and the
// next hop (the request's own next hop when none is given).
import Glibc
import MailUtil
import MailGlobal

public enum DeliverPass {
    public static func pass(_ job: DeliveryJob, to spec: String, recipient: QueueRecipient) -> Int {
        var transport = spec
        var nexthop = job.request.nexthop
        if let c = spec.firstIndex(of: ":") {
            transport = String(spec[..<c])
            let n = String(spec[spec.index(after: c)...])
            if !n.isEmpty { nexthop = n }
        }
        var r = job.request
        r.nexthop = nexthop
        r.recipients = [recipient]
        let failure = DeliveryStatus(status: "4.3.0", reason: "mail transport unavailable")
        do {
            let c = try AttrClient(serviceClass: MailClass.private, name: transport, timeout: job.config.time("daemon_timeout"))
            try c.expectProtocol(MailProtocol.deliver)
            for l in r.encoded { try c.stream.write(AttrCodec.encode(l, .attr0)) }
            try c.stream.flush()
            let reply = try DeliverReply.decode(try c.receive())
            return reply.status
        } catch {
            Msg.warn("\(job.queueID): deliver_pass to \(MailClass.private)/\(transport): \(error)")
            return job.defer(recipient, relay: transport, dsn: failure)
        }
    }
}
