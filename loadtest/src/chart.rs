//! The `versus` bar chart (PNG): Berth/distribution throughput ratio per
//! scenario and operation, horizontal bars on a log axis with a line at 1.
//!
//! Text needs a TrueType font; plotters' `ab_glyph` feature draws it from a
//! TTF read at run time (Debian's fonts-dejavu-core), so nothing links
//! fontconfig or freetype. Without the file the chart is drawn without text.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

/// Where fonts-dejavu-core puts its sans font.
pub const DEJAVU: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "loadtest-sans";

/// Register the TTF once (plotters keeps a `'static` slice); false if absent.
fn font_ready() -> bool {
    use std::sync::OnceLock;
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let Ok(bytes) = std::fs::read(DEJAVU) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
    })
}

/// One bar: its label and the ratio (Berth / distribution).
pub struct Bar {
    pub label: String,
    pub ratio: f64,
}

/// Pixel size of the chart for `bars` bars.
pub fn size_for(bars: usize) -> (u32, u32) {
    (1200, 110 + 30 * bars.max(1) as u32)
}

/// Draw the chart into `path` (PNG); says whether text was drawn.
pub fn write_png(path: &Path, title: &str, bars: &[Bar]) -> Result<bool> {
    let text = font_ready();
    let (w, h) = size_for(bars.len());
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    // A log axis: ratios from 0.5x to 50x all stay readable, and 1 sits in
    // the middle of "slower" and "faster".
    let finite = || {
        bars.iter()
            .map(|b| b.ratio)
            .filter(|r| r.is_finite() && *r > 0.0)
    };
    let max = finite().fold(2.0f64, f64::max) * 1.6;
    let min = finite().fold(0.5f64, f64::min) / 1.3;
    let n = bars.len().max(1) as f64;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(if text { 35 } else { 5 })
        .y_label_area_size(if text { 330 } else { 5 });
    if text {
        builder.caption(title, (FAMILY, 20));
    }
    let mut chart = builder
        .build_cartesian_2d((min..max).log_scale(), 0f64..n)
        .map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(0);
    if text {
        mesh.x_label_formatter(&|v| format!("{v}x"))
            .x_desc("Berth / distribution, ops/s, log scale (> 1: Berth faster)")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 14));
    } else {
        mesh.x_labels(0);
    }
    mesh.draw().map_err(e)?;
    // Top to bottom in the order given.
    let y = |i: usize| n - i as f64 - 1.0;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let color = if b.ratio >= 1.0 {
                RGBColor(46, 125, 50)
            } else {
                RGBColor(198, 40, 40)
            };
            Rectangle::new(
                [(min, y(i) + 0.15), (b.ratio.clamp(min, max), y(i) + 0.85)],
                color.filled(),
            )
        }))
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, n)],
            BLACK.stroke_width(2),
        )))
        .map_err(e)?;
    if text {
        let left = Pos::new(HPos::Left, VPos::Center);
        let right = Pos::new(HPos::Right, VPos::Center);
        for (i, b) in bars.iter().enumerate() {
            let (x, yy) = chart.backend_coord(&(b.ratio.clamp(min, max), y(i) + 0.5));
            let value = TextStyle::from((FAMILY, 14).into_font()).pos(left);
            root.draw(&Text::new(format!("{:.2}x", b.ratio), (x + 5, yy), value))
                .map_err(e)?;
            let (x0, _) = chart.backend_coord(&(min, 0.0));
            let label = TextStyle::from((FAMILY, 14).into_font()).pos(right);
            root.draw(&Text::new(b.label.clone(), (x0 - 8, yy), label))
                .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn png_has_the_planned_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let bars: Vec<Bar> = [
            ("ci-push: all", 2.5),
            ("hot-pull: blob GET", 0.8),
            ("x", 1.0),
        ]
        .into_iter()
        .map(|(l, r)| Bar {
            label: l.into(),
            ratio: r,
        })
        .collect();
        let text = write_png(&path, "test", &bars).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), size_for(3));
        assert_eq!(size_for(3), (1200, 200));
        // The font is found exactly when Debian's file is there.
        assert_eq!(text, Path::new(DEJAVU).exists());
    }
}
