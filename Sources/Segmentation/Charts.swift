import Foundation
import MedicalImaging

/// Minimal line charts on an `RGBImage`, with a 5x7 bitmap font for titles and numbers (enough for
/// training curves; no dependency).
public struct LineChart: Sendable {
    public var title: String
    public var series: [(name: String, points: [(Double, Double)], colour: (UInt8, UInt8, UInt8))]

    public init(title: String, series: [(name: String, points: [(Double, Double)], colour: (UInt8, UInt8, UInt8))]) {
        self.title = title
        self.series = series
    }

    /// Draws the chart into a `width` x `height` panel.
    public func render(width: Int, height: Int) -> RGBImage {
        var img = RGBImage(width: width, height: height, fill: (255, 255, 255))
        let (left, right, top, bottom) = (44, 10, 16, 20)
        let all = series.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        Font.draw(title.uppercased(), into: &img, x: left, y: 4, colour: (0, 0, 0))
        guard !all.isEmpty else { return img }
        var (x0, x1) = (all.map(\.0).min()!, all.map(\.0).max()!)
        var (y0, y1) = (all.map(\.1).min()!, all.map(\.1).max()!)
        if x1 == x0 { x1 = x0 + 1 }
        if y1 == y0 {  // a constant: centre it, with a margin of 10% of its size
            let pad = y0 == 0 ? 1 : abs(y0) * 0.1
            (y0, y1) = (y0 - pad, y1 + pad)
        }
        let pw = width - left - right, ph = height - top - bottom
        func px(_ x: Double) -> Int { left + Int((x - x0) / (x1 - x0) * Double(pw - 1)) }
        func py(_ y: Double) -> Int { top + ph - 1 - Int((y - y0) / (y1 - y0) * Double(ph - 1)) }
        for x in left ..< left + pw { img[x, top + ph - 1] = (0, 0, 0) }
        for y in top ..< top + ph { img[left, y] = (0, 0, 0) }
        Font.draw(Font.number(y1), into: &img, x: 2, y: top, colour: (0, 0, 0))
        Font.draw(Font.number(y0), into: &img, x: 2, y: top + ph - 8, colour: (0, 0, 0))
        Font.draw(Font.number(x0), into: &img, x: left, y: top + ph + 4, colour: (0, 0, 0))
        let last = Font.number(x1)
        Font.draw(last, into: &img, x: left + pw - 6 * last.count, y: top + ph + 4, colour: (0, 0, 0))
        for s in series {
            let pts = s.points.filter { $0.0.isFinite && $0.1.isFinite }
            for (a, b) in zip(pts, pts.dropFirst()) { line(&img, px(a.0), py(a.1), px(b.0), py(b.1), s.colour) }
            if pts.count == 1 { for d in -1 ... 1 { img[px(pts[0].0) + d, py(pts[0].1)] = s.colour } }
        }
        return img
    }

    private func line(_ img: inout RGBImage, _ xa: Int, _ ya: Int, _ xb: Int, _ yb: Int, _ c: (UInt8, UInt8, UInt8)) {
        let n = max(abs(xb - xa), abs(yb - ya), 1)
        for i in 0 ... n {
            let x = xa + (xb - xa) * i / n, y = ya + (yb - ya) * i / n
            img[x, y] = c
            img[x, y + 1] = c  // 2 px thick
        }
    }
}

/// A 5x7 bitmap font for digits, a few signs and capital letters.
enum Font {
    static let glyphs: [Character: [String]] = [
        "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
        "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
        "3": ["#### ", "    #", "    #", " ### ", "    #", "    #", "#### "],
        "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
        "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
        "6": [" ### ", "#    ", "#    ", "#### ", "#   #", "#   #", " ### "],
        "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
        "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
        "9": [" ### ", "#   #", "#   #", " ####", "    #", "    #", " ### "],
        ".": ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
        "-": ["     ", "     ", "     ", "#####", "     ", "     ", "     "],
        "+": ["     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "],
        "%": ["##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"],
        "(": ["   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "],
        ")": [" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "],
        ",": ["     ", "     ", "     ", "     ", "  ## ", "  #  ", " #   "],
        "A": [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
        "B": ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
        "C": [" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "],
        "D": ["#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "],
        "E": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
        "F": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "],
        "X": ["#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"],
        "G": [" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ### "],
        "H": ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
        "I": [" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        "K": ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"],
        "L": ["#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"],
        "M": ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
        ":": ["     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "],
        "N": ["#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"],
        "O": [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
        "P": ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
        "R": ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
        "S": [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
        "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
        "U": ["#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
        "V": ["#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "],
        "W": ["#   #", "#   #", "#   #", "# # #", "# # #", "## ##", "#   #"],
        "Y": ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "],
    ]

    /// Draws `text` with its top-left corner at (x, y); unknown characters leave a gap.
    static func draw(_ text: String, into img: inout RGBImage, x: Int, y: Int, colour: (UInt8, UInt8, UInt8)) {
        for (k, ch) in text.enumerated() {
            guard let rows = glyphs[ch] else { continue }
            for (r, row) in rows.enumerated() {
                for (c, bit) in row.enumerated() where bit == "#" { img[x + 6 * k + c, y + r] = colour }
            }
        }
    }

    /// A short number: 3 significant digits, scientific below 0.01.
    static func number(_ v: Double) -> String {
        if v != 0 && abs(v) < 0.01 {
            let e = Int(floor(log10(abs(v))))
            return String(format: "%.1fE%d", v / pow(10, Double(e)), e).replacingOccurrences(of: "E", with: "E")
        }
        return abs(v) >= 100 ? String(format: "%.0f", v) : String(format: "%.3g", v)
    }
}
