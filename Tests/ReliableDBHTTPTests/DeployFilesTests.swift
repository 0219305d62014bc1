import Foundation
import Logging
import Prometheus
import ReliableDB
import ReliableDBPrometheus
import ReliableDBTestSupport
import ReliableDBWebhook
import Testing
import Yams

/// The files in deploy/ are checked like code: they parse, they point at the real endpoints, and
/// every metric they query is one ReliableDB exports.
@Suite("Deployment files")
struct DeployFilesTests {
    static let deploy = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("deploy")

    static func text(_ path: String) throws -> String {
        try String(contentsOf: deploy.appendingPathComponent(path), encoding: .utf8)
    }

    @Test func theKubernetesDeploymentUsesTheDocumentedProbes() throws {
        let documents = try Yams.load_all(yaml: try Self.text("kubernetes/deployment.yaml")).map {
            $0 as? [String: Any]
        }
        let deployment = try #require(documents.compactMap { $0 }.first { $0["kind"] as? String == "Deployment" })
        let spec = try #require((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])
        let containers = try #require((spec["spec"] as? [String: Any])?["containers"] as? [[String: Any]])
        let container = try #require(containers.first)
        let liveness = try #require(container["livenessProbe"] as? [String: Any])
        let readiness = try #require(container["readinessProbe"] as? [String: Any])
        #expect((liveness["httpGet"] as? [String: Any])?["path"] as? String == "/api/health/live")
        #expect((liveness["httpGet"] as? [String: Any])?["port"] as? Int == 3000)
        #expect(liveness["initialDelaySeconds"] as? Int == 30)
        #expect(liveness["periodSeconds"] as? Int == 10)
        #expect((readiness["httpGet"] as? [String: Any])?["path"] as? String == "/api/health/ready")
        #expect((readiness["httpGet"] as? [String: Any])?["port"] as? Int == 3000)
        #expect(readiness["initialDelaySeconds"] as? Int == 5)
        #expect(readiness["periodSeconds"] as? Int == 5)
        #expect((container["args"] as? [String])?.first == "serve")
    }

    @Test func thePrometheusScrapeConfigScrapesTheDocumentedPath() throws {
        let config = try #require(try Yams.load(yaml: try Self.text("prometheus/prometheus.yml")) as? [String: Any])
        let job = try #require((config["scrape_configs"] as? [[String: Any]])?.first)
        #expect(job["job_name"] as? String == "carmen-database")
        #expect(job["metrics_path"] as? String == "/api/health/metrics")
        #expect(job["scrape_interval"] as? String == "15s")
        let targets = (job["static_configs"] as? [[String: Any]])?.first?["targets"] as? [String]
        #expect(targets == ["localhost:3000"])
    }

    @Test func promtoolAcceptsTheRulesAndTheConfig() async throws {
        let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let path = try #require(promtool, "promtool is missing: scripts/test installs Debian's prometheus package")
        for arguments in [
            ["check", "rules", "prometheus/alerts.yml"], ["check", "config", "prometheus/prometheus.yml"],
        ] {
            let (status, text) = try await runToCompletion(path, arguments, in: Self.deploy)
            #expect(status == 0, "promtool \(arguments.joined(separator: " ")): \(text)")
        }
    }

    @Test func everyMetricTheRulesAndDashboardQueryIsExported() async throws {
        let exported = try await Self.exportedMetricNames()
        let rules = try #require(try Yams.load(yaml: try Self.text("prometheus/alerts.yml")) as? [String: Any])
        let ruleExpressions = ((rules["groups"] as? [[String: Any]]) ?? []).flatMap {
            (($0["rules"] as? [[String: Any]]) ?? []).compactMap { $0["expr"] as? String }
        }
        #expect(ruleExpressions.count >= 5, "one rule per alert condition")
        let dashboard = try #require(
            try JSONSerialization.jsonObject(with: Data(try Self.text("grafana/dashboard.json").utf8)) as? [String: Any]
        )
        let panelExpressions = ((dashboard["panels"] as? [[String: Any]]) ?? []).flatMap {
            (($0["targets"] as? [[String: Any]]) ?? []).compactMap { $0["expr"] as? String }
        }
        #expect(panelExpressions.count >= 10)
        for expression in ruleExpressions + panelExpressions {
            let names = Self.metricNames(in: expression)
            #expect(!names.isEmpty, "\(expression)")
            for name in names {
                #expect(exported.contains(name), "\(name) (in \(expression)) is not exported")
            }
        }
    }

    /// Family names in a real scrape of a fully wired stack (pipeline, monitor, webhook sink), whose
    /// health status also has the server's connection figures, as PostgreSQL's probe reports them.
    static func exportedMetricNames() async throws -> Set<String> {
        let stack = try Stack()
        defer { Task { try await stack.cleanUp() } }
        _ = WebhookAlertSink(
            url: Secret("http://127.0.0.1:1/hook", redacted: "http://127.0.0.1:1/…"),
            metricsFactory: stack.endpoints.exporter.metricsFactory,
            logger: Logger(label: "test")
        )
        var status = await stack.monitor.checkNow()
        status.serverConnections = ServerConnections(inUse: 12, max: 100, reserved: 3)
        _ = stack.endpoints.exporter.render(metrics: stack.db.metrics(), health: status)
        let text = String(decoding: stack.endpoints.metrics().body, as: UTF8.self)
        var names: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            let name = String(parts[2])
            names.insert(name)
            if parts[3] == "histogram" {
                names.formUnion([name + "_bucket", name + "_sum", name + "_count"])
            }
        }
        return names
    }

    /// `db_…` identifiers in a PromQL expression (label names and functions never start with db_).
    static func metricNames(in expression: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "\\bdb_[a-z_]+")
        let range = NSRange(expression.startIndex..., in: expression)
        return Set(
            regex.matches(in: expression, range: range).compactMap {
                Range($0.range, in: expression).map { String(expression[$0]) }
            }
        )
    }
}
