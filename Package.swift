// swift-tools-version:6.1
import PackageDescription

let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "ReliableDB",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ReliableDB", targets: ["ReliableDB"]),
        .library(name: "ReliableDBSQLite", targets: ["ReliableDBSQLite"]),
        .library(name: "ReliableDBPostgres", targets: ["ReliableDBPostgres"]),
        .library(name: "ReliableDBPrometheus", targets: ["ReliableDBPrometheus"]),
        .library(name: "ReliableDBWebhook", targets: ["ReliableDBWebhook"]),
        .library(name: "ReliableDBHTTP", targets: ["ReliableDBHTTP"]),
        .library(name: "ReliableDBHummingbird", targets: ["ReliableDBHummingbird"]),
        .library(name: "ReliableDBVapor", targets: ["ReliableDBVapor"]),
        .library(name: "ReliableDBFluent", targets: ["ReliableDBFluent"]),
        .library(name: "ReliableDBLoadTest", targets: ["ReliableDBLoadTest"]),
        .library(name: "ReliableDBTesting", targets: ["ReliableDBTesting"]),
        .executable(name: "reliabledb", targets: ["reliabledb"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // The pool is ReliableDB's own; the cancel key is read from the protocol's startup
        // messages, which do not depend on the version (Sources/ReliableDBPostgres/KeyedConnector.swift).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.2.0"),
        // Reloading: ReloadingFileProvider, which `serve` watches its .env file with (live settings).
        .package(url: "https://github.com/apple/swift-configuration", from: "1.0.0", traits: ["JSON", "Reloading"]),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
        .package(url: "https://github.com/vapor/fluent-kit", from: "1.57.0"),
        .package(url: "https://github.com/vapor/fluent", from: "4.13.0"),
        .package(url: "https://github.com/vapor/postgres-kit", from: "2.17.0"),
        .package(url: "https://github.com/vapor/sql-kit", from: "3.36.0"),
        // Only for `swift package generate-documentation` (the DocC catalogs; scripts/test builds them).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The time types the core and the pool both run on: MonotonicTime, ReliabilityClock, alarms.
        .target(
            name: "ReliableDBClock",
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDB",
            dependencies: [
                "ReliableDBClock",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBPrometheus",
            dependencies: [
                "ReliableDB",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBTesting",
            dependencies: ["ReliableDB", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBHTTP",
            dependencies: [
                "ReliableDB",
                "ReliableDBPrometheus",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBVapor",
            dependencies: [
                "ReliableDB",
                "ReliableDBHTTP",
                "ReliableDBPrometheus",
                .product(name: "Vapor", package: "vapor"),
            ],
            swiftSettings: strictSwift
        ),
        // Fluent's queries, saves, transactions, raw SQL and migrations through the pipeline, on
        // ReliableDB's own PostgreSQL pool (Sources/ReliableDBFluent/Documentation.docc/Fluent.md).
        .target(
            name: "ReliableDBFluent",
            dependencies: [
                "ReliableDB",
                "ReliableDBPostgres",
                .product(name: "FluentKit", package: "fluent-kit"),
                .product(name: "FluentSQL", package: "fluent-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBHummingbird",
            dependencies: [
                "ReliableDBHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBLoadTest",
            dependencies: [
                "ReliableDB",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // Only to classify the raw PostgresClient's pool errors by their type.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBWebhook",
            dependencies: [
                "ReliableDB",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBSQLite",
            dependencies: [
                "ReliableDB",
                "ReliableDBPool",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: strictSwift
        ),
        // The lease-and-deadline state machine both backends' pools run on (package access only).
        .target(
            name: "ReliableDBPool",
            dependencies: ["ReliableDBClock"],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBPoolTests",
            dependencies: ["ReliableDB", "ReliableDBPool"],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ReliableDBPostgres",
            dependencies: [
                "ReliableDB",
                "ReliableDBPool",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                // Only to name the errors of a plain PostgresClient (the load tester's raw mode).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // Patroni's REST API (Failover/PatroniTopology.swift).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strictSwift
        ),
        // The `reliabledb check` scenarios as a library, so tests run each one without the process
        // (package access only).
        .target(
            name: "ReliableDBCheck",
            dependencies: [
                "ReliableDB",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                "ReliableDBHTTP",
                "ReliableDBHummingbird",
                "ReliableDBPrometheus",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBCheckTests",
            dependencies: [
                "ReliableDBCheck",
                "ReliableDBTestSupport",
                "ReliableDB",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "reliabledb",
            dependencies: [
                "ReliableDB",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                "ReliableDBHTTP",
                "ReliableDBHummingbird",
                "ReliableDBPrometheus",
                "ReliableDBWebhook",
                "ReliableDBLoadTest",
                "ReliableDBCheck",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReadmeSnippetsTests",
            dependencies: [
                "ReliableDBVapor",
                "ReliableDBFluent",
                .product(name: "Fluent", package: "fluent"),
                .product(name: "Vapor", package: "vapor"),
                "ReliableDB", "ReliableDBSQLite", "ReliableDBPostgres", "ReliableDBHTTP", "ReliableDBHummingbird",
                "ReliableDBPrometheus", "ReliableDBWebhook",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBVaporTests",
            dependencies: [
                "ReliableDB",
                "ReliableDBHTTP",
                "ReliableDBVapor",
                "ReliableDBTesting",
                .product(name: "VaporTesting", package: "vapor"),
            ],
            swiftSettings: strictSwift
        ),
        // ReliableDBFluent's own behaviour against real PostgreSQL and PgBouncer (scripts/test).
        .testTarget(
            name: "ReliableDBFluentTests",
            dependencies: [
                "ReliableDBFluent",
                "ReliableDB",
                "ReliableDBPostgres",
                "ReliableDBTestSupport",
                .product(name: "FluentKit", package: "fluent-kit"),
                .product(name: "FluentSQL", package: "fluent-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSwift
        ),
        // Examples/: apps that use the products as a user would, built and tested with the rest.
        .target(
            name: "VaporERP",
            dependencies: [
                "ReliableDB", "ReliableDBPostgres", "ReliableDBFluent", "ReliableDBVapor", "ReliableDBPrometheus",
                .product(name: "Fluent", package: "fluent"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            path: "Examples/VaporERP/Sources/VaporERP",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "vapor-erp",
            dependencies: ["VaporERP", "ReliableDB", .product(name: "Vapor", package: "vapor"), .product(name: "Fluent", package: "fluent")],
            path: "Examples/VaporERP/Sources/vapor-erp",
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "VaporERPTests",
            dependencies: [
                "VaporERP", "ReliableDB", "ReliableDBPostgres", "ReliableDBFluent", "ReliableDBVapor",
                "ReliableDBTestSupport",
                .product(name: "Fluent", package: "fluent"),
                .product(name: "VaporTesting", package: "vapor"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            path: "Examples/VaporERP/Tests/VaporERPTests",
            swiftSettings: strictSwift
        ),
        .target(
            name: "HummingbirdOrders",
            dependencies: [
                "ReliableDB", "ReliableDBPostgres", "ReliableDBHTTP", "ReliableDBHummingbird", "ReliableDBPrometheus",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/HummingbirdOrders/Sources/HummingbirdOrders",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "hummingbird-orders",
            dependencies: [
                "HummingbirdOrders", "ReliableDB",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/HummingbirdOrders/Sources/hummingbird-orders",
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "HummingbirdOrdersTests",
            dependencies: [
                "HummingbirdOrders", "ReliableDB", "ReliableDBPostgres", "ReliableDBTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/HummingbirdOrders/Tests/HummingbirdOrdersTests",
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBTests",
            dependencies: [
                "ReliableDBTesting",
                "ReliableDB",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBPrometheusTests",
            dependencies: [
                "ReliableDBTesting",
                "ReliableDB", "ReliableDBPrometheus", .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSwift
        ),
        // What several test targets need to run the built `reliabledb` as a process.
        .target(
            name: "ReliableDBTestSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/ReliableDBTestSupport",
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBTestSupportTests",
            dependencies: [
                "ReliableDBTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        // Faults injected for real (fault proxy, pg_terminate_backend, a stopped server, PgBouncer)
        // under concurrent load; see Sources/ReliableDB/Documentation.docc/Deadlines.md.
        .testTarget(
            name: "ReliableDBFaultTests",
            dependencies: [
                "ReliableDBTestSupport",
                "ReliableDB",
                "ReliableDBPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBHTTPTests",
            dependencies: [
                "ReliableDBTestSupport",
                "ReliableDBTesting",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                "ReliableDB",
                "ReliableDBHTTP",
                "ReliableDBHummingbird",
                "ReliableDBPrometheus",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                "ReliableDBWebhook",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBLoadTestTests",
            dependencies: [
                "ReliableDBTestSupport",
                "ReliableDB",
                "ReliableDBLoadTest",
                "ReliableDBSQLite",
                "ReliableDBPostgres",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBWebhookTests",
            dependencies: [
                "ReliableDBTesting",
                "ReliableDB",
                "ReliableDBWebhook",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBPostgresTests",
            dependencies: [
                "ReliableDBTesting",
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                "ReliableDBTestSupport",
                "ReliableDB",
                "ReliableDBPostgres",
                "ReliableDBPool",
                "ReliableDBHTTP",
                "ReliableDBHummingbird",
                "ReliableDBPrometheus",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strictSwift
        ),
        // The cancel key and the protocol CancelRequest against real PostgreSQL and PgBouncer.
        .testTarget(
            name: "ReliableDBCancelTests",
            dependencies: [
                "ReliableDBPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "ReliableDBSQLiteTests",
            dependencies: [
                "ReliableDBTesting","ReliableDB", "ReliableDBSQLite", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strictSwift
        ),
    ]
)
