import Engine
import Foundation

/// Reusable activation memory: tensors are taken for a forward or backward step and given back when no
/// longer needed, so backward reuses the same few gradient buffers instead of allocating per layer.
/// Taken tensors are NOT zeroed unless their layout holds padding channels (every op overwrites its output).
final class Workspace {
    /// A free stretch of a buffer, in floats (offsets and lengths are multiples of 16: 64-byte aligned).
    private struct Region {
        let storage: TensorStorage
        var offset: Int
        var count: Int
    }

    /// Free regions. A request takes the smallest region that fits and leaves the rest free, so buffers
    /// of one level serve the tensors of the others; given-back regions merge with free neighbours.
    /// When nothing fits, buffers that are entirely free go back to the system before allocating, so
    /// idle memory does not add to the peak.
    private var free: [Region] = []
    /// Every buffer the workspace allocated and still holds (strong references, so an identifier is never
    /// reused by another buffer while listed here), with its size in floats.
    private var buffers: [ObjectIdentifier: (storage: TensorStorage, count: Int)] = [:]
    let layout: Layout
    /// Floats handed out and not given back, and its maximum (for the profile).
    private(set) var inUse = 0
    private(set) var peakInUse = 0
    var held: Int { buffers.values.reduce(0) { $0 + $1.count } }

    init(layout: Layout) { self.layout = layout }

    private func taken(_ n: Int) {
        inUse += n
        peakInUse = max(peakInUse, inUse)
    }

    private static func rounded(_ floats: Int) -> Int { (max(floats, 1) + 15) / 16 * 16 }

    func take(_ dims: [Int], layout: Layout? = nil) throws -> Tensor {
        let layout = layout ?? self.layout
        let need = Self.rounded(Tensor.storedCount(dims: dims, layout: layout))
        if let i = free.indices.filter({ free[$0].count >= need }).min(by: { free[$0].count < free[$1].count }) {
            let r = free[i]
            if r.count == need { free.remove(at: i) } else { free[i] = Region(storage: r.storage, offset: r.offset + need, count: r.count - need) }
            let t = Tensor(storage: r.storage, offset: r.offset, dims: dims, layout: layout)
            if layout != .plain, dims[1] % layout.block != 0 { Profile.measure("workspace zero") { t.zero() } }
            taken(need)
            return t
        }
        // Nothing fits: release wholly free buffers (all smaller than the request) first.
        var whole = Set<ObjectIdentifier>()
        for r in free where r.offset == 0 && r.count == buffers[ObjectIdentifier(r.storage)]?.count { whole.insert(ObjectIdentifier(r.storage)) }
        free.removeAll { whole.contains(ObjectIdentifier($0.storage)) }
        for id in whole { buffers[id] = nil }
        let t = try Profile.measure("workspace allocate") { try Tensor(zeros: [need], layout: .plain) }
        buffers[ObjectIdentifier(t.storage)] = (t.storage, need)
        taken(need)
        return Tensor(storage: t.storage, offset: 0, dims: dims, layout: layout)
    }

    /// Returns a tensor's memory (tensors not taken from this workspace are ignored).
    func give(_ t: Tensor?) {
        guard let t, buffers[ObjectIdentifier(t.storage)] != nil else { return }
        var r = Region(storage: t.storage, offset: t.offset, count: Self.rounded(t.storedCount))
        inUse -= r.count
        assert(!free.contains { $0.storage === r.storage && $0.offset < r.offset + r.count && r.offset < $0.offset + $0.count },
               "workspace region given back twice")
        // Merge with the free neighbours in the same buffer.
        if let i = free.firstIndex(where: { $0.storage === r.storage && $0.offset + $0.count == r.offset }) {
            r = Region(storage: r.storage, offset: free[i].offset, count: free[i].count + r.count)
            free.remove(at: i)
        }
        if let i = free.firstIndex(where: { $0.storage === r.storage && $0.offset == r.offset + r.count }) {
            r.count += free[i].count
            free.remove(at: i)
        }
        free.append(r)
    }

    /// Drops every cached buffer (memory goes back to the system once no tensor uses it).
    func clear() {
        free.removeAll()
        buffers.removeAll()
    }
}

/// Everything a layer needs while running: parameters, workspace, mode.
final class Context {
    let parameters: ParameterSet
    let workspace: Workspace
    var training = true
    /// Keep every normalization's input for backward instead of recovering it (tests compare both paths).
    var keepNormInputs = false
    /// Decoders read the upsampling and the skip connection in place where the first convolution's kernel
    /// can (false: always join them into one tensor, as the reference does; kept for comparisons).
    var skipsInPlace = true
    /// What convolutions multiply in (everything else is float32 in both).
    var precision: Precision = .fp32
    /// The processes sharing each training batch (nil: this process alone), and whether batch norm takes its
    /// statistics over the whole global batch (otherwise over this process's share).
    var group: ProcessGroup?
    var synchronizedBatchNorm = false
    /// Non-zero inside `UNet.withFixedWeights`: convolutions may keep what they derive from their weights.
    var fixedWeights: UInt64 = 0
    /// The convolutions keeping something under `fixedWeights`, to be told when it ends.
    var keeping: [Convolution] = []
    /// The group batch norm takes its statistics over (nil: this process's batch alone).
    var batchNormGroup: ProcessGroup? { synchronizedBatchNorm ? group : nil }
    var layout: Layout { workspace.layout }

