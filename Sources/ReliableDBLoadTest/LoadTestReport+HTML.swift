import Foundation

extension LoadTestReport {
    /// The report as one self-contained HTML page: the summary table, a latency-percentile plot
    /// (percentiles on a "nines" scale) and a throughput timeline, both inline SVG. It loads
    /// nothing: no scripts, style sheets, fonts or images from anywhere.
    public func html() -> String {
        var page = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Load test: \(Self.escape(workload))</title>
            <style>
            body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
                   max-width: 60rem; padding: 0 1rem; color: #1d2433; background: #fff; }
            h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
            h2 { font-size: 1.1rem; margin-top: 2rem; }
            p.sub { color: #5b6577; margin-top: 0; }
            table { border-collapse: collapse; margin: 0.5rem 0; }
            th, td { padding: 0.25rem 0.8rem 0.25rem 0; text-align: left; vertical-align: top; }
            td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
            tr + tr td, tr + tr th { border-top: 1px solid #e3e6ec; }
            .pass { color: #1a7f37; font-weight: 600; }
            .fail { color: #cf222e; font-weight: 600; }
            svg { display: block; max-width: 100%; height: auto; background: #fafbfc; border: 1px solid #e3e6ec; }
            svg text { font-size: 11px; fill: #5b6577; }
            svg .grid { stroke: #e3e6ec; stroke-width: 1; }
            svg .axis { stroke: #8c95a6; stroke-width: 1; }
            svg .curve { fill: none; stroke: #0969da; stroke-width: 2; }
            svg .p99 { fill: none; stroke: #bf8700; stroke-width: 1.5; }
            svg .ops { fill: #54aeff; }
            svg .errors { fill: #cf222e; }
            code { font-size: 0.9em; }
            </style>
            </head>
            <body>
            <h1>Load test: \(Self.escape(workload))</h1>
            <p class="sub">\(Self.escape(configuration.summary)) &middot; started \(Self.escape(formatTimestamp(startedAt))) &middot; schema \(schema)</p>

            """
        page += summaryTable()
        page +=
            "<h2>Latency percentiles (ms, \(configuration.rate == nil ? "per operation" : "from intended start"))</h2>\n"
        page += percentilePlot()
        page += latencyTable()
        page += "<h2>Throughput per second</h2>\n"
        if let note = shortRunNote { page += "<p class=\"sub\">\(Self.escape(note))</p>\n" }
        page += throughputTimeline()
        page += errorsSection()
        page += thresholdsSection()
        page += "</body>\n</html>\n"
        return page
    }

    private func summaryTable() -> String {
        var rows: [(String, String)] = [
            ("Operations", "\(totalOperations) (\(reads) reads, \(writes) writes)"),
            ("Failed", "\(failedOperations) (\(Self.format(errors.ratePercent, decimals: 2))%)"),
            ("Throughput", "\(Self.format(throughput, decimals: 1)) ops/s"),
            ("Measured", "\(Self.format(elapsedSeconds, decimals: 3)) s"),
            (
                "p50 / p99 / max",
                "\(Self.milliseconds(latency.p50)) / \(Self.milliseconds(latency.p99)) / \(Self.milliseconds(latency.max)) ms"
            ),
        ]
        if let pipeline {
            rows.append(
                ("Circuit breaker", "\(pipeline.circuitBreakerState), \(pipeline.circuitBreakerRejections) rejected")
            )
            rows.append(("Retries / timeouts", "\(pipeline.retries) / \(pipeline.timeouts)"))
            rows.append(
                (
                    "Pool acquire",
                    "\(pipeline.acquireTimeText), pool max \(pipeline.poolMax)"
                )
            )
        } else {
            rows.append(("Pipeline", "none (raw driver)"))
        }
        var html = "<table class=\"summary\">\n"
        for (label, value) in rows {
            html += "<tr><th>\(Self.escape(label))</th><td>\(Self.escape(value))</td></tr>\n"
        }
        return html + "</table>\n"
    }

    private func latencyTable() -> String {
        var html = "<table class=\"latency\">\n<tr><th></th>"
        for (label, _) in latency.labeledValues {
            html += "<th class=\"num\">\(label)</th>"
        }
        html += "</tr>\n"
        var series = [("latency", latency)]
        if configuration.rate != nil { series.append(("service time", serviceTime)) }
        for (label, summary) in series {
            html += "<tr><th>\(label)</th>"
            for (_, value) in summary.labeledValues {
                html += "<td class=\"num\">\(Self.milliseconds(value))</td>"
            }
            html += "</tr>\n"
        }
        return html + "</table>\n"
    }

    private func errorsSection() -> String {
        guard errors.total > 0 else { return "<h2>Errors</h2>\n<p>None.</p>\n" }
        var html =
            "<h2>Errors</h2>\n<table class=\"errors\">\n<tr><th>class</th><th class=\"num\">count</th><th>first message</th></tr>\n"
        for (name, count) in errors.byClass.sorted(by: { $0.key < $1.key }) where count > 0 {
            html +=
                "<tr><td>\(Self.escape(name))</td><td class=\"num\">\(count)</td><td><code>\(Self.escape(errors.samples[name] ?? ""))</code></td></tr>\n"
        }
        return html + "</table>\n"
    }

    private func thresholdsSection() -> String {
        guard !thresholds.isEmpty else { return "" }
        var html = "<h2>Thresholds</h2>\n<table class=\"thresholds\">\n"
        for result in thresholds {
            let verdict = result.passed ? "<span class=\"pass\">pass</span>" : "<span class=\"fail\">FAIL</span>"
            html +=
                "<tr><td>\(verdict)</td><td><code>\(Self.escape(result.expression))</code></td><td class=\"num\">\(Self.format(result.actual, decimals: 3))</td></tr>\n"
        }
        return html + "</table>\n"
    }

    // MARK: Plots

    private static let plotWidth = 720.0
    private static let plotHeight = 300.0
    private static let left = 60.0
    private static let right = 70.0
    private static let top = 16.0
    private static let bottom = 40.0

    /// Latency against percentile, x on a "nines" scale: 0 = 0%, 1 = 90%, 2 = 99%, 3 = 99.9%.
    private func percentilePlot() -> String {
        let points = latencyDistribution.filter { $0.percentile < 100 }
        let resolvedNines = totalOperations > 0 ? log10(Double(totalOperations)) : 1
        let maxNines = max(1, resolvedNines.rounded(.up))
        let yMax = Self.niceCeiling(latencyDistribution.map(\.latencyMs).max() ?? 1)
        let innerWidth = Self.plotWidth - Self.left - Self.right
        let innerHeight = Self.plotHeight - Self.top - Self.bottom
        func x(_ nines: Double) -> Double { Self.left + min(nines, maxNines) / maxNines * innerWidth }
        func y(_ value: Double) -> Double { Self.top + innerHeight - value / yMax * innerHeight }

        var svg = Self.svgOpen(label: "Latency by percentile")
        for step in 0...5 {
            let value = yMax * Double(step) / 5
            svg += Self.line(Self.left, y(value), Self.left + innerWidth, y(value), class: "grid")
            svg += Self.text(Self.left - 6, y(value) + 4, Self.tick(value), anchor: "end")
        }
        for nines in 0...Int(maxNines) {
            let position = x(Double(nines))
            svg += Self.line(position, Self.top, position, Self.top + innerHeight, class: "grid")
            svg += Self.text(position, Self.top + innerHeight + 16, Self.ninesLabel(nines), anchor: "middle")
        }
        svg += Self.axes(innerWidth: innerWidth, innerHeight: innerHeight)
        svg += Self.text(Self.left + innerWidth / 2, Self.plotHeight - 6, "percentile", anchor: "middle")
        svg += Self.text(14, Self.top + innerHeight / 2, "ms", anchor: "middle")
        if points.isEmpty {
            svg += Self.text(Self.left + innerWidth / 2, Self.top + innerHeight / 2, "no operations", anchor: "middle")
        } else {
            var coordinates = points.map { point in
                (x(-log10(max(1e-12, 1 - point.percentile / 100))), y(point.latencyMs))
            }
            // The maximum closes the curve at the right edge.
            coordinates.append((x(maxNines), y(latency.max)))
            svg +=
                "<polyline class=\"curve\" points=\"\(coordinates.map { "\(Self.coordinate($0.0)),\(Self.coordinate($0.1))" }.joined(separator: " "))\"/>\n"
        }
        return svg + "</svg>\n"
    }

    /// Operations per second as bars (failed ones in red), the per-second p99 as a line on the
    /// right-hand axis.
    private func throughputTimeline() -> String {
        let innerWidth = Self.plotWidth - Self.left - Self.right
        let innerHeight = Self.plotHeight - Self.top - Self.bottom
        let seconds = max(1, perSecond.count)
        // A little headroom, so the tallest bar does not touch the frame.
        let opsMax = Self.niceCeiling(Double(perSecond.map(\.operations).max() ?? 1) * 1.05)
        let p99Max = Self.niceCeiling((perSecond.map(\.p99Ms).max() ?? 1) * 1.05)
        let slot = innerWidth / Double(seconds)
        func y(_ value: Double, _ maximum: Double) -> Double { Self.top + innerHeight - value / maximum * innerHeight }

        var svg = Self.svgOpen(label: "Throughput per second")
        for step in 0...5 {
            let fraction = Double(step) / 5
            let position = y(fraction * opsMax, opsMax)
            svg += Self.line(Self.left, position, Self.left + innerWidth, position, class: "grid")
            svg += Self.text(Self.left - 6, position + 4, Self.tick(fraction * opsMax), anchor: "end")
            svg += Self.text(Self.left + innerWidth + 6, position + 4, Self.tick(fraction * p99Max), anchor: "start")
        }
        let labelEvery = max(1, Int((Double(seconds) / 12).rounded(.up)))
        for sample in perSecond {
            let x = Self.left + Double(sample.second) * slot
            let barWidth = max(1, slot * 0.8)
            let okHeight = Double(sample.operations - sample.errors) / opsMax * innerHeight
            let errorHeight = Double(sample.errors) / opsMax * innerHeight
            let base = Self.top + innerHeight
            svg += Self.rect(
                x + slot * 0.1,
                base - okHeight,
                barWidth,
                okHeight,
                class: "ops",
                title:
                    "\(sample.second) s: \(sample.operations) ops, \(sample.errors) errors, p99 \(Self.milliseconds(sample.p99Ms)) ms"
            )
            if sample.errors > 0 {
                svg += Self.rect(
                    x + slot * 0.1,
                    base - okHeight - errorHeight,
                    barWidth,
                    errorHeight,
                    class: "errors",
                    title: nil
                )
            }
            if sample.second % labelEvery == 0 {
                svg += Self.text(x + slot / 2, base + 16, "\(sample.second)", anchor: "middle")
            }
        }
        if perSecond.isEmpty {
            svg += Self.text(Self.left + innerWidth / 2, Self.top + innerHeight / 2, "no operations", anchor: "middle")
        } else {
            let points = perSecond.map { sample in
                "\(Self.coordinate(Self.left + (Double(sample.second) + 0.5) * slot)),\(Self.coordinate(y(sample.p99Ms, p99Max)))"
            }
            svg += "<polyline class=\"p99\" points=\"\(points.joined(separator: " "))\"/>\n"
        }
        svg += Self.axes(innerWidth: innerWidth, innerHeight: innerHeight)
        svg += Self.line(
            Self.left + innerWidth,
            Self.top,
            Self.left + innerWidth,
            Self.top + innerHeight,
            class: "axis"
        )
        svg += Self.text(
            Self.left + innerWidth / 2,
            Self.plotHeight - 6,
            "second (bars: ops/s, red: errors; line: p99 ms, right axis)",
            anchor: "middle"
        )
        svg += Self.text(14, Self.top + innerHeight / 2, "ops", anchor: "middle")
        svg += Self.text(Self.plotWidth - 10, Self.top + innerHeight / 2, "ms", anchor: "middle")
        return svg + "</svg>\n"
    }

    private static func svgOpen(label: String) -> String {
        "<svg viewBox=\"0 0 \(Int(plotWidth)) \(Int(plotHeight))\" width=\"\(Int(plotWidth))\" height=\"\(Int(plotHeight))\" role=\"img\" aria-label=\"\(escape(label))\">\n"
    }

    private static func axes(innerWidth: Double, innerHeight: Double) -> String {
        line(left, top, left, top + innerHeight, class: "axis")
            + line(left, top + innerHeight, left + innerWidth, top + innerHeight, class: "axis")
    }

    private static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, class name: String) -> String {
        "<line class=\"\(name)\" x1=\"\(coordinate(x1))\" y1=\"\(coordinate(y1))\" x2=\"\(coordinate(x2))\" y2=\"\(coordinate(y2))\"/>\n"
    }

    private static func rect(
        _ x: Double,
        _ y: Double,
        _ width: Double,
        _ height: Double,
        class name: String,
        title: String?
    ) -> String {
        let body = title.map { "<title>\(escape($0))</title>" } ?? ""
        return
            "<rect class=\"\(name)\" x=\"\(coordinate(x))\" y=\"\(coordinate(y))\" width=\"\(coordinate(width))\" height=\"\(coordinate(max(0, height)))\">\(body)</rect>\n"
    }

    private static func text(_ x: Double, _ y: Double, _ content: String, anchor: String) -> String {
        "<text x=\"\(coordinate(x))\" y=\"\(coordinate(y))\" text-anchor=\"\(anchor)\">\(escape(content))</text>\n"
    }

    private static func coordinate(_ value: Double) -> String {
        format(value.isFinite ? value : 0, decimals: 1)
    }

    /// An axis label: up to three decimals, trailing zeros dropped (`0.1`, `2.5`, `1600`).
    private static func tick(_ value: Double) -> String {
        var text = format(value, decimals: value >= 100 ? 0 : 3)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }

    private static func ninesLabel(_ nines: Int) -> String {
        switch nines {
        case 0: "0%"
        case 1: "90%"
        case 2: "99%"
        default: "99." + String(repeating: "9", count: nines - 2) + "%"
        }
    }

    /// The smallest 1, 2 or 5 × 10^k at or above `value` (1 for zero or less).
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0, value.isFinite else { return 1 }
        let magnitude = pow(10, (log10(value)).rounded(.down))
        for factor in [1.0, 2, 5, 10] where factor * magnitude >= value * (1 - 1e-9) {
            return factor * magnitude
        }
        return 10 * magnitude
    }

    /// Escapes text for HTML element content and attribute values.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
