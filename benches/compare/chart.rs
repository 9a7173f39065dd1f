//! The chart of the ratios (`docs/compare.svg`).

use super::*;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart of every ratio on a log scale, one group per comparison: bars to the
/// right of 1x are dmastub's lead, to the left its lag; a dashed mark is the target.
pub(super) fn svg(comparisons: &[Comparison], subtitle: &str) -> String {
    const W: f64 = 1030.0;
    const X0: f64 = 430.0;
    const X1: f64 = 900.0;
    const ROW: f64 = 36.0;
    // A white outline under text that crosses the grid lines.
    const HALO: &str = "stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\"";
    let ratios: Vec<f64> = comparisons
        .iter()
        .flat_map(|c| &c.figures)
        .map(|f| f.ratio)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    let lo = ratios.iter().fold(0.5f64, |a, &r| a.min(r / 1.5)).log10().floor();
    let hi = ratios.iter().fold(2.0f64, |a, &r| a.max(r * 1.5)).log10().ceil();
    let x = |r: f64| X0 + (r.max(1e-9).log10() - lo) / (hi - lo) * (X1 - X0);
    let mut body = String::new();
    let mut y = 96.0;
    for c in comparisons {
        body += &format!(
            "<text x=\"16\" y=\"{:.0}\" font-size=\"15\" font-weight=\"bold\" {HALO}>{}</text>\n",
            y + 4.0,
            esc(c.title)
        );
        y += 12.0;
        if let Some(cap) = &c.caption {
            body += &format!(
                "<text x=\"16\" y=\"{:.0}\" font-size=\"12\" fill=\"#444\" {HALO}>{}</text>\n",
                y + 8.0,
                esc(cap)
            );
            y += 18.0;
        }
        for f in &c.figures {
            let (top, bar_h) = (y + 6.0, 16.0);
            let (a, b) = (x(1.0).min(x(f.ratio)), x(1.0).max(x(f.ratio)));
            let color = if f.ratio >= 1.0 { "#2e7d32" } else { "#c62828" };
            body += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"13\" text-anchor=\"end\">{}</text>\n",
                X0 - 10.0,
                top + 12.0,
                esc(&f.label)
            );
            body += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"#666\" text-anchor=\"end\">dmastub {} · {} {}</text>\n",
                X0 - 10.0,
                top + 26.0,
                esc(&f.ours),
                esc(&f.peer),
                esc(&f.theirs)
            );
            body += &format!(
                "<rect x=\"{a:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n",
                (b - a).max(1.0)
            );
            if let Some((t, _)) = f.target {
                let met = if f.ratio >= t { "met" } else { "missed" };
                body += &format!(
                    "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#111\" stroke-width=\"2\" \
                     stroke-dasharray=\"3,2\"><title>target {t}x: {met}</title></line>\n",
                    x(t),
                    top - 3.0,
                    top + bar_h + 3.0
                );
            }
            let tag = match f.met() {
                Some(true) => " ✓ target",
                Some(false) => " ✗ target missed",
                None => "",
            };
            body += &format!(
                "<text x=\"{:.1}\" y=\"{:.0}\" font-size=\"12\">{}{tag}</text>\n",
                b.max(x(f.target.map_or(1.0, |t| t.0))) + 6.0,
                top + 12.0,
                esc(&if f.ratio >= 1.0 { format!("{:.1}x", f.ratio) } else { format!("{:.2}x", f.ratio) })
            );
            y += ROW;
        }
        for s in &c.skipped {
            let s = if s.chars().count() > 130 {
                format!("{}…", s.chars().take(130).collect::<String>())
            } else {
                s.clone()
            };
            body += &format!(
                "<text x=\"16\" y=\"{:.0}\" font-size=\"12\" fill=\"#888\" font-style=\"italic\">skipped: {}</text>\n",
                y + 14.0,
                esc(&s)
            );
            y += 20.0;
        }
        y += 18.0;
    }
    let bottom = y;
    let mut grid = String::new();
    let mut d = lo;
    while d <= hi {
        let r = 10f64.powf(d);
        let gx = x(r);
        let (stroke, width) = if d == 0.0 { ("#333", 1.5) } else { ("#ccc", 1.0) };
        let label = if r >= 1.0 { format!("{r:.0}x") } else { format!("{r}x") };
        grid += &format!(
            "<line x1=\"{gx:.1}\" x2=\"{gx:.1}\" y1=\"84\" y2=\"{bottom:.0}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>\n\
             <text x=\"{gx:.1}\" y=\"78\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">{label}</text>\n\
             <text x=\"{gx:.1}\" y=\"{:.0}\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">{label}</text>\n",
            bottom + 14.0
        );
        d += 1.0;
    }
    let h = bottom + 44.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h:.0}\" viewBox=\"0 0 {W} {h:.0}\" \
         font-family=\"-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"16\" y=\"26\" font-size=\"18\" font-weight=\"bold\">dmastub against the tools people use today</text>\n\
         <text x=\"16\" y=\"46\" font-size=\"12\" fill=\"#444\">{}</text>\n\
         <text x=\"16\" y=\"64\" font-size=\"12\" fill=\"#444\">ratio dmastub / peer, log scale: right of 1x dmastub \
         does better, left worse; dashed mark = target</text>\n\
         {grid}{body}\
         <text x=\"16\" y=\"{:.0}\" font-size=\"11\" fill=\"#666\">cargo bench --bench compare</text>\n</svg>\n",
        esc(subtitle),
        h - 12.0
    )
}
