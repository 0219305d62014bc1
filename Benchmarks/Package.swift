// swift-tools-version:6.1
// Benchmarks live in their own package so `swift build` and `swift test` of ReliableDB never
// build package-benchmark. Run: cd Benchmarks && swift package benchmark
import PackageDescription

let package = Package(
    name: "ReliableDBBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "ReliableDB", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
        .package(url: "https://github.com/vapor/fluent-kit", from: "1.57.0"),
        .package(url: "https://github.com/vapor/fluent-postgres-driver", from: "2.14.0"),
    ],
    targets: [
        // Closed-loop callers, medians and ratios for the side-by-side throughput runs.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Side by side: the reliable client vs the plain PostgresNIO client, same server, same run.
        .executableTarget(
            name: "PostgresThroughput",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "ReliableDBPostgres", package: "ReliableDB"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Side by side: Fluent through ReliableDB (ReliableDBFluent) vs plain Fluent
        // (fluent-postgres-driver), the example app's queries, same server, same run.
        .executableTarget(
            name: "FluentThroughput",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "ReliableDBPostgres", package: "ReliableDB"),
                .product(name: "ReliableDBFluent", package: "ReliableDB"),
                .product(name: "FluentKit", package: "fluent-kit"),
                .product(name: "FluentPostgresDriver", package: "fluent-postgres-driver"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // PostgresNIO's async prepared statements against its EventLoopFuture PreparedQuery.
        .executableTarget(
            name: "PostgresAPIs",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "ReliableDBPostgres", package: "ReliableDB"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The pipeline's and the pool's CPU per operation, on one event loop and on two.
        .executableTarget(
            name: "PipelineContention",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "ReliableDBPostgres", package: "ReliableDB"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Query latency with the alert webhook down or a black hole, against an idle sink.
        .executableTarget(
            name: "WebhookIsolation",
            dependencies: [
                .product(name: "ReliableDB", package: "ReliableDB"),
                .product(name: "ReliableDBSQLite", package: "ReliableDB"),
                .product(name: "ReliableDBWebhook", package: "ReliableDB"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "PipelineBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "ReliableDB", package: "ReliableDB"),
            ],
            path: "Benchmarks/PipelineBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