    init(parameters: ParameterSet, layout: Layout) {
        self.parameters = parameters
        workspace = Workspace(layout: layout)
    }
}

/// A convolution or transposed convolution with its weight (and bias), bound to an input shape on first use.
final class ConvUnit {
    let geometry: ConvolutionGeometry
    let weight: Int
    let bias: Int?
    private var op: Convolution?

    init(_ ctx: ParameterSet, name: String, geometry: ConvolutionGeometry) {
        self.geometry = geometry
        weight = ctx.register(name + ".weight", dims: geometry.weightDims)
        bias = geometry.bias ? ctx.register(name + ".bias", dims: [geometry.outputChannels]) : nil
    }

    private var keptUnder: UInt64 = 0

    /// The operator for input `x` (its dims and layout, the context's precision).
    func prepare(_ x: Tensor, _ ctx: Context) throws -> Convolution { try prepare(x.dims, x.layout, ctx) }

    private func prepare(_ inputDims: [Int], _ layout: Layout, _ ctx: Context) throws -> Convolution {
        let precision = ctx.precision
        if let op, op.inputDims == inputDims, op.layout == layout, op.precision == precision { return op }
        let c = try Convolution(geometry, inputDims: inputDims, layout: layout, precision: precision)
        op?.keepWeights(0)  // the replaced operator's kept weights go now, not when the fixed-weights scope ends
        op = c
        keptUnder = 0
        return c
    }

    /// The operator for a forward pass on an input of `inputDims`, told whether it may keep derived weights.
    private func forwardOperator(_ inputDims: [Int], _ layout: Layout, _ c: Context) throws -> Convolution {
        let op = try prepare(inputDims, layout, c)
        if keptUnder != c.fixedWeights {
            op.keepWeights(c.fixedWeights)
            keptUnder = c.fixedWeights
            if keptUnder != 0 { c.keeping.append(op) }
        }
        return op
    }

    /// A profile label naming the layer's shape and the kernel that runs `direction` (UNET_PROFILE=layers).
    private func name(_ kind: String, _ x: Tensor, _ op: Convolution, _ direction: Convolution.Direction) -> String {
        "\(kind) \(geometry.inputChannels)->\(geometry.outputChannels) k\(geometry.kernelSize[0])s\(geometry.stride[0]) "
            + x.dims.map(String.init).joined(separator: "x") + " " + op.implementation(direction)
    }

    /// Multiply-adds x 2 of the last forward (0 before the first).
    var lastFlops: Double { op?.flops ?? 0 }

    func outputDims(_ inputDims: [Int]) -> [Int] {
        [inputDims[0], geometry.outputChannels] + geometry.outputSpatial(Array(inputDims.dropFirst(2)))
    }

    /// The output goes into `output` when given (a view of the right dims and layout), else a new workspace tensor.
    func forward(_ x: Tensor, _ c: Context, into output: Tensor? = nil) throws -> Tensor {
        let op = try forwardOperator(x.dims, x.layout, c)
        let y = try output ?? c.workspace.take(op.outputDims, layout: op.layout)
        let p = c.parameters
        let kind = geometry.transposed ? "upsample" : "conv"
        let label = Profile.perLayer ? name(kind, x, op, .forward) : kind + " forward"
        try Profile.measure(label) {
            try op.forward(input: x, weight: p.value(weight), bias: bias.map { p.value($0) }, output: y)
        }
        return y
    }

    /// Inference form: the output goes through `epilogue` (folded batch norm, residual, activation) as it is stored.
    func forward(_ x: Tensor, _ c: Context, epilogue: ConvolutionEpilogue) throws -> Tensor {
        let op = try forwardOperator(x.dims, x.layout, c)
        let y = try c.workspace.take(op.outputDims, layout: op.layout)
        let p = c.parameters
        let label = Profile.perLayer ? name("conv+epilogue", x, op, .forward) : "conv forward + epilogue"
        try Profile.measure(label) {
            try op.forward(input: x, weight: p.value(weight), bias: bias.map { p.value($0) }, output: y, epilogue: epilogue)
        }
        return y
    }

    /// True when the kernel for an input of `inputDims` can read it as two tensors joined along channels,
    /// the first with `firstChannels` (`forward(_:joinedWith:_:epilogue:)`).
    /// `weightGradients`: the backward of the weights too (training).
    func readsJoined(_ inputDims: [Int], _ layout: Layout, firstChannels: Int, weightGradients: Bool = false, _ c: Context) throws -> Bool {
        try prepare(inputDims, layout, c).readsJoined(firstChannels: firstChannels, weightGradients: weightGradients)
    }

    /// `forward` (with `epilogue`: its inference form) on the channel concatenation of `first` and `second`,
    /// read in place (see `readsJoined`).
    func forward(_ first: Tensor, joinedWith second: Tensor, _ c: Context, epilogue: ConvolutionEpilogue? = nil) throws -> Tensor {
        let op = try forwardOperator([first.batch, first.channels + second.channels] + first.spatial, first.layout, c)
        let y = try c.workspace.take(op.outputDims, layout: op.layout)
        let p = c.parameters
        let kind = epilogue == nil ? "conv" : "conv+epilogue"
        let label = Profile.perLayer ? name(kind, first, op, .forward) + " (joined input)" : kind + " forward"
        try Profile.measure(label) {
            try op.forward(input: first, joinedWith: second, weight: p.value(weight), bias: bias.map { p.value($0) }, output: y,
                           epilogue: epilogue)
        }
        return y
    }

