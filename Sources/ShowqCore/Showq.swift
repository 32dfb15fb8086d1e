// Showq: the showq(8) daemon, which lists the mail queue for postqueue -p/-j and mailq.
// Mirrors Postfix showq/showq.c (3.x): for each queue in turn (maildrop, active, incoming,
// deferred, hold) and each complete file in it, one attribute list with the message's
// properties, then one per recipient, then a terminator; an empty list ends the listing.
// Recipients from the defer logfile come first with their reasons; those still in the
// queue file follow, without a reason, unless the logfile already named them. A maildrop
// file that its owner alone may read is left out.
import Glibc
import MailUtil
import MailGlobal
import MailServer

public final class Showq {
    static let queues = [QueueName.maildrop, QueueName.active, QueueName.incoming, QueueName.deferred, QueueName.hold]

    let config: MailConfig
    let queue: MailQueue
    let emptyAddress: String
    let duplicateLimit: Int

    init(config: MailConfig) {
        self.config = config
        queue = MailQueue(config: config)
        emptyAddress = config.string("empty_address_recipient")
        duplicateLimit = config.int("duplicate_filter_limit")
    }

    public static func main(_ arguments: [String]) -> Never {
        var desc = ServerDescription()
        desc.program = "showq"
        var showq: Showq?
        desc.postInit = { ctx in showq = Showq(config: ctx.config) }
        SingleServer.run(arguments, desc) { client, _ in
            showq?.serve(Output(client.stream))
        }
    }

    /// Attribute lists to the client; a write error ends the listing quietly (the client
    /// went away).
    final class Output {
        let stream: FDStream
        var failed = false
        init(_ stream: FDStream) { self.stream = stream }

        func send(_ list: AttrList, more: Bool = true) {
            guard !failed else { return }
            do {
                try stream.write(AttrCodec.encode(list, .attr0, more: more))
            } catch {
                failed = true
            }
        }

        /// The end of a message's recipients, or of the listing.
        func terminate() {
            send(AttrList(), more: false)
            guard !failed else { return }
            do { try stream.flush() } catch { failed = true }
        }
    }

    func serve(_ out: Output) {
        var hello = AttrList()
        hello.append(MailAttr.proto, MailProtocol.showq)
        out.send(hello, more: false)
        for name in Showq.queues {
            var previous: String?
            for id in MailQueue.scan(name) {
                if out.failed { return }
                // A directory that returns the same name twice would loop forever.
                if id == previous {
                    Msg.warn("readdir loop on queue \(name) id \(id)")
                    break
                }
                previous = id
                guard let (path, st) = queue.openable(name, id) else { continue }
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd >= 0 {
                    report(out, queue: name, id: id, fd: fd, size: Int(st.st_size), mtime: Int(st.st_mtim.tv_sec),
                           mode: st.st_mode)
                    close(fd)
                } else if name == QueueName.maildrop {
                    // A user's file that only its owner may read is not listed.
                    continue
                } else if errno != ENOENT {
                    Msg.fatal("open \(name) \(id): \(errnoText(errno))")
                }
            }
        }
        out.terminate()
    }

    func header(_ name: String, _ id: String, time: Int, size: Int, mode: mode_t, sender: String) -> AttrList {
        var a = AttrList()
        a.append(MailAttr.queueName, name)
        a.append(MailAttr.queueID, id)
        a.append(MailAttr.time, long: Int64(time))
        a.append(MailAttr.size, long: Int64(size))
        a.append(MailAttr.forcedExpire, int: mode & QueueFileMode.expire != 0 ? 1 : 0)
        a.append(MailAttr.sender, sender)
        return a
    }

    func recipient(_ address: String, reason: String) -> AttrList {
        var a = AttrList()
        a.append(MailAttr.recipient, address)
        a.append(MailAttr.reason, reason)
        return a
    }

    /// An address as mailq shows it: RFC 822 quoted, control characters as "?".
    func shown(_ address: [UInt8]) -> String {
        let text = address.isEmpty ? emptyAddress : String(decoding: address, as: UTF8.self)
        return BounceLog.printable(Quote822.quote822(text))
    }

    func report(_ out: Output, queue name: String, id: String, fd: Int32, size fileSize: Int, mtime: Int, mode: mode_t) {
        let reader = QueueFileReader(fd: fd)
        var arrival = 0
        var messageSize = 0
        var sizeOK = false
        var senderSeen = false
        var listed: Set<String>?
        var jumps = 0
        func number(_ data: [UInt8]) -> Int {
            Int(String(decoding: data.drop(while: { $0 == 0x20 || $0 == 0x09 }).prefix(while: { $0 >= 0x30 && $0 <= 0x39 || $0 == 0x2D }),
                       as: UTF8.self)) ?? 0
        }
        records: while !out.failed {
            let record: Record
            do {
                guard let r = try reader.next() else { break }
                record = r.record
            } catch {
                break
            }
            let data = record.data
            switch record.type {
            case .time:
                if arrival == 0 { arrival = number(data) }
            case .size:
                if messageSize == 0 {
                    messageSize = number(data)
                    sizeOK = messageSize > 0
                    if !sizeOK {
                        Msg.warn("\(id): malformed size record: \(BounceLog.printable(String(decoding: data.prefix(100), as: UTF8.self))) -- using file size instead")
                        messageSize = fileSize
                    }
                }
            case .sender:
                if senderSeen {
                    Msg.warn("\(id): duplicate sender address: \(BounceLog.printable(String(decoding: data, as: UTF8.self))) -- skipping remainder of this file")
                    break records
                }
                senderSeen = true
                out.send(header(name, id, time: arrival > 0 ? arrival : mtime, size: messageSize > 0 ? messageSize : fileSize,
                                mode: mode, sender: shown(data)))
                if let logged = BounceLog.read(service: QueueName.defer, queueID: id, queue: queue, config: config) {
                    listed = reasons(out, logged)
                }
            case .recipient:
                if !senderSeen {
                    Msg.warn("\(id): missing sender address: \(BounceLog.printable(String(decoding: data, as: UTF8.self))) -- skipping remainder of this file")
                    break records
                }
                let address = shown(data)
                if listed?.contains(address) != true {
                    out.send(recipient(address, reason: ""))
                }
            case .messageStart:
                if sizeOK {
                    // Skip the content: the size record says how long it is.
                    reader.seek(reader.offset + messageSize)
                }
            case .pointer:
                // In-place edits chain records; a loop of pointers ends the report.
                let target = number(data)
                jumps += 1
                if jumps > 10000 { break records }
                if target > 0 { reader.seek(target) }
            case .end:
                break records
            default:
                break
            }
        }
        if senderSeen { out.terminate() }
    }

    /// The defer logfile's recipients with their reasons; returns the addresses listed, for
    /// the duplicate filter (bounded by duplicate_filter_limit, 0 = no limit).
    func reasons(_ out: Output, _ logged: [LogRecord]) -> Set<String> {
        var listed = Set<String>()
        for r in logged {
            if duplicateLimit == 0 || listed.count < duplicateLimit { listed.insert(r.recipient) }
            out.send(recipient(r.recipient, reason: r.reason))
        }
        return listed
    }
}
