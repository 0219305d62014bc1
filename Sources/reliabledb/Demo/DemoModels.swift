/// The Carmen demo's data (`reliabledb serve --demo`). Carmen is a fictional company; the demo is
/// a slice of its ERP: users with a profile, and their orders. Its tables are prefixed `carmen_` so
/// they stay apart from an application's own in the same database, and its emails use the reserved
/// `carmen.example` domain, so none can reach a real mailbox.
struct DemoUser: Codable, Sendable, Equatable {
    var id: Int64
    var email: String
    var name: String
    var bio: String
}

struct DemoOrder: Codable, Sendable, Equatable {
    var id: Int64
    var userId: Int64
    var totalCents: Int64
    var status: String
}

struct NewUser: Codable, Sendable {
    var email: String
    var name: String
    var bio: String?
}

/// Where the demo keeps its data; one implementation per backend, because the SQL differs.
protocol DemoStore: Sendable {
    /// Creates the tables if needed and seeds a few users and orders into an empty database.
    func prepare() async throws
    func listUsers() async throws -> [DemoUser]
    /// Inserts the user and the profile in one reliable transaction.
    func createUser(_ user: NewUser) async throws -> DemoUser
    func orders(ofUser userID: Int64) async throws -> [DemoOrder]
}

/// The email is already taken (a unique violation, the caller's error).
struct DuplicateEmail: Error {}

let demoSeed: [(NewUser, [Int64])] = [
    (NewUser(email: "ana@carmen.example", name: "Ana Lima", bio: "Purchasing"), [12_990, 4_500]),
    (NewUser(email: "bruno@carmen.example", name: "Bruno Costa", bio: "Warehouse"), [89_900]),
    (NewUser(email: "carla@carmen.example", name: "Carla Dias", bio: "Finance"), [1_250, 3_300, 70_000]),
]