    /// `backward` for an input given in two parts (`forward(_:joinedWith:_:)`): the input gradient comes back
    /// in the same two parts. `giveFirst`: `first` goes back to the workspace after the weight gradient.
    func backward(input first: Tensor, joinedWith second: Tensor, outputGradient dy: Tensor, giveFirst: Bool,
                  _ c: Context) throws -> (Tensor, Tensor) {
        let op = try prepare([first.batch, first.channels + second.channels] + first.spatial, first.layout, c)
        let p = c.parameters
        try Profile.measure(Profile.perLayer ? name("conv dW", first, op, .backwardWeights) + " (joined input)" : "conv backward weights") {
            try op.backwardWeights(input: first, joinedWith: second, outputGradient: dy, weightGradient: p.gradient(weight))
        }
        let (dims1, dims2, layout) = (first.dims, second.dims, first.layout)
        if giveFirst { c.workspace.give(first) }
        let d1 = try c.workspace.take(dims1, layout: layout), d2 = try c.workspace.take(dims2, layout: layout)
        try Profile.measure(Profile.perLayer ? name("conv dX", first, op, .backwardData) + " (joined input)" : "conv backward data") {
            try op.backwardData(outputGradient: dy, weight: p.value(weight), inputGradient: d1, joinedWith: d2)
        }
        return (d1, d2)
    }

    /// Adds the weight (and bias) gradients; returns the input gradient when `needInput`.
    /// `giveInput`: `x` goes back to the workspace once the weight gradient no longer needs it, before the
    /// input gradient is allocated (so that allocation can reuse its memory).
    func backward(input x: Tensor, outputGradient dy: Tensor, needInput: Bool, giveInput: Bool = false, _ c: Context) throws -> Tensor? {
        let op = try prepare(x, c)
        let p = c.parameters
        let kind = geometry.transposed ? "upsample" : "conv"
        try Profile.measure(Profile.perLayer ? name(kind + " dW", x, op, .backwardWeights) : kind + " backward weights") {
            try op.backwardWeights(input: x, outputGradient: dy, weightGradient: p.gradient(weight), biasGradient: bias.map { p.gradient($0) })
        }
        let dims = x.dims, layout = x.layout
        if giveInput { c.workspace.give(x) }
        guard needInput else { return nil }
        let dx = try c.workspace.take(dims, layout: layout)
        try Profile.measure(Profile.perLayer ? name(kind + " dX", x, op, .backwardData) : kind + " backward data") {
            try op.backwardData(outputGradient: dy, weight: p.value(weight), inputGradient: dx)
        }
        return dx
    }
}

public enum NormKind: String, Codable, Sendable { case batch, instance }

/// Batch or instance normalization (affine, eps 1e-5; batch norm momentum 0.1 with running statistics).
final class Norm {
    let kind: NormKind
    let prefix: String
    let weight: Int, bias: Int
    let runningMean: Int?, runningVariance: Int?
    private var batchOp: BatchNormalization?
    private var instanceOp: InstanceNormalization?
    private var mean: Tensor?, variance: Tensor?
    /// Leaky ReLU in a pass of its own: after inference's batch norm, and after a residual added apart.
    private var separateActivation: Activation?

    init(_ ps: ParameterSet, name: String, kind: NormKind, channels: Int) {
        self.kind = kind
        prefix = name
        weight = ps.register(name + ".weight", dims: [channels])
        bias = ps.register(name + ".bias", dims: [channels])
        if kind == .batch {
            runningMean = ps.register(name + ".running_mean", dims: [channels], kind: .buffer)
            runningVariance = ps.register(name + ".running_var", dims: [channels], kind: .buffer)
            ps.batchesTracked[name] = 0
        } else {
            runningMean = nil
            runningVariance = nil
        }
    }

    /// y = norm(x) [+ residual], written into a new workspace tensor, through leaky ReLU when `slope` != 1 (in the
    /// same pass where the kernels allow); in training keeps the statistics for backward.
    func forward(_ x: Tensor, _ c: Context, slope: Float = 1, residual: Tensor? = nil) throws -> Tensor {
        try Profile.measure("norm forward") {
            if let residual, !(kind == .batch && c.training) {
                // Batch norm in training adds the residual in its own pass; elsewhere add, then activate.
                let y = try forwardUnmeasured(x, c, slope: 1, residual: nil)
                try Elementwise.add(y, residual, into: y)
                try activateSeparately(y, slope: slope)
                return y
            }
            return try forwardUnmeasured(x, c, slope: slope, residual: residual)
        }
    }

    private func activateSeparately(_ y: Tensor, slope: Float) throws {
        guard slope != 1 else { return }
        if separateActivation?.slope != slope { separateActivation = Activation(slope: slope) }
        try separateActivation!.forwardInPlace(y)
    }

