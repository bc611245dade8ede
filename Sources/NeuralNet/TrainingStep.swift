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
        // The logits' gradients in workspace buffers: a new 8 MB tensor every step (composer-2d) was first
        // touched in the loss, and its page faults took 10 of the loss's 16 ms.
        let ws = context.workspace
        let (loss, gradients) = try Profile.measure("loss") {
            try SegmentationLoss.evaluate(outputs, target: target, across: context.group) { try ws.take($0, layout: .plain) }
        }
        defer { for g in gradients { ws.give(g) } }
        guard loss.isFinite else {
            releaseSaved()
            return loss
        }
        Profile.measure("zero gradients") { parameters.zeroGradients() }
        if let group = context.group {
            try backwardSummingGradients(gradients, over: group)
        } else {
            try Profile.measure("backward (total)") { try backward(gradients) }
        }
        _ = Profile.measure("optimizer") { optimizer.update(learningRate: learningRate) }
        return loss
    }

    /// Backward, with the gradient sum over `group` started in buckets as soon as each bucket's gradients are
    /// final, so that communication overlaps the rest of backward; waits for the sums at the end. Each member's
    /// gradient is its share's part of the global loss's gradient: their sum is the whole.
    private func backwardSummingGradients(_ logitGradients: [Tensor], over group: ProcessGroup) throws {
        try parameters.withFlatBuffers { _, g in
            var started = g.count  // gradients [started, count) are being summed
            let bucket = gradientBucket
            onGradientsReady = { ready in
                if started - ready >= bucket {
                    try group.startSum(g.baseAddress! + ready, count: started - ready)
                    started = ready
                }
                try group.progress()
            }
            defer { onGradientsReady = nil }
            try Profile.measure("backward (total)") { try backward(logitGradients) }
            if started > 0 { try group.startSum(g.baseAddress!, count: started) }
            let clock = ContinuousClock(), start = clock.now
            try Profile.measure("gradient sum (wait)") { try group.finishSums() }
            let waited = clock.now - start
            lastGradientWait = Double(waited.components.seconds) + Double(waited.components.attoseconds) * 1e-18
        }
    }
}
