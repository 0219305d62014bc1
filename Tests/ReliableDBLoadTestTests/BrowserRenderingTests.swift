import Foundation
import ReliableDBLoadTest
import ReliableDBTestSupport
import Testing

/// The HTML report opened the way a person opens it: in a real browser (headless Chromium, which
/// scripts/test installs), rendered to a screenshot, with the browser's console checked for errors.
@Suite("Load-test report in a browser")
struct BrowserRenderingTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test func headlessChromiumRendersTheReportWithoutErrors() async throws {
        let browser = try #require(
            Self.chromium,
            "Chromium is missing: scripts/test installs Debian's chromium package"
        )
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-html-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let page = directory.appendingPathComponent("report.html")
        let screenshot = directory.appendingPathComponent("report.png")
        var report = try SampleReports.knownLatencies(rate: 50)
        report.thresholds = report.evaluate([try .parse("p99<20ms")])
        try Data(report.html().utf8).write(to: page)

        let (status, log) = try await runToCompletion(
            browser,
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(directory.appendingPathComponent("profile").path)",
                "--enable-logging=stderr", "--v=0", "--window-size=1280,1600",
                "--screenshot=\(screenshot.path)", page.absoluteString,
            ]
        )
        #expect(status == 0, "chromium exited \(status): \(log.suffix(2000))")
        let image = try Data(contentsOf: screenshot)
        #expect(image.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG was written")
        #expect(image.count > 20_000, "the page rendered content (\(image.count) bytes)")
        for marker in ["Uncaught", "ERROR:CONSOLE", "SyntaxError", "Failed to load resource"] {
            #expect(!log.contains(marker), "browser log: \(marker)")
        }
    }
}
