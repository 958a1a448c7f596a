//! Inline SVG charts drawn from numbers: line charts with credible-interval bands and stacked
//! bars, in a colour-blind-safe palette, with axes and legends. No scripts, no external files.

use std::fmt::Write as _;

/// The Okabe-Ito palette, safe for the common colour-vision deficiencies.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442",
];

/// Dash patterns that tell series apart without colour.
const DASHES: [&str; 4] = ["", "6 3", "2 3", "8 3 2 3"];

/// The colour of series `i`.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// A point of a line chart: `(x, value, optional (lower, upper) interval)`.
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One line of a line chart: a value (and optionally an interval) per x.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend label.
    pub label: String,
    /// The points; non-finite values are skipped.
    pub points: Vec<Point>,
}

/// Escapes text for HTML and SVG.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// About `n` round tick values covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() * step;
    (0..=n * 2 + 2)
        .map(|i| first + i as f64 * step)
        .take_while(|t| *t <= hi + step * 1e-9)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else if a >= 0.01 {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn x(&self, x: f64) -> f64 {
        let span = (self.x1 - self.x0).max(1e-12);
        LEFT + (x - self.x0) / span * (WIDTH - LEFT - RIGHT)
    }
    /// Values outside the range are drawn at its edge (wide early intervals are clipped).
    fn y(&self, y: f64) -> f64 {
        let span = (self.y1 - self.y0).max(1e-12);
        let y = y.clamp(self.y0, self.y1);
        TOP + (1.0 - (y - self.y0) / span) * (HEIGHT - TOP - BOTTOM)
    }
}

fn open(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
}

