// SystemError: an errno value with its text, as Postfix prints it with "%m".
// Mirrors nothing in particular; used by every layer that makes system calls.
import Glibc

/// An operating-system error: the errno value and the operation that failed.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let errno: Int32
    /// What failed, object first ("open /etc/postfix/main.cf"); may be empty.
    public let context: String

    public init(errno: Int32, _ context: String = "") {
        self.errno = errno
        self.context = context
    }

    /// Captures the current `errno`.
    public static func current(_ context: String = "") -> SystemError {
        SystemError(errno: Glibc.errno, context)
    }

    /// The strerror(3) text, like "%m".
    public var reason: String { errnoText(errno) }

    public var description: String {
        context.isEmpty ? reason : "\(context): \(reason)"
    }
}

/// The strerror(3) text for an errno value.
public func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Retries a system call that was interrupted by a signal.
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}
