/// The health score and checks, as a pure function of what the last check saw.
///
/// Score (0-100) = connectivity 40 + circuit breaker 20 + query performance 15 + error rate 15 +
/// pool 10, where:
/// - connectivity: 40 when the probe succeeded, else 0;
/// - breaker: 20 when CLOSED or DISABLED, 10 when HALF_OPEN, 0 when OPEN or FORCED_OPEN;
/// - query performance: full while the recent average query time is at most the threshold,
///   falling linearly to 0 at four times the threshold;
/// - error rate: the same shape against the error-rate threshold;
/// - pool: full while utilization is at most its threshold, falling linearly to 0 at 100%, and 0
///   while callers wait for a connection.
///
/// State: unhealthy when the database is unreachable or the breaker is open; degraded when the
/// score is below the health-score threshold or any check fails; healthy otherwise.
package enum HealthScore {
    public struct Inputs: Sendable, Equatable {
        public var probeSucceeded: Bool
        public var breakerState: CircuitState
        public var recentAverageQueryTime: Duration
        public var recentErrorRate: Double
        public var poolUtilization: Double
        public var poolWaiting: Int

        public init(
            probeSucceeded: Bool,
            breakerState: CircuitState,
            recentAverageQueryTime: Duration,
            recentErrorRate: Double,
            poolUtilization: Double,
            poolWaiting: Int
        ) {
            self.probeSucceeded = probeSucceeded
            self.breakerState = breakerState
            self.recentAverageQueryTime = recentAverageQueryTime
            self.recentErrorRate = recentErrorRate
            self.poolUtilization = poolUtilization
            self.poolWaiting = poolWaiting
        }
    }

    public struct Verdict: Sendable, Equatable {
        public var score: Double
        public var checks: HealthChecks
        public var state: HealthState
    }

    public static func evaluate(_ inputs: Inputs, thresholds: AlertThresholds) -> Verdict {
        let connectivity = inputs.probeSucceeded ? 40.0 : 0
        let breaker: Double =
            switch inputs.breakerState {
            case .closed, .disabled: 20
            case .halfOpen: 10
            case .open, .forcedOpen: 0
            }
        let performance =
            15 * falling(inputs.recentAverageQueryTime.milliseconds, limit: thresholds.queryTime.milliseconds)
        let errors = 15 * falling(inputs.recentErrorRate, limit: thresholds.errorRate)
        let pool: Double
        if inputs.poolWaiting > 0 || inputs.poolUtilization >= 100 {
            pool = 0
        } else if inputs.poolUtilization <= thresholds.poolUtilization {
            pool = 10
        } else {
            pool = 10 * (100 - inputs.poolUtilization) / (100 - thresholds.poolUtilization)
        }
        let score = (connectivity + breaker + performance + errors + pool).rounded()

        let checks = HealthChecks(
            connectivity: inputs.probeSucceeded,
            queryPerformance: inputs.recentAverageQueryTime <= thresholds.queryTime,
            poolHealth: inputs.poolUtilization <= thresholds.poolUtilization && inputs.poolWaiting == 0,
            circuitBreakerState: inputs.breakerState == .closed || inputs.breakerState == .disabled
        )
        let state: HealthState
        if !inputs.probeSucceeded || inputs.breakerState == .open || inputs.breakerState == .forcedOpen {
            state = .unhealthy
        } else if score < thresholds.healthScore || !checks.queryPerformance || !checks.poolHealth
            || !checks.circuitBreakerState || inputs.recentErrorRate > thresholds.errorRate
        {
            state = .degraded
        } else {
            state = .healthy
        }
        return Verdict(score: score, checks: checks, state: state)
    }

    /// 1 up to `limit`, falling linearly to 0 at four times `limit`.
    private static func falling(_ value: Double, limit: Double) -> Double {
        guard limit > 0 else { return value > 0 ? 0 : 1 }
        let ratio = value / limit
        if ratio <= 1 { return 1 }
        if ratio >= 4 { return 0 }
        return (4 - ratio) / 3
    }
}
