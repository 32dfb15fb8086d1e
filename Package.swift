// swift-tools-version:6.0
// Swallow: a Postfix-compatible mail transfer agent. Layers (lower never imports higher):
// C shims & system libraries -> MailUtil -> MailGlobal -> (MailServer, MailTLS, MailSASL) -> <Program>Core -> program.
import PackageDescription

/// Every program is its own executable product, named as the Postfix program it mirrors.
/// `main.swift` lives in Sources/Programs/<name>/ and hands over to its `<Name>Core` library.
let programs: [(name: String, deps: [Target.Dependency])] = [
    ("postconf", ["PostconfCore"]),
    ("master", ["MasterCore"]),
    ("postfix", ["PostfixCore"]),
    ("postlog", ["PostlogCore"]),
    ("postmap", ["PostmapCore"]),
    ("postalias", ["PostmapCore"]),
    ("postlogd", ["MailServer", "MailGlobal", "MailUtil"]),
    ("proxymap", ["MailServer", "MailGlobal", "MailDict", "MailUtil"]),
    ("trivial-rewrite", ["TrivialRewriteCore"]),
    ("cleanup", ["CleanupCore"]),
    ("smtpd", ["SmtpdCore"]),
    ("error", ["DeliverCore"]),
    ("discard", ["DeliverCore"]),
    ("bounce", ["BounceCore"]),
    ("qmgr", ["QmgrCore"]),
    ("local", ["LocalCore"]),
    ("virtual", ["DeliverCore"]),
    ("pipe", ["DeliverCore"]),
    ("sendmail", ["SubmitCore"]),
    ("postdrop", ["SubmitCore"]),
    ("pickup", ["PickupCore"]),
    ("showq", ["ShowqCore"]),
    ("flush", ["FlushCore"]),
    ("smtp", ["SmtpCore"]),
    ("lmtp", ["SmtpCore"]),
    ("scache", ["ScacheCore"]),
    ("verify", ["VerifyCore"]),
    ("tlsmgr", ["TlsmgrCore"]),
    ("postqueue", ["QueueAdminCore"]),
    ("postsuper", ["QueueAdminCore"]),
    ("postcat", ["QueueAdminCore"]),
    // Only for the integration tests; never installed.
    ("swallow-testd", ["MailServer", "MailUtil"]),
    // Load generator and sink for bench/ (never installed).
    ("swallow-source", ["MailUtil"]),
    ("swallow-sink", ["MailUtil"]),
]

// bench/fuzz.sh sets SWALLOW_FUZZ=1 for the libFuzzer product (it has no main of its own).
let fuzzing = Context.environment["SWALLOW_FUZZ"] == "1"
let fuzzTargets: [Target] = fuzzing
    ? [.executableTarget(name: "swallow-fuzz", dependencies: ["SmtpdCore", "MailGlobal", "MailDict", "MailUtil"],
                         path: "Sources/Fuzz/swallow-fuzz")]
    : []

