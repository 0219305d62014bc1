import Fluent

struct CreateUser: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(User.schema)
            .id()
            .field("email", .string, .required)
            .field("name", .string, .required)
            .field("active", .bool, .required)
            .field("order_count", .int, .required)
            .field("created_at", .datetime)
            .unique(on: "email")
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(User.schema).delete()
    }
}

struct CreateProfile: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Profile.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("title", .string, .required)
            .unique(on: "user_id")
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(Profile.schema).delete()
    }
}

struct CreateOrder: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Order.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("number", .string, .required)
            .field("total_cents", .int, .required)
            .field("created_at", .datetime)
            .unique(on: "number")
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(Order.schema).delete()
    }
}
