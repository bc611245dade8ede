import CDNNL

/// Layout-preserving tensor arithmetic: residual addition, gradient accumulation, and channel
/// concatenation / split (the UNet's skip connections).
public enum Elementwise {
    /// out = a + b. All three share dims and layout; `out` may alias `a` or `b`.
    public static func add(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try require(b, dims: a.dims, layout: a.layout, "add", "second operand")
        try require(out, dims: a.dims, layout: a.layout, "add", "output")
        withExtendedLifetime((a.storage, b.storage, out.storage)) {
            let pa = a.floats, pb = b.floats, po = out.floats
            for i in 0..<a.storedCount { po[i] = pa[i] + pb[i] }
        }
    }

    /// accumulator += x (same dims and layout): where a tensor feeds two consumers, its
    /// gradient is the sum of theirs.
    public static func accumulate(_ x: Tensor, into accumulator: Tensor) throws {
        try add(accumulator, x, into: accumulator)
    }

    /// Concatenates along channels: out = [first, second] (first's channels first).
    /// Layouts must match; in a blocked layout a fast copy needs `first.channels` to be a
    /// multiple of the block (true for every UNet level), otherwise it goes through plain.
    public static func concatenateChannels(_ first: Tensor, _ second: Tensor, into out: Tensor) throws {
        let op = "concatenate"
        try checkPair(first, second, out, op)
        if first.layout != .plain, first.channels % first.layout.block != 0 {
            let o = try Tensor(zeros: out.dims)
            try concatenateChannels(first.converted(to: .plain), second.converted(to: .plain), into: o)
            try o.copy(into: out)
            return
        }
        withExtendedLifetime((first.storage, second.storage, out.storage)) {
            cdnnl_join_samples(first.floats, Int64(sampleStride(first)), second.floats, Int64(sampleStride(second)),
                               out.floats, Int64(first.batch), 0)
        }
    }

    /// The backward of `concatenateChannels`: splits `gradient` into the two parts (overwriting).
    public static func splitChannels(_ gradient: Tensor, into first: Tensor, _ second: Tensor) throws {
        let op = "split"
        try checkPair(first, second, gradient, op)
        if first.layout != .plain, first.channels % first.layout.block != 0 {
            let (a, b) = (try Tensor(zeros: first.dims), try Tensor(zeros: second.dims))
            try splitChannels(gradient.converted(to: .plain), into: a, b)
            try a.copy(into: first)
            try b.copy(into: second)
            return
        }
        withExtendedLifetime((first.storage, second.storage, gradient.storage)) {
            cdnnl_join_samples(first.floats, Int64(sampleStride(first)), second.floats, Int64(sampleStride(second)),
                               gradient.floats, Int64(first.batch), 1)
        }
    }

    private static func sampleStride(_ t: Tensor) -> Int { t.storedCount / max(t.batch, 1) }

    private static func checkPair(_ a: Tensor, _ b: Tensor, _ joined: Tensor, _ op: String) throws {
        guard a.dims.count >= 3, a.dims.count == b.dims.count, a.batch == b.batch,
              a.spatial == b.spatial else {
            throw EngineError.shapeMismatch(op: op, expected: "two tensors with equal batch and spatial sizes",
                                            got: "\(shapeText(a.dims)) and \(shapeText(b.dims))")
        }
        guard a.layout == b.layout else { throw EngineError.layoutMismatch(op: op, expected: a.layout, got: b.layout) }
        try require(joined, dims: [a.batch, a.channels + b.channels] + a.spatial, layout: a.layout, op, "concatenation")
    }
}
