import Prometheus
import ReliableDB
import ReliableDBPrometheus
import Testing

@Suite("PrometheusExporter")
struct PrometheusExporterTests {
    /// Every gauge family the exporter owns, with its TYPE.
    static let documentedGauges = [
        "db_connections_total", "db_connections_active", "db_connections_idle", "db_pool_utilization_percent",
        "db_query_duration_avg_ms", "db_health_score", "db_circuit_breaker_state", "db_circuit_breaker_failures",
        "db_operations_active",
    ]
    static let documentedCounters = [
        "db_queries_slow_total", "db_queries_successful_total", "db_queries_failed_total", "db_timeouts_total",
    ]

    @Test("A real pipeline's scrape is valid 0.0.4 and carries every documented metric with the pipeline's numbers")
    func scrapeCarriesEveryDocumentedMetric() async throws {
        let pool = PoolStatistics(total: 10, active: 3, idle: 7, waiting: 2, max: 10)
        let fixture = Fixture(pool: pool)
        for _ in 0..<4 { try await fixture.succeed(taking: .milliseconds(3)) }
        try await fixture.succeed(taking: .milliseconds(1500))  // slow: over the 1 s threshold
        for _ in 0..<2 { await fixture.fail(with: callerError) }
        for _ in 0..<2 { await fixture.fail(with: connectionError) }

        let closed = try fixture.scrape(health: fixture.health(state: .healthy, score: 95, connected: true))
        #expect(closed.value("db_circuit_breaker_state", ["value": "CLOSED"]) == 1)
        #expect(closed.value("db_circuit_breaker_failures") == 2)

        // Three more connection failures reach the threshold (5) and open the breaker; the next call is rejected.
        for _ in 0..<3 { await fixture.fail(with: connectionError) }
        let rejected = await fixture.fail(with: connectionError)
        #expect(rejected is DatabaseCircuitBreakerError)
        #expect(fixture.db.circuitBreaker.state == .open)

        let snapshot = fixture.db.metrics()
        let health = fixture.health(state: .unhealthy, score: 40, connected: true)
        let text = fixture.exporter.render(metrics: snapshot, health: health)
        let scrape = try Exposition(parsing: text)

        for name in Self.documentedGauges {
            #expect(scrape.families[name]?.type == "gauge", "\(name)")
            #expect(scrape.families[name]?.help?.isEmpty == false, "\(name) has a help text")
        }
        for name in Self.documentedCounters {
            #expect(scrape.families[name]?.type == "counter", "\(name)")
        }

        // Two lines as dashboards and alerts read them, with this pipeline's numbers.
        #expect(text.contains("\ndb_connections_total 10.0\n"))
        #expect(text.contains("\ndb_circuit_breaker_state{value=\"OPEN\"} 1.0\n"))
        #expect(scrape.value("db_connections_total") == 10)
        #expect(scrape.value("db_connections_active") == 3)
        #expect(scrape.value("db_connections_idle") == 7)
        #expect(scrape.value("db_connections_waiting") == 2)
        #expect(scrape.value("db_connections_max") == 10)
        #expect(scrape.value("db_pool_utilization_percent") == 30)
        #expect(scrape.value("db_operations_active") == 0)
        #expect(scrape.value("db_circuit_breaker_failures") == Double(snapshot.circuitBreaker.failures))
        let expectedAverage = snapshot.queries.averageQueryTime.milliseconds
        #expect(expectedAverage > 0)
        #expect(scrape.value("db_query_duration_avg_ms") == expectedAverage)
        #expect(scrape.value("db_health_score") == 40)
        #expect(scrape.value("db_up") == 1)
        #expect(scrape.value("db_health_status", ["state": "unhealthy"]) == 1)
        #expect(scrape.value("db_health_status", ["state": "healthy"]) == 0)
        #expect(scrape.value("db_health_status", ["state": "degraded"]) == 0)

        for state in CircuitState.allCases {
            #expect(scrape.value("db_circuit_breaker_state", ["value": state.rawValue]) == (state == .open ? 1 : 0))
        }

        // Event counters: what the hot path recorded, equal to the pipeline's own snapshot.
        #expect(snapshot.successfulQueries == 5)
        #expect(snapshot.failedQueries == 7)
        #expect(scrape.value("db_queries_successful_total") == 5)
        #expect(scrape.value("db_queries_failed_total") == 7)
        #expect(scrape.value("db_queries_slow_total") == 1)
        #expect(scrape.value("db_timeouts_total") == 0)
        #expect(scrape.value("db_errors_total", ["class": "caller"]) == 2)
        #expect(scrape.value("db_errors_total", ["class": "connection"]) == 5)
        #expect(scrape.value("db_circuit_breaker_calls_total", ["outcome": "successful"]) == 5)
        #expect(scrape.value("db_circuit_breaker_calls_total", ["outcome": "failed"]) == 5)
        #expect(scrape.value("db_circuit_breaker_calls_total", ["outcome": "ignored"]) == 2)
        #expect(scrape.value("db_circuit_breaker_calls_total", ["outcome": "not_permitted"]) == 1)
        #expect(scrape.value("db_circuit_breaker_transitions_total", ["to": "OPEN"]) == 1)
        #expect(scrape.value("db_retries_total") == 0)

        // The duration histogram counts every finished operation, by outcome, in seconds.
        let all = ["operation": "all"]
        #expect(scrape.value("db_query_duration_seconds_count", all.merging(["outcome": "success"]) { $1 }) == 5)
        #expect(scrape.value("db_query_duration_seconds_count", all.merging(["outcome": "failure"]) { $1 }) == 7)
        let sum = try #require(
            scrape.value("db_query_duration_seconds_sum", all.merging(["outcome": "success"]) { $1 })
        )
        #expect(abs(sum - 1.512) < 1e-9)
    }

    @Test("Load shedding: its gauges and the shed counter appear only when it is on")
    func loadSheddingGaugesAndCounter() async throws {
        let off = try Fixture().scrape()
        #expect(off.value("db_load_shedding_limit") == nil, "absent while load shedding is off")
        let fixture = Fixture(loadShedding: .init(enabled: true, maxConcurrent: 3, adaptive: nil))
        try await fixture.succeed()
        let on = try fixture.scrape()
        #expect(on.value("db_load_shedding_limit") == 3)
        #expect(on.value("db_load_shedding_in_flight") == 0)
        #expect(on.value("db_load_shedding_waiting") == 0)
        #expect(
            fixture.exporter.render(metrics: fixture.db.metrics(), health: nil).contains(
                "# HELP db_load_shedding_limit"
            )
        )
    }

    @Test("Several servers: db_host_up and db_host_current, labelled by the configured host")
    func serverGauges() throws {
        let fixture = Fixture()
        #expect(!fixture.exporter.render(metrics: fixture.db.metrics(), health: nil).contains("db_host_up"))
        fixture.backend.serverList = [
            ServerHealth(host: "db1:5432", role: "primary", state: "ejected", lastOutcome: "refused"),
            ServerHealth(host: "db2:5432", role: "primary", state: "current", lastOutcome: nil),
        ]
        let text = fixture.exporter.render(metrics: fixture.db.metrics(), health: nil)
        #expect(text.contains(#"db_host_up{host="db1:5432"} 0"#), "\(text)")
        #expect(text.contains(#"db_host_up{host="db2:5432"} 1"#))
        #expect(text.contains(#"db_host_current{host="db2:5432"} 1"#))
        #expect(text.contains(#"db_host_current{host="db1:5432"} 0"#))
    }

    @Test("With a standby: db_standby_circuit_breaker_state beside the primary's breaker")
    func standbyBreakerGauge() throws {
        let single = Fixture()
        let text = single.exporter.render(metrics: single.db.metrics(), health: nil)
        #expect(!text.contains("db_standby_circuit_breaker_state"), "absent with one server")
        let fixture = Fixture(standbyReads: .onFallback)
        fixture.db.standbyCircuitBreaker?.forceState(.forcedOpen)
        let scraped = fixture.exporter.render(metrics: fixture.db.metrics(), health: nil)
        #expect(scraped.contains(#"db_standby_circuit_breaker_state{value="FORCED_OPEN"} 1"#), "\(scraped)")
        #expect(scraped.contains(#"db_standby_circuit_breaker_state{value="CLOSED"} 0"#))
        #expect(scraped.contains(#"db_circuit_breaker_state{value="CLOSED"} 1"#), "the primary's is apart")
    }

    @Test("Pool gauges follow the backend's statistics from one scrape to the next")
    func poolGaugesFollowTheBackend() throws {
        let fixture = Fixture(pool: PoolStatistics(total: 4, active: 1, idle: 3, waiting: 0, max: 8))
        let first = try fixture.scrape()
        #expect(first.value("db_connections_total") == 4)
        #expect(first.value("db_connections_active") == 1)
        #expect(first.value("db_connections_idle") == 3)
        #expect(first.value("db_connections_waiting") == 0)
        #expect(first.value("db_connections_max") == 8)
        #expect(first.value("db_pool_utilization_percent") == 12.5)

        let busy = PoolStatistics(total: 8, active: 8, idle: 0, waiting: 5, max: 8)
        fixture.backend.pool = busy
        let second = try fixture.scrape()
        #expect(second.value("db_connections_total") == Double(busy.total))
        #expect(second.value("db_connections_active") == Double(busy.active))
        #expect(second.value("db_connections_idle") == Double(busy.idle))
        #expect(second.value("db_connections_waiting") == Double(busy.waiting))
        #expect(second.value("db_connections_max") == Double(busy.max))
        #expect(second.value("db_pool_utilization_percent") == busy.utilization)
        #expect(busy.utilization == 100)
    }

    @Test("db_operations_active counts the operations in flight at the scrape")
    func operationsActiveDuringAnOperation() async throws {
        let fixture = Fixture()
        let inside = try await fixture.db.execute(OperationOptions(Fixture.operationName)) { _ in
            try fixture.scrape().value("db_operations_active")
        }
        #expect(inside == 1)
        #expect(try fixture.scrape().value("db_operations_active") == 0)
    }

    @Test("Concurrent scrapes during traffic each produce valid text")
    func concurrentScrapesStayValid() async throws {
        let fixture = Fixture()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for index in 0..<200 {
                    if index.isMultiple(of: 3) {
                        await fixture.fail(with: callerError, taking: .microseconds(index))
                    } else {
                        try await fixture.succeed(taking: .microseconds(index))
                    }
                }
            }
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<25 {
                        let health = fixture.health(state: .healthy, score: 99, connected: true)
                        let scrape = try fixture.scrape(health: health)
                        #expect(scrape.families["db_queries_successful_total"]?.samples.count == 1)
                    }
                }
            }
            try await group.waitForAll()
        }
        let final = try fixture.scrape()
        #expect(final.value("db_queries_successful_total") == 133)
        #expect(final.value("db_queries_failed_total") == 67)
    }

    @Test("The breaker-state gauge is 1 for exactly the current state", arguments: CircuitState.allCases)
    func breakerStateIsOneHot(state: CircuitState) throws {
        let fixture = Fixture()
        fixture.db.circuitBreaker.forceState(state)
        #expect(fixture.db.circuitBreaker.state == state)
        let scrape = try fixture.scrape()
        let series = scrape.samples(named: "db_circuit_breaker_state")
        #expect(Set(series.map { $0.labels }) == Set(CircuitState.allCases.map { ["value": $0.rawValue] }))
        for sample in series {
            #expect(sample.value == (sample.labels["value"] == state.rawValue ? 1 : 0), "\(sample.labels)")
        }
    }

    @Test("The operation label carries only the configured names; others are folded into \"all\"")
    func operationLabelIsBounded() async throws {
        let fixture = Fixture()
        try await fixture.succeed(Fixture.operationName)
        try await fixture.succeed("list-orders")
        try await fixture.succeed("user-\(Int.random(in: 0..<1_000_000))")
        await fixture.fail("list-orders", with: callerError)
        let scrape = try fixture.scrape()

        let operations = Set(
            scrape.families.values.flatMap { $0.samples }.compactMap { $0.labels["operation"] }
        )
        #expect(operations == ["all", Fixture.operationName])
        let configured = ["operation": Fixture.operationName, "outcome": "success"]
        #expect(scrape.value("db_query_duration_seconds_count", configured) == 1)
        #expect(scrape.value("db_query_duration_seconds_count", ["operation": "all", "outcome": "success"]) == 3)
        #expect(scrape.value("db_query_duration_seconds_count", ["operation": "all", "outcome": "failure"]) == 1)
        #expect(!scrape.families.values.contains { $0.samples.contains { $0.labels.values.contains("list-orders") } })
    }

    @Test("Rendering again neither duplicates a family nor changes the set of series")
    func renderingTwiceIsStable() async throws {
        let fixture = Fixture()
        try await fixture.succeed()
        let health = fixture.health(state: .healthy, score: 100, connected: true)
        let first = try fixture.scrape(health: health)
        let second = try fixture.scrape(health: health)
        let third = try fixture.scrape(health: health)

        #expect(Set(first.families.keys) == Set(second.families.keys))
        #expect(Set(second.families.keys) == Set(third.families.keys))
        for scrape in [first, second, third] {
            #expect(scrape.typeLines.values.allSatisfy { $0 == 1 })
            #expect(scrape.helpLines.values.allSatisfy { $0 == 1 })
            #expect(scrape.typeLines.count == scrape.families.count)
        }
        for (name, family) in first.families {
            let again = try #require(third.families[name])
            #expect(family.samples.map { $0.name }.sorted() == again.samples.map { $0.name }.sorted(), "\(name)")
            #expect(Set(family.samples.map { $0.labels }) == Set(again.samples.map { $0.labels }), "\(name)")
            #expect(family.samples.count == again.samples.count, "\(name)")
        }
    }

    @Test("Without a health status the health families are absent, and they go away when monitoring stops")
    func healthGaugesOnlyWithHealth() throws {
        let fixture = Fixture()
        let healthNames = ["db_health_score", "db_health_status", "db_up"]

        let off = try fixture.scrape(health: nil)
        for name in healthNames { #expect(off.families[name] == nil, "\(name)") }
        #expect(off.families["db_connections_total"] != nil)

        let down = try fixture.scrape(health: fixture.health(state: .unhealthy, score: 12, connected: false))
        #expect(down.value("db_health_score") == 12)
        #expect(down.value("db_up") == 0)
        #expect(down.value("db_health_status", ["state": "unhealthy"]) == 1)

        let up = try fixture.scrape(health: fixture.health(state: .degraded, score: 65.5, connected: true))
        #expect(up.value("db_health_score") == 65.5)
        #expect(up.value("db_up") == 1)
        #expect(up.value("db_health_status", ["state": "degraded"]) == 1)
        #expect(up.value("db_health_status", ["state": "unhealthy"]) == 0)

        let stopped = try fixture.scrape(health: nil)
        for name in healthNames { #expect(stopped.families[name] == nil, "\(name)") }
    }

    @Test("The duration histograms use the exporter's buckets, and a 3 ms query lands between 2.5 and 5 ms")
    func durationHistogramBuckets() async throws {
        let fixture = Fixture()
        try await fixture.succeed(taking: .milliseconds(3))
        fixture.instruments.poolAcquireDuration.recordNanoseconds(700_000)  // 0.7 ms
        let scrape = try fixture.scrape()

        let expected = [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
            "10.0", "+Inf",
        ]
        let labels = ["operation": Fixture.operationName, "outcome": "success"]
        #expect(scrape.bucketBounds("db_query_duration_seconds", labels) == expected)
        #expect(scrape.bucketBounds("db_pool_acquire_duration_seconds") == expected)
        #expect(scrape.families["db_query_duration_seconds"]?.type == "histogram")
        #expect(scrape.families["db_pool_acquire_duration_seconds"]?.type == "histogram")

        func bucket(_ name: String, _ le: String, _ labels: [String: String] = [:]) -> Double? {
            scrape.value(name + "_bucket", labels.merging(["le": le]) { $1 })
        }
        #expect(bucket("db_query_duration_seconds", "0.0025", labels) == 0)
        #expect(bucket("db_query_duration_seconds", "0.005", labels) == 1)
        #expect(bucket("db_query_duration_seconds", "+Inf", labels) == 1)
        #expect(scrape.value("db_query_duration_seconds_sum", labels) == 0.003)
        #expect(bucket("db_pool_acquire_duration_seconds", "0.0005") == 0)
        #expect(bucket("db_pool_acquire_duration_seconds", "0.001") == 1)
        #expect(scrape.value("db_pool_acquire_duration_seconds_count") == 1)
    }

    @Test("The byte variant appends exactly what the string variant returns")
    func byteVariantMatchesString() async throws {
        let fixture = Fixture()
        try await fixture.succeed()
        let snapshot = fixture.db.metrics()
        var buffer = Array("prefix\n".utf8)
        fixture.exporter.render(metrics: snapshot, health: nil, into: &buffer)
        let bytes = String(decoding: buffer, as: UTF8.self)
        let text = fixture.exporter.render(metrics: snapshot, health: nil)
        #expect(bytes.hasPrefix("prefix\n"))
        // Families come out in the registry's dictionary order, so compare line sets.
        #expect(Set(bytes.dropFirst("prefix\n".count).split(separator: "\n")) == Set(text.split(separator: "\n")))
        #expect(!text.isEmpty)
        _ = try Exposition(parsing: text)
    }

    @Test("Non-finite inputs never reach the output as nan or inf")
    func nonFiniteValuesStayParseable() throws {
        let fixture = Fixture()
        var health = fixture.health(state: .degraded, score: .nan, connected: true)
        let scrape = try fixture.scrape(health: health)
        #expect(scrape.value("db_health_score") == 0)
        health.score = .infinity
        let again = try fixture.scrape(health: health)
        #expect(again.value("db_health_score") == 0)
    }

    @Test("Metrics other modules record through the factory are exported too")
    func otherModulesShareTheRegistry() throws {
        let fixture = Fixture()
        // What the webhook module does with its alert counters.
        let counter = fixture.exporter.metricsFactory.makeCounter(label: "db_alerts_sent_total", dimensions: [])
        counter.increment(by: 3)
        #expect(fixture.exporter.registry === fixture.registry)
        let scrape = try fixture.scrape()
        #expect(scrape.families["db_alerts_sent_total"]?.type == "counter")
        #expect(scrape.families["db_alerts_sent_total"]?.help?.isEmpty == false, "with HELP text")
        #expect(scrape.value("db_alerts_sent_total") == 3)
    }

    @Test("Content type and owned names")
    func contentTypeAndNames() {
        #expect(PrometheusExporter.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(Set(Self.documentedGauges).isSubset(of: PrometheusExporter.ownedMetricNames))
        #expect(Set(PrometheusExporter.ownedMetricNames).isDisjoint(with: Self.documentedCounters))
        #expect(PrometheusExporter.durationBuckets == PrometheusExporter.durationBuckets.sorted())
    }
}
