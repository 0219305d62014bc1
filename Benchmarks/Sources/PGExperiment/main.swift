import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ReliableDB

final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    let loop: any EventLoop
    init(_ loop: any EventLoop) { self.loop = loop }
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

let environment = ProcessInfo.processInfo.environment
let callers = 10
let seconds = Double(environment["SECS"] ?? "") ?? 5
guard let rawURL = environment["RELIABLEDB_TEST_POSTGRES_URL"], case .success(let url) = PostgresURL.parse(rawURL) else { exit(2) }
let logger = Logger(label: "x")
let group = MultiThreadedEventLoopGroup.singleton

func connect(on loop: any EventLoop) async throws -> PostgresConnection {
    let config = PostgresConnection.Configuration(host: url.host, port: url.port, username: url.username, password: url.password?.value, database: url.database, tls: .disable)
    return try await PostgresConnection.connect(on: loop, configuration: config, id: Int.random(in: 0..<1_000_000), logger: logger)
}

struct One: PostgresPreparedStatement {
    static let sql = "SELECT 1"
    typealias Row = Int
    func makeBindings() -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
}

func run(_ label: String, pinned: Bool, prepared: Bool, perOp: Bool = false) async throws {
    var connections: [PostgresConnection] = []
    for _ in 0..<callers { connections.append(try await connect(on: group.next())) }
    let deadline = ContinuousClock.now + .seconds(seconds)
    let start = ContinuousClock.now
    let count = try await withThrowingTaskGroup(of: Int.self) { tg in
        for connection in connections {
            let body: @Sendable () async throws -> Int = {
                var done = 0
                let executor = LoopExecutor(connection.eventLoop)
                while ContinuousClock.now < deadline {
                    if perOp {
                        try await withTaskExecutorPreference(executor) {
                            for try await _ in try await connection.query("SELECT 1", logger: logger) {}
                        }
                    } else if prepared {
                        for try await _ in try await connection.execute(One(), logger: logger) {}
                    } else {
                        for try await _ in try await connection.query("SELECT 1", logger: logger) {}
                    }
                    done += 1
                }
                return done
            }
            if pinned {
                let executor = LoopExecutor(connection.eventLoop)
                tg.addTask(executorPreference: executor) { try await body() }
            } else {
                tg.addTask { try await body() }
            }
        }
        return try await tg.reduce(0, +)
    }
    print(label, Int(Double(count) / (ContinuousClock.now - start).seconds))
    for c in connections { try await c.close() }
}

for _ in 0..<2 {
    try await run("direct-perop", pinned: false, prepared: false, perOp: true)
    try await run("direct", pinned: false, prepared: false)
    try await run("pinned", pinned: true, prepared: false)
    try await run("direct-prepared", pinned: false, prepared: true)
    try await run("pinned-prepared", pinned: true, prepared: true)
}
