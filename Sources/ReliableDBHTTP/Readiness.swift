import Synchronization

/// Whether this process should receive traffic, apart from the database's own health.
///
/// Starts as `starting`; it turns `serving` once the server listens (the first `/ready` request
/// proves it, or call ``markServing()`` from your server's start hook), and `draining` on shutdown
/// (``ReadinessDrainService``), so Kubernetes stops routing to the pod before in-flight requests
/// are cut off.
public final class Readiness: Sendable {
    public enum Phase: UInt8, Sendable {
        case starting
        case serving
        case draining
    }

    private let value = Atomic<UInt8>(Phase.starting.rawValue)

    public init() {}

    public var phase: Phase {
        Phase(rawValue: value.load(ordering: .acquiring)) ?? .starting
    }

    public func markServing() {
        _ = value.compareExchange(
            expected: Phase.starting.rawValue,
            desired: Phase.serving.rawValue,
            ordering: .acquiringAndReleasing
        )
    }

    public func beginDraining() {
        value.store(Phase.draining.rawValue, ordering: .releasing)
    }
}
