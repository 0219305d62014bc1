import Testing

@testable import ReliableDB

@Suite("PostgreSQL URL parsing")
struct PostgresURLTests {
    func parse(_ string: String) throws -> PostgresURL {
        try PostgresURL.parse(string).get()
    }

    @Test func fullURL() throws {
        let url = try parse(
            "postgresql://carmen%40erp:p%40ss%3Aw0rd@db.internal:6543/erp%20prod?sslmode=verify-full&application_name=orders-api&connect_timeout=3&sslrootcert=/etc/ca.pem"
        )
        #expect(url.username == "carmen@erp")
        #expect(url.password?.value == "p@ss:w0rd")
        #expect(url.host == "db.internal")
        #expect(url.port == 6543)
        #expect(url.database == "erp prod")
        #expect(url.sslMode == .verifyFull)
        #expect(url.applicationName == "orders-api")
        #expect(url.connectTimeout == .seconds(3))
        #expect(url.sslRootCertificate == "/etc/ca.pem")
        #expect(!url.description.contains("p@ss"))
        #expect(url.description == "postgres://carmen@erp:***@db.internal:6543/erp prod?sslmode=verify-full")
    }

    @Test func defaults() throws {
        let url = try parse("postgres://app@10.0.0.5")
        #expect(url.port == 5432)
        #expect(url.password == nil)
        #expect(url.database == "app", "libpq defaults the database to the user name")
        #expect(url.sslMode == .prefer)
        #expect(url.applicationName == "reliabledb")
        #expect(url.connectTimeout == .seconds(10))
    }

    @Test(arguments: [
        ("postgres://u:p@[::1]:5433/db", "::1", 5433), ("postgres://u:p@[fe80::1%25eth0]/db", "fe80::1%eth0", 5432),
    ])
    func ipv6HostsInBrackets(string: String, host: String, port: Int) throws {
        let url = try parse(string)
        #expect(url.host == host)
        #expect(url.port == port)
        #expect(url.description.contains("[\(host)]"))
    }

    @Test(arguments: PostgresURL.SSLMode.allCases)
    func everySSLMode(mode: PostgresURL.SSLMode) throws {
        #expect(try parse("postgres://u:p@h/d?sslmode=\(mode.rawValue)").sslMode == mode)
    }

    @Test func pgbouncerSwitchesOnTransactionPoolerMode() throws {
        #expect(try parse("postgres://u:p@h:6432/d").pgbouncer == false)
        let url = try parse("postgres://u:p@h:6432/d?pgbouncer=true&sslmode=disable")
        #expect(url.pgbouncer)
        #expect(url.description == "postgres://u:***@h:6432/d?sslmode=disable&pgbouncer=true")
        #expect(try parse("postgres://u:p@h/d?pgbouncer=FALSE").pgbouncer == false)
    }

    static let malformed: [(url: String, expected: String)] = [
        ("postgres://:hunter2@host/db", "a user name"),
        ("postgres://u:hunter2@/db", "a host"),
        ("postgres://u:hunter2@host:99999/db", "a port from 1 to 65535"),
        ("postgres://u:hunter2@host:abc/db", "a port from 1 to 65535"),
        ("postgres://u:hunter2@[::1/db", "IPv6"),
        ("postgres://u:hunter2@host/db?sslmode=always", "sslmode to be one of"),
        ("postgres://u:hunter2@host/db?connect_timeout=-1", "connect_timeout"),
        ("postgres://u:hunter2@host/db?pool=5", "'pool' is not supported"),
        ("postgres://u:hun%zzter2@host/db", "percent-encoded password"),
        ("postgres://u:hunter2@host/db?pgbouncer=yes", "pgbouncer to be true or false"),
    ]

    @Test(arguments: malformed)
    func malformedURLsExplainThemselvesWithoutThePassword(url: String, expected: String) {
        switch PostgresURL.parse(url) {
        case .success:
            Issue.record("\(url) was accepted")
        case .failure(let problem):
            #expect(problem.variable == "DATABASE_URL")
            #expect(problem.expected.contains(expected), "\(problem.expected)")
            #expect(!problem.description.contains("hunter2"))
            #expect(!problem.description.contains("hun%zzter2"))
        }
    }
}

/// libpq's multi-host URLs: `postgres://u@h1:p1,h2:p2/db?target_session_attrs=...&load_balance_hosts=...`.
@Suite("PostgreSQL multi-host URLs")
struct PostgresMultiHostURLTests {
    @Test func hostsInOrderWithTheirPortsAndTheDefaultPort() throws {
        let url = try PostgresURL.parse(
            "postgres://app:pw@db1:5432,db2,[::1]:6543/erp?target_session_attrs=read-write&load_balance_hosts=random"
        ).get()
        #expect(
            url.endpoints == [
                .init(host: "db1", port: 5432), .init(host: "db2", port: 5432), .init(host: "::1", port: 6543),
            ]
        )
        #expect(url.host == "db1" && url.port == 5432, "host and port are the first server's")
        #expect(url.targetSessionAttributes == .readWrite)
        #expect(url.loadBalanceHosts == .random)
        #expect(
            url.description
                == "postgres://app:***@db1:5432,db2:5432,[::1]:6543/erp?sslmode=prefer&target_session_attrs=read-write&load_balance_hosts=random"
        )
        #expect(try PostgresURL.parse(url.description.replacingOccurrences(of: "***", with: "pw")).get() == url)
    }

    @Test func everyTargetSessionAttributeOfLibpq16() throws {
        for attributes in PostgresURL.TargetSessionAttributes.allCases {
            let url = try PostgresURL.parse("postgres://u@h1,h2/db?target_session_attrs=\(attributes.rawValue)").get()
            #expect(url.targetSessionAttributes == attributes)
        }
        #expect(try PostgresURL.parse("postgres://u@h1,h2/db").get().targetSessionAttributes == .any)
    }

    @Test(arguments: [
        ("postgres://u@h1,/db", "after each ','"),
        ("postgres://u@h1,h2:0/db", "a port from 1 to 65535, got '0'"),
        ("postgres://u@h1,h2/db?target_session_attrs=master", "target_session_attrs to be one of any, read-write"),
        ("postgres://u@h1,h2/db?load_balance_hosts=round-robin", "load_balance_hosts to be disable or random"),
    ])
    func aBadHostListOrSettingIsNamed(url: String, expected: String) {
        guard case .failure(let problem) = PostgresURL.parse(url) else {
            Issue.record("\(url) parsed")
            return
        }
        #expect(problem.variable == "DATABASE_URL")
        #expect(problem.expected.contains(expected), "\(problem.expected)")
    }
}
