// HashOrder: the iteration order of Postfix's hash tables (util/htable.c).
// Some Postfix output follows a table's bucket order (postconf's warnings about unused
// parameters, the order of lines that "postconf -e" appends). Postfix seeds the hash per
// process unless NORANDOMIZE is set; Swallow always uses the unseeded order, so its output
// is reproducible and equals Postfix's with NORANDOMIZE=1. The hash is 64-bit FNV-1a over
// (byte + 1); tables start at max(size, 13) | 1 buckets, insert at the head of a bucket and
// grow to (2 * size) | 1 when full.

public struct HashOrder {
    private var buckets: [[String]]
    private var used = 0

    public init(requestedSize: Int = 0) {
        buckets = Array(repeating: [], count: max(requestedSize, 13) | 1)
    }

    /// Builds the table from keys in insertion order; a key already present is ignored.
    public init(keys: [String], requestedSize: Int = 0) {
        self.init(requestedSize: requestedSize)
        var seen = Set<String>()
        for k in keys where seen.insert(k).inserted { insert(k) }
    }

    static func hash(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for b in key.utf8 {
            h ^= UInt64(b) &+ 1
            h = h &* 0x100000001B3
        }
        return h
    }

    public mutating func insert(_ key: String) {
        if used >= buckets.count {
            let old = buckets
            buckets = Array(repeating: [], count: (2 * old.count) | 1)
            used = 0
            for bucket in old {
                for k in bucket { link(k) }
            }
        }
        link(key)
    }

    private mutating func link(_ key: String) {
        let i = Int(HashOrder.hash(key) % UInt64(buckets.count))
        buckets[i].insert(key, at: 0)
        used += 1
    }

    /// Removes a key, leaving the order of the others as it was.
    public mutating func remove(_ key: String) {
        let i = Int(HashOrder.hash(key) % UInt64(buckets.count))
        if let j = buckets[i].firstIndex(of: key) {
            buckets[i].remove(at: j)
            used -= 1
        }
    }

    /// Keys in iteration order: buckets in index order, each from head to tail.
    public var keys: [String] { buckets.flatMap { $0 } }
}
