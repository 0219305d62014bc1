import Foundation

// MARK: - The URL and its settings

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

    /// One server of a multi-host URL (`postgres://u@h1:5432,h2:5433/db`).
    public struct Endpoint: Sendable, Equatable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int = 5432) {
            self.host = host
            self.port = port
        }

        public var description: String { "\(host.contains(":") ? "[\(host)]" : host):\(port)" }
    }

    /// libpq's `target_session_attrs`: which server of the list a connection must reach.
    public enum TargetSessionAttributes: String, Sendable, CaseIterable {
        /// The first server that accepts the connection.
        case any
        /// A server that accepts writes (`default_transaction_read_only` off, not in recovery).
        case readWrite = "read-write"
        /// A server that does not accept writes.
        case readOnly = "read-only"
        /// A server not in hot standby.
        case primary
        /// A server in hot standby.
        case standby
        /// A standby if one answers, else any server.
        case preferStandby = "prefer-standby"
    }

    /// libpq's `load_balance_hosts`: the order the servers are tried in.
    public enum LoadBalanceHosts: String, Sendable, CaseIterable {
        /// In the order the URL lists them.
        case disable
        /// In a random order, drawn anew for each connection.
        case random
    }

    /// The servers to try, in the URL's order; at least one.
    public var endpoints: [Endpoint]
    public var targetSessionAttributes: TargetSessionAttributes = .any
    public var loadBalanceHosts: LoadBalanceHosts = .disable
    /// `standby_reads=true`: operations marked read-only run on a standby of the list when one is
    /// no further behind than ``maxStandbyLag``, and on the primary otherwise.
    public var standbyReads = false
    /// `max_standby_lag` (seconds, default 5): how far behind a standby may replay and still serve reads.
    public var maxStandbyLag: Duration = .seconds(5)

    /// The first server's host (the only one of a single-host URL).
    public var host: String {
        get { endpoints[0].host }
        set { endpoints[0].host = newValue }
    }

    /// The first server's port.
    public var port: Int {
        get { endpoints[0].port }
        set { endpoints[0].port = newValue }
    }

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
    /// `SET LOCAL` (see Sources/ReliableDB/Documentation.docc/Deadlines.md).
    public var pgbouncer: Bool

    public static let supportedParameters = [
        "sslmode", "sslrootcert", "application_name", "connect_timeout", "pgbouncer", "target_session_attrs",
        "load_balance_hosts", "standby_reads", "max_standby_lag",
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
        self.endpoints = [Endpoint(host: host, port: port)]
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCertificate = sslRootCertificate
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.pgbouncer = pgbouncer
    }

    public var description: String { description(namingServers: true) }

    /// The URL as ``description`` shows it; with `namingServers` false its servers are one `…`,
    /// for a message that goes on to name each server with what it answered.
    package func description(namingServers: Bool) -> String {
        let hosts = namingServers ? endpoints.map(\.description).joined(separator: ",") : "…"
        let user = username + (password == nil ? "" : ":***")
        var parameters = "sslmode=\(sslMode.rawValue)"
        if pgbouncer { parameters += "&pgbouncer=true" }
        if targetSessionAttributes != .any { parameters += "&target_session_attrs=\(targetSessionAttributes.rawValue)" }
        if loadBalanceHosts != .disable { parameters += "&load_balance_hosts=\(loadBalanceHosts.rawValue)" }
        if standbyReads {
            parameters += "&standby_reads=true&max_standby_lag=\(String(format: "%g", maxStandbyLag.seconds))"
        }
        return "postgres://\(user)@\(hosts)/\(database)?\(parameters)"
    }

    // MARK: - Parsing

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

        // libpq's multi-host form: host[:port] entries separated by commas.
        var endpoints: [Endpoint] = []
        for entry in hostPort.split(separator: ",", omittingEmptySubsequences: false) {
            switch parseEndpoint(entry) {
            case .success(let endpoint): endpoints.append(endpoint)
            case .failure(let expected): return problem(expected.text)
            }
        }
        guard let database = String(path).removingPercentEncoding else {
            return problem("a percent-encoded database name")
        }

        var url = PostgresURL(
            host: endpoints[0].host,
            port: endpoints[0].port,
            username: username,
            password: password.map { Secret($0, redacted: "***") },
            database: database.isEmpty ? username : database
        )
        url.endpoints = endpoints
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
            case "target_session_attrs":
                guard let attributes = TargetSessionAttributes(rawValue: value) else {
                    return problem(
                        "target_session_attrs to be one of "
                            + "\(TargetSessionAttributes.allCases.map(\.rawValue).joined(separator: ", ")), got '\(value)'"
                    )
                }
                url.targetSessionAttributes = attributes
            case "standby_reads":
                guard let flag = ["true": true, "false": false][value.lowercased()] else {
                    return problem("standby_reads to be true or false, got '\(value)'")
                }
                url.standbyReads = flag
            case "max_standby_lag":
                guard let seconds = Double(value), seconds >= 0, seconds <= 86_400 else {
                    return problem("max_standby_lag to be seconds from 0 to 86400, got '\(value)'")
                }
                url.maxStandbyLag = .milliseconds(Int64(seconds * 1000))
            case "load_balance_hosts":
                guard let mode = LoadBalanceHosts(rawValue: value) else {
                    return problem("load_balance_hosts to be disable or random, got '\(value)'")
                }
                url.loadBalanceHosts = mode
            default:
                return problem(
                    "only the parameters \(supportedParameters.joined(separator: ", ")); '\(key)' is not supported"
                )
            }
        }
        return .success(url)
    }

    /// What a malformed host entry should have been.
    private struct Expected: Error {
        var text: String
    }

    /// One `host[:port]` (or `[v6]:port`) entry of the authority.
    private static func parseEndpoint(_ entry: Substring) -> Result<Endpoint, Expected> {
        var host: String
        var portText: Substring?
        if entry.hasPrefix("[") {
            guard let close = entry.firstIndex(of: "]") else {
                return .failure(.init(text: "an IPv6 host in brackets, e.g. postgres://user@[::1]:5432/db"))
            }
            host = String(entry[entry.index(after: entry.startIndex)..<close])
            let after = entry[entry.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    return .failure(.init(text: "':PORT' after the bracketed IPv6 host"))
                }
                portText = after.dropFirst()
            }
        } else if let colon = entry.lastIndex(of: ":") {
            host = String(entry[..<colon])
            portText = entry[entry.index(after: colon)...]
        } else {
            host = String(entry)
        }
        host = host.removingPercentEncoding ?? host
        guard !host.isEmpty else {
            return .failure(.init(text: "a host name or address after '@' (and after each ',' of a host list)"))
        }
        var port = 5432
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else {
                return .failure(.init(text: "a port from 1 to 65535, got '\(portText)'"))
            }
            port = parsed
        }
        return .success(Endpoint(host: host, port: port))
    }
}
