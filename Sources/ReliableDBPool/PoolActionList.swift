import ReliableDBClock

/// A list of actions that holds zero or one element inline and only allocates for a second.
///
/// Almost every event produces at most one action of each kind (one grant, one connect, one close),
/// and the lease fast path produces none of these at all. Keeping the first element inline means
/// the lead's `Mutex`-guarded call on every query allocates nothing; shutdown and fail-fast, which
/// answer many waiters at once, pay for an array.
package struct PoolActionList<Element: Sendable>: RandomAccessCollection, Sendable {
    private enum Storage: Sendable {
        case empty
        case one(Element)
        case many([Element])
    }

    private var storage: Storage = .empty

    package init() {}

    package var startIndex: Int { 0 }

    package var endIndex: Int {
        switch storage {
        case .empty: 0
        case .one: 1
        case .many(let elements): elements.count
        }
    }

    package subscript(position: Int) -> Element {
        switch storage {
        case .empty:
            preconditionFailure("index \(position) out of range")
        case .one(let element):
            precondition(position == 0, "index \(position) out of range")
            return element
        case .many(let elements):
            return elements[position]
        }
    }

    package mutating func append(_ element: Element) {
        switch storage {
        case .empty:
            storage = .one(element)
        case .one(let first):
            storage = .many([first, element])
        case .many(var elements):
            storage = .empty
            elements.append(element)
            storage = .many(elements)
        }
    }
}

extension PoolActionList: Equatable where Element: Equatable {
    package static func == (lhs: PoolActionList, rhs: PoolActionList) -> Bool {
        lhs.elementsEqual(rhs)
    }
}

extension PoolActionList: ExpressibleByArrayLiteral {
    package init(arrayLiteral elements: Element...) {
        for element in elements { append(element) }
    }
}
