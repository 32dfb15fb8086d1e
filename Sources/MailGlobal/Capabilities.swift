// Capabilities: what this build supports, as postconf -m, -a and -A list it.
// Each list names only what is implemented; entries are added as the features land.

public enum Capabilities {
    /// Lookup table types (postconf -m), sorted as Postfix sorts them.
    public static var tableTypes: [String] { registeredTableTypes.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) } }
    /// Filled in by the lookup table layer.
    nonisolated(unsafe) public static var registeredTableTypes: [String] = []
    /// SASL server plug-in types (postconf -a).
    nonisolated(unsafe) public static var saslServerTypes: [String] = []
    /// SASL client plug-in types (postconf -A).
    nonisolated(unsafe) public static var saslClientTypes: [String] = []
}
