import Fluent
import Foundation
import Vapor

/// A customer account.
public final class User: Model, Content, @unchecked Sendable {
    public static let schema = "users"

    @ID(key: .id) public var id: UUID?
    @Field(key: "email") public var email: String
    @Field(key: "name") public var name: String
    @Field(key: "active") public var active: Bool
    @Field(key: "order_count") public var orderCount: Int
    @OptionalChild(for: \.$user) public var profile: Profile?
    @Children(for: \.$user) public var orders: [Order]
    @Timestamp(key: "created_at", on: .create) public var createdAt: Date?

    public init() {}

    public init(id: UUID? = nil, email: String, name: String, active: Bool = true) {
        self.id = id
        self.email = email
        self.name = name
        self.active = active
        self.orderCount = 0
    }
}

/// A user's profile, one per user.
public final class Profile: Model, Content, @unchecked Sendable {
    public static let schema = "profiles"

    @ID(key: .id) public var id: UUID?
    @Parent(key: "user_id") public var user: User
    @Field(key: "title") public var title: String

    public init() {}

    public init(id: UUID? = nil, userID: User.IDValue, title: String) {
        self.id = id
        self.$user.id = userID
        self.title = title
    }
}

/// An order; its number is unique, which makes placing one safe to retry.
public final class Order: Model, Content, @unchecked Sendable {
    public static let schema = "orders"

    @ID(key: .id) public var id: UUID?
    @Parent(key: "user_id") public var user: User
    @Field(key: "number") public var number: String
    @Field(key: "total_cents") public var totalCents: Int
    @Timestamp(key: "created_at", on: .create) public var createdAt: Date?

    public init() {}

    public init(id: UUID? = nil, userID: User.IDValue, number: String, totalCents: Int) {
        self.id = id
        self.$user.id = userID
        self.number = number
        self.totalCents = totalCents
    }
}
