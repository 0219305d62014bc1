import NIOCore
import NIOPosix
import PostgresNIO
import ReliableDB

/// The database could not be reached; `cause` says why in words an operator can act on
/// (wrong password, unknown database, refused connection, TLS refused). Never contains the password.
public struct PostgresUnavailableError: Error, CustomStringConvertible, Sendable {
    /// `postgres://user:***@host:port/db?sslmode=…`
    public var target: String
    public var cause: String
    /// The SQLSTATE when the server itself refused (28P01 wrong password, 3D000 unknown database).
    public var sqlState: String?

    public var description: String {
        "Cannot connect to \(target): \(cause)"
    }
}

extension PostgresUnavailableError {
    /// `url` could not be reached because of `cause`, each server named once: by the URL (so not
    /// again in a network cause), or, for a multi-host walk that names each with its own answer,
    /// only there.
    ///
    /// A refusal for want of a connection slot (53300) says the server's limit, which the whole
    /// fleet shares, with the figures of the last probe (`serverConnections`) when there was one.
    init(url: PostgresURL, cause: any Error, serverConnections: ServerConnections? = nil) {
        let namesServers = cause is PostgresNoMatchingServerError
        let state = ReliableDBPostgres.sqlState(of: cause)
        var text = describePostgresError(cause, namingHost: false)
        if state == "53300" { text = Self.noSlotLeft(text, serverConnections: serverConnections) }
        self.init(target: url.description(namingServers: !namesServers), cause: text, sqlState: state)
    }

    /// `described` (a 53300) preceded by what it means: the server's connection limit is reached.
    static func noSlotLeft(_ described: String, serverConnections: ServerConnections?) -> String {
        if described.contains("for role") { return "the role's connection limit is reached (\(described))" }
        let limit =
            serverConnections.map {
                "max_connections = \($0.max), \($0.reserved) reserved for superusers; \($0.inUse) in use at the last check"
            } ?? "max_connections"
        return "the server's connection limit is reached, for all its clients together (\(limit)): \(described)"
    }
}

/// A readable, secret-free account of a PostgresNIO error.
///
/// `PSQLError.description` is deliberately generic; this names the SQLSTATE and server message,
/// or the network-level cause.
public func describePostgresError(_ error: any Error) -> String {
    describePostgresError(error, namingHost: true)
}

/// - Parameter namingHost: false where the text already names the server (a multi-host walk's
///   "host:port refused: ..."), so a network cause does not repeat it.
func describePostgresError(_ error: any Error, namingHost: Bool) -> String {
    let network = { (error: any Error) in describeNetworkError(error, namingHost: namingHost) }
    let nested = { (error: any Error) in describePostgresError(error, namingHost: namingHost) }
    switch error {
    case let error as PSQLError:
        switch error.code {
        case .server:
            let state = error.serverInfo?[.sqlState] ?? "?????"
            let message = error.serverInfo?[.message] ?? "server error"
            return "SQLSTATE \(state): \(message)"
        case .sslUnsupported:
            return "the server does not support TLS, but sslmode requires it"
        case .connectionError:
            return "connection failed: \(error.underlying.map(network) ?? "unknown cause")"
        case .serverClosedConnection:
            return "the server closed the connection"
        case .clientClosedConnection:
            return "the connection was closed on the client side"
        case .uncleanShutdown:
            return "the TLS connection ended without a clean shutdown"
        case .queryCancelled:
            return "the query was cancelled"
        case .authMechanismRequiresPassword:
            return "the server requires a password and DATABASE_URL has none"
        case .unsupportedAuthMechanism:
            return "the server asked for an authentication method PostgresNIO does not support"
        case .saslError:
            return "SCRAM authentication failed: \(error.underlying.map(network) ?? "unknown cause")"
        default:
            return "PostgreSQL client error (\(error.code))"
        }
    case let error as PostgresError:
        // PostgresNIO's EventLoopFuture API (`PreparedQuery`, `PostgresDatabase`) reports these.
        switch error {
        case .server(let message):
            let state = message.fields[.sqlState] ?? "?????"
            return "SQLSTATE \(state): \(message.fields[.message] ?? "server error")"
        case .connectionClosed:
            return "the connection was closed"
        case .protocol(let detail):
            return "protocol error: \(detail)"
        }
    case let error as PostgresTransactionError:
        if let inner = error.beginError { return "BEGIN failed: \(nested(inner))" }
        if let inner = error.closureError { return nested(inner) }
        if let inner = error.commitError { return "COMMIT failed: \(nested(inner))" }
        return "transaction failed"
    case let error as KeyedConnectError:
        if case .connectFailed(let cause) = error { return network(cause) }
        return error.description
    case let error as PostgresConnectionLostError:
        return error.description
    case let error as ConnectionClosedBeforeCommitError:
        return error.description
    case let error as TransactionNotCommittedError:
        return "the transaction did not commit: its connection was lost before COMMIT was sent ("
            + nested(error.underlying) + ")"
    case let error as CommitOutcomeUnknownError:
        return "the connection was lost while COMMIT was in flight; the transaction may have committed ("
            + nested(error.underlying) + ")"
    case let error as PoolLeaseError:
        switch error {
        case .timedOut, .deadlineReached: return "no connection was free before the deadline"
        case .cancelled: return "the connection request was cancelled"
        case .shutDown: return "the connection pool is shut down"
        case .connectFailed(let cause): return nested(cause)
        }
    default:
        return network(error)
    }
}

