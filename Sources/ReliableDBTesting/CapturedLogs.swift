import Logging
import Synchronization

/// Records every log record, message and metadata, so a test can check what an operator would
/// read: one line per change, the real cause, and never a secret.
public final class CapturedLogs: Sendable {
    public struct Record: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: Logger.Metadata

        /// Message and every metadata key and value, as one searchable string.
        public var rendered: String {
            let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            return ([message] + fields).joined(separator: " ")
        }
    }

    private let storage = Mutex<[Record]>([])

    public init() {}

    public var records: [Record] { storage.withLock { $0 } }

    /// The records as `level message`, for comparing whole lines.
    public var lines: [String] { records.map { "\($0.level) \($0.message)" } }

    /// A logger whose records land here.
    public func logger(label: String = "test", level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label) { _ in Handler(sink: self) }
        logger.logLevel = level
        return logger
    }

    func append(_ record: Record) {
        storage.withLock { $0.append(record) }
    }

    struct Handler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
            sink.append(.init(level: event.level, message: event.message.description, metadata: merged))
        }
    }
}
