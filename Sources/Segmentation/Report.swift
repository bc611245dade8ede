import Foundation
import MedicalImaging

/// `evaluate`'s page for a person: one self-contained HTML file (no external files or scripts) with the
/// means and spread per region, a table of every case sorted from worst to best recipe score, and each
/// case's overlay picture inline.
public enum EvaluationReport {
    /// The page. `pictures` maps case ids to PNG bytes (ground truth beside prediction); cases without one
    /// show none. `title` names the prediction folder or run.
    public static func html(_ summary: Evaluation.Summary, pictures: [String: [UInt8]], title: String) -> String {
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        let regions = ["WT", "TC", "ET"]
        func spread(_ values: [Double]) -> (mean: Double, sd: Double, min: Double, max: Double) {
            let n = Double(max(values.count, 1)), mean = values.reduce(0, +) / n
            let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n).squareRoot()
            return (mean, sd, values.min() ?? .nan, values.max() ?? .nan)
        }
        var page = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Evaluation: \(escape(title))</title>
        <style>
        body { font-family: sans-serif; margin: 24px; color: #222; }
        table { border-collapse: collapse; margin: 12px 0; }
        th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
        th { background: #f0f0f0; } td.id { text-align: left; font-family: monospace; }
        .bad { background: #fde2e2; } .good { background: #e2f5e2; }
        figure { display: inline-block; margin: 8px; vertical-align: top; }
        figure img { width: 360px; border: 1px solid #999; } figcaption { font-family: monospace; }
        .warning { color: #a00; font-weight: bold; }
        </style></head><body>
        <h1>Evaluation: \(escape(title))</h1>
        <p>\(summary.cases.count) case(s), label convention \(escape(summary.labelConvention)).
        Recipe Dice (the Composer/NVIDIA metric, mean over cases): <b>\(String(format: "%.2f", summary.recipeDice))</b>.
        Colours: edema green, non-enhancing core red, enhancing yellow.</p>

        """
        if let missing = summary.missing {
            page += "<p class=\"warning\">\(missing.count) ground-truth case(s) had no prediction and are not scored: \(escape(missing.joined(separator: ", ")))</p>\n"
        }
        page += "<h2>Regions</h2>\n<table><tr><th>region</th><th>mean Dice</th><th>sd</th><th>min</th><th>max</th><th>mean HD95 (mm)</th></tr>\n"
        for r in regions {
            let s = spread(summary.cases.map { $0.dice[r] ?? .nan })
            page += String(format: "<tr><td class=\"id\">%@</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.1f</td></tr>\n",
                           r, s.mean, s.sd, s.min, s.max, summary.meanHD95[r] ?? .nan)
        }
        page += "</table>\n<h2>Cases, worst first</h2>\n<table><tr><th>case</th><th>recipe Dice</th>"
            + regions.map { "<th>Dice \($0)</th>" }.joined() + regions.map { "<th>HD95 \($0)</th>" }.joined() + "</tr>\n"
        let sorted = summary.cases.sorted { ($0.recipeDice, $0.id) < ($1.recipeDice, $1.id) }
        for c in sorted {
            let mark = c.recipeDice < summary.recipeDice - 10 ? " class=\"bad\"" : (c.recipeDice > summary.recipeDice + 10 ? " class=\"good\"" : "")
            page += "<tr\(mark)><td class=\"id\"><a href=\"#\(escape(c.id))\">\(escape(c.id))</a></td>"
                + String(format: "<td>%.2f</td>", c.recipeDice)
                + regions.map { String(format: "<td>%.3f</td>", c.dice[$0] ?? .nan) }.joined()
                + regions.map { String(format: "<td>%.1f</td>", c.hd95[$0] ?? .nan) }.joined() + "</tr>\n"
        }
        page += "</table>\n<h2>Pictures (image, ground truth, prediction)</h2>\n"
        for c in sorted {
            guard let png = pictures[c.id] else { continue }
            page += "<figure id=\"\(escape(c.id))\"><img alt=\"\(escape(c.id))\" src=\"data:image/png;base64,\(Data(png).base64EncodedString())\">"
                + String(format: "<figcaption>%@: recipe Dice %.2f</figcaption></figure>\n", escape(c.id), c.recipeDice)
        }
        for n in summary.notes { page += "<p>Note: \(escape(n))</p>\n" }
        return page + "</body></html>\n"
    }
}
