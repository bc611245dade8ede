import Engine
import Foundation

/// The recipe's loss: soft Dice (classes 1..C-1, batch sums, smoothing 1e-5) + cross-entropy, 1:1.
/// With deep supervision: heads weighted 0.5^i, weights normalised to sum 1, each against the target
/// downsampled by nearest neighbour to the head's size.
public enum SegmentationLoss {
    /// Returns the loss and the logits' gradients (plain, one per output), ready for `UNet.backward`. With a
    /// `group`, outputs and target are this member's share of a global batch, and the loss is the global batch's.
    /// `buffer` gives the gradients' tensors (plain, any contents; default: new ones).
    public static func evaluate(_ outputs: [Tensor], target: Labels, across group: ProcessGroup? = nil,
                                buffer: (([Int]) throws -> Tensor)? = nil) throws -> (loss: Float, gradients: [Tensor]) {
        let weights = (0 ..< outputs.count).map { Float(pow(0.5, Double($0))) }
        let total = weights.reduce(0, +)
        var loss: Float = 0
        var gradients: [Tensor] = []
        for (i, logits) in outputs.enumerated() {
            let w = weights[i] / total
            let t = i == 0 ? target : try downsample(target, to: logits.spatial)
            let g: Tensor
            if let buffer {
                g = try buffer(logits.dims)
                g.zero()
            } else {
                g = try Tensor(zeros: logits.dims)
            }
            let (dice, crossEntropy) = try Losses.diceAndCrossEntropy(logits: logits, target: t, gradient: g, scale: w, across: group)
            loss += w * dice + w * crossEntropy
            gradients.append(g)
        }
        return (loss, gradients)
    }

    /// Nearest-neighbour resampling of labels (PyTorch `interpolate(mode="nearest")`: source index floor(i * in / out)).
    static func downsample(_ labels: Labels, to spatial: [Int]) throws -> Labels {
        let from = Array(labels.dims.dropFirst(2))
        if from == spatial { return labels }
        let n = labels.dims[0]
        let outCount = spatial.reduce(1, *), inCount = from.reduce(1, *)
        var out = [UInt8](repeating: 0, count: n * outCount)
        let rank = spatial.count
        // Source offset of every output position (the same for each sample), innermost axis first.
        var offsets = [Int](repeating: 0, count: outCount)
        for o in 0 ..< outCount {
            var rem = o, src = 0, step = 1
            for a in stride(from: rank - 1, through: 0, by: -1) {
                src += (rem % spatial[a] * from[a] / spatial[a]) * step
                rem /= spatial[a]
                step *= from[a]
            }
            offsets[o] = src
        }
        for b in 0 ..< n {
            for o in 0 ..< outCount { out[b * outCount + o] = labels.values[b * inCount + offsets[o]] }
        }
        return try Labels(dims: [n, 1] + spatial, values: out)
    }
}
