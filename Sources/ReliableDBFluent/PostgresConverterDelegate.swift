import FluentKit
import FluentSQL
import SQLKit

/// Fluent's schema data types as PostgreSQL spells them. The same mapping as fluent-postgres-driver
/// uses (its delegate is internal there), so a schema migrated by either driver is the same.
struct PostgresConverterDelegate: SQLConverterDelegate {
    func customDataType(_ dataType: DatabaseSchema.DataType) -> (any SQLExpression)? {
        switch dataType {
        case .uuid: SQLRaw("UUID")
        case .bool: SQLRaw("BOOL")
        case .data: SQLRaw("BYTEA")
        case .date: SQLRaw("DATE")
        case .datetime: SQLRaw("TIMESTAMPTZ")
        case .double: SQLRaw("DOUBLE PRECISION")
        case .dictionary: SQLRaw("JSONB")
        case .array(of: let type):
            if let type, let element = customDataType(type) {
                ArrayDataType(element: element)
            } else {
                SQLRaw("JSONB")
            }
        case .enum(let value): SQLIdentifier(value.name)
        case .int8, .uint8: SQLIdentifier("char")
        case .int16, .uint16: SQLRaw("SMALLINT")
        case .int32, .uint32: SQLRaw("INT")
        case .int64, .uint64: SQLRaw("BIGINT")
        case .string: SQLRaw("TEXT")
        case .time: SQLRaw("TIME")
        case .float: SQLRaw("FLOAT")
        case .custom: nil
        }
    }
}

/// `element[]`.
private struct ArrayDataType: SQLExpression {
    let element: any SQLExpression

    func serialize(to serializer: inout SQLSerializer) {
        element.serialize(to: &serializer)
        serializer.write("[]")
    }
}
