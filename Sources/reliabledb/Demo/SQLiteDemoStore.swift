import GRDB
import ReliableDB
import ReliableDBSQLite

struct SQLiteDemoStore: DemoStore {
    let database: ReliableDatabase<SQLiteBackend>

    init(database: ReliableDatabase<SQLiteBackend>) async throws {
        self.database = database
        try await prepare()
    }

    func prepare() async throws {
        try await database.transaction(.init("demo-schema", kind: .migration)) { db in
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS carmen_users (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS carmen_profiles (
                        userId INTEGER PRIMARY KEY REFERENCES carmen_users(id), bio TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS carmen_orders (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, userId INTEGER NOT NULL REFERENCES carmen_users(id),
                        totalCents INTEGER NOT NULL, status TEXT NOT NULL);
                    """
            )
            guard try Int.fetchOne(db, sql: "SELECT count(*) FROM carmen_users") == 0 else { return }
            for (user, orders) in demoSeed {
                let id = try Self.insert(user, into: db)
                for total in orders {
                    try db.execute(
                        sql: "INSERT INTO carmen_orders (userId, totalCents, status) VALUES (?, ?, 'open')",
                        arguments: [id, total]
                    )
                }
            }
        }
    }

    func listUsers() async throws -> [DemoUser] {
        try await database.query(.read("list-users", table: "carmen_users")) { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT u.id, u.email, u.name, COALESCE(p.bio, '') AS bio
                    FROM carmen_users u LEFT JOIN carmen_profiles p ON p.userId = u.id ORDER BY u.id
                    """
            ).map { DemoUser(id: $0["id"], email: $0["email"], name: $0["name"], bio: $0["bio"]) }
        }
    }

    func createUser(_ user: NewUser) async throws -> DemoUser {
        do {
            return try await database.transaction(.init("create-user-with-profile", table: "carmen_users")) { db in
                let id = try Self.insert(user, into: db)
                return DemoUser(id: id, email: user.email, name: user.name, bio: user.bio ?? "")
            }
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
            throw DuplicateEmail()
        }
    }

    func orders(ofUser userID: Int64) async throws -> [DemoOrder] {
        try await database.query(.read("orders-of-user", table: "carmen_orders")) { db in
            try Row.fetchAll(
                db,
                sql: "SELECT id, userId, totalCents, status FROM carmen_orders WHERE userId = ? ORDER BY id",
                arguments: [userID]
            ).map { DemoOrder(id: $0["id"], userId: $0["userId"], totalCents: $0["totalCents"], status: $0["status"]) }
        }
    }

    private static func insert(_ user: NewUser, into db: Database) throws -> Int64 {
        try db.execute(sql: "INSERT INTO carmen_users (email, name) VALUES (?, ?)", arguments: [user.email, user.name])
        let id = db.lastInsertedRowID
        try db.execute(sql: "INSERT INTO carmen_profiles (userId, bio) VALUES (?, ?)", arguments: [id, user.bio ?? ""])
        return id
    }
}
