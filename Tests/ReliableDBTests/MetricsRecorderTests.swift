import Testing

@testable import ReliableDB

@Suite("Operation metrics")
struct MetricsRecorderTests {
    @Test func countsPercentilesAndSlowQueries() {
        let recorder = OperationMetricsRecorder(slowQueryThreshold: .milliseconds(100))
        for ms in 1...100 {
            recorder.operationStarted()
            recorder.operationFinished("get-users", duration: .milliseconds(ms * 2), outcome: .success)
        }
        recorder.operationStarted()
        recorder.operationFinished("get-users", duration: .milliseconds(5), outcome: .failure(.timeout))
        let snapshot = recorder.snapshot()
        #expect(snapshot.successfulQueries == 100)
        #expect(snapshot.failedQueries == 1)
        #expect(snapshot.timeouts == 1)
        #expect(snapshot.slowQueries == 50, "200 ms … 102 ms are over 100 ms")
        #expect(snapshot.activeOperations == 0)
        #expect(abs(snapshot.p50QueryTime.milliseconds - 100) < 2)
        #expect(abs(snapshot.p99QueryTime.milliseconds - 198) < 3)
        #expect(abs(snapshot.averageQueryTime.milliseconds - 100.04) < 0.1)
        #expect(abs(snapshot.errorRate - 100.0 / 101.0) < 0.001)
        #expect(snapshot.operations["get-users"]?.successes == 100)
    }

    @Test func operationNamesAreBounded() {
        let recorder = OperationMetricsRecorder(maxOperationNames: 3)
        for index in 0..<10 {
            recorder.operationStarted()
            recorder.operationFinished("op-\(index)", duration: .milliseconds(1), outcome: .success)
        }
        let operations = recorder.snapshot().operations
        #expect(operations.count == 4)
        #expect(operations[OperationMetricsRecorder.overflowName]?.successes == 7)
    }

    @Test func rejectedCallsAreNotLatencySamples() {
        let recorder = OperationMetricsRecorder()
        recorder.operationStarted()
        #expect(recorder.activeOperations == 1)
        recorder.operationFinished("x", duration: .zero, outcome: .rejected)
        let snapshot = recorder.snapshot()
        #expect(snapshot.rejectedByCircuitBreaker == 1)
        #expect(snapshot.successfulQueries + snapshot.failedQueries == 0)
        #expect(snapshot.activeOperations == 0)
    }

    @Test func aRetryOfANamesFirstOperationIsCountedUnderThatName() {
        let recorder = OperationMetricsRecorder(maxOperationNames: 2)
        recorder.operationStarted()
        recorder.retryScheduled("first")
        recorder.operationFinished("first", duration: .milliseconds(1), outcome: .success)
        recorder.retryScheduled("second")
        // Past the bound, retries go where the name's operations will: the overflow entry.
        recorder.retryScheduled("third")
        let snapshot = recorder.snapshot()
        #expect(snapshot.retries == 3)
        #expect(snapshot.operations["first"]?.retries == 1)
        #expect(snapshot.operations["first"]?.successes == 1)
        #expect(snapshot.operations["second"]?.retries == 1)
        #expect(snapshot.operations["second"]?.successes == 0)
        #expect(snapshot.operations[OperationMetricsRecorder.overflowName]?.retries == 1)
    }
}