let package = Package(
    name: "Swallow",
    products: programs.map { .executable(name: $0.name, targets: [$0.name]) }
        + (fuzzing ? [.executable(name: "swallow-fuzz", targets: ["swallow-fuzz"])] : []),
    targets: [
        // C shims: GNU extensions and macros Swift cannot see (posix_spawn, epoll, CMSG, ...).
        .target(name: "CShim"),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSASL", pkgConfig: "libsasl2", providers: [.apt(["libsasl2-dev"])]),
        .systemLibrary(name: "CBerkeleyDB", providers: [.apt(["libdb-dev"])]),
        .systemLibrary(name: "CPCRE2", pkgConfig: "libpcre2-8", providers: [.apt(["libpcre2-dev"])]),
        .systemLibrary(name: "CResolv"),

        .target(name: "MailUtil", dependencies: ["CShim"]),
        .target(name: "MailDict", dependencies: ["MailUtil", "CShim", "CBerkeleyDB", "CPCRE2"]),
        .target(name: "MailDNS", dependencies: ["MailUtil", "CResolv"]),
        .target(name: "MailGlobal", dependencies: ["MailUtil", "MailDict", "CShim"]),
        .target(name: "MailServer", dependencies: ["MailGlobal", "MailDict", "MailUtil", "CShim"]),
        .target(name: "MasterCore", dependencies: ["MailGlobal", "MailUtil", "CShim"]),
        .target(name: "PostfixCore", dependencies: ["PostconfCore", "MailGlobal", "MailUtil", "CShim"]),
        .target(name: "PostlogCore", dependencies: ["MailGlobal", "MailUtil"]),
        .target(name: "PostmapCore", dependencies: ["MailGlobal", "MailDict", "MailUtil", "CShim"]),
        .target(name: "TrivialRewriteCore", dependencies: ["MailServer", "MailGlobal", "MailDict", "MailUtil"]),
        .target(name: "CleanupCore", dependencies: ["MailServer", "MailGlobal", "MailDict", "MailUtil"]),
        .target(name: "SmtpdCore", dependencies: ["MailServer", "MailGlobal", "MailDNS", "MailDict", "MailUtil", "MailTLS", "MailSASL"]),
        .target(name: "DeliverCore", dependencies: ["MailServer", "MailGlobal", "MailDict", "MailUtil", "CShim"]),
        .target(name: "BounceCore", dependencies: ["MailServer", "MailGlobal", "MailUtil"]),
        .target(name: "QmgrCore", dependencies: ["MailServer", "MailGlobal", "MailUtil"]),
        .target(name: "LocalCore", dependencies: ["DeliverCore", "MailServer", "MailGlobal", "MailDict", "MailUtil"]),
        .target(name: "SubmitCore", dependencies: ["MailGlobal", "MailUtil"]),
        .target(name: "PickupCore", dependencies: ["MailServer", "MailGlobal", "MailUtil"]),
        .target(name: "ShowqCore", dependencies: ["MailServer", "MailGlobal", "MailUtil"]),
        .target(name: "FlushCore", dependencies: ["MailServer", "MailGlobal", "MailUtil"]),
        .target(name: "SmtpCore", dependencies: ["DeliverCore", "MailServer", "MailGlobal", "MailDNS", "MailUtil", "MailTLS", "MailSASL"]),
        .target(name: "ScacheCore", dependencies: ["MailServer", "MailGlobal", "MailUtil", "CShim"]),
        .target(name: "MailTLS", dependencies: ["COpenSSL", "MailGlobal", "MailUtil"]),
        .target(name: "MailSASL", dependencies: ["CSASL", "MailUtil"]),
        .target(name: "VerifyCore", dependencies: ["MailServer", "MailGlobal", "MailDict", "MailUtil"]),
        .target(name: "TlsmgrCore", dependencies: ["MailServer", "MailGlobal", "MailDict", "MailUtil"]),
        .target(name: "QueueAdminCore", dependencies: ["MailGlobal", "MailUtil"]),
        .target(name: "PostconfCore", dependencies: ["MailGlobal", "MailUtil", "COpenSSL"]),

        .testTarget(name: "SystemLibraryTests",
                    dependencies: ["CShim", "COpenSSL", "CSASL", "CBerkeleyDB", "CPCRE2", "CResolv"]),
        .target(name: "TestSupport", dependencies: ["MailUtil"], path: "Tests/Support"),
        .testTarget(name: "MailUtilTests", dependencies: ["MailUtil", "TestSupport"]),
        .testTarget(name: "MailDNSTests", dependencies: ["MailDNS", "TestSupport"]),
        .testTarget(name: "MailDictTests", dependencies: ["MailDict", "MailUtil"]),
        .testTarget(name: "MailGlobalTests", dependencies: ["MailGlobal", "MailDict", "MailUtil", "TestSupport"]),
        .testTarget(name: "IntegrationTests", dependencies: ["MailGlobal", "MailUtil", "CShim", "TestSupport"],
                    exclude: ["SmtpdDialogues", "BounceScenarios", "DeliveryScenarios", "SubmitScenarios", "QueueScenarios"]),
        .testTarget(name: "QmgrTests", dependencies: ["QmgrCore", "MailGlobal"]),
        .testTarget(name: "VerifyTests", dependencies: ["VerifyCore", "MailGlobal"]),
        .testTarget(name: "PostmapTests", dependencies: ["TestSupport"], exclude: ["Scenarios"]),
        .testTarget(name: "PostconfTests", dependencies: ["PostconfCore", "MailGlobal", "MailUtil", "TestSupport"],
                    exclude: ["Scenarios", "Fixtures"]),
    ] + fuzzTargets + programs.map {
        .executableTarget(name: $0.name, dependencies: $0.deps, path: "Sources/Programs/\($0.name)")
    }
)
