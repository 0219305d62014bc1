import Configuration
import Foundation

/// The process environment and a `.env` file as one swift-configuration reader, with the `.env`
/// lines that reader would misread already reported. Every module that reads variables of its own
/// (`WebhookConfiguration` in ReliableDBWebhook) opens it, so all read the same sources the same way.
package struct EnvironmentSource: Sendable {
    /// The environment first, then the file.
    package let config: ConfigReader
    /// The file's problems: unreadable, or lines the provider would skip or misread.
    package let problems: [ConfigurationError.Problem]
    /// Variables whose `.env` line is among `problems` and that the environment does not set.
    package let misread: Set<String>

    /// Opens `environment` and, when it exists, the file at `dotEnvPath`, checking the file's
    /// lines for `names`; `secretNames` are read as secrets, so access logs redact them.
    package static func open(
        _ environment: [String: String],
        dotEnvPath: String?,
        names: [String],
        secretNames: Set<String>
    ) async -> EnvironmentSource {
        let secrets = SecretsSpecifier<String, String>.specific(secretNames)
        var providers: [any ConfigProvider] = [
            EnvironmentVariablesProvider(environmentVariables: environment, secretsSpecifier: secrets)
        ]
        var problems: [ConfigurationError.Problem] = []
        var misread: Set<String> = []
        if let dotEnvPath, FileManager.default.fileExists(atPath: dotEnvPath) {
            do {
                let contents = try String(contentsOfFile: dotEnvPath, encoding: .utf8)
                let check = EnvironmentFileCheck.problems(in: contents, path: dotEnvPath, names: Set(names))
                problems = check.problems
                // A misread line's value is already reported by its line, unless the environment wins.
                misread = check.misread.filter { environment[$0, default: ""].isEmpty }
                providers.append(
                    try await EnvironmentVariablesProvider(
                        environmentFilePath: .init(dotEnvPath),
                        secretsSpecifier: secrets
                    )
                )
            } catch {
                problems.append(.init(variable: dotEnvPath, value: "", expected: "a readable UTF-8 file (\(error))"))
            }
        }
        return EnvironmentSource(config: ConfigReader(providers: providers), problems: problems, misread: misread)
    }

    /// The problems of the `.env` file at `dotEnvPath`'s lines, as
    /// ``open(_:dotEnvPath:names:secretNames:)`` finds them: for a file read again.
    package static func fileProblems(
        dotEnvPath: String,
        names: [String]
    ) -> [ConfigurationError.Problem] {
        guard FileManager.default.fileExists(atPath: dotEnvPath) else { return [] }
        guard let contents = try? String(contentsOfFile: dotEnvPath, encoding: .utf8) else {
            return [.init(variable: dotEnvPath, value: "", expected: "a readable UTF-8 file")]
        }
        return EnvironmentFileCheck.problems(in: contents, path: dotEnvPath, names: Set(names)).problems
    }

    /// `error` without the value problems of variables whose line was already reported.
    package func dropMisread(_ error: ConfigurationError) -> ConfigurationError {
        ConfigurationError(problems: error.problems.filter { !misread.contains($0.variable) })
    }
}

extension ConfigReader {
    /// The raw text of each of `names` that is set (variable name to value), read under its
    /// dotted key (``ReliableDBConfiguration/configKey(for:)``); `secrets` are read as secrets.
    package func values(of names: [String], secrets: Set<String>) -> [String: String] {
        ReliableDBConfiguration.rawValues(of: names, secrets: secrets) { string(forKey: $0, isSecret: $1) }
    }
}

extension ReliableDBConfiguration {
    /// The raw text of each of `names` that `read` finds under its dotted key (``configKey(for:)``),
    /// `secrets` read as secrets: what a `ConfigReader` and one of its snapshots both answer.
    package static func rawValues(
        of names: [String],
        secrets: Set<String>,
        _ read: (ConfigKey, Bool) -> String?
    ) -> [String: String] {
        var values: [String: String] = [:]
        for name in names {
            if let value = read(configKey(for: name), secrets.contains(name)) { values[name] = value }
        }
        return values
    }
}
