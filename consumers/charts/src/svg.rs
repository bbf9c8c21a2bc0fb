//! Charts as inline SVG, drawn on the server: no JavaScript library, nothing fetched, so
//! the page works offline. Line charts (a polyline per series) and horizontal bar charts,
//! with a y axis on round steps. Every plotted shape has the class `mark`.

use std::fmt::Write as _;

const W: f64 = 960.0;
const H: f64 = 280.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 28.0;
/// Series with at most this many points also get a dot per point.
const DOTS: usize = 72;

/// One line of a line chart.
pub struct Series<'a> {
    /// Legend.
    pub name: &'a str,
    /// Stroke colour.
    pub color: &'a str,
    /// (x, y) points, x increasing.
    pub points: Vec<(i64, i64)>,
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step giving about 5 ticks up to `max`.
fn step(max: i64) -> i64 {
    let raw = (max.max(1) as f64 / 5.0).max(1.0);
    let pow = 10f64.powi(raw.log10().floor() as i32);
    let m = raw / pow;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    (nice * pow) as i64
}

/// The y axis: returns the top value, writes grid lines and labels.
fn y_axis(out: &mut String, max: i64) -> i64 {
    let step = step(max);
    let top = ((max.max(1) + step - 1) / step) * step;
    let mut v = 0;
    while v <= top {
        let y = TOP + (H - TOP - BOTTOM) * (1.0 - v as f64 / top as f64);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{v}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        v += step;
    }
    top
}

/// A line chart of `series` over x in `[x0, x1]`; `x_label` names an x value, printed at
/// up to 8 ticks (`x_tick` apart).
pub fn lines(
    title: &str,
    series: &[Series<'_>],
    (x0, x1): (i64, i64),
    x_tick: i64,
    x_label: impl Fn(i64) -> String,
) -> String {
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" font-family="sans-serif"><text x="{LEFT}" y="16" font-size="13" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0);
    let top = y_axis(&mut out, max);
    let span = (x1 - x0).max(1) as f64;
    let px = |x: i64| LEFT + (W - LEFT - RIGHT) * (x - x0) as f64 / span;
    let py = |y: i64| TOP + (H - TOP - BOTTOM) * (1.0 - y as f64 / top as f64);
    let every = ((x1 - x0) / x_tick.max(1) / 8 + 1) * x_tick.max(1);
    let mut x = x0;
    while x <= x1 {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
            px(x),
            H - 8.0,
            esc(&x_label(x))
        );
        x += every;
    }
    let mut legend_x = LEFT + 260.0;
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="{cls}" data-series="{n}" fill="none" stroke="{c}" stroke-width="2" points="{p}"/><rect x="{lx:.0}" y="7" width="10" height="10" fill="{c}"/><text x="{tx:.0}" y="16" font-size="12">{n}</text>"#,
            n = esc(s.name),
            c = s.color,
            p = pts.join(" "),
            cls = if s.points.len() > 1 { "mark" } else { "line" },
            lx = legend_x,
            tx = legend_x + 14.0
        );
        if s.points.len() <= DOTS {
            // Few points: show each (a single point draws no line).
            for &(x, y) in &s.points {
                let _ = write!(
                    out,
                    r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    px(x),
                    py(y),
                    s.color
                );
            }
        }
        legend_x += 14.0 + 8.0 * s.name.len() as f64 + 18.0;
    }
    out.push_str("</svg>");
    out
}

/// A horizontal bar chart of (label, value), in the order given.
pub fn bars(title: &str, items: &[(String, i64)], color: &str) -> String {
    let row = 22.0;
    let h = TOP + row * items.len().max(1) as f64 + 10.0;
    let label_w = 120.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}" font-family="sans-serif"><text x="{LEFT}" y="16" font-size="13" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1) as f64;
    let room = W - RIGHT - label_w - 80.0;
    for (i, (label, v)) in items.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = (room * *v as f64 / max).max(1.0);
        let _ = write!(
            out,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end" font-size="12">{l}</text><rect class="mark" data-label="{l}" x="{label_w}" y="{y:.0}" width="{w:.1}" height="{:.0}" fill="{color}"/><text x="{:.1}" y="{:.0}" font-size="12">{v}</text>"#,
            label_w - 6.0,
            y + 15.0,
            row - 6.0,
            label_w + w + 6.0,
            y + 15.0,
            l = esc(label)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(step(0), 1);
        assert_eq!(step(7), 2);
        assert_eq!(step(480), 100);
        assert_eq!(step(1_234_567), 500_000);
    }

    #[test]
    fn a_line_per_series_and_escaped_text() {
        let s = lines(
            "a < b",
            &[Series {
                name: "posts",
                color: "#123",
                points: vec![(0, 1), (10, 5)],
            }],
            (0, 10),
            1,
            |x| x.to_string(),
        );
        assert!(s.contains("a &lt; b"));
        assert_eq!(s.matches("<polyline").count(), 1);
        let b = bars("langs", &[("en".into(), 3), ("<x>".into(), 1)], "#123");
        assert_eq!(b.matches(r#"class="mark""#).count(), 2);
        assert!(b.contains("&lt;x&gt;"));
    }
}
