// Test helpers shared by the unit test targets: streams over temporary files, read in
// chunks of a chosen size, so that every codec is fed one byte at a time, in odd splits
// and all at once.
import Glibc
import MailUtil

/// Chunk sizes every codec test is fed with: one byte at a time, odd splits, all at once.
public let feedSizes = [1, 2, 3, 7, 64, Int.max]

/// A stream that reads `bytes` from an unlinked temporary file, at most `chunk` bytes per read.
public func makeStream(_ bytes: [UInt8], chunk: Int = Int.max) -> FDStream {
    var template = Array("/tmp/swallow-test-XXXXXX".utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    precondition(fd >= 0, "mkstemp failed")
    template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    bytes.withUnsafeBytes { raw in
        var off = 0
        while off < raw.count {
            let n = write(fd, raw.baseAddress! + off, raw.count - off)
            precondition(n > 0, "write failed")
            off += n
        }
    }
    lseek(fd, 0, SEEK_SET)
    let s = FDStream(fd: fd, closeOnDeinit: true)
    s.maxReadSize = chunk
    return s
}

public func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