    /// `residual` is taken by batch norm in training only (`forward` adds it on the other routes).
    private func forwardUnmeasured(_ x: Tensor, _ c: Context, slope: Float, residual: Tensor?) throws -> Tensor {
        let y = try c.workspace.take(x.dims, layout: x.layout)
        let p = c.parameters
        let channels = x.dims[1]
        switch kind {
        case .batch:
            if batchOp?.dims != x.dims || batchOp?.layout != x.layout { batchOp = try BatchNormalization(dims: x.dims, layout: x.layout) }
            if c.training {
                if mean?.count != channels { mean = try Tensor(zeros: [channels]); variance = try Tensor(zeros: [channels]) }
                try batchOp!.forwardTraining(input: x, scale: p.value(weight), shift: p.value(bias), output: y, mean: mean!, variance: variance!,
                                             runningMean: p.value(runningMean!), runningVariance: p.value(runningVariance!), across: c.batchNormGroup,
                                             slope: slope, residual: residual)
                p.batchesTracked[prefix, default: 0] += 1
            } else {
                try batchOp!.forwardInference(input: x, scale: p.value(weight), shift: p.value(bias), runningMean: p.value(runningMean!),
                                              runningVariance: p.value(runningVariance!), output: y)
                try activateSeparately(y, slope: slope)
            }
        case .instance:
            if instanceOp?.dims != x.dims || instanceOp?.layout != x.layout { instanceOp = try InstanceNormalization(dims: x.dims, layout: x.layout) }
            let n = x.dims[0] * channels
            if mean?.count != n { mean = try Tensor(zeros: [n]); variance = try Tensor(zeros: [n]) }
            try instanceOp!.forward(input: x, scale: p.value(weight), shift: p.value(bias), output: y, mean: mean!, variance: variance!,
                                    slope: slope)
        }
        return y
    }

    /// Batch norm in inference as a per-channel affine map x * scale + shift (running statistics, eps 1e-5);
    /// nil in training and for instance norm (per-sample statistics).
    func inferenceAffine(_ c: Context) throws -> (scale: [Float], shift: [Float])? {
        guard kind == .batch, !c.training, let runningMean, let runningVariance else { return nil }
        let p = c.parameters
        let gamma = try p.value(weight).toArray(), beta = try p.value(bias).toArray()
        let mean = try p.value(runningMean).toArray(), variance = try p.value(runningVariance).toArray()
        var scale = [Float](repeating: 0, count: gamma.count), shift = scale
        for i in gamma.indices {
            let a = Double(gamma[i]) / (Double(variance[i]) + 1e-5).squareRoot()
            scale[i] = Float(a)
            shift[i] = Float(Double(beta[i]) - Double(mean[i]) * a)
        }
        return (scale, shift)
    }

    /// Whether the input can be recovered from the activated output (every |gamma| large enough that
    /// dividing by it keeps the normalized values accurate to ~1e-5).
    func invertible(_ c: Context) throws -> Bool {
        try c.parameters.value(weight).toArray().allSatisfy { abs($0) >= 1e-2 }
    }

    /// Overwrites `y` (this norm's output after leaky ReLU with `slope`) with the norm's input:
    /// x = (n - beta) / gamma * sigma + mean, n = inverse leaky ReLU of y, with the statistics of the last
    /// training forward.
    func reconstructInput(inPlace y: Tensor, slope: Float, _ c: Context) throws {
        let gamma = try c.parameters.value(weight).toArray(), beta = try c.parameters.value(bias).toArray()
        let m = try mean!.toArray(), v = try variance!.toArray()
        let channels = gamma.count
        var scale = [Float](repeating: 0, count: m.count), shift = scale
        for i in 0 ..< m.count {
            let ch = i % channels
            let sigma = (Double(v[i]) + 1e-5).squareRoot()
            let a = sigma / Double(gamma[ch])
            scale[i] = Float(a)
            shift[i] = Float(Double(m[i]) - Double(beta[ch]) * a)
        }
        try Profile.measure("norm reconstruct") {
            try Pointwise.unactivateAffine(y, into: y, slope: slope, scale: scale, shift: shift, perSample: kind == .instance)
        }
    }

    /// The backward of leaky ReLU (`slope`) after this norm, from the activated output `y` alone: the norm's input
    /// gradient written over `dy`, the weight and bias gradients added. False (nothing done) where the own kernels do
    /// not run or the batch statistics span processes; the caller then takes the activation's backward, the input
    /// and `backwardInPlace`.
    func backwardThroughActivation(output y: Tensor, slope: Float, gradient dy: Tensor, _ c: Context) throws -> Bool {
        let p = c.parameters
        return try Profile.measure("norm backward") {
            switch kind {
            case .batch:
                guard c.batchNormGroup == nil, let op = batchOp else { return false }
                return try op.backwardThroughActivation(output: y, slope: slope, outputGradient: dy, scale: p.value(weight),
                                                        shift: p.value(bias), mean: mean!, variance: variance!, inputGradient: dy,
                                                        scaleGradient: p.gradient(weight), shiftGradient: p.gradient(bias))
            case .instance:
                guard let op = instanceOp else { return false }
                return try op.backwardThroughActivation(output: y, slope: slope, outputGradient: dy, scale: p.value(weight),
                                                        shift: p.value(bias), mean: mean!, variance: variance!, inputGradient: dy,
                                                        scaleGradient: p.gradient(weight), shiftGradient: p.gradient(bias))
            }
        }
    }

