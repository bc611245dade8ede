import CDNNL

/// Row-major single-precision GEMM through oneDNN: C = alpha * op(A) * op(B) + beta * C.
/// Used to measure the machine's arithmetic peak; the network itself runs on convolutions.
public enum GEMM {
    /// - Parameters: a (m x k), b (k x n), c (m x n), all plain row-major.
    public static func multiply(_ a: Tensor, _ b: Tensor, into c: Tensor, alpha: Float = 1, beta: Float = 0) throws {
        guard a.dims.count == 2, b.dims.count == 2, c.dims.count == 2,
              a.dims[1] == b.dims[0], c.dims == [a.dims[0], b.dims[1]],
              a.layout == .plain, b.layout == .plain, c.layout == .plain else {
            throw EngineError.shapeMismatch(op: "gemm", expected: "(m x k) * (k x n) -> (m x n), plain",
                                            got: "\(shapeText(a.dims)) * \(shapeText(b.dims)) -> \(shapeText(c.dims))")
        }
        let m = Int64(a.dims[0]), k = Int64(a.dims[1]), n = Int64(b.dims[1])
        try withExtendedLifetime((a.storage, b.storage, c.storage)) {
            try check(cdnnl_sgemm(CChar(UInt8(ascii: "N")), CChar(UInt8(ascii: "N")), m, n, k, alpha,
                                  a.floats, k, b.floats, n, beta, c.floats, n), "gemm")
        }
    }
}
