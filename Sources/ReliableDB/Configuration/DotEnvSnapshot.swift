import Configuration
import Foundation

/// A `.env` file as a swift-configuration file snapshot, so `ReloadingFileProvider` can watch it:
/// `ReloadingFileProvider<DotEnvSnapshot>(filePath: ".env")` reloads it when it changes (or on
/// `SIGHUP`), and ``LiveSettings`` puts the new values in force.
///
/// Lines are read by the rules of swift-configuration's `EnvironmentVariablesProvider` for its
/// `environmentFilePath` (`NAME=value`, blank lines and `#` comments skipped, the last of a name
/// wins), and the values are served by that provider, so a key reads the same here as at start.
/// The lines that provider would misread are reported beside it, as at start.
public struct DotEnvSnapshot: FileConfigSnapshot {
    public struct ParsingOptions: FileParsingOptions {
        /// The variables read as secrets (redacted in access logs).
        public var secrets: Set<String>

        public init(secrets: Set<String> = ReliableDBConfiguration.secretVariableNames) {
            self.secrets = secrets
        }

        public static var `default`: ParsingOptions { ParsingOptions() }
    }

    public let providerName: String
    private let variables: [String: String]
    private let values: any ConfigSnapshot

    public init(data: RawSpan, providerName: String, parsingOptions: ParsingOptions) throws {
        self.init(
            contents: data.withUnsafeBytes { String(decoding: $0, as: UTF8.self) },
            providerName: providerName,
            secrets: parsingOptions.secrets
        )
    }

    /// The snapshot of `contents`, a `.env` file's text.
    public init(contents: String, providerName: String = "DotEnvSnapshot", secrets: Set<String> = []) {
        self.providerName = providerName
        variables = Self.parse(contents)
        values = EnvironmentVariablesProvider(
            environmentVariables: variables,
            secretsSpecifier: .specific(secrets)
        ).snapshot()
    }

    /// `NAME=value` lines, trimmed; the last of a name wins.
    static func parse(_ contents: String) -> [String: String] {
        var variables: [String: String] = [:]
        for line in contents.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[0].hasPrefix("#") else { continue }
            variables[parts[0]] = parts[1]
        }
        return variables
    }

    public func value(forKey key: AbsoluteConfigKey, type: ConfigType) throws -> LookupResult {
        try values.value(forKey: key, type: type)
    }

    public var description: String { "DotEnvSnapshot[\(variables.count) variables]" }
    public var debugDescription: String { description }
}