    /// Input gradient, written over `dy`; adds the weight and bias gradients.
    func backwardInPlace(input x: Tensor, outputGradient dy: Tensor, _ c: Context) throws -> Tensor {
        try Profile.measure("norm backward") { try backwardUnmeasured(input: x, outputGradient: dy, into: dy, c) }
    }

    /// Input gradient (new workspace tensor); adds the weight and bias gradients.
    func backward(input x: Tensor, outputGradient dy: Tensor, _ c: Context) throws -> Tensor {
        let dx = try c.workspace.take(x.dims, layout: x.layout)
        return try Profile.measure("norm backward") { try backwardUnmeasured(input: x, outputGradient: dy, into: dx, c) }
    }

    private func backwardUnmeasured(input x: Tensor, outputGradient dy: Tensor, into dx: Tensor, _ c: Context) throws -> Tensor {
        let p = c.parameters
        switch kind {
        case .batch:
            try batchOp!.backward(input: x, outputGradient: dy, scale: p.value(weight), mean: mean!, variance: variance!,
                                  inputGradient: dx, scaleGradient: p.gradient(weight), shiftGradient: p.gradient(bias), across: c.batchNormGroup)
        case .instance:
            try instanceOp!.backward(input: x, outputGradient: dy, scale: p.value(weight), mean: mean!, variance: variance!,
                                     inputGradient: dx, scaleGradient: p.gradient(weight), shiftGradient: p.gradient(bias))
        }
        return dx
    }
}

/// Leaky ReLU applied in place; its backward reads the forward output (same sign as the input).
final class Activation {
    let slope: Float
    private var op: LeakyReLU?
    init(slope: Float) { self.slope = slope }

    private func prepare(_ t: Tensor) throws -> LeakyReLU {
        if let op, op.dims == t.dims, op.layout == t.layout { return op }
        let o = try LeakyReLU(dims: t.dims, layout: t.layout, slope: slope)
        op = o
        return o
    }

    func forwardInPlace(_ x: Tensor) throws { try Profile.measure("activation forward") { try prepare(x).forward(input: x, output: x) } }

    /// Overwrites `dy` with the input gradient.
    func backwardInPlace(output y: Tensor, gradient dy: Tensor) throws {
        try Profile.measure("activation backward") { try prepare(y).backward(input: y, outputGradient: dy, inputGradient: dy) }
    }
}

/// A network part with an explicit forward/backward pair. Forward keeps what backward needs;
/// backward releases it, adds parameter gradients, and returns the input gradient (nil when not needed).
///
/// Ownership of workspace tensors: a block gives back its internal intermediates itself; in training it
/// also gives back its own output at the end of its backward (every consumer has finished with it by then,
/// backward running in reverse); in inference the network gives back block outputs once their last
/// consumer has run. `backward(dy)` may overwrite `dy`; the caller gives it back.
protocol Block: AnyObject {
    func forward(_ x: Tensor, _ c: Context) throws -> Tensor
    func backward(_ dy: Tensor, needInput: Bool, _ c: Context) throws -> Tensor?
    /// Releases what forward kept (inference, or an aborted step).
    func release(_ c: Context)
}

/// conv(k, s, no bias) -> norm -> leaky ReLU. PyTorch names: `{name}.conv.weight`, `{name}.norm.*`.
final class ConvLayer: Block {
    let conv: ConvUnit
    let norm: Norm
    let act: Activation
    private var x: Tensor?, c: Tensor?, y: Tensor?
    /// The input's second part when training took it in two (`forward(_:joinedWith:_:)`); never owned.
    private var x2: Tensor?
    /// Set when the kept input belongs to this layer's caller's workspace buffer that backward may give back.
    private var ownsInput = false

    /// Hands the kept input (a tensor the caller made for this layer alone) to the layer: backward gives it
    /// back to the workspace once the weight gradient is done.
    func ownInput() { ownsInput = x != nil }

    init(_ ps: ParameterSet, name: String, rank: Int, input: Int, output: Int, kernel: Int, stride: Int, norm kind: NormKind, slope: Float) {
        conv = ConvUnit(ps, name: name + ".conv", geometry: recipeGeometry(rank, input, output, kernel, stride, bias: false))
        norm = Norm(ps, name: name + ".norm", kind: kind, channels: output)
        act = Activation(slope: slope)
    }

    /// In training only the output is kept: backward recovers the norm's input from it (saving one
    /// activation-sized tensor per layer), unless a norm weight is too close to zero for that.
    func forward(_ x: Tensor, _ ctx: Context) throws -> Tensor {
        if let (scale, shift) = try norm.inferenceAffine(ctx) {
            return try conv.forward(x, ctx, epilogue: ConvolutionEpilogue(scale: scale, shift: shift, slope: act.slope))
        }
        return try normalize(conv.forward(x, ctx), input: x, ctx)
    }

    /// The norm and activation of the convolution's output `c`; in training keeps what backward needs.
    private func normalize(_ c: Tensor, input x: Tensor, second x2: Tensor? = nil, _ ctx: Context) throws -> Tensor {
        let y = try norm.forward(c, ctx, slope: act.slope)
        if ctx.training {
            (self.x, self.x2, self.y) = (x, x2, y)
            if try !ctx.keepNormInputs && norm.invertible(ctx) { ctx.workspace.give(c); self.c = nil } else { self.c = c }
        } else {
            ctx.workspace.give(c)
        }
        return y
    }

