import Foundation

/// Which database `DATABASE_URL` names.
public enum DatabaseLocation: Sendable, Equatable, CustomStringConvertible {
    /// The embedded SQLite file (`DATABASE_URL` unset, `file:PATH` or `sqlite:PATH`).
    case sqlite(path: String)
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    case postgres(PostgresURL)

    /// The SQLite file used when `DATABASE_URL` is unset.
    public static let defaultSQLitePath = "reliabledb.sqlite"

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): url.description
        }
    }

    /// Reads a `DATABASE_URL` value; the error text never contains the password.
    public static func parse(_ value: String) -> Result<DatabaseLocation, ConfigurationError.Problem> {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        for prefix in ["sqlite://", "sqlite:", "file://", "file:"] where trimmed.hasPrefix(prefix) {
            let path = String(trimmed.dropFirst(prefix.count))
            if path.isEmpty || path == ":memory:" {
                return .failure(
                    .init(
                        variable: "DATABASE_URL",
                        value: trimmed,
                        expected:
                            "a SQLite file path after '\(prefix)' (WAL mode needs a file, not an in-memory database)"
                    )
                )
            }
            return .success(.sqlite(path: path))
        }
        let lowercased = trimmed.lowercased()
        if lowercased.hasPrefix("postgres://") || lowercased.hasPrefix("postgresql://") {
            return PostgresURL.parse(trimmed).map { .postgres($0) }
        }
        return .failure(
            .init(
                variable: "DATABASE_URL",
                value: redactPassword(inURL: trimmed),
                expected: "postgres://user:password@host:port/database, postgresql://…, file:PATH or sqlite:PATH"
            )
        )
    }

    /// Replaces the password part of `scheme://user:password@host…` with `***`.
    public static func redactPassword(inURL url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let afterScheme = url[schemeEnd.upperBound...]
        guard let at = afterScheme.lastIndex(of: "@") else { return url }
        let userInfo = afterScheme[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }
}

extension DatabaseLocation {
    /// `sqlite` or `postgresql`, for labels.
    public var backendName: String {
        switch self {
        case .sqlite: "sqlite"
        case .postgres: "postgresql"
        }
    }
}