/// A socket error in plain words ("connection refused"), without NIO's internal notation.
func describeNetworkError(_ error: any Error, namingHost: Bool = true) -> String {
    if let error = error as? NIOConnectionError {
        if let first = error.connectionErrors.first {
            let cause = describeNetworkError(first.error)
            return namingHost ? "\(cause) (\(error.host):\(error.port))" : cause
        }
        if let dns = error.dnsAAAAError ?? error.dnsAError {
            return "cannot resolve \(error.host): \(dns)"
        }
        return "cannot connect to \(error.host):\(error.port)"
    }
    if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
        return "no answer within the connect timeout (\(amount.nanoseconds / 1_000_000) ms)"
    }
    if let error = error as? IOError {
        switch error.errnoCode {
        case ECONNREFUSED: return "connection refused"
        case ETIMEDOUT: return "connection timed out"
        case ECONNRESET: return "connection reset by the peer"
        case EHOSTUNREACH: return "host unreachable"
        case ENETUNREACH: return "network unreachable"
        case ENOENT: return "no such socket file"
        default: return String(cString: strerror(error.errnoCode))
        }
    }
    return plainDescription(of: error)
}

/// Maps PostgreSQL errors to the pipeline's classes.
struct PostgresErrorClassifier {
    /// - Parameter sent: whether the statement had been handed to the connection. Errors while
    ///   leasing or connecting are never "sent".
    static func classify(_ error: any Error, sent: Bool) -> ErrorClassification {
        switch error {
        case let error as PostgresTransactionError:
            if let inner = error.beginError {
                return classify(inner, sent: false).notApplied
            }
            if let inner = error.closureError {
                // The transaction was rolled back (or died with its connection): nothing applied.
                var result = classify(inner, sent: true).notApplied
                if let rollback = error.rollbackError, classify(rollback, sent: true).discardConnection {
                    result.discardConnection = true
                }
                return result
            }
            if let inner = error.commitError {
                let result = classify(inner, sent: true)
                // A server error on COMMIT means it did not commit; a lost connection means we
                // cannot know.
                if let psql = inner as? PSQLError, psql.code == .server { return result.notApplied }
                return result
            }
            return ErrorClassification(.fatal)
        case let error as PSQLError:
            return classify(error, sent: sent)
        case let error as PostgresError:
            // The EventLoopFuture API's form of the same errors.
            switch error {
            case .server:
                return classify(sqlState: error.code.raw, sent: sent)
            case .connectionClosed:
                return .lostConnection(sent: sent)
            case .protocol:
                return ErrorClassification(.connection, mayHaveReachedServer: sent, discardConnection: true)
            }
        case let error as PoolLeaseError:
            if case .cancelled = error { return ErrorClassification(.cancelled) }
            return ErrorClassification(.connection)
        case is PostgresUnavailableError, is PostgresNoMatchingServerError:
            return ErrorClassification(.connection)
        case is PostgresConnectionLostError:
            return .lostConnection(sent: sent)
        case is ConnectionClosedBeforeCommitError:
            return .lostConnection(sent: false)
        case let error as TransactionNotCommittedError:
            return classify(error.underlying, sent: true).notApplied
        case is KeyedConnectError, is CancelRequestError:
            return ErrorClassification(.connection, discardConnection: true)
        case is CancellationError:
            return ErrorClassification(.cancelled)
        default:
            // Errors the caller's closure threw itself (decoding, validation) are the caller's.
            return ErrorClassification(.caller)
        }
    }

