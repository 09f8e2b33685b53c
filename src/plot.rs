//! The forecast chart (plotters): recent history, the forecast's median and its p10–p90 band,
//! and the operator's forecast where given; a PNG file (`forecast --plot`) or an SVG document
//! (`serve`'s page).
use crate::eval::Quantiles;
use crate::time::from_us;
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Fonts tried for labels (Debian's DejaVu, macOS's Helvetica); without one the plot has no text.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn register_font() -> bool {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draw `history` (timestamp µs, MW) and `forecast` into a 1200×600 PNG at `path`.
pub(crate) fn forecast_png(
    path: &Path,
    title: &str,
    history: &[(i64, f64)],
    forecast: &[(i64, Quantiles)],
) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    draw(root, title, history, forecast, &[]).map_err(|e| anyhow!("cannot draw `{}`: {e}", path.display()))
}

/// The same chart as an SVG document of `size` pixels, with the operator's forecast
/// (timestamp µs, MW) as a dashed line where given.
pub(crate) fn forecast_svg(
    size: (u32, u32),
    title: &str,
    history: &[(i64, f64)],
    forecast: &[(i64, Quantiles)],
    operator: &[(i64, f64)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(root, title, history, forecast, operator).map_err(|e| anyhow!("cannot draw the chart: {e}"))?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    history: &[(i64, f64)],
    forecast: &[(i64, Quantiles)],
    operator: &[(i64, f64)],
) -> Result<()> {
    let fonts = register_font();
    let hours = |t: i64| (t - history.first().map_or(t, |h| h.0)) as f64 / 3.6e9;
    let x_max = forecast.last().map_or(1.0, |f| hours(f.0)).max(operator.last().map_or(1.0, |o| hours(o.0))).max(1.0);
    let values = history
        .iter()
        .map(|h| h.1)
        .chain(forecast.iter().flat_map(|f| [f.1.p10, f.1.p90]))
        .chain(operator.iter().map(|o| o.1));
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return Err(anyhow!("nothing to plot"));
    }
    let pad = (hi - lo).max(1.0) * 0.08;
    let fail = |e: &dyn std::fmt::Display| anyhow!("{e}");
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if fonts {
        builder.caption(title, ("sans-serif", 24)).x_label_area_size(40).y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad)).map_err(|e| fail(&e))?;
    let start = history.first().map(|h| from_us(h.0));
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0));
    if fonts {
        mesh.x_desc(format!(
            "hours since {}",
            start.map_or(String::new(), |s| s.format("%Y-%m-%d %H:%M UTC").to_string())
        ))
        .y_desc("MW");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| fail(&e))?;

    let band: Vec<(f64, f64)> = forecast
        .iter()
        .map(|f| (hours(f.0), f.1.p90))
        .chain(forecast.iter().rev().map(|f| (hours(f.0), f.1.p10)))
        .collect();
    chart.draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.2)))).map_err(|e| fail(&e))?;
    let history_series = chart
        .draw_series(LineSeries::new(history.iter().map(|h| (hours(h.0), h.1)), BLACK.stroke_width(2)))
        .map_err(|e| fail(&e))?;
    if fonts {
        history_series.label("history").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    }
    let median = chart
        .draw_series(LineSeries::new(forecast.iter().map(|f| (hours(f.0), f.1.p50)), BLUE.stroke_width(2)))
        .map_err(|e| fail(&e))?;
    if fonts {
        median.label("forecast p50 (band p10-p90)").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    }
    if !operator.is_empty() {
        let red = RGBColor(200, 40, 40);
        let line = chart
            .draw_series(DashedLineSeries::new(operator.iter().map(|o| (hours(o.0), o.1)), 6, 4, red.stroke_width(2)))
            .map_err(|e| fail(&e))?;
        if fonts {
            line.label("operator forecast").legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red));
        }
    }
    if fonts {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
