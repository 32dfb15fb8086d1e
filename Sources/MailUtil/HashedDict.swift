// HashedDict: a string dictionary that also knows the order in which Postfix would list
// its keys (see HashOrder). Used where Postfix output follows a dictionary's order.

public struct HashedDict {
    public private(set) var values: [String: String] = [:]
    private var order: HashOrder

    public init(requestedSize: Int = 0) {
        order = HashOrder(requestedSize: requestedSize)
    }

    public subscript(key: String) -> String? {
        get { values[key] }
        set {
            if let v = newValue {
                if values.updateValue(v, forKey: key) == nil { order.insert(key) }
            } else if values.removeValue(forKey: key) != nil {
                order.remove(key)
            }
        }
    }

    public var isEmpty: Bool { values.isEmpty }
    public var count: Int { values.count }

    /// Keys in Postfix's iteration order.
    public var keys: [String] { order.keys }
}
