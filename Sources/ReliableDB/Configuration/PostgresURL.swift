import Foundation

/// A parsed `postgres://` / `postgresql://` URL (libpq's URI form).
///
/// Parsed in the core, without a driver, so a malformed URL is reported at start-up together with
/// every other configuration problem. The password is a ``Secret``: ``description`` and every error
/// show `***` in its place.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    /// libpq's `sslmode` values that ReliableDB supports.
    public enum SSLMode: String, Sendable, CaseIterable {
        /// Plain TCP only.
        case disable
        /// TLS when the server offers it, plain otherwise; the certificate is not verified.
        case prefer
        /// TLS or fail; the certificate is not verified (libpq's meaning).
        case require
        /// TLS or fail, and the certificate must be trusted and name the host.
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: Secret<String>?
    public var database: String
    public var sslMode: SSLMode
    /// `sslrootcert`: a PEM file of trusted roots for `verify-full`; the system's when nil.
    public var sslRootCertificate: String?
    /// `application_name`, shown in `pg_stat_activity`.
    public var applicationName: String
    /// `connect_timeout` in seconds: the limit for TCP connect, TLS and authentication.
    public var connectTimeout: Duration
    /// `pgbouncer=true` (the switch Prisma users know): the server is reached through a
    /// transaction-mode pooler, so no startup parameter other than `application_name` is sent, no
    /// statement is prepared by name, and the server-side timeout is set per transaction with
    /// `SET LOCAL` (see docs/DEADLINES.md).
    public var pgbouncer: Bool

    public static let supportedParameters = [
        "sslmode", "sslrootcert", "application_name", "connect_timeout", "pgbouncer",
    ]

    public init(
        host: String,
        port: Int = 5432,
        username: String,
        password: Secret<String>? = nil,
        database: String,
        sslMode: SSLMode = .prefer,
        sslRootCertificate: String? = nil,
        applicationName: String = "reliabledb",
        connectTimeout: Duration = .seconds(10),
        pgbouncer: Bool = false
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCertificate = sslRootCertificate
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.pgbouncer = pgbouncer
    }

    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let user = username + (password == nil ? "" : ":***")
        let pooler = pgbouncer ? "&pgbouncer=true" : ""
        return "postgres://\(user)@\(hostPart):\(port)/\(database)?sslmode=\(sslMode.rawValue)\(pooler)"
    }

    /// Parses `string`; the problem it reports never contains the password.
    public static func parse(
        _ string: String,
        variable: String = "DATABASE_URL"
    ) -> Result<PostgresURL, ConfigurationError.Problem> {
        let redacted = DatabaseLocation.redactPassword(inURL: string)
        func problem(_ expected: String) -> Result<PostgresURL, ConfigurationError.Problem> {
            .failure(.init(variable: variable, value: redacted, expected: expected))
        }
        guard let schemeEnd = string.range(of: "://"),
            ["postgres", "postgresql"].contains(string[..<schemeEnd.lowerBound].lowercased())
        else {
            return problem("a URL starting with postgres:// or postgresql://")
        }
        var rest = Substring(string[schemeEnd.upperBound...])
        var query: Substring = ""
        if let questionMark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: questionMark)...]
            rest = rest[..<questionMark]
        }
        let authority: Substring
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
        }

        var username = ""
        var password: String?
        var hostPort = authority
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
            let (rawUser, rawPassword): (Substring, Substring?) =
                if let colon = userInfo.firstIndex(of: ":") {
                    (userInfo[..<colon], userInfo[userInfo.index(after: colon)...])
                } else {
                    (userInfo, nil)
                }
            guard let decodedUser = String(rawUser).removingPercentEncoding else {
                return problem("a percent-encoded user name (a '%' must start %XX)")
            }
            username = decodedUser
            if let rawPassword {
                guard let decoded = String(rawPassword).removingPercentEncoding else {
                    return problem("a percent-encoded password (a '%' must start %XX)")
                }
                password = decoded
            }
        }
        guard !username.isEmpty else { return problem("a user name: postgres://USER:PASSWORD@HOST:PORT/DATABASE") }

        var host: String
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else {
                return problem("an IPv6 host in brackets, e.g. postgres://user@[::1]:5432/db")
            }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return problem("':PORT' after the bracketed IPv6 host") }
                portText = after.dropFirst()
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            host = String(hostPort)
        }
        host = host.removingPercentEncoding ?? host
        guard !host.isEmpty else { return problem("a host name or address after '@'") }
        var port = 5432
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else {
                return problem("a port from 1 to 65535, got '\(portText)'")
            }
            port = parsed
        }
        guard let database = String(path).removingPercentEncoding else {
            return problem("a percent-encoded database name")
        }

        var url = PostgresURL(
            host: host,
            port: port,
            username: username,
            password: password.map { Secret($0, redacted: "***") },
            database: database.isEmpty ? username : database
        )
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            switch key {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    return problem(
                        "sslmode to be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")), got '\(value)'"
                    )
                }
                url.sslMode = mode
            case "sslrootcert":
                url.sslRootCertificate = value
            case "application_name":
                url.applicationName = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0 else {
                    return problem("connect_timeout to be a whole number of seconds above 0, got '\(value)'")
                }
                url.connectTimeout = .seconds(seconds)
            case "pgbouncer":
                guard let flag = ["true": true, "false": false][value.lowercased()] else {
                    return problem("pgbouncer to be true or false, got '\(value)'")
                }
                url.pgbouncer = flag
            default:
                return problem(
                    "only the parameters \(supportedParameters.joined(separator: ", ")); '\(key)' is not supported"
                )
            }
        }
        return .success(url)
    }
}
