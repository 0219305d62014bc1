import FluentKit
import SQLKit

extension SQLRow {
    /// The row as Fluent reads a model from it; `schema(_:)` reads a joined model's columns, which
    /// Fluent's SQL converter aliases as `<schema>_<field>`.
    func databaseOutput() -> any DatabaseOutput {
        SQLRowOutput(row: self, schema: nil)
    }
}

private struct SQLRowOutput: DatabaseOutput {
    let row: any SQLRow
    let schema: String?

    var description: String { String(describing: row) }

    private func column(_ key: FieldKey) -> String {
        guard let schema else { return key.description }
        return FieldKey.prefix(.prefix(.string(schema), "_"), key).description
    }

    func schema(_ schema: String) -> any DatabaseOutput {
        SQLRowOutput(row: row, schema: schema)
    }

    func contains(_ key: FieldKey) -> Bool {
        row.contains(column: column(key))
    }

    func decodeNil(_ key: FieldKey) throws -> Bool {
        try row.decodeNil(column: column(key))
    }

    func decode<T: Decodable>(_ key: FieldKey, as: T.Type) throws -> T {
        try row.decode(column: column(key), as: T.self)
    }
}
