import ReliableDB
import Testing

@testable import ReliableDBPostgres

@Suite("PostgreSQL error classification")
struct PostgresClassificationTests {
    static let table: [(sqlState: String, errorClass: ErrorClass, discard: Bool)] = [
        ("40001", .transientTransaction, false),  // serialization_failure
        ("40P01", .transientTransaction, false),  // deadlock_detected
        ("08006", .connection, true),  // connection_failure
        ("08003", .connection, true),  // connection_does_not_exist
        ("57P01", .connection, true),  // admin_shutdown (pg_terminate_backend)
        ("57P02", .connection, true),  // crash_shutdown
        ("57P03", .connection, true),  // cannot_connect_now
        ("53300", .overload, true),  // too_many_connections
        ("53100", .overload, false),  // disk_full
        ("57014", .timeout, false),  // query_canceled
        ("23505", .caller, false),  // unique_violation
        ("23503", .caller, false),  // foreign_key_violation
        ("42601", .caller, false),  // syntax_error
        ("42P01", .caller, false),  // undefined_table
        ("22012", .caller, false),  // division_by_zero
        ("28P01", .connection, true),  // invalid_password
        ("3D000", .connection, true),  // invalid_catalog_name
        ("XX000", .fatal, false),  // internal_error
    ]

    @Test(arguments: table)
    func sqlStatesMapToTheDesignTable(sqlState: String, errorClass: ErrorClass, discard: Bool) {
        let classification = PostgresErrorClassifier.classify(sqlState: sqlState, sent: true)
        #expect(classification.errorClass == errorClass)
        #expect(classification.discardConnection == discard)
    }

    @Test func callerErrorsNeverTouchTheBreakerAndAreNeverRetried() {
        for state in ["23505", "42601", "22012"] {
            let errorClass = PostgresErrorClassifier.classify(sqlState: state, sent: true).errorClass
            #expect(!errorClass.countsAgainstBreaker)
            #expect(!errorClass.isRetryable)
        }
    }

    @Test func aLostConnectionMayHaveAppliedTheStatement() {
        #expect(PostgresErrorClassifier.classify(sqlState: "57P01", sent: true).mayHaveReachedServer)
        #expect(!PostgresErrorClassifier.classify(sqlState: "57P01", sent: false).mayHaveReachedServer)
    }
}
