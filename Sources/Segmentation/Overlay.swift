import Foundation
import MedicalImaging

/// Pictures a person can check: axial, coronal and sagittal slices through the tumour, an image channel
/// (FLAIR) in grey with labels in colour: edema green, non-enhancing core red, enhancing yellow.
/// Columns: the image alone, ground truth, prediction (those given), each titled, with a colour key below.
/// Volumes are (X, Y, Z), x fastest, shown radiologically upright: anterior and superior at the top. The
/// slices go through the predicted tumour's centre (when nothing is predicted, the true tumour's, else the
/// volume's), so `predict`'s and `evaluate`'s pictures of a case show the same slices.
public enum Overlay {
    static let colours: [(UInt8, UInt8, UInt8)] = [(0, 0, 0), (40, 200, 40), (230, 40, 40), (250, 220, 20)]
    static let classNames = ["", "EDEMA", "NON-ENHANCING CORE", "ENHANCING"]

    public static func render(image: [Float], shape: [Int], truth: [UInt8]?, prediction: [UInt8]?) -> RGBImage {
        let (X, Y, Z) = (shape[0], shape[1], shape[2])
        // Grey window: 1st to 99th percentile of the nonzero voxels.
        let nonzero = image.filter { $0 != 0 }.sorted()
        let lo = nonzero.isEmpty ? 0 : nonzero[nonzero.count / 100], hi = nonzero.isEmpty ? 1 : nonzero[nonzero.count * 99 / 100]
        func grey(_ v: Float) -> UInt8 { UInt8(max(0, min(255, (v - lo) / max(hi - lo, 1e-6) * 255))) }
        // Centre: the predicted tumour's centroid, else the true tumour's, else the middle of the volume.
        var centre = [X / 2, Y / 2, Z / 2]
        for labels in [prediction, truth].compactMap({ $0 }) {
            var sum = [0, 0, 0], n = 0
            for i in 0 ..< labels.count where labels[i] > 0 { sum[0] += i % X; sum[1] += i / X % Y; sum[2] += i / (X * Y); n += 1 }
            if n > 0 { centre = sum.map { $0 / n }; break }
        }
        let columns = [(nil as [UInt8]?, "IMAGE")] + [(truth, "GROUND TRUTH"), (prediction, "PREDICTION")].compactMap { l, t in l.map { (Optional($0), t) } }
        // View: (panel width, height, voxel index of panel pixel (u, v) with v = 0 at the top).
        let views: [(Int, Int, (Int, Int) -> Int)] = [
            (X, Y, { u, v in (centre[2] * Y + (Y - 1 - v)) * X + u }),  // axial: x right, anterior up
            (X, Z, { u, v in ((Z - 1 - v) * Y + centre[1]) * X + u }),  // coronal: superior up
            (Y, Z, { u, v in ((Z - 1 - v) * Y + u) * X + centre[0] }),  // sagittal: anterior right, superior up
        ]
        let gap = 4, band = 14  // a title band above, a key band below
        let width = columns.count * (max(X, Y) + gap) + gap
        let height = views.reduce(gap) { $0 + $1.1 + gap } + 2 * band
        var out = RGBImage(width: width, height: height, fill: (20, 20, 20))
        for (c, column) in columns.enumerated() {
            Font.draw(column.1, into: &out, x: gap + c * (max(X, Y) + gap), y: 4, colour: (230, 230, 230))
        }
        var x = gap
        for k in 1 ..< colours.count {
            for dy in 0 ..< 7 { for dx in 0 ..< 7 { out[x + dx, height - band + 4 + dy] = colours[k] } }
            Font.draw(classNames[k], into: &out, x: x + 10, y: height - band + 4, colour: (230, 230, 230))
            x += 10 + 6 * classNames[k].count + 12
        }
        var top = gap + band
        for (w, h, index) in views {
            for (c, (labels, _)) in columns.enumerated() {
                let left = gap + c * (max(X, Y) + gap)
                for v in 0 ..< h { for u in 0 ..< w {
                    let i = index(u, v)
                    let g = grey(image[i])
                    var pixel = (g, g, g)
                    if let labels, labels[i] > 0, Int(labels[i]) < colours.count {
                        let k = colours[Int(labels[i])]
                        pixel = (UInt8((Int(g) + Int(k.0)) / 2), UInt8((Int(g) + Int(k.1)) / 2), UInt8((Int(g) + Int(k.2)) / 2))
                    }
                    out[left + u, top + v] = pixel
                } }
            }
            top += h + gap
        }
        return out
    }

    /// Reads the files, renders, writes `output` (PNG). Labels are read as training classes via `convention`.
    /// Without an image the labels are drawn on black.
    public static func write(image path: String?, channel: Int, truth: String?, prediction: String?,
                             convention: LabelConvention = .decathlon, to output: String) throws {
        try picture(image: path, channel: channel, truth: truth, prediction: prediction, convention: convention).write(to: output)
    }

    /// Reads the files and renders them, as `write` does.
    public static func picture(image path: String?, channel: Int, truth: String?, prediction: String?,
                               convention: LabelConvention = .decathlon) throws -> RGBImage {
        var spatial: [Int]?
        var values: [Float]?
        if let path {
            let img = try NiftiImage.read(path)
            let shape = Array(img.shape.prefix(3))
            guard shape.count == 3 else { throw SegmentationError.invalidFile(path, "expected a 3D or 4D image, shape \(img.shape)") }
            let n = shape.reduce(1, *)
            let channels = img.header.voxelCount / n
            guard channel >= 0, channel < channels else { throw SegmentationError.invalidFile(path, "has \(channels) channel(s); channel \(channel) does not exist") }
            values = Array(img.floatValues()[channel * n ..< (channel + 1) * n])
            spatial = shape
        }
        func labels(_ p: String?) throws -> [UInt8]? {
            guard let p else { return nil }
            let l = try NiftiImage.read(p)
            let shape = Array(l.shape.prefix(3))
            if let spatial { guard shape == spatial else { throw SegmentationError.invalidFile(p, "shape \(l.shape), the image has \(spatial)") } }
            guard shape.count == 3 else { throw SegmentationError.invalidFile(p, "expected a 3D label map, shape \(l.shape)") }
            spatial = shape
            return l.floatValues().map { convention.trainingClass(of: Int($0)) ?? 0 }
        }
        let t = try labels(truth), p = try labels(prediction)
        guard let spatial else { throw SegmentationError.invalidArgument("an overlay needs an image or a label map") }
        let image = values ?? [Float](repeating: 0, count: spatial.reduce(1, *))
        return render(image: image, shape: spatial, truth: t, prediction: p)
    }
}
