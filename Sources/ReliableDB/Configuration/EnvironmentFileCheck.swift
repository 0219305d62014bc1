import Foundation

/// Finds the `.env` lines that swift-configuration's `EnvironmentVariablesProvider` would skip
/// or read differently from what their author meant, so they become configuration problems
/// instead of settings lost without a word. The values themselves are read by the provider.
///
/// The provider reads `KEY=value` literally: it skips lines without `=`, and keeps `export`
/// in the name, quotes in the value and a trailing ` # comment` in the value.
enum EnvironmentFileCheck {
    /// The problems in `contents`, each naming `path` and the line; never a value (it may be a
    /// secret). Only lines that set one of `names` are checked for quotes, `export` and inline
    /// comments: the file may hold the application's other variables, written for another reader.
    /// `misread` names the variables whose line was reported, so their value is not reported twice.
    static func problems(
        in contents: String,
        path: String,
        names: Set<String>
    ) -> (problems: [ConfigurationError.Problem], misread: Set<String>) {
        var problems: [ConfigurationError.Problem] = []
        var misread: Set<String> = []
        for (index, rawLine) in contents.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            func report(_ expected: String) {
                problems.append(.init(variable: path, value: "line \(index + 1)", expected: expected))
            }
            guard let equals = line.firstIndex(of: "=") else {
                report("KEY=value (this line would be skipped)")
                continue
            }
            var name = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            let exported = name.hasPrefix("export ")
            if exported { name = String(name.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard names.contains(name) else { continue }
            if exported {
                report("\(name)=value without `export` (the variable would be named 'export \(name)')")
            } else if value.hasPrefix("\"") || value.hasPrefix("'") {
                report("\(name)=value without quotes (they would be kept as part of the value)")
            } else if value.contains(" #") {
                report("the comment on its own line (it would be kept as part of \(name))")
            } else {
                continue
            }
            misread.insert(name)
        }
        return (problems, misread)
    }
}
