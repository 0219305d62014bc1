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
    ],
    targets: [
        .executableTarget(
            name: "PipelineBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "ReliableDB", package: "ReliableDB"),
            ],
            path: "Benchmarks/PipelineBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        )
    ]
)