    /// `forward` on the channel concatenation of `first` and `second` without joining them, where
    /// `conv.readsJoined` (in training with weight gradients); backward then is `backwardJoined`.
    func forward(_ first: Tensor, joinedWith second: Tensor, _ ctx: Context) throws -> Tensor {
        if let (scale, shift) = try norm.inferenceAffine(ctx) {
            return try conv.forward(first, joinedWith: second, ctx, epilogue: ConvolutionEpilogue(scale: scale, shift: shift, slope: act.slope))
        }
        return try normalize(conv.forward(first, joinedWith: second, ctx), input: first, second: second, ctx)
    }

    /// Overwrites `dy` with the gradient at the convolution's output on the way.
    func backward(_ dy: Tensor, needInput: Bool, _ ctx: Context) throws -> Tensor? {
        guard let x, x2 == nil else { throw NetworkError.invalidArgument("backward without a training forward on one input") }
        let dc = try outputGradient(dy, ctx)
        let dx = try conv.backward(input: x, outputGradient: dc, needInput: needInput, giveInput: ownsInput, ctx)
        (self.x, ownsInput) = (nil, false)
        return dx
    }

    /// The backward of `forward(_:joinedWith:_:)`: the input gradient in the same two parts.
    func backwardJoined(_ dy: Tensor, _ ctx: Context) throws -> (Tensor, Tensor) {
        guard let x, let x2 else { throw NetworkError.invalidArgument("backward without a training forward on a joined input") }
        let dc = try outputGradient(dy, ctx)
        let dx = try conv.backward(input: x, joinedWith: x2, outputGradient: dc, giveFirst: ownsInput, ctx)
        (self.x, self.x2, ownsInput) = (nil, nil, false)
        return dx
    }

    /// The gradient at the convolution's output (through activation and norm; `dy` is overwritten on the
    /// way); gives back the kept output and norm input.
    private func outputGradient(_ dy: Tensor, _ ctx: Context) throws -> Tensor {
        guard let y else { throw NetworkError.invalidArgument("backward without a training forward") }
        let dc: Tensor
        if c == nil, try norm.backwardThroughActivation(output: y, slope: act.slope, gradient: dy, ctx) {
            // The own kernels take the norm's backward straight from the activated output.
            dc = dy
            ctx.workspace.give(y)
        } else {
            try act.backwardInPlace(output: y, gradient: dy)
            let input: Tensor
            if let c {
                input = c
                ctx.workspace.give(y)
            } else {
                try norm.reconstructInput(inPlace: y, slope: act.slope, ctx)
                input = y
            }
            dc = try norm.backwardInPlace(input: input, outputGradient: dy, ctx)
            ctx.workspace.give(input)
        }
        (self.c, self.y) = (nil, nil)
        return dc
    }

    func release(_ ctx: Context) {
        ctx.workspace.give(c)
        ctx.workspace.give(y)
        if ownsInput { ctx.workspace.give(x) }
        (x, x2, c, y, ownsInput) = (nil, nil, nil, nil, false)
    }
}

/// Two ConvLayers (the first with the stride). Names `{name}.conv1.*`, `{name}.conv2.*`.
final class ConvBlock: Block {
    let conv1: ConvLayer, conv2: ConvLayer

    init(_ ps: ParameterSet, name: String, rank: Int, input: Int, output: Int, kernel: Int, stride: Int, norm: NormKind, slope: Float) {
        conv1 = ConvLayer(ps, name: name + ".conv1", rank: rank, input: input, output: output, kernel: kernel, stride: stride, norm: norm, slope: slope)
        conv2 = ConvLayer(ps, name: name + ".conv2", rank: rank, input: output, output: output, kernel: kernel, stride: 1, norm: norm, slope: slope)
    }

    func forward(_ x: Tensor, _ c: Context) throws -> Tensor {
        let m = try conv1.forward(x, c)
        let y = try conv2.forward(m, c)
        if !c.training { c.workspace.give(m) }
        return y
    }

    func backward(_ dy: Tensor, needInput: Bool, _ c: Context) throws -> Tensor? {
        let dm = try conv2.backward(dy, needInput: true, c)!
        let dx = try conv1.backward(dm, needInput: needInput, c)
        c.workspace.give(dm)
        return dx
    }

    func release(_ c: Context) { conv1.release(c); conv2.release(c) }
}

/// ConvLayer(in -> out, s) -> conv(out -> out, k, 1) -> norm, plus the shortcut (a k x k conv(in -> out, s)
/// -> norm when s > 1 or in != out, else identity), then leaky ReLU.
/// Names: `{name}.conv1.*`, `{name}.conv2.weight`, `{name}.norm.*`, `{name}.downsample.weight`, `{name}.norm_res.*`.
final class ResidualBlock: Block {
    let conv1: ConvLayer
    let conv2: ConvUnit
    let norm: Norm
    let downsample: ConvUnit?
    let normResidual: Norm?
    let act: Activation
    private var x: Tensor?, h: Tensor?, c2: Tensor?, cd: Tensor?, y: Tensor?

