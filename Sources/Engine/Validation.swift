/// Shared argument checks: every op validates its tensors before touching memory.
@inline(__always)
func require(_ t: Tensor, dims: [Int], layout: Layout? = nil, _ op: String, _ name: String) throws {
    guard t.dims == dims else {
        throw EngineError.shapeMismatch(op: op, expected: "\(name) of shape \(shapeText(dims))", got: shapeText(t.dims))
    }
    if let layout, t.layout != layout {
        throw EngineError.layoutMismatch(op: "\(op) (\(name))", expected: layout, got: t.layout)
    }
}

@inline(__always)
func require(_ t: Tensor, count: Int, _ op: String, _ name: String) throws {
    guard t.count == count, t.layout == .plain else {
        throw EngineError.shapeMismatch(op: op, expected: "\(name) with \(count) values (plain)",
                                        got: "\(shapeText(t.dims)) (\(t.layout.rawValue))")
    }
}
