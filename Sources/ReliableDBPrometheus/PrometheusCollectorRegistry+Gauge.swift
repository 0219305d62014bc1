import Prometheus

extension PrometheusCollectorRegistry {
    /// A gauge named exactly `name` (no namespace or unit suffix added) with a help text.
    ///
    /// Goes through `MetricNameDescriptor` because the `makeGauge(name:labels:help:)` overloads
    /// are deprecated in swift-prometheus 2.4.1. Every call for one name must pass the same help
    /// text and label names, or swift-prometheus stops the process.
    func gauge(_ name: String, labels: [(String, String)] = [], help: String) -> Gauge {
        makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }
}

extension Gauge {
    /// Sets the gauge, writing 0 for NaN and infinities: swift-prometheus prints a Double with
    /// `description` (`nan`, `inf`), which is not valid in the text format and makes Prometheus
    /// reject the whole scrape.
    func setFinite(_ value: Double) {
        set(to: value.isFinite ? value : 0)
    }
}
