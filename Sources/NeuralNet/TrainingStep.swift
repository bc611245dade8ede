import Engine

extension UNet {
    /// One training step on a batch: training-mode forward, the recipe's loss, backward into freshly zeroed
    /// gradients, optimizer update (at `learningRate`, default the optimizer's). Returns the loss before the
    /// update. With a process group (`shareTraining`), `input` is this member's share of the global batch and the
    /// loss is the global batch's. A non-finite loss leaves weights and optimizer untouched (no backward, no update); the
    /// caller decides what to do about it.
    public func trainingStep(input: Tensor, target: Labels, optimizer: Optimizer, learningRate: Double? = nil) throws -> Float {
        training = true
        let outputs = try Profile.measure("forward (total)") { try forward(input) }
        let (loss, gradients) = try Profile.measure("loss") { try SegmentationLoss.evaluate(outputs, target: target, across: context.group) }
        guard loss.isFinite else {
            releaseSaved()
            return loss
        }
        Profile.measure("zero gradients") { parameters.zeroGradients() }
        try Profile.measure("backward (total)") { try backward(gradients) }
        if let group = context.group {
            // Each member's gradient is its share's part of the global loss's gradient: their sum is the whole.
            try Profile.measure("gradient allreduce") {
                try parameters.withFlatBuffers { _, g in try group.sum(g.baseAddress!, count: g.count) }
            }
        }
        _ = Profile.measure("optimizer") { optimizer.update(learningRate: learningRate) }
        return loss
    }
}