    init(_ ps: ParameterSet, name: String, rank: Int, input: Int, output: Int, kernel: Int, stride: Int, norm kind: NormKind, slope: Float) {
        conv1 = ConvLayer(ps, name: name + ".conv1", rank: rank, input: input, output: output, kernel: kernel, stride: stride, norm: kind, slope: slope)
        conv2 = ConvUnit(ps, name: name + ".conv2", geometry: recipeGeometry(rank, output, output, kernel, 1, bias: false))
        norm = Norm(ps, name: name + ".norm", kind: kind, channels: output)
        if stride > 1 || input != output {
            downsample = ConvUnit(ps, name: name + ".downsample", geometry: recipeGeometry(rank, input, output, kernel, stride, bias: false))
            normResidual = Norm(ps, name: name + ".norm_res", kind: kind, channels: output)
        } else {
            downsample = nil
            normResidual = nil
        }
        act = Activation(slope: slope)
    }

    func forward(_ x: Tensor, _ c: Context) throws -> Tensor {
        if let (scale, shift) = try norm.inferenceAffine(c) {
            // Inference: the shortcut first, then conv2 adds it and activates as it stores its output.
            let h = try conv1.forward(x, c)
            var shortcut: Tensor?
            if let downsample, let normResidual {
                guard let (rs, rb) = try normResidual.inferenceAffine(c) else { throw NetworkError.invalidArgument("mixed norm kinds") }
                shortcut = try downsample.forward(x, c, epilogue: ConvolutionEpilogue(scale: rs, shift: rb))
            }
            let y = try conv2.forward(h, c, epilogue: ConvolutionEpilogue(scale: scale, shift: shift, residual: shortcut ?? x, slope: act.slope))
            c.workspace.give(h)
            c.workspace.give(shortcut)
            return y
        }
        let h = try conv1.forward(x, c)
        let c2 = try conv2.forward(h, c)
        // y = act(norm(c2) + shortcut): the sum and the activation in the norm's pass (two fewer passes over
        // the block's output).
        var cd: Tensor?, r: Tensor?
        if let downsample, let normResidual {
            cd = try downsample.forward(x, c)
            r = try normResidual.forward(cd!, c)
        }
        let y = try norm.forward(c2, c, slope: act.slope, residual: r ?? x)
        c.workspace.give(r)
        if c.training {
            (self.x, self.h, self.c2, self.cd, self.y) = (x, h, c2, cd, y)
        } else {
            c.workspace.give(h); c.workspace.give(c2); c.workspace.give(cd)
        }
        return y
    }

    func backward(_ dy: Tensor, needInput: Bool, _ c: Context) throws -> Tensor? {
        guard let x, let h, let c2, let y else { throw NetworkError.invalidArgument("backward without a training forward") }
        try act.backwardInPlace(output: y, gradient: dy)  // dy is now the gradient at the sum
        c.workspace.give(y)
        // Shortcut branch first: it needs dy before the main branch's buffers are reused.
        var shortcut: Tensor?
        if let downsample, let normResidual, let cd {
            let dcd = try normResidual.backward(input: cd, outputGradient: dy, c)
            c.workspace.give(cd)
            shortcut = try downsample.backward(input: x, outputGradient: dcd, needInput: needInput, c)
            c.workspace.give(dcd)
        }
        let dc2 = try norm.backward(input: c2, outputGradient: dy, c)
        c.workspace.give(c2)
        let dh = try conv2.backward(input: h, outputGradient: dc2, needInput: true, c)!
        c.workspace.give(dc2)
        let dx = try conv1.backward(dh, needInput: needInput, c)  // gives back h, its output
        c.workspace.give(dh)
        (self.x, self.h, self.c2, self.cd, self.y) = (nil, nil, nil, nil, nil)
        guard needInput, let dx else { c.workspace.give(shortcut); return nil }
        if let shortcut {
            try Elementwise.accumulate(shortcut, into: dx)
            c.workspace.give(shortcut)
        } else {
            try Elementwise.accumulate(dy, into: dx)
        }
        return dx
    }

    func release(_ c: Context) {
        conv1.release(c)
        c.workspace.give(c2); c.workspace.give(cd); c.workspace.give(y)
        (x, h, c2, cd, y) = (nil, nil, nil, nil, nil)
    }
}

/// Transposed conv (kernel = stride, bias) -> concat [upsampled, skip] -> ConvBlock(2*out -> out).
/// Names `{name}.transp_conv.{weight,bias}`, `{name}.conv_block.conv{1,2}.*`.
///
/// Training keeps the concatenation for the first convolution's weight gradient, which gives it back.
/// (Recomputing it in backward instead cost 5% of a 2D step and saved no peak memory: the top level's
/// concatenation is alive at the peak either way.)
final class UpsampleBlock {
    let transposed: ConvUnit
    let block: ConvBlock
    private var x: Tensor?
    /// Training ran the first convolution on the upsampling and the skip in two parts.
    private var joinedInput = false

