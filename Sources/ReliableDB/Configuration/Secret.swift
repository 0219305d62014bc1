/// A value that must never be printed: logs, JSON and error messages see only a redacted form.
public struct Secret<Value: Sendable & Equatable>: Sendable, Equatable, CustomStringConvertible,
    CustomDebugStringConvertible
{
    /// The real value. Read it only to hand it to the component that needs it.
    public let value: Value
    /// What may be shown instead, e.g. `https://hooks.slack.com/…`.
    public let redacted: String

    public init(_ value: Value, redacted: String = "<redacted>") {
        self.value = value
        self.redacted = redacted
    }

    public var description: String { redacted }
    public var debugDescription: String { redacted }
}
