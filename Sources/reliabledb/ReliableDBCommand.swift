import ArgumentParser
import ReliableDB

@main
struct ReliableDBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reliabledb",
        abstract: "A database reliability layer: circuit breaker, retries, real timeouts, pool monitoring.",
        discussion: """
            Configuration comes from the environment and an optional .env file (DATABASE_URL, DB_*). \
            With DATABASE_URL unset, the embedded SQLite database reliabledb.sqlite is used.
            """,
        version: ReliableDBVersion.current,
        subcommands: [ServeCommand.self, CheckCommand.self, LoadTestCommand.self]
    )
}
