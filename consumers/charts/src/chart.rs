//! The charts as SVG, drawn on the server by [`plotters`] (no JavaScript, works offline):
//! axes, ticks, grid, lines, bars, legend and title. Each chart has its own y scale, fitted
//! to its own series.
//!
//! plotters' SVG has no hover text, so each value also gets a small dot placed by the
//! chart's own coordinate mapping ([`ChartContext::backend_coord`]) and carrying an SVG
//! `<title>` ("2026-07-04T14:00Z, likes: 190"), which browsers show on hover. The dots
//! are written with [`maud`], which escapes their text.

use maud::html;
use plotters::chart::ChartContext;
use plotters::coord::types::{RangedCoordf64, RangedCoordi64};
use plotters::prelude::*;

/// Width and height of a chart, in pixels.
pub const SIZE: (u32, u32) = (960, 320);

/// The drawing failed: a bug in the chart's set-up (the SVG goes to a `String`, which
/// cannot fail on its own). The page answers 500.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart {title:?}")]
pub struct ChartError {
    /// The chart's title.
    pub title: String,
    /// What plotters said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// One line of a chart: a value per x position.
pub struct Series<'a> {
    /// Its name, in the legend and the hover text.
    pub name: &'a str,
    /// Its color (`#rrggbb`).
    pub color: (u8, u8, u8),
    /// One value per label.
    pub values: Vec<i64>,
}

/// A value to show on hover.
struct Dot {
    x: i32,
    y: i32,
    color: String,
    title: String,
}

type Chart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordi64>>;

/// Lines, one per series, over the x positions named by `labels`.
pub fn lines(title: &str, labels: &[String], series: &[Series<'_>]) -> Result<String, ChartError> {
    let max = series.iter().flat_map(|s| s.values.iter()).copied().max();
    // Room above the lines for the legend, when there is one.
    let max = max.map(|m| if series.len() > 1 { m + m / 3 + 1 } else { m });
    draw(title, labels, max, |chart, dots| {
        for s in series {
            let color = RGBColor(s.color.0, s.color.1, s.color.2);
            let points = s.values.iter().enumerate().map(|(i, v)| (i as f64, *v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            dots.extend(
                s.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| dot(chart, labels, i, *v, s.name, s.color)),
            );
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
        Ok(())
    })
}

/// One bar per label.
pub fn bars(
    title: &str,
    labels: &[String],
    name: &str,
    values: &[i64],
    color: (u8, u8, u8),
) -> Result<String, ChartError> {
    draw(
        title,
        labels,
        values.iter().copied().max(),
        |chart, dots| {
            let fill = RGBColor(color.0, color.1, color.2).filled();
            chart.draw_series(
                values.iter().enumerate().map(|(i, v)| {
                    Rectangle::new([(i as f64 - 0.4, 0), (i as f64 + 0.4, *v)], fill)
                }),
            )?;
            dots.extend(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| dot(chart, labels, i, *v, name, color)),
            );
            Ok(())
        },
    )
}

fn dot(chart: &Chart<'_>, labels: &[String], i: usize, v: i64, name: &str, c: (u8, u8, u8)) -> Dot {
    let (x, y) = chart.backend_coord(&(i as f64, v));
    Dot {
        x,
        y,
        color: format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2),
        title: format!("{}, {name}: {v}", labels.get(i).map_or("", String::as_str)),
    }
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// A chart with `title`, x positions `0..labels.len()` named by `labels`, y from 0 to a
/// little above `max`; `body` draws the series and lists the hover dots.
fn draw(
    title: &str,
    labels: &[String],
    max: Option<i64>,
    body: impl FnOnce(&mut Chart<'_>, &mut Vec<Dot>) -> DrawResult,
) -> Result<String, ChartError> {
    let fail = |e: DrawingAreaErrorKind<std::io::Error>| ChartError {
        title: title.to_string(),
        source: Box::new(e),
    };
    let mut svg = String::with_capacity(32 * 1024);
    let mut dots = Vec::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let y_max = max.unwrap_or(0).max(1);
        let y_max = y_max + (y_max / 10).max(1);
        let n = labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0..y_max)
            .map_err(fail)?;
        let x_label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(8.min(n))
            .x_label_formatter(&x_label)
            .y_labels(6)
            .light_line_style(RGBColor(0xf2, 0xf2, 0xf2))
            .draw()
            .map_err(fail)?;
        body(&mut chart, &mut dots).map_err(fail)?;
        root.present().map_err(fail)?;
    }
    let hover = html! {
        g class="hover" {
            @for d in &dots {
                circle class="mark" cx=(d.x) cy=(d.y) r="3" fill=(d.color) { title { (d.title) } }
            }
        }
    };
    match svg.rfind("</svg>") {
        Some(end) => svg.insert_str(end, &hover.into_string()),
        None => svg.push_str(&hover.into_string()),
    }
    Ok(svg)
}
