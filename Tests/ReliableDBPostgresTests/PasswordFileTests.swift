import Foundation
import ReliableDBPostgres
import Testing

/// `DB_PASSWORD_FILE`'s reading, without a server: one trailing line ending is dropped, whichever
/// convention wrote it, and a file without a password is an error that names it.
@Suite("Password file")
struct PasswordFileTests {
    @Test(arguments: [
        ("pw", "pw"), ("pw\n", "pw"), ("pw\r\n", "pw"), ("pw\n\n", "pw\n"), (" spaced pw ", " spaced pw "),
        ("pässwörd\r\n", "pässwörd"),
    ])
    func oneTrailingLineEndingIsDropped(contents: String, password: String) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-pw-\(UUID().uuidString)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try PostgresCredentialsProvider.readPasswordFile(path) == password)
    }

    @Test(arguments: ["", "\n", "\r\n"])
    func aFileWithoutAPasswordIsAnErrorNamingIt(contents: String) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-pw-\(UUID().uuidString)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = #expect(throws: PostgresCredentialsError.self) {
            try PostgresCredentialsProvider.readPasswordFile(path)
        }
        #expect(error?.description.contains("DB_PASSWORD_FILE \(path)") == true)
        #expect(error?.description.contains("empty") == true)
    }
}
