/// A strict reader of the Prometheus text exposition format 0.0.4, used as the tests' oracle.
///
/// It rejects anything a Prometheus server could reject or misread: comment lines other than
/// `# HELP` and `# TYPE`, invalid metric or label names, bad escapes, values Go's parser would not
/// take in this format (`nan`, `inf`), HELP or TYPE twice or after a family's samples, a family
/// whose samples are split, duplicate series, and histograms whose buckets are not ascending,
/// do not end at `+Inf`, decrease, or disagree with `_count`.
struct Exposition {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Family {
        var name: String
        var type: String?
        var help: String?
        var samples: [Sample] = []
    }

    struct FormatError: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var reason: String

        var description: String { "line \(line): \(reason): \(text)" }
    }

    static let types: Set<String> = ["counter", "gauge", "histogram", "summary", "untyped"]

    private(set) var families: [String: Family] = [:]
    /// Family names in the order they first appeared.
    private(set) var order: [String] = []
    /// How many `# HELP` and `# TYPE` lines each family had (the checker allows at most one each).
    private(set) var helpLines: [String: Int] = [:]
    private(set) var typeLines: [String: Int] = [:]

    init(parsing text: String) throws {
        guard text.isEmpty || text.hasSuffix("\n") else {
            throw FormatError(line: 0, text: "", reason: "the last line must end with a line feed")
        }
        var current: String?
        var finished: Set<String> = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        for (index, rawLine) in lines.enumerated() {
            let line = String(rawLine)
            let number = index + 1
            func fail(_ reason: String) -> FormatError { FormatError(line: number, text: line, reason: reason) }
            if line.isEmpty { continue }

            // Switching families ends the previous one for good: its samples must be contiguous.
            func enter(_ family: String) throws {
                guard current != family else { return }
                if let current { finished.insert(current) }
                guard !finished.contains(family) else { throw fail("family \(family) is not contiguous") }
                current = family
                if families[family] == nil {
                    families[family] = Family(name: family)
                    order.append(family)
                }
            }

            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE" else {
                    throw fail("a comment that is neither # HELP nor # TYPE")
                }
                let name = parts[2]
                guard Self.isMetricName(name) else { throw fail("invalid metric name") }
                try enter(name)
                guard families[name]!.samples.isEmpty else { throw fail("\(parts[1]) after the family's samples") }
                if parts[1] == "HELP" {
                    guard parts.count == 4, !parts[3].isEmpty else { throw fail("HELP without text") }
                    guard families[name]!.help == nil else { throw fail("second HELP") }
                    guard let help = Self.unescape(parts[3], quotes: false) else { throw fail("bad escape in HELP") }
                    families[name]!.help = help
                    helpLines[name, default: 0] += 1
                } else {
                    guard parts.count == 4, Self.types.contains(parts[3]) else { throw fail("unknown TYPE") }
                    guard families[name]!.type == nil else { throw fail("second TYPE") }
                    families[name]!.type = parts[3]
                    typeLines[name, default: 0] += 1
                }
                continue
            }

            guard let sample = Self.parseSample(line) else { throw fail("not a sample line") }
            let family = familyName(of: sample.name)
            try enter(family)
            if families[family]!.type == "histogram" {
                guard sample.name != family else { throw fail("histogram sample without _bucket/_sum/_count") }
            }
            if families[family]!.type == "counter" || sample.name.hasSuffix("_bucket")
                || sample.name.hasSuffix("_count")
            {
                guard sample.value >= 0 else { throw fail("negative counter") }
            }
            guard !families[family]!.samples.contains(where: { $0.name == sample.name && $0.labels == sample.labels })
            else {
                throw fail("duplicate series")
            }
            families[family]!.samples.append(sample)
        }

        for family in families.values where family.type == "histogram" {
            try Self.checkHistogram(family)
        }
    }

    /// `x_bucket`, `x_sum` and `x_count` belong to family `x` when `x` is a declared histogram
    /// (or summary, for `_sum`/`_count`); any other sample is its own family.
    private func familyName(of sample: String) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
            let base = String(sample.dropLast(suffix.count))
            switch families[base]?.type {
            case "histogram": return base
            case "summary" where suffix != "_bucket": return base
            default: continue
            }
        }
        return sample
    }

    private static func checkHistogram(_ family: Family) throws {
        func fail(_ reason: String) -> FormatError {
            FormatError(line: 0, text: family.name, reason: reason)
        }
        var buckets: [[String: String]: [(le: Double, count: Double)]] = [:]
        var sums: [[String: String]: Double] = [:]
        var counts: [[String: String]: Double] = [:]
        for sample in family.samples {
            var labels = sample.labels
            switch sample.name {
            case family.name + "_bucket":
                guard let le = labels.removeValue(forKey: "le") else { throw fail("_bucket without le") }
                guard let bound = parseValue(le) else { throw fail("le=\"\(le)\" is not a number") }
                guard sample.value == sample.value.rounded() else { throw fail("fractional bucket count") }
                buckets[labels, default: []].append((bound, sample.value))
            case family.name + "_sum":
                guard labels["le"] == nil else { throw fail("le on _sum") }
                guard sums.updateValue(sample.value, forKey: labels) == nil else { throw fail("second _sum") }
            case family.name + "_count":
                guard labels["le"] == nil else { throw fail("le on _count") }
                guard counts.updateValue(sample.value, forKey: labels) == nil else { throw fail("second _count") }
            default:
                throw fail("unexpected sample \(sample.name)")
            }
        }
        guard !buckets.isEmpty else { throw fail("histogram without buckets") }
        guard Set(buckets.keys) == Set(sums.keys), Set(buckets.keys) == Set(counts.keys) else {
            throw fail("every label set needs _bucket, _sum and _count")
        }
        for (labels, series) in buckets {
            for (previous, next) in zip(series, series.dropFirst()) {
                guard previous.le < next.le else { throw fail("le not ascending for \(labels)") }
                guard previous.count <= next.count else { throw fail("bucket counts decrease for \(labels)") }
            }
            guard let last = series.last, last.le == .infinity else { throw fail("no le=\"+Inf\" last for \(labels)") }
            guard counts[labels] == last.count else { throw fail("_count differs from the +Inf bucket for \(labels)") }
        }
    }

    // MARK: Lexing

    private static func isMetricName<S: StringProtocol>(_ name: S) -> Bool {
        guard let first = name.unicodeScalars.first, isNameStart(first, colon: true) else { return false }
        return name.unicodeScalars.dropFirst().allSatisfy { isNameStart($0, colon: true) || ("0"..."9").contains($0) }
    }

    private static func isLabelName<S: StringProtocol>(_ name: S) -> Bool {
        guard let first = name.unicodeScalars.first, isNameStart(first, colon: false) else { return false }
        guard !name.hasPrefix("__") else { return false }  // reserved for Prometheus itself
        return name.unicodeScalars.dropFirst().allSatisfy { isNameStart($0, colon: false) || ("0"..."9").contains($0) }
    }

    private static func isNameStart(_ scalar: Unicode.Scalar, colon: Bool) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "_" || (colon && scalar == ":")
    }

    /// Undoes `\\`, `\n` and (in label values) `\"`; nil for any other escape.
    private static func unescape(_ text: String, quotes: Bool) -> String? {
        var result = ""
        var escaping = false
        for character in text {
            if escaping {
                switch character {
                case "\\": result.append("\\")
                case "n": result.append("\n")
                case "\"" where quotes: result.append("\"")
                default: return nil
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                result.append(character)
            }
        }
        return escaping ? nil : result
    }

    /// A float as the text format writes it: decimal or exponent notation, `+Inf`, `-Inf`, `NaN`.
    static func parseValue(_ text: String) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: break
        }
        var scalars = Substring(text).unicodeScalars[...]
        if scalars.first == "+" || scalars.first == "-" { scalars = scalars.dropFirst() }
        let digits = scalars.prefix { ("0"..."9").contains($0) }
        scalars = scalars.dropFirst(digits.count)
        var fraction = Substring.UnicodeScalarView.SubSequence()
        if scalars.first == "." {
            scalars = scalars.dropFirst()
            fraction = scalars.prefix { ("0"..."9").contains($0) }
            scalars = scalars.dropFirst(fraction.count)
        }
        guard !digits.isEmpty || !fraction.isEmpty else { return nil }
        if scalars.first == "e" || scalars.first == "E" {
            scalars = scalars.dropFirst()
            if scalars.first == "+" || scalars.first == "-" { scalars = scalars.dropFirst() }
            let exponent = scalars.prefix { ("0"..."9").contains($0) }
            guard !exponent.isEmpty else { return nil }
            scalars = scalars.dropFirst(exponent.count)
        }
        guard scalars.isEmpty else { return nil }
        return Double(text)
    }

    /// `name{label="value",...} value [timestamp]`, or nil when the line is not exactly that.
    private static func parseSample(_ line: String) -> Sample? {
        var rest = Substring(line)
        let name = rest.prefix { $0 != "{" && $0 != " " }
        guard isMetricName(name) else { return nil }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                if !labels.isEmpty {
                    guard rest.first == "," else { return nil }
                    rest = rest.dropFirst()
                }
                let labelName = rest.prefix { $0 != "=" }
                guard isLabelName(labelName), labels[String(labelName)] == nil else { return nil }
                rest = rest.dropFirst(labelName.count)
                guard rest.hasPrefix("=\"") else { return nil }
                rest = rest.dropFirst(2)
                var raw = ""
                var closed = false
                var escaping = false
                while let character = rest.popFirst() {
                    if escaping {
                        raw.append("\\")
                        raw.append(character)
                        escaping = false
                    } else if character == "\\" {
                        escaping = true
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        raw.append(character)
                    }
                }
                guard closed, let value = unescape(raw, quotes: true), !rest.isEmpty else { return nil }
                labels[String(labelName)] = value
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { return nil }
        let fields = rest.dropFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 1 || fields.count == 2, let value = parseValue(String(fields[0])) else { return nil }
        if fields.count == 2 {
            guard Int64(fields[1]) != nil else { return nil }
        }
        return Sample(name: String(name), labels: labels, value: value)
    }

    // MARK: Queries for assertions

    /// The value of the one series `name{labels}`, or nil when it is absent.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples(named: name).first { $0.labels == labels }?.value
    }

    /// Every series called `name`, in any family.
    func samples(named name: String) -> [Sample] {
        families.values.flatMap { $0.samples.filter { $0.name == name } }
    }

    /// The `le` bounds of one histogram series, in the order they were written.
    func bucketBounds(_ histogram: String, _ labels: [String: String] = [:]) -> [String] {
        samples(named: histogram + "_bucket").compactMap { sample in
            var rest = sample.labels
            guard let le = rest.removeValue(forKey: "le"), rest == labels else { return nil }
            return le
        }
    }
}
