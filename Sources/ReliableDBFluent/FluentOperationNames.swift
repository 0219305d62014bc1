import FluentKit
import ReliableDB

/// How Fluent's operations are named and treated by the pipeline.
///
/// A query is named `<Model>.<action>` (`User.read`, `Order.create`): the model's type name when the
/// model was listed in ``ReliableFluentConfiguration/models``, else its table (`users.read`). Names
/// come from the app's models and a fixed set of actions, so metric labels stay bounded; the
/// pipeline's `maxOperationNames` caps them in any case. Reads and aggregates may be repeated, so
/// they are retried after a lost connection; writes are retried only when they cannot have reached
/// the server, unless marked idempotent with ``FluentKit/Database/reliability(name:timeout:idempotent:retries:)``.
struct FluentOperationNames: Sendable {
    /// `users` → `User`.
    let modelNames: [String: String]

    init(models: [any Model.Type]) {
        var names: [String: String] = [:]
        for model in models { names[model.schema] = String(describing: model) }
        modelNames = names
    }

    /// Fluent's table of the migrations it has run.
    static let migrationLog = "_fluent_migrations"

    func entity(_ schema: String) -> String {
        modelNames[schema] ?? schema
    }

    func options(for query: DatabaseQuery, _ overrides: FluentReliabilityOverrides) -> OperationOptions {
        let entity = entity(query.schema)
        var options: OperationOptions
        switch query.action {
        case .read:
            options = .read("\(entity).read", table: query.schema)
        case .aggregate:
            options = .read("\(entity).aggregate", table: query.schema)
        case .create where query.input.count > 1:
            options = .batchOperation(
                .batchInsert,
                count: query.input.count,
                table: query.schema,
                name: "\(entity).create"
            )
        case .create:
            options = OperationOptions("\(entity).create", table: query.schema)
        case .update:
            options = OperationOptions("\(entity).update", table: query.schema)
        case .delete:
            options = OperationOptions("\(entity).delete", table: query.schema)
        case .custom:
            options = OperationOptions("\(entity).custom", table: query.schema)
        }
        // The migrator reads its log right after creating or writing it: on a standby that has not
        // replayed that yet, the log is missing or old, and migrations would fail or run twice.
        if query.schema == Self.migrationLog { options.readOnly = false }
        return overrides.apply(to: options)
    }

    func options(for schema: DatabaseSchema, _ overrides: FluentReliabilityOverrides) -> OperationOptions {
        overrides.apply(
            to: OperationOptions("\(entity(schema.schema)).schema", table: schema.schema, kind: .migration)
        )
    }

    /// SQL that SQLKit sends (`db.raw(...)`, `db.select()`): named by its first keyword, one of a
    /// fixed set. Only `SELECT` and `SHOW` count as reads.
    func options(forSQL sql: String, _ overrides: FluentReliabilityOverrides) -> OperationOptions {
        let verb = Self.verb(of: sql)
        let options =
            switch verb {
            case "select", "show": OperationOptions.read("sql.\(verb)")
            default: OperationOptions("sql.\(verb)")
            }
        return overrides.apply(to: options)
    }

    private static let verbs: Set<String> = [
        "select", "insert", "update", "delete", "with", "create", "alter", "drop", "truncate", "show",
        "set", "copy", "call", "do", "lock", "explain", "analyze", "vacuum", "grant", "revoke", "comment",
        "values", "merge", "refresh", "notify", "listen",
    ]

    static func verb(of sql: String) -> String {
        let word = sql.drop { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "(" }
            .prefix { $0.isLetter }
            .lowercased()
        return verbs.contains(word) ? word : "other"
    }
}

/// Per-call changes to how the pipeline treats the Fluent operations on one `Database` value.
public struct FluentReliabilityOverrides: Sendable, Equatable {
    /// Replaces the operation's name (a transaction's is `transaction`).
    public var name: String?
    /// Replaces the kind's default timeout.
    public var timeout: Duration?
    /// Marks writes as safe to repeat, so a lost connection retries them.
    public var idempotent: Bool?
    /// False turns retries off.
    public var retries: Bool?
    /// Replaces the operation's kind: the statements of an enum change are a migration, whatever
    /// their SQL keyword.
    var kind: OperationKind?

    public init(name: String? = nil, timeout: Duration? = nil, idempotent: Bool? = nil, retries: Bool? = nil) {
        self.name = name
        self.timeout = timeout
        self.idempotent = idempotent
        self.retries = retries
    }

    func apply(to options: OperationOptions) -> OperationOptions {
        var options = options
        if let name { options.name = name }
        if let timeout { options.timeout = timeout }
        if let idempotent { options.idempotent = idempotent }
        if let retries { options.retries = retries }
        if let kind { options.kind = kind }
        return options
    }
}
