import Fluent
import SQLKit
import Vapor

struct NewUser: Content {
    var email: String
    var name: String
    var title: String?
}

struct NewOrder: Content {
    var userID: UUID
    var number: String
    var totalCents: Int
}

struct UserDetails: Content {
    var user: User
    var profile: Profile?
    var orders: [Order]
}

func routes(_ app: Application) throws {
    let api = app.grouped("api")

    // Every Fluent call below runs through ReliableDB's pipeline: no code here knows it.
    api.get("users") { req async throws -> [User] in
        try await User.query(on: req.db).filter(\.$active == true).sort(\.$email).all()
    }

    api.post("users") { req async throws -> User in
        let input = try req.content.decode(NewUser.self)
        let user = User(email: input.email, name: input.name)
        // User and profile together or not at all.
        try await req.db.transaction { db in
            try await user.save(on: db)
            if let title = input.title {
                try await Profile(userID: try user.requireID(), title: title).save(on: db)
            }
        }
        return user
    }

    api.get("users", ":id") { req async throws -> UserDetails in
        guard let id = req.parameters.get("id", as: UUID.self),
            let user = try await User.find(id, on: req.db)
        else { throw Abort(.notFound) }
        let profile = try await user.$profile.get(on: req.db)
        let orders = try await user.$orders.query(on: req.db).sort(\.$number).all()
        return UserDetails(user: user, profile: profile, orders: orders)
    }

    // Places an order and counts it on the user in one transaction, which ReliableDB retries whole
    // after a serialization failure or deadlock.
    api.post("orders") { req async throws -> Order in
        let input = try req.content.decode(NewOrder.self)
        return try await req.db.transaction { db in
            guard let user = try await User.find(input.userID, on: db) else { throw Abort(.notFound) }
            let order = Order(userID: try user.requireID(), number: input.number, totalCents: input.totalCents)
            try await order.save(on: db)
            // Counted in the database, not read-modify-write: concurrent orders must not lose counts.
            try await (db as! any SQLDatabase).update(User.schema)
                .set(SQLIdentifier("order_count"), to: SQLRaw("order_count + 1"))
                .where("id", .equal, SQLBind(try user.requireID()))
                .run()
            return order
        }
    }

    api.get("orders", "count") { req async throws -> [String: Int] in
        ["orders": try await Order.query(on: req.db).count()]
    }
}
