/// The kinds of database work that get their own default timeout (listed in README.md).
public enum OperationKind: String, Sendable, CaseIterable, Codable {
    case query
    case transaction
    case batchInsert
    case batchUpdate
    case batchDelete
    case healthCheck
    case complexQuery
    case migration

    /// Whether this kind runs in a transaction that is retried as a whole.
    public var isTransactional: Bool {
        switch self {
        case .transaction, .batchInsert, .batchUpdate, .batchDelete, .migration: true
        case .query, .healthCheck, .complexQuery: false
        }
    }
}

/// The batch kinds accepted by ``OperationOptions/batchOperation(_:count:table:name:)``.
public enum BatchKind: String, Sendable, CaseIterable {
    case batchInsert
    case batchUpdate
    case batchDelete

    public var operationKind: OperationKind {
        switch self {
        case .batchInsert: .batchInsert
        case .batchUpdate: .batchUpdate
        case .batchDelete: .batchDelete
        }
    }
}