    private static func classify(_ error: PSQLError, sent: Bool) -> ErrorClassification {
        switch error.code {
        case .server:
            return classify(sqlState: error.serverInfo?[.sqlState] ?? "", sent: sent)
        case .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .connectionError:
            // Connect failures reach the pipeline wrapped (PostgresUnavailableError): these ended
            // a connection that was established.
            return .lostConnection(sent: sent)
        case .messageDecodingFailure, .unexpectedBackendMessage:
            return ErrorClassification(.connection, mayHaveReachedServer: sent, discardConnection: true)
        case .sslUnsupported, .failedToAddSSLHandler, .receivedUnencryptedDataAfterSSLRequest,
            .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
            return ErrorClassification(.connection, discardConnection: true)
        case .queryCancelled:
            return ErrorClassification(.cancelled)
        case .tooManyParameters, .invalidCommandTag:
            return ErrorClassification(.caller)
        default:
            return ErrorClassification(.fatal, mayHaveReachedServer: sent)
        }
    }

    static func classify(sqlState: String, sent: Bool) -> ErrorClassification {
        // Outside a transaction (autocommit) earlier statements of the same attempt may have been
        // applied, so "sent" errors are marked as possibly applied; the transaction path clears it.
        switch sqlState {
        case "40001", "40P01":
            return ErrorClassification(.transientTransaction, mayHaveReachedServer: sent)
        case "57P01", "57P02", "08003", "08006":
            // The server ended this session (pg_terminate_backend, a shutdown, a crash restart) or
            // it broke: a fresh connection tells whether the server is still there.
            return .lostConnection(sent: sent)
        case "57P03":
            return ErrorClassification(.connection, mayHaveReachedServer: sent, discardConnection: true)
        case "26000":
            // A statement prepared by name is missing: behind a transaction-pooling PgBouncer this
            // transaction went to another server connection. The statement did not run; on a fresh
            // connection the driver prepares it again, so the attempt is retried there once.
            return .lostConnection(sent: sent)
        case "57014":
            // Cancelled on the server: by our deadline (the pipeline reports the timeout) or by the
            // statement_timeout backstop.
            return ErrorClassification(.timeout)
        case "53300":
            return ErrorClassification(.overload, mayHaveReachedServer: sent, discardConnection: true)
        case "55P03":
            return ErrorClassification(.transientTransaction, mayHaveReachedServer: sent)
        default:
            break
        }
        switch sqlState.prefix(2) {
        case "08":
            return ErrorClassification(.connection, mayHaveReachedServer: sent, discardConnection: true)
        case "53":
            return ErrorClassification(.overload, mayHaveReachedServer: sent)
        case "28", "3D":
            return ErrorClassification(.connection, discardConnection: true)
        case "22", "23", "42", "2B", "2D", "25", "44", "P0", "0A", "21", "40":
            return ErrorClassification(.caller)
        default:
            return ErrorClassification(.fatal, mayHaveReachedServer: sent)
        }
    }
}

extension ErrorClassification {
    /// An established connection ended under a statement: discarded, and held against the server
    /// only when a fresh connection fails too (``ErrorClassification/connectionScoped``).
    static func lostConnection(sent: Bool) -> ErrorClassification {
        ErrorClassification(.connection, mayHaveReachedServer: sent, discardConnection: true, connectionScoped: true)
    }

    /// The same verdict for an error that provably applied nothing on the server.
    var notApplied: ErrorClassification {
        var copy = self
        copy.mayHaveReachedServer = false
        return copy
    }
}

func sqlState(of error: any Error) -> String? {
    (error as? PSQLError)?.serverInfo?[.sqlState]
}
