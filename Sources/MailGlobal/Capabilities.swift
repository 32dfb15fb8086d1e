// Capabilities: what this build supports, as postconf -m, -a and -A list it.
// Each list names only what is implemented; entries are added as the features land.

public enum Capabilities {
    // Lookup table types (postconf -m) come from the table layer: MailDictSetup.workingTypes.
    /// SASL server plug-in types (postconf -a).
    nonisolated(unsafe) public static var saslServerTypes: [String] = []
    /// SASL client plug-in types (postconf -A).
    nonisolated(unsafe) public static var saslClientTypes: [String] = []
}
