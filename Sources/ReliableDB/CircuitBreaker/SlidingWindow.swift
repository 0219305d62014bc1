/// Counts calls, failures and slow calls over the last N calls or the last T of time.
///
/// Storage is allocated once at creation; recording is O(1) and never allocates, because it runs
/// on every operation. The time variant keeps 20 buckets, so its resolution is a twentieth of
/// the span.
struct SlidingWindow: Sendable {
    struct Totals: Equatable {
        var calls = 0
        var failures = 0
        var slowCalls = 0
    }

    private enum Storage {
        case count(outcomes: [UInt8], next: Int, filled: Int)
        case time(buckets: [TimeBucket], bucketWidth: Int64)
    }

    private struct TimeBucket {
        var epoch: Int64 = .min
        var totals = Totals()
    }

    private static let failureBit: UInt8 = 1
    private static let slowBit: UInt8 = 2
    private static let timeBucketCount = 20

    private var storage: Storage
    private var runningTotals = Totals()

    init(_ kind: SlidingWindowKind) {
        switch kind {
        case .count(let size):
            storage = .count(outcomes: Array(repeating: 0, count: max(1, size)), next: 0, filled: 0)
        case .time(let span):
            let width = max(1, span.nanosecondsClamped / Int64(Self.timeBucketCount))
            storage = .time(buckets: Array(repeating: TimeBucket(), count: Self.timeBucketCount), bucketWidth: width)
        }
    }

    mutating func record(failure: Bool, slow: Bool, at now: MonotonicTime) {
        switch storage {
        case .count(var outcomes, var next, var filled):
            storage = .count(outcomes: [], next: 0, filled: 0)  // keep `outcomes` uniquely referenced
            if filled == outcomes.count {
                let evicted = outcomes[next]
                runningTotals.calls -= 1
                if evicted & Self.failureBit != 0 { runningTotals.failures -= 1 }
                if evicted & Self.slowBit != 0 { runningTotals.slowCalls -= 1 }
            } else {
                filled += 1
            }
            outcomes[next] = (failure ? Self.failureBit : 0) | (slow ? Self.slowBit : 0)
            next = (next + 1) % outcomes.count
            runningTotals.calls += 1
            if failure { runningTotals.failures += 1 }
            if slow { runningTotals.slowCalls += 1 }
            storage = .count(outcomes: outcomes, next: next, filled: filled)
        case .time(var buckets, let width):
            storage = .count(outcomes: [], next: 0, filled: 0)
            let epoch = now.nanoseconds / width
            let index = Int(epoch.magnitude % UInt64(buckets.count))
            if buckets[index].epoch != epoch {
                buckets[index] = TimeBucket(epoch: epoch)
            }
            buckets[index].totals.calls += 1
            if failure { buckets[index].totals.failures += 1 }
            if slow { buckets[index].totals.slowCalls += 1 }
            storage = .time(buckets: buckets, bucketWidth: width)
        }
    }

    func totals(at now: MonotonicTime) -> Totals {
        switch storage {
        case .count:
            return runningTotals
        case .time(let buckets, let width):
            let epoch = now.nanoseconds / width
            var totals = Totals()
            for bucket in buckets where bucket.epoch > epoch - Int64(buckets.count) && bucket.epoch <= epoch {
                totals.calls += bucket.totals.calls
                totals.failures += bucket.totals.failures
                totals.slowCalls += bucket.totals.slowCalls
            }
            return totals
        }
    }

    mutating func reset() {
        switch storage {
        case .count(var outcomes, _, _):
            storage = .count(outcomes: [], next: 0, filled: 0)
            for index in outcomes.indices { outcomes[index] = 0 }
            storage = .count(outcomes: outcomes, next: 0, filled: 0)
        case .time(var buckets, let width):
            storage = .count(outcomes: [], next: 0, filled: 0)
            for index in buckets.indices { buckets[index] = TimeBucket() }
            storage = .time(buckets: buckets, bucketWidth: width)
        }
        runningTotals = Totals()
    }
}
