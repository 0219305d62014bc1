/// Everything wrong with a configuration, reported at once so one run shows every fix needed.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// One variable's problem.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var variable: String
        /// The value as given, or its redacted form for secrets.
        public var value: String
        public var expected: String

        public init(variable: String, value: String, expected: String) {
            self.variable = variable
            self.value = value
            self.expected = expected
        }

        public var description: String {
            "\(variable)=\"\(value)\": expected \(expected)"
        }
    }

    public var problems: [Problem]

    public init(problems: [Problem]) {
        self.problems = problems
    }

    public var description: String {
        let noun = problems.count == 1 ? "problem" : "problems"
        return "Invalid configuration (\(problems.count) \(noun)):\n"
            + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}
