// AttrClient: request/reply conversations with an internal service over a UNIX socket.
// Mirrors Postfix global/mail_connect.c with attr_clnt.c and clnt_stream.c: connect to
// queue_directory/CLASS/SERVICE, check the server's "protocol" announcement, then exchange
// attribute lists; every read and write is bounded by the time limit.
import Glibc
import MailUtil

public final class AttrClient {
    public let path: String
    public let encoding: AttrEncoding
    public let stream: FDStream
    private let reader: AttrReader

    /// Connects to the socket at `path` (absolute, or relative to the current directory,
    /// which daemons set to the queue directory).
    public init(path: String, encoding: AttrEncoding = .attr0, timeout: Int = 3600) throws {
        self.path = path
        self.encoding = encoding
        let fd = try UnixSocket.connect(path, timeout: timeout)
        stream = FDStream(fd: fd, timeout: timeout, closeOnDeinit: true)
        reader = AttrReader(stream, encoding: encoding)
    }

    /// Talks over an open stream (a child's pipes); `path` names it in messages.
    public init(stream: FDStream, path: String, encoding: AttrEncoding = .attr0) {
        self.path = path
        self.encoding = encoding
        self.stream = stream
        reader = AttrReader(stream, encoding: encoding)
    }

    /// Connects to service `name` of `serviceClass` ("public" or "private").
    public convenience init(serviceClass: String, name: String, encoding: AttrEncoding = .attr0,
                            timeout: Int = 3600) throws {
        try self.init(path: "\(serviceClass)/\(name)", encoding: encoding, timeout: timeout)
    }

    /// Reads the server's first list and checks its protocol name; returns the list, which
    /// may carry more (cleanup adds the queue ID).
    @discardableResult
    public func expectProtocol(_ name: String) throws -> AttrList {
        guard let list = try reader.readList() else {
            throw AttrError.malformed("\(path): server closed the connection before announcing \(name)")
        }
        var sc = list.scanner()
        try sc.expect(MailAttr.proto, equals: name)
        return list
    }

    /// Writes a list and flushes it.
    public func send(_ list: AttrList, more: Bool = false) throws {
        do {
            try stream.write(AttrCodec.encode(list, encoding, more: more))
            try stream.flush()
        } catch let e as StreamError {
            throw AttrError.stream(e)
        }
    }

    /// Reads the next list; end of input is an error here.
    public func receive() throws -> AttrList {
        guard let list = try reader.readList() else { throw AttrError.truncated }
        return list
    }

    public func request(_ list: AttrList) throws -> AttrList {
        try send(list)
        return try receive()
    }
}