fn axes(out: &mut String, f: &Frame, x_ticks: &[f64], y_ticks: &[f64], x_label: &str) {
    for &t in y_ticks {
        let y = f.y(t);
        let _ = write!(
            out,
            r##"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ea"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    for &t in x_ticks {
        let x = f.x(t);
        let _ = write!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            HEIGHT - BOTTOM + 16.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#8a939d"/><text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 4.0,
        esc(x_label)
    );
}

/// A line chart over iterations with a shaded band for each series' interval, and optional
/// horizontal reference lines `(value, label)`.
pub fn line_chart(
    id: &str,
    title: &str,
    series: &[Series],
    fixed_range: Option<(f64, f64)>,
    references: &[(f64, String)],
) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x0, x1) = if !x0.is_finite() {
        (1.0, 2.0)
    } else if x1 > x0 {
        (x0, x1)
    } else {
        // One iteration (a cluster experiment keeps only its latest assessment): centred.
        (x0 - 1.0, x0 + 1.0)
    };
    let (y0, y1) = fixed_range.unwrap_or_else(|| value_range(series, references));
    let f = Frame { x0, x1, y0, y1 };
    let mut out = String::new();
    open(&mut out, id, title);
    let x_ticks: Vec<f64> = nice_ticks(x0, x1, 8)
        .into_iter()
        .filter(|t| t.fract() == 0.0)
        .collect();
    axes(&mut out, &f, &x_ticks, &nice_ticks(y0, y1, 5), "iteration");
    for (i, s) in series.iter().enumerate() {
        let band: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(x, _, ci)| ci.map(|(lo, hi)| (x, lo, hi)))
            .collect();
        if band.len() > 1 {
            let mut pts: Vec<String> = band
                .iter()
                .map(|&(x, _, hi)| format!("{:.1},{:.1}", f.x(x), f.y(hi)))
                .collect();
            pts.extend(
                band.iter()
                    .rev()
                    .map(|&(x, lo, _)| format!("{:.1},{:.1}", f.x(x), f.y(lo))),
            );
            let _ = write!(
                out,
                r#"<polygon class="band" data-series="{}" points="{}" fill="{}" fill-opacity="0.15" stroke="none"/>"#,
                esc(&s.label),
                pts.join(" "),
                color(i)
            );
        } else if let [(x, lo, hi)] = band[..] {
            // One point (a cluster experiment keeps only its latest assessment): the
            // interval as an error bar.
            let _ = write!(
                out,
                r#"<line class="interval" data-series="{}" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="6" stroke-opacity="0.35"/>"#,
                esc(&s.label),
                f.y(hi),
                f.y(lo),
                color(i),
                x = f.x(x),
            );
        }
    }
    for (value, label) in references {
        let y = f.y(*value);
        let _ = write!(
            out,
            r##"<line class="reference" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#444" stroke-dasharray="4 4"/><text class="ref-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            y - 4.0,
            esc(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, v, _)| format!("{:.1},{:.1}", f.x(x), f.y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<g class="series" data-series="{}"><polyline points="{}" fill="none" stroke="{}" stroke-width="2.2" stroke-dasharray="{}"/>"#,
            esc(&s.label),
            pts.join(" "),
            color(i),
            DASHES[i % DASHES.len()]
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                out,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                color(i)
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// The y range of a line chart: the values and reference lines, widened by the intervals
/// but at most to twice the values' span, so one wide early interval does not flatten the
/// rest of the chart.
fn value_range(series: &[Series], references: &[(f64, String)]) -> (f64, f64) {
    let extent = |it: &mut dyn Iterator<Item = f64>| {
        it.filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            })
    };
    let (lo, hi) = extent(
        &mut series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(references.iter().map(|r| r.0)),
    );
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let (ci_lo, ci_hi) = extent(&mut series.iter().flat_map(|s| {
        s.points
            .iter()
            .flat_map(|p| p.2.map(|(a, b)| [a, b]).unwrap_or([p.1, p.1]))
    }));
    let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
    let lo = lo.min(ci_lo.max(lo - span));
    let hi = hi.max(ci_hi.min(hi + span));
    let pad = (hi - lo) * 0.06;
    let lo = if lo >= 0.0 {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

/// Stacked bars: one bar per x, one segment per series (values are percentages).
pub fn stacked_bars(id: &str, title: &str, labels: &[String], bars: &[(f64, Vec<f64>)]) -> String {
    let n = bars.len().max(1) as f64;
    let f = Frame {
        x0: 0.0,
        x1: n,
        y0: 0.0,
        y1: 100.0,
    };
    let mut out = String::new();
    open(&mut out, id, title);
    let step = (bars.len() / 12).max(1);
    let x_ticks: Vec<f64> = bars
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0)
        .map(|(i, _)| i as f64 + 0.5)
        .collect();
    axes(
        &mut out,
        &f,
        &[],
        &[0.0, 25.0, 50.0, 75.0, 100.0],
        "iteration",
    );
    for (&t, (x, _)) in x_ticks.iter().zip(bars.iter().step_by(step)) {
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            f.x(t),
            HEIGHT - BOTTOM + 16.0,
            fmt_tick(*x)
        );
    }
    let bar_w = (f.x(1.0) - f.x(0.0)) * 0.78;
    for (i, (_, values)) in bars.iter().enumerate() {
        let mut base = 0.0;
        let cx = f.x(i as f64 + 0.5);
        for (s, &v) in values.iter().enumerate() {
            if v <= 0.0 {
                continue;
            }
            let top = f.y(base + v);
            let bottom = f.y(base);
            let label = labels.get(s).map_or("", String::as_str);
            let _ = write!(
                out,
                r#"<rect class="segment" data-series="{}" x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"><title>{}: {v}%</title></rect>"#,
                esc(label),
                cx - bar_w / 2.0,
                (bottom - top).max(0.0),
                color(s),
                esc(label)
            );
            base += v;
        }
    }
    out.push_str("</svg>");
    out
}

/// A legend: a swatch and a label per series.
pub fn legend(labels: &[String]) -> String {
    let mut out = String::from(r#"<div class="legend">"#);
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(
            out,
            r#"<span class="key"><svg width="26" height="12" aria-hidden="true"><line x1="1" x2="25" y1="6" y2="6" stroke="{}" stroke-width="3" stroke-dasharray="{}"/></svg>{}</span>"#,
            color(i),
            DASHES[i % DASHES.len()],
            esc(l)
        );
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        let t = nice_ticks(0.013, 0.052, 4);
        assert!(
            t.first().is_some_and(|&x| x >= 0.013) && t.len() >= 3,
            "{t:?}"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }

    #[test]
    fn a_single_iteration_is_centred_with_its_interval_as_an_error_bar() {
        let series = [Series {
            label: "v1".into(),
            points: vec![(6.0, 0.5, Some((0.4, 0.6)))],
        }];
        let svg = line_chart("c", "one point", &series, Some((0.0, 1.0)), &[]);
        assert_eq!(
            svg.matches(r#"<line class="interval" data-series="v1""#)
                .count(),
            1
        );
        assert!(!svg.contains("<polygon"), "no band for one point");
        // The x axis runs from 5 to 7: the point sits in the middle of the plot.
        let middle = LEFT + (WIDTH - LEFT - RIGHT) / 2.0;
        assert!(
            svg.contains(&format!(r#"<circle cx="{middle:.1}""#)),
            "{svg}"
        );
    }

    #[test]
    fn a_line_chart_has_one_group_and_one_band_per_series() {
        let s = |label: &str, v: f64| Series {
            label: label.into(),
            points: (1..=3)
                .map(|x| (f64::from(x), v, Some((v - 1.0, v + 1.0))))
                .collect(),
        };
        let svg = line_chart("c", "t", &[s("a", 2.0), s("b", 5.0)], None, &[]);
        assert_eq!(svg.matches(r#"<g class="series""#).count(), 2);
        assert_eq!(svg.matches(r#"<polygon class="band""#).count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
    }

    #[test]
    fn stacked_bars_skip_empty_segments() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let svg = stacked_bars(
            "s",
            "t",
            &labels,
            &[(1.0, vec![100.0, 0.0]), (2.0, vec![60.0, 40.0])],
        );
        assert_eq!(svg.matches(r#"<rect class="segment""#).count(), 3);
    }
}