    init(_ ps: ParameterSet, name: String, rank: Int, input: Int, output: Int, kernel: Int, stride: Int, norm: NormKind, slope: Float) {
        let s = [Int](repeating: stride, count: rank)
        transposed = ConvUnit(ps, name: name + ".transp_conv", geometry: ConvolutionGeometry(
            inputChannels: input, outputChannels: output, kernelSize: s, stride: s, padding: [Int](repeating: 0, count: rank),
            bias: true, transposed: true))
        block = ConvBlock(ps, name: name + ".conv_block", rank: rank, input: 2 * output, output: output, kernel: kernel, stride: 1, norm: norm, slope: slope)
    }

    private func checkSizes(_ x: Tensor, _ skip: Tensor) throws {
        let upsampled = transposed.outputDims(x.dims)
        guard Array(upsampled.dropFirst(2)) == skip.spatial else {
            throw NetworkError.invalidArgument("upsampled size \(Array(upsampled.dropFirst(2))) does not match the skip connection's \(skip.spatial): input sizes must be divisible by the total stride")
        }
    }

    /// upsample(x) and skip concatenated along channels (a new workspace tensor).
    private func join(_ x: Tensor, _ skip: Tensor, _ c: Context) throws -> Tensor {
        let upsampled = transposed.outputDims(x.dims)
        let out = upsampled[1]
        if x.batch == 1, x.layout == .plain || out % x.layout.block == 0 {
            // One sample: the upsampling is written straight into the first channels of the joined tensor
            // (contiguous there), so only the skip is copied.
            let joined = try c.workspace.take([1, out + skip.channels] + skip.spatial, layout: x.layout)
            let first = Tensor(storage: joined.storage, offset: joined.offset, dims: upsampled, layout: x.layout)
            _ = try transposed.forward(x, c, into: first)
            let second = Tensor(storage: joined.storage, offset: joined.offset + first.storedCount, dims: skip.dims, layout: x.layout)
            try Profile.measure("concatenate") { try second.copy(from: skip) }
            return joined
        }
        let u = try transposed.forward(x, c)
        let joined = try c.workspace.take([u.batch, u.channels + skip.channels] + u.spatial, layout: u.layout)
        try Profile.measure("concatenate") { try Elementwise.concatenateChannels(u, skip, into: joined) }
        c.workspace.give(u)
        return joined
    }

    func forward(_ x: Tensor, skip: Tensor, _ c: Context) throws -> Tensor {
        try checkSizes(x, skip)
        let upsampled = transposed.outputDims(x.dims)
        if c.skipsInPlace, try block.conv1.conv.readsJoined([x.batch, upsampled[1] + skip.channels] + skip.spatial, x.layout,
                                                            firstChannels: upsampled[1], weightGradients: c.training, c) {
            // The first convolution reads the upsampling and the skip where they are (Winograd), and in
            // training writes their gradients apart: joining them was 5% of a 2D prediction, and joining and
            // splitting 1.5% of a composer-2d training step, its largest tensor at the peak.
            let u = try transposed.forward(x, c)
            let m = try block.conv1.forward(u, joinedWith: skip, c)
            if c.training {
                block.conv1.ownInput()
                (self.x, joinedInput) = (x, true)
            } else {
                c.workspace.give(u)
            }
            let y = try block.conv2.forward(m, c)
            if !c.training { c.workspace.give(m) }
            return y
        }
        joinedInput = false
        let joined = try join(x, skip, c)
        let y = try block.forward(joined, c)
        if c.training {
            self.x = x
            block.conv1.ownInput()
        } else {
            c.workspace.give(joined)
        }
        return y
    }

    /// Returns (input gradient, skip gradient).
    func backward(_ dy: Tensor, _ c: Context) throws -> (Tensor, Tensor) {
        guard let x else { throw NetworkError.invalidArgument("backward without a training forward") }
        let dm = try block.conv2.backward(dy, needInput: true, c)!
        if joinedInput {
            let (du, dskip) = try block.conv1.backwardJoined(dm, c)
            c.workspace.give(dm)
            let dx = try transposed.backward(input: x, outputGradient: du, needInput: true, c)!
            c.workspace.give(du)
            self.x = nil
            return (dx, dskip)
        }
        let dj = try block.conv1.backward(dm, needInput: true, c)!
        c.workspace.give(dm)
        let out = transposed.geometry.outputChannels
        let du = try c.workspace.take([dj.batch, out] + dj.spatial, layout: dj.layout)
        let dskip = try c.workspace.take([dj.batch, dj.channels - out] + dj.spatial, layout: dj.layout)
        try Profile.measure("split") { try Elementwise.splitChannels(dj, into: du, dskip) }
        c.workspace.give(dj)
        let dx = try transposed.backward(input: x, outputGradient: du, needInput: true, c)!
        c.workspace.give(du)
        self.x = nil
        return (dx, dskip)
    }

    func release(_ c: Context) {
        block.release(c)
        x = nil
    }
}

/// The recipe's convolution geometry: padding (k - s + 1) / 2.
func recipeGeometry(_ rank: Int, _ input: Int, _ output: Int, _ kernel: Int, _ stride: Int, bias: Bool) -> ConvolutionGeometry {
    ConvolutionGeometry(inputChannels: input, outputChannels: output, kernelSize: [Int](repeating: kernel, count: rank),
                        stride: [Int](repeating: stride, count: rank), padding: [Int](repeating: (kernel - stride + 1) / 2, count: rank),
                        bias: bias, transposed: false)
}
