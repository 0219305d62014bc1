import Foundation
import Testing

/// Every ```swift block of README.md is compiled: its lines appear, in order and together, in
/// Snippets.swift (imports at the file's top), which this target compiles. A `// Package.swift`
/// block names only products this package declares.
@Suite("README snippets")
struct ReadmeSnippetsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static func read(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// The ```swift blocks, each as its lines with the fence's indentation removed.
    static func swiftBlocks(of markdown: String) -> [[String]] {
        var blocks: [[String]] = []
        var current: [String]?
        var indent = 0
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if current == nil, trimmed == "```swift" {
                current = []
                indent = line.prefix { $0 == " " }.count
            } else if current != nil, trimmed == "```" {
                blocks.append(current!)
                current = nil
            } else if current != nil {
                current!.append(String(line.dropFirst(min(indent, line.prefix { $0 == " " }.count))))
            }
        }
        return blocks
    }

    /// Trimmed, non-empty lines: indentation differs between the README and a function body.
    static func normalized(_ lines: [String]) -> [String] {
        lines.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    @Test func everySwiftBlockIsCompiledVerbatim() throws {
        let blocks = Self.swiftBlocks(of: try Self.read("README.md"))
        #expect(blocks.count >= 6, "the README's snippets were found")
        // Snippets.swift, and VaporSnippets.swift for the block whose imports clash with
        // Hummingbird's (both frameworks name an Application).
        let snippets = try ["Snippets.swift", "VaporSnippets.swift"]
            .map { try Self.read("Tests/ReadmeSnippetsTests/\($0)") }
            .joined(separator: "\n")
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let imports = Set(snippets.filter { $0.hasPrefix("import ") })
        let body = Self.normalized(snippets.filter { !$0.hasPrefix("import ") })
        let manifest = try Self.read("Package.swift")
        for block in blocks {
            if block.first == "// Package.swift" {
                for line in block where line.contains(".product(name: \"") {
                    let name = line.components(separatedBy: ".product(name: \"")[1].prefix { $0 != "\"" }
                    #expect(manifest.contains(".library(name: \"\(name)\""), "README names product \(name)")
                }
                continue
            }
            for line in block where line.hasPrefix("import ") {
                #expect(imports.contains(line), "\(line) is imported by the snippet files")
            }
            let lines = Self.normalized(block.filter { !$0.hasPrefix("import ") })
            let found = body.indices.contains { (start: Int) -> Bool in
                let end = start + lines.count
                guard end <= body.count else { return false }
                return Array(body[start..<end]) == lines
            }
            #expect(found, "README block starting \"\(lines.first ?? "")\" is not in Snippets.swift verbatim")
        }
    }
}
