import Foundation

extension LoadTestReport {
    /// The report as aligned text for a terminal.
    ///
    /// ```text
    /// Load test: sqlite reliabledb.sqlite (ReliableDB)
    ///   run           4 connections × 25 operations, mixed (80% reads), closed model
    ///   started       2025-01-31T12:00:00.000Z, measured 0.123 s
    ///   operations    100 (80 reads, 20 writes), 0 failed (0.00%)
    ///   throughput    812.3 ops/s
    ///
    ///   latency ms         min     mean      p50      p90      p95      p99    p99.9      max
    ///   from intended    0.041    1.234    ...
    ///   service time     0.041    1.234    ...
    /// ```
    /// Said when the measured phase was too short for its per-second timeline to show anything
    /// (the default 10 × 100 operations can finish in a fraction of a second).
    public var shortRunNote: String? {
        guard elapsedSeconds < Self.readableRunSeconds else { return nil }
        return "the run lasted \(Self.format(elapsedSeconds, decimals: 2)) s, too short for a per-second "
            + "timeline; run longer for a readable report, e.g. --duration 30"
    }

    /// The shortest run whose per-second timeline says something.
    static let readableRunSeconds = 5.0

    public func textSummary() -> String {
        var lines: [String] = []
        func row(_ label: String, _ value: String) {
            lines.append("  " + label.padding(toLength: 14, withPad: " ", startingAt: 0) + value)
        }
        lines.append("Load test: \(workload)")
        row("run", configuration.summary)
        var started = "\(formatTimestamp(startedAt)), measured \(Self.format(elapsedSeconds, decimals: 3)) s"
        if configuration.warmup > .zero {
            started += " after \(Self.format(configuration.warmup.secondsValue, decimals: 1)) s warmup"
        }
        row("started", started)
        row(
            "operations",
            "\(totalOperations) (\(reads) reads, \(writes) writes), \(failedOperations) failed"
                + " (\(Self.format(errors.ratePercent, decimals: 2))%)"
        )
        row("throughput", "\(Self.format(throughput, decimals: 1)) ops/s")
        if let note = shortRunNote { row("note", note) }
        lines.append("")

        let width = 9
        let header = latency.labeledValues.map { $0.label.leftPadded(to: width) }.joined()
        lines.append("  " + "latency ms".padding(toLength: 16, withPad: " ", startingAt: 0) + header)
        for (label, summary) in [
            (configuration.rate == nil ? "per operation" : "from intended", latency),
            ("service time", serviceTime),
        ] {
            let values = summary.labeledValues.map { Self.milliseconds($0.milliseconds).leftPadded(to: width) }
            lines.append("  " + label.padding(toLength: 16, withPad: " ", startingAt: 0) + values.joined())
            if configuration.rate == nil { break }
        }
        lines.append("")

        if errors.total == 0 {
            row("errors", "none")
        } else {
            let classes = errors.byClass.filter { $0.value > 0 }.sorted {
                $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key)
            }
            row("errors", classes.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for (name, _) in classes {
                if let sample = errors.samples[name] {
                    row("", "\(name): \(sample)")
                }
            }
        }
        if let pipeline {
            row(
                "pipeline",
                "breaker \(pipeline.circuitBreakerState), \(pipeline.circuitBreakerRejections) rejected, "
                    + "\(pipeline.retries) retries, \(pipeline.timeouts) timeouts"
            )
            row(
                "pool",
                "max \(pipeline.poolMax), acquire \(pipeline.acquireTimeText), "
                    + "\(pipeline.poolAcquireTimeouts) acquire timeouts"
            )
        } else {
            row("pipeline", "none (raw driver)")
        }
        if !perSecond.isEmpty {
            let counts = perSecond.map(\.operations)
            row(
                "per second",
                "\(perSecond.count) s, ops min \(counts.min() ?? 0) / max \(counts.max() ?? 0), "
                    + "worst p99 \(Self.milliseconds(perSecond.map(\.p99Ms).max() ?? 0)) ms"
            )
        }
        for result in thresholds {
            row(
                result == thresholds.first ? "thresholds" : "",
                "\(result.passed ? "pass" : "FAIL")  \(result.expression)  (actual \(Self.format(result.actual, decimals: 3)))"
            )
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func format(_ value: Double, decimals: Int) -> String {
        String(format: "%.\(decimals)f", value)
    }

    /// Milliseconds with three decimals below 100 ms, one above.
    static func milliseconds(_ value: Double) -> String {
        format(value, decimals: value < 100 ? 3 : 1)
    }
}

extension PipelineSummary {
    /// `mean 0.012 ms, max 1.200 ms`, or that the backend does not measure it (both zero).
    var acquireTimeText: String {
        guard poolAcquireMeanMs > 0 || poolAcquireMaxMs > 0 else { return "time not measured by this backend" }
        return
            "mean \(LoadTestReport.milliseconds(poolAcquireMeanMs)) ms, max \(LoadTestReport.milliseconds(poolAcquireMaxMs)) ms"
    }
}

extension LoadTestConfiguration {
    /// E.g. `4 connections × 25 operations, mixed (80% reads), closed model`.
    public var summary: String {
        var text = "\(concurrentConnections) connection\(concurrentConnections == 1 ? "" : "s")"
        if let duration {
            text += " for \(LoadTestReport.format(duration.secondsValue, decimals: 1)) s"
        } else {
            text += " × \(operationsPerConnection) operation\(operationsPerConnection == 1 ? "" : "s")"
        }
        text += ", \(operationType.name)"
        if case .mixed(let ratio) = operationType {
            text += " (\(LoadTestReport.format(ratio * 100, decimals: 0))% reads)"
        }
        if let rate {
            text += ", open model at \(LoadTestReport.format(rate, decimals: 1)) ops/s"
        } else {
            text += ", closed model"
        }
        return text
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? " " + self : String(repeating: " ", count: width - count) + self
    }
}
