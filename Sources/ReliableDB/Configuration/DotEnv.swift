import Foundation

/// Reads `.env` files: `KEY=value` lines, `#` comments, optional `export `, single or double
/// quotes (double quotes understand `\n`, `\"` and `\\`).
package enum DotEnv {
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var path: String
        public var line: Int
        public var reason: String

        public var description: String { "\(path):\(line): \(reason)" }
    }

    /// Parses `contents`; `path` only names the file in errors. Every bad line is reported.
    public static func parse(
        _ contents: String,
        path: String = ".env"
    ) -> (values: [String: String], errors: [ParseError]) {
        var values: [String: String] = [:]
        var errors: [ParseError] = []
        for (offset, rawLine) in contents.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let equals = line.firstIndex(of: "=") else {
                errors.append(ParseError(path: path, line: offset + 1, reason: "expected KEY=value"))
                continue
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            guard isValidKey(key) else {
                errors.append(ParseError(path: path, line: offset + 1, reason: "'\(key)' is not a valid variable name"))
                continue
            }
            switch parseValue(line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)) {
            case .success(let value): values[key] = value
            case .failure(let reason):
                errors.append(ParseError(path: path, line: offset + 1, reason: "\(key): \(reason)"))
            }
        }
        return (values, errors)
    }

    private static func isValidKey(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else {
            return false
        }
        return key.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
        }
    }

    private struct ValueError: Error {
        var reason: String
    }

    private static func parseValue(_ raw: String) -> Result<String, ValueError> {
        guard let quote = raw.first, quote == "\"" || quote == "'" else {
            // Unquoted: an inline comment starts at " #".
            if let comment = raw.range(of: " #") {
                return .success(raw[..<comment.lowerBound].trimmingCharacters(in: .whitespaces))
            }
            return .success(raw)
        }
        var result = ""
        var escaped = false
        for (index, character) in raw.dropFirst().enumerated() {
            if escaped {
                switch character {
                case "n": result.append("\n")
                case "t": result.append("\t")
                default: result.append(character)
                }
                escaped = false
            } else if character == "\\" && quote == "\"" {
                escaped = true
            } else if character == quote {
                let rest = raw.dropFirst(index + 2).trimmingCharacters(in: .whitespaces)
                guard rest.isEmpty || rest.hasPrefix("#") else {
                    return .failure(ValueError(reason: "unexpected text after the closing quote"))
                }
                return .success(result)
            } else {
                result.append(character)
            }
        }
        return .failure(ValueError(reason: "missing closing \(quote)"))
    }
}
