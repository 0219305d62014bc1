import ReliableDB

@testable import ReliableDBPool

/// SplitMix64: a tiny, fast, seedable generator, so every randomized sequence can be replayed from
/// its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The start of every test timeline; well away from zero so "in the past" is representable.
let t0 = PoolInstant(nanoseconds: 1_000_000_000)

extension PoolInstant {
    static func + (lhs: PoolInstant, milliseconds: Int) -> PoolInstant {
        lhs + .milliseconds(milliseconds)
    }
}

extension PoolActions {
    var connectIDs: [Int] { connects.map(\.connection) }
    var failed: [Int: PoolFailureReason] {
        Dictionary(uniqueKeysWithValues: failures.map { ($0.request, $0.reason) })
    }
    var closed: [Int: PoolCloseReason] {
        Dictionary(uniqueKeysWithValues: closes.map { ($0.connection, $0.reason) })
    }
}

func makeMachine(
    maximumConnections: Int = 2,
    idleTimeout: Duration? = nil,
    keepAliveAfter: Duration? = nil,
    keepAliveTimeout: Duration = .seconds(1),
    maxLifetime: Duration? = nil,
    lifetimeJitterFraction: Double = 0,
    connectBackoffInitial: Duration = .milliseconds(100),
    connectBackoffMaximum: Duration = .seconds(2)
) -> PoolStateMachine {
    PoolStateMachine(
        configuration: PoolConfiguration(
            maximumConnections: maximumConnections,
            idleTimeout: idleTimeout,
            keepAliveAfter: keepAliveAfter,
            keepAliveTimeout: keepAliveTimeout,
            maxLifetime: maxLifetime,
            lifetimeJitterFraction: lifetimeJitterFraction,
            connectBackoffInitial: connectBackoffInitial,
            connectBackoffMaximum: connectBackoffMaximum
        )
    )
}

extension PoolStateMachine {
    /// Opens one connection per entry of `loops` (through leases that connect, each held until all
    /// are open, then released) and leaves them idle. Uses request ids from `firstRequest` on.
    /// Returns the connection ids in opening order.
    mutating func warmUp(loops: [Int?], now: PoolInstant, firstRequest: Int = 1_000) -> [Int] {
        var ids: [Int] = []
        for (offset, loop) in loops.enumerated() {
            let connect = lease(request: firstRequest + offset, timeoutAt: nil, now: now, preferredLoop: loop).connects[
                0
            ]
            ids.append(connected(connection: connect.connection, now: now).grant!.connection)
        }
        for id in ids { _ = release(connection: id, now: now) }
        return ids
    }

    mutating func warmUp(_ count: Int, now: PoolInstant, loop: Int? = nil) -> [Int] {
        warmUp(loops: Array(repeating: loop, count: count), now: now)
    }
}
