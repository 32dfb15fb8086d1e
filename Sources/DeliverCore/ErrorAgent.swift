// The error, retry and discard delivery agents: every recipient of the request is
// bounced (error), deferred (retry) or reported delivered (discard), with the DSN code
// and text the next-hop field carries ("5.1.1 User unknown", "4.3.2 deferred transport").
// Mirrors Postfix error/error.c and discard/discard.c.
import MailUtil
import MailGlobal
import MailServer

public enum ErrorAgent {
    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "error"
        SingleServer.run(arguments, desc) { client, ctx in
            DeliveryAgent.serve(client, ctx) { job in
                switch ctx.serviceName {
                case "retry": return deliver(job, defaultCode: "4.0.0")
                case "error": return deliver(job, defaultCode: "5.0.0")
                default: Msg.fatal("bad error service name: \(ctx.serviceName)")
                }
            }
        }
    }

    static func deliver(_ job: DeliveryJob, defaultCode: String) -> Int {
        let r = job.request
        if r.nexthop.isEmpty { Msg.fatal("empty nexthop hostname") }
        if r.recipients.isEmpty { Msg.fatal("recipient count: 0") }
        let (code, text) = DSNCode.split(r.nexthop, defaultCode: defaultCode)
        let dsn = DeliveryStatus(status: code, reason: text)
        var result = 0
        for rcpt in r.recipients {
            let st = defaultCode.first == "5"
                ? job.report.bounce(flags: job.flags, id: job.queueID, stats: r.stats, recipient: rcpt.info, relay: noRelayAgent, dsn: dsn)
                : job.report.defer(flags: job.flags, id: job.queueID, stats: r.stats, recipient: rcpt.info, relay: noRelayAgent, dsn: dsn)
            if st == 0 { DeliveryReport.completed(fd: job.fd, path: job.path, offset: rcpt.offset) }
            result |= st
        }
        return result
    }
}

public enum DiscardAgent {
    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "discard"
        SingleServer.run(arguments, desc) { client, ctx in
            DeliveryAgent.serve(client, ctx) { job in
                let r = job.request
                if r.nexthop.isEmpty { Msg.fatal("empty nexthop hostname") }
                if r.recipients.isEmpty { Msg.fatal("recipient count: 0") }
                let (code, text) = DSNCode.split(r.nexthop, defaultCode: "2.0.0")
                let dsn = DeliveryStatus(status: code, reason: text)
                var result = 0
                for rcpt in r.recipients {
                    let st = job.report.sent(flags: job.flags, id: job.queueID, stats: r.stats, recipient: rcpt.info,
                                             relay: noRelayAgent, dsn: dsn)
                    if st == 0 { DeliveryReport.completed(fd: job.fd, path: job.path, offset: rcpt.offset) }
                    result |= st
                }
                return result
            }
        }
    }
}
