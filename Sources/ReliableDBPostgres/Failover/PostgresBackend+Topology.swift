import NIOCore
import PostgresNIO
import ReliableDB

/// What each server of the URL is: for `/api/health` (the walk's view) and `reliabledb check`
/// (a direct connection to each).
extension PostgresBackend {
    /// With several servers in the URL: each one's last known role and whether the walk uses it.
    public func servers() -> [ServerHealth] {
        guard url.endpoints.count > 1 else { return [] }
        return hostWalk.serverStates.map { server in
            ServerHealth(
                host: server.endpoint.description,
                role: server.state.role.map(\.name),
                state: server.current ? "current" : server.ejected ? "ejected" : "available",
                lastOutcome: server.state.lastOutcome
            )
        }
    }

    /// One server of the URL as a direct connection found it (``topology(connectTimeout:)``).
    public struct ServerReport: Sendable, Equatable {
        public var server: PostgresURL.Endpoint
        /// What the server said of itself; nil when it could not be reached.
        package var serverRole: ServerRole?
        /// A standby's replay lag (zero when it has replayed all it received); nil when unknown.
        public var replayLag: Duration?
        /// Why it could not be reached, in words.
        public var error: String?

        /// `primary`, `standby` or `read-only primary`; nil when it could not be reached.
        public var role: String? { serverRole?.name }

        /// Whether this server can serve `target`, as the walk decides it (`prefer-standby`
        /// takes any server when no standby answers).
        public func serves(_ target: PostgresURL.TargetSessionAttributes) -> Bool {
            serverRole.map { target.accepts($0, relaxed: true) } ?? false
        }
    }

    /// Connects to every server of the URL directly (outside the pools) and asks its role and
    /// replay lag: what `reliabledb check` reports as the topology.
    public func topology(connectTimeout: Duration = .seconds(3)) async -> [ServerReport] {
        var reports: [ServerReport] = []
        for endpoint in url.endpoints {
            var report = ServerReport(server: endpoint)
            do {
                var configuration = try Self.connectionConfiguration(
                    for: url,
                    endpoint: endpoint,
                    applicationNameSuffix: "-topology"
                )
                configuration.options.connectTimeout = TimeAmount(connectTimeout)
                let connection = try await PostgresConnection.connect(
                    configuration: try await authenticating(configuration),
                    id: -2,
                    logger: logger
                )
                do {
                    for try await (inRecovery, readOnly) in try await connection.query(ServerRole.query, logger: logger)
                        .decode((Bool, Bool).self)
                    {
                        report.serverRole = ServerRole(inRecovery: inRecovery, readOnly: readOnly)
                    }
                    for try await seconds in try await connection.query(Self.replayLagQuery, logger: logger)
                        .decode(Double.self) where report.serverRole?.inRecovery == true
                    {
                        report.replayLag = seconds < 0 ? nil : .milliseconds(Int64(seconds * 1000))
                    }
                } catch {
                    report.serverRole = nil
                    report.error = describePostgresError(error)
                }
                try? await connection.close()
            } catch {
                report.error = describePostgresError(error)
            }
            reports.append(report)
        }
        return reports
    }
}
