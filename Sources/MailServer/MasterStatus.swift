// MasterStatus: the child side of the master status channel (fd 5).
// Mirrors Postfix master/master_status.c and master_proto.h: a native-endian
// { int pid; unsigned generation; int avail; } written in one write(2); TAKEN = 0,
// AVAIL = 1. The generation comes from $GENERATION in octal. Readability of fd 5 means
// that master closed its end (reload or exit): the child finishes and exits.
import Glibc
import MailUtil

public enum MasterStatus {
    public static let statusFD: Int32 = 5
    public static let flowReadFD: Int32 = 3
    public static let flowWriteFD: Int32 = 4
    public static let firstListenFD: Int32 = 6

    public static let taken: Int32 = 0
    public static let available: Int32 = 1

    nonisolated(unsafe) static var generation: UInt32 = {
        guard let g = getenv("GENERATION") else { return 0 }
        return UInt32(String(cString: g), radix: 8) ?? 0
    }()

    /// Tells master this process is busy (false) or idle (true); false when master is gone.
    @discardableResult
    public static func report(available: Bool) -> Bool {
        var msg: (Int32, UInt32, Int32) = (getpid(), generation, available ? Self.available : taken)
        let n = withUnsafeBytes(of: &msg) { write(statusFD, $0.baseAddress, 12) }
        return n == 12
    }

    /// The 12 bytes of a status message (for master and tests).
    public static func encode(pid: Int32, generation: UInt32, available: Bool) -> [UInt8] {
        var msg: (Int32, UInt32, Int32) = (pid, generation, available ? Self.available : taken)
        return withUnsafeBytes(of: &msg) { Array($0) }
    }

    public static func decode(_ b: [UInt8]) -> (pid: Int32, generation: UInt32, available: Bool)? {
        guard b.count == 12 else { return nil }
        return b.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: Int32.self), raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self),
             raw.loadUnaligned(fromByteOffset: 8, as: Int32.self) == available)
        }
    }
}
