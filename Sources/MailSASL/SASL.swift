// SASL: the server and client sides of SMTP authentication, behind one interface each,
// with the Cyrus library (libsasl2: sasldb, saslauthd, auxprop plug-ins) and Dovecot's
// authentication protocol as implementations.
// Mirrors Postfix xsasl/xsasl_server.c, xsasl_client.c and sasl_mech_filter.c.
import Glibc
import MailUtil

/// The outcome of one step of an authentication exchange.
public enum SASLStep: Equatable {
    /// Send "334 CHALLENGE" (base64) and read the client's answer.
    case more(String)
    case done
    /// 535: the reason text.
    case fail(String)
    /// 454: the reason text.
    case temp(String)
}

/// One session's server side.
public protocol SASLServer: AnyObject {
    /// The mechanisms to announce, space separated; nil when there are none.
    var mechanisms: String? { get }
    func first(mechanism: String, initialResponse: String?) -> SASLStep
    func next(_ response: String) -> SASLStep
    /// The authenticated (or attempted) login name.
    var username: String? { get }
}

public struct SASLServerArguments {
    public var service: String
    public var realm: String?
    public var securityOptions: String
    public var clientAddress: String
    public var clientPort: String
    public var serverAddress: String
    public var serverPort: String
    /// 1: TLS is active; 2: with a trusted client certificate.
    public var tlsFlag: Int
    public init(service: String, realm: String?, securityOptions: String, clientAddress: String,
                clientPort: String, serverAddress: String, serverPort: String, tlsFlag: Int) {
        self.service = service
        self.realm = realm
        self.securityOptions = securityOptions
        self.clientAddress = clientAddress
        self.clientPort = clientPort
        self.serverAddress = serverAddress
        self.serverPort = serverPort
        self.tlsFlag = tlsFlag
    }
}

/// A server implementation (smtpd_sasl_type), set up once per process.
public protocol SASLServerImpl: AnyObject {
    func create(_ args: SASLServerArguments) -> SASLServer?
}

public enum SASL {
    /// xsasl_server_init: "cyrus" or "dovecot"; nil (with a warning) for anything else.
    public static func serverImpl(type: String, path: String, myhostname: String, configPath: String) -> SASLServerImpl? {
        switch type.lowercased() {
        case "cyrus": return CyrusServerImpl(path: path, myhostname: myhostname, configPath: configPath)
        case "dovecot": return DovecotServerImpl(socketPath: path)
        default:
            Msg.warn("unsupported SASL server implementation: \(type)")
            return nil
        }
    }

    /// The security properties both implementations know (xsasl_cyrus_security.c).
    static let securityNames: [(String, UInt32)] = [
        ("noplaintext", 0x0001), ("noactive", 0x0002), ("nodictionary", 0x0004),
        ("forward_secrecy", 0x0008), ("noanonymous", 0x0010), ("mutual_auth", 0x0040),
    ]

    /// The words of a *_sasl_security_options value as Cyrus flags; an unknown word is fatal.
    public static func securityFlags(_ text: String, parameter: String) -> UInt32 {
        var flags: UInt32 = 0
        for w in Tokens.split(text) {
            guard let f = securityNames.first(where: { $0.0 == w.lowercased() }) else {
                Msg.fatal("unknown \(parameter) value \"\(w)\" in \"\(text)\"")
            }
            flags |= f.1
        }
        return flags
    }

    /// sasl_mech_filter: the mechanisms of `list` that the filter (a string list: names,
    /// "!name" exclusions, /file/name or type:table entries) keeps, in server order.
    /// An empty filter keeps all.
    public static func filterMechanisms(_ list: String, keep: (String) -> Bool?) -> String {
        Tokens.split(list).filter { keep($0) ?? true }.joined(separator: " ")
    }

    /// printable(): non-printable bytes become "?".
    static func printable(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 0x20 && $0 < 0x7f ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}

/// One session's client side (smtp_sasl_*).
public protocol SASLClient: AnyObject {
    /// Picks a mechanism of the server's list; the initial response (base64, may be
    /// empty) or a failure text.
    func first(mechanisms: String, username: String, password: String) -> Result<(mechanism: String, response: String), SASLClientError>
    /// Answers a server challenge (base64, as sent after "334 ").
    func next(_ challenge: String) -> Result<String, SASLClientError>
}

public struct SASLClientError: Error {
    public let text: String
    public init(_ text: String) { self.text = text }
}
