import Engine
import Foundation

/// Optimizers over a `ParameterSet`'s flat value and gradient buffers: one loop per step.
/// State (moments) is kept in flat buffers of the same layout, so it saves and loads as two tensors.
public final class Optimizer: @unchecked Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// The recipe's RAdam (torch_optimizer variant): decoupled weight decay (p -= wd * lr * p) before
        /// the update; un-rectified momentum step while N_sma < 5.
        case radam
        /// PyTorch Adam: weight decay as L2 (g += wd * p).
        case adam
        /// PyTorch AdamW: decoupled weight decay (p *= 1 - lr * wd).
        case adamw
        /// PyTorch SGD with momentum (dampening 0), optionally Nesterov; weight decay as L2.
        case sgd
    }

    public struct Settings: Codable, Sendable, Equatable {
        public var kind: Kind
        public var learningRate: Double
        public var weightDecay: Double
        public var beta1 = 0.9
        public var beta2 = 0.999
        public var epsilon = 1e-8
        public var momentum = 0.9
        public var nesterov = false
        /// Clip the global gradient norm to this value before the step (nil: no clipping).
        public var clipNorm: Double?

        public init(kind: Kind, learningRate: Double, weightDecay: Double = 0) {
            self.kind = kind
            self.learningRate = learningRate
            self.weightDecay = weightDecay
        }

        /// The recipe's default: RAdam, lr 1e-3, weight decay 1e-4.
        public static let recipe = Settings(kind: .radam, learningRate: 1e-3, weightDecay: 1e-4)
    }

    public var settings: Settings
    public private(set) var step = 0
    /// First and second moments (Adam family) or momentum buffer (SGD, in `first`).
    public private(set) var first: [Float]
    public private(set) var second: [Float]
    private let parameters: ParameterSet

    public init(_ settings: Settings, parameters: ParameterSet) throws {
        guard settings.learningRate >= 0, settings.weightDecay >= 0, settings.learningRate.isFinite else {
            throw NetworkError.invalidArgument("learning rate and weight decay must be finite and >= 0")
        }
        self.settings = settings
        self.parameters = parameters
        first = [Float](repeating: 0, count: parameters.trainableCount)
        second = settings.kind == .sgd ? [] : [Float](repeating: 0, count: parameters.trainableCount)
    }

    /// Restores state saved from `first`, `second` and `step`.
    public func restore(step: Int, first: [Float], second: [Float]) throws {
        guard first.count == self.first.count, second.count == self.second.count, step >= 0 else {
            throw NetworkError.weights("optimizer state has \(first.count)/\(second.count) values, expected \(self.first.count)/\(self.second.count)")
        }
        self.step = step
        self.first = first
        self.second = second
    }

    /// Parameters per unit of parallel work in the update and the norm.
    private static let unitSize = 1 << 16
    private static func units(_ n: Int) -> Int { (n + unitSize - 1) / unitSize }
    private static func range(_ u: Int, _ n: Int) -> Range<Int> { u * unitSize ..< min(n, (u + 1) * unitSize) }

    /// The global L2 norm of the gradients.
    public func gradientNorm() -> Double {
        parameters.withFlatBuffers { _, g in
            // Partial sums over fixed units, added in order: the same norm on any number of threads.
            var partial = [Double](repeating: 0, count: Self.units(g.count))
            partial.withUnsafeMutableBufferPointer { part in
                Runtime.forEachUnit(part.count) { u in
                    var s = 0.0
                    for i in Self.range(u, g.count) { s += Double(g[i]) * Double(g[i]) }
                    part[u] = s
                }
            }
            return partial.reduce(0, +).squareRoot()
        }
    }

    /// One update with learning rate `lr` (default: the settings'). Returns the gradient norm before clipping.
    @discardableResult
    public func update(learningRate lr: Double? = nil) -> Double {
        let s = settings
        let lr = lr ?? s.learningRate
        step += 1
        let norm = gradientNorm()
        let clip: Float = s.clipNorm.map { norm > $0 && norm > 0 ? Float($0 / (norm + 1e-6)) : 1 } ?? 1
        let t = Double(step)
        let wd = Float(s.weightDecay)
        parameters.withFlatBuffers { p, g in
            let n = p.count
            first.withUnsafeMutableBufferPointer { m in
                second.withUnsafeMutableBufferPointer { v in
                    switch s.kind {
                    case .radam:
                        // Scalars in Double, as the reference computes them in Python floats.
                        let (b1, b2) = (s.beta1, s.beta2)
                        let beta2t = pow(b2, t)
                        let smaMax = 2 / (1 - b2) - 1
                        let sma = smaMax - 2 * t * beta2t / (1 - beta2t)
                        let rectified = sma >= 5
                        let stepSize = rectified
                            ? lr * ((1 - beta2t) * (sma - 4) / (smaMax - 4) * (sma - 2) / sma * smaMax / (smaMax - 2)).squareRoot() / (1 - pow(b1, t))
                            : lr / (1 - pow(b1, t))
                        let (fb1, fb2, eps, size, decay) = (Float(b1), Float(b2), Float(s.epsilon), Float(stepSize), Float(s.weightDecay * lr))
                        Runtime.forEachUnit(Self.units(n)) { u in for i in Self.range(u, n) {
                            let gi = g[i] * clip
                            v[i] = fb2 * v[i] + (1 - fb2) * gi * gi
                            m[i] = fb1 * m[i] + (1 - fb1) * gi
                            var pi = p[i]
                            pi -= decay * pi
                            pi -= rectified ? size * m[i] / (v[i].squareRoot() + eps) : size * m[i]
                            p[i] = pi
                        } }
                    case .adam, .adamw:
                        let (b1, b2) = (Float(s.beta1), Float(s.beta2))
                        let bc1 = 1 - pow(s.beta1, t), bc2 = 1 - pow(s.beta2, t)
                        let size = Float(lr / bc1), root = Float(bc2.squareRoot()), eps = Float(s.epsilon)
                        let decoupled = s.kind == .adamw ? Float(lr * s.weightDecay) : 0
                        Runtime.forEachUnit(Self.units(n)) { u in for i in Self.range(u, n) {
                            var gi = g[i] * clip
                            if s.kind == .adam { gi += wd * p[i] }
                            p[i] -= decoupled * p[i]
                            m[i] = b1 * m[i] + (1 - b1) * gi
                            v[i] = b2 * v[i] + (1 - b2) * gi * gi
                            p[i] -= size * m[i] / (v[i].squareRoot() / root + eps)
                        } }
                    case .sgd:
                        let mu = Float(s.momentum), rate = Float(lr)
                        let firstStep = step == 1
                        Runtime.forEachUnit(Self.units(n)) { u in for i in Self.range(u, n) {
                            var gi = g[i] * clip + wd * p[i]
                            if mu != 0 {
                                m[i] = firstStep ? gi : mu * m[i] + gi
                                gi = s.nesterov ? gi + mu * m[i] : m[i]
                            }
                            p[i] -= rate * gi
                        } }
                    }
                }
            }
        }
        return norm
    }
}

/// Learning-rate schedules, evaluated per step (or per epoch: the caller chooses the unit).
public enum LearningRateSchedule: Codable, Sendable, Equatable {
    case constant
    /// Cosine annealing with warm restarts (PyTorch CosineAnnealingWarmRestarts): first period `period`,
    /// each next one `multiplier` times longer, down to `minimum`.
    case cosineWarmRestarts(period: Int, multiplier: Int, minimum: Double)
    /// Polynomial decay to `end` over `total` units: lr = (base - end) * (1 - t/total)^power + end.
    case polynomial(total: Int, power: Double, end: Double)

    public func rate(base: Double, at t: Int) -> Double {
        switch self {
        case .constant: return base
        case let .cosineWarmRestarts(period, multiplier, minimum):
            var tc = Double(t), length = Double(max(1, period))
            let mult = Double(max(1, multiplier))
            while tc >= length { tc -= length; length *= mult }
            return minimum + (base - minimum) * (1 + cos(.pi * tc / length)) / 2
        case let .polynomial(total, power, end):
            let f = max(0, 1 - Double(min(t, total)) / Double(max(1, total)))
            return (base - end) * pow(f, power) + end
        }
    }
}
