import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres

struct PostgresDemoStore: DemoStore {
    let database: ReliableDatabase<PostgresBackend>
    let logger = Logger(label: "reliabledb.demo")

    init(database: ReliableDatabase<PostgresBackend>) async throws {
        self.database = database
        try await prepare()
    }

    func prepare() async throws {
        let logger = self.logger
        try await database.transaction(.init("demo-schema", kind: .migration)) { connection in
            for statement in [
                "CREATE TABLE IF NOT EXISTS carmen_users (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS carmen_profiles (userId BIGINT PRIMARY KEY REFERENCES carmen_users(id), bio TEXT NOT NULL)",
                """
                CREATE TABLE IF NOT EXISTS carmen_orders (id BIGSERIAL PRIMARY KEY,
                    userId BIGINT NOT NULL REFERENCES carmen_users(id), totalCents BIGINT NOT NULL, status TEXT NOT NULL)
                """,
            ] {
                _ = try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).collect()
            }
            var count = 0
            for try await value in try await connection.query("SELECT count(*)::int FROM carmen_users", logger: logger)
                .decode(Int.self)
            {
                count = value
            }
            guard count == 0 else { return }
            for (user, orders) in demoSeed {
                let id = try await Self.insert(user, on: connection, logger: logger)
                for total in orders {
                    _ = try await connection.query(
                        "INSERT INTO carmen_orders (userId, totalCents, status) VALUES (\(id), \(total), 'open')",
                        logger: logger
                    ).collect()
                }
            }
        }
    }

    func listUsers() async throws -> [DemoUser] {
        let logger = self.logger
        return try await database.query(.read("list-users", table: "carmen_users")) { connection in
            var users: [DemoUser] = []
            let rows = try await connection.query(
                """
                SELECT u.id, u.email, u.name, COALESCE(p.bio, '')
                FROM carmen_users u LEFT JOIN carmen_profiles p ON p.userId = u.id ORDER BY u.id
                """,
                logger: logger
            )
            for try await (id, email, name, bio) in rows.decode((Int64, String, String, String).self) {
                users.append(DemoUser(id: id, email: email, name: name, bio: bio))
            }
            return users
        }
    }

    func createUser(_ user: NewUser) async throws -> DemoUser {
        let logger = self.logger
        do {
            return try await database.transaction(.init("create-user-with-profile", table: "carmen_users")) {
                connection in
                let id = try await Self.insert(user, on: connection, logger: logger)
                return DemoUser(id: id, email: user.email, name: user.name, bio: user.bio ?? "")
            }
        } catch let error as PostgresTransactionError {
            if let inner = error.closureError as? PSQLError, inner.serverInfo?[.sqlState] == "23505" {
                throw DuplicateEmail()
            }
            throw error
        }
    }

    func orders(ofUser userID: Int64) async throws -> [DemoOrder] {
        let logger = self.logger
        return try await database.query(.read("orders-of-user", table: "carmen_orders")) { connection in
            var orders: [DemoOrder] = []
            let rows = try await connection.query(
                "SELECT id, userId, totalCents, status FROM carmen_orders WHERE userId = \(userID) ORDER BY id",
                logger: logger
            )
            for try await (id, user, total, status) in rows.decode((Int64, Int64, Int64, String).self) {
                orders.append(DemoOrder(id: id, userId: user, totalCents: total, status: status))
            }
            return orders
        }
    }

    private static func insert(_ user: NewUser, on connection: PostgresConnection, logger: Logger) async throws -> Int64
    {
        var id: Int64 = 0
        let rows = try await connection.query(
            "INSERT INTO carmen_users (email, name) VALUES (\(user.email), \(user.name)) RETURNING id",
            logger: logger
        )
        for try await value in rows.decode(Int64.self) { id = value }
        _ = try await connection.query(
            "INSERT INTO carmen_profiles (userId, bio) VALUES (\(id), \(user.bio ?? ""))",
            logger: logger
        ).collect()
        return id
    }
}
