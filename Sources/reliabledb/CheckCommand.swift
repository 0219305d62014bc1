import ArgumentParser
import ReliableDB
import ReliableDBCheck

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Test the configured database connection and the reliability features against it.",
        discussion: """
            With no flag: the basic connection test. --reliability adds the circuit-breaker, timeout, \
            performance and recovery scenarios; --health the monitoring checks and the HTTP endpoints; \
            --all runs everything. Exits non-zero when any check fails. Leaves no tables behind.
            """
    )

    @Flag(help: "Run the circuit breaker, timeout, performance and recovery scenarios.")
    var reliability = false

    @Flag(help: "Run the health check, metrics and HTTP endpoint checks.")
    var health = false

    @Flag(help: "Run every check.")
    var all = false

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Option(name: .long, help: "Read variables from this .env file when it exists.")
    var envFile = ".env"

    func run() async throws {
        let configuration: ReliableDBConfiguration
        do {
            configuration = try await ReliableDBConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let report = try await CheckSuite.run(
            configuration: configuration,
            scenarios: CheckScenarios(reliability: reliability || all, health: health || all)
        )
        print(json ? try report.json() : report.table)
        if report.failed > 0 { throw ExitCode(1) }
    }
}
