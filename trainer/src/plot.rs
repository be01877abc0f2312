//! PNG plots drawn with embedded-graphics on an SDK frame: ROC curves,
//! reliability diagrams, training curves and 2-D scatter plots (t-SNE of
//! embeddings), as in the paper's figures 5–7.

use std::path::Path;

use anyhow::{Context, Result};
use embedded_graphics::mono_font::{ascii::FONT_6X10, ascii::FONT_9X15, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Text};
use fakewatch_sdk::draw::Canvas;
use fakewatch_sdk::Frame;

/// Side of a plot in pixels.
pub const PLOT_SIZE: u32 = 640;
const MARGIN: i32 = 60;
/// Colours of successive series.
pub const PALETTE: [Rgb888; 6] = [
    Rgb888::new(31, 119, 180),
    Rgb888::new(214, 39, 40),
    Rgb888::new(44, 160, 44),
    Rgb888::new(255, 127, 14),
    Rgb888::new(148, 103, 189),
    Rgb888::new(23, 190, 207),
];
/// Colour of real samples.
pub const REAL: Rgb888 = Rgb888::new(31, 119, 180);
/// Colour of fake samples.
pub const FAKE: Rgb888 = Rgb888::new(214, 39, 40);

struct Axes {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Axes {
    fn to_px(&self, x: f64, y: f64) -> Point {
        let w = f64::from(PLOT_SIZE as i32 - 2 * MARGIN);
        let px = MARGIN as f64 + (x - self.x0) / (self.x1 - self.x0).max(1e-12) * w;
        let py =
            (PLOT_SIZE as i32 - MARGIN) as f64 - (y - self.y0) / (self.y1 - self.y0).max(1e-12) * w;
        Point::new(px.round() as i32, py.round() as i32)
    }
}

fn frame(title: &str) -> Result<Frame> {
    let mut f = Frame::filled(PLOT_SIZE, PLOT_SIZE, [255, 255, 255])?;
    let style = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
    let _ = Text::with_alignment(
        title,
        Point::new(PLOT_SIZE as i32 / 2, 30),
        style,
        Alignment::Center,
    )
    .draw(&mut Canvas(&mut f));
    Ok(f)
}

fn axes_box(f: &mut Frame, ax: &Axes, xlabel: &str, ylabel: &str, ticks: bool) {
    let mut c = Canvas(f);
    let side = PLOT_SIZE - 2 * MARGIN as u32;
    let _ = Rectangle::new(Point::new(MARGIN, MARGIN), Size::new(side, side))
        .into_styled(PrimitiveStyle::with_stroke(Rgb888::BLACK, 1))
        .draw(&mut c);
    let small = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
    let label = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
    if ticks {
        for i in 0..=5 {
            let t = f64::from(i) / 5.0;
            let x = ax.x0 + t * (ax.x1 - ax.x0);
            let y = ax.y0 + t * (ax.y1 - ax.y0);
            let px = ax.to_px(x, ax.y0);
            let py = ax.to_px(ax.x0, y);
            let _ = Line::new(px, px + Point::new(0, 5))
                .into_styled(PrimitiveStyle::with_stroke(Rgb888::BLACK, 1))
                .draw(&mut c);
            let _ = Text::with_alignment(
                &tick(x, ax.x1 - ax.x0),
                px + Point::new(0, 16),
                small,
                Alignment::Center,
            )
            .draw(&mut c);
            let _ = Line::new(py, py - Point::new(5, 0))
                .into_styled(PrimitiveStyle::with_stroke(Rgb888::BLACK, 1))
                .draw(&mut c);
            let _ = Text::with_alignment(
                &tick(y, ax.y1 - ax.y0),
                py - Point::new(8, -3),
                small,
                Alignment::Right,
            )
            .draw(&mut c);
        }
    }
    let bottom = PLOT_SIZE as i32 - MARGIN;
    let _ = Text::with_alignment(
        xlabel,
        Point::new(PLOT_SIZE as i32 / 2, bottom + 38),
        label,
        Alignment::Center,
    )
    .draw(&mut c);
    let _ = Text::new(ylabel, Point::new(6, MARGIN - 12), label).draw(&mut c);
}

/// A tick label with as many decimals as the axis span needs.
fn tick(v: f64, span: f64) -> String {
    match span.abs() {
        s if s >= 10.0 => format!("{v:.0}"),
        s if s >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn legend(f: &mut Frame, entries: &[(String, Rgb888)]) {
    let mut c = Canvas(f);
    let style = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = PLOT_SIZE as i32 - MARGIN - 20 - 20 * (entries.len() - 1 - i) as i32;
        let x = PLOT_SIZE as i32 / 2 - 110;
        let _ = Rectangle::new(Point::new(x, y - 8), Size::new(14, 10))
            .into_styled(PrimitiveStyle::with_fill(*color))
            .draw(&mut c);
        let _ = Text::new(name, Point::new(x + 20, y), style).draw(&mut c);
    }
}

fn save(f: &Frame, path: &Path) -> Result<()> {
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Both axes over `0..=1` (ROC, reliability).
const UNIT_SQUARE: Axes = Axes {
    x0: 0.0,
    x1: 1.0,
    y0: 0.0,
    y1: 1.0,
};

/// ROC curves: each series is a name and its `(fpr, tpr)` points.
pub fn roc(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    lines(
        path,
        title,
        &UNIT_SQUARE,
        ("false positive rate", "true positive rate"),
        series,
        true,
        false,
    )
}

/// A reliability diagram: per series, the `(mean predicted P(fake), share
/// fake)` point of each bin, over the diagonal of perfect calibration.
pub fn reliability(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    lines(
        path,
        title,
        &UNIT_SQUARE,
        ("predicted P(fake)", "observed share fake"),
        series,
        true,
        true,
    )
}

/// Curves over a shared x axis (for example validation AUC per training
/// step): x spans the data, y spans `y` (widened to the data if it is out).
pub fn curves(
    path: &Path,
    title: &str,
    labels: (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
    y: (f64, f64),
) -> Result<()> {
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = y;
    for &(x, v) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let ax = Axes { x0, x1, y0, y1 };
    lines(path, title, &ax, labels, series, false, true)
}

fn lines(
    path: &Path,
    title: &str,
    ax: &Axes,
    (xlabel, ylabel): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
    // A diagonal (chance for ROC, perfect calibration for reliability).
    diagonal: bool,
    // A dot on every point.
    markers: bool,
) -> Result<()> {
    let mut f = frame(title)?;
    {
        let mut c = Canvas(&mut f);
        if diagonal {
            let _ = Line::new(ax.to_px(ax.x0, ax.y0), ax.to_px(ax.x1, ax.y1))
                .into_styled(PrimitiveStyle::with_stroke(Rgb888::new(180, 180, 180), 1))
                .draw(&mut c);
        }
        for (i, (_, pts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for w in pts.windows(2) {
                let _ = Line::new(ax.to_px(w[0].0, w[0].1), ax.to_px(w[1].0, w[1].1))
                    .into_styled(PrimitiveStyle::with_stroke(color, 2))
                    .draw(&mut c);
            }
            for p in pts.iter().filter(|_| markers) {
                let _ = Circle::with_center(ax.to_px(p.0, p.1), 5)
                    .into_styled(PrimitiveStyle::with_fill(color))
                    .draw(&mut c);
            }
        }
    }
    axes_box(&mut f, ax, xlabel, ylabel, true);
    let entries: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), PALETTE[i % PALETTE.len()]))
        .collect();
    legend(&mut f, &entries);
    save(&f, path)
}

/// A 2-D scatter of points labelled real (false) or fake (true).
pub fn scatter(path: &Path, title: &str, points: &[[f64; 2]], fake: &[bool]) -> Result<()> {
    let mut f = frame(title)?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-6);
    let ax = Axes {
        x0: x0 - pad(x0, x1),
        x1: x1 + pad(x0, x1),
        y0: y0 - pad(y0, y1),
        y1: y1 + pad(y0, y1),
    };
    {
        let mut c = Canvas(&mut f);
        for (p, &is_fake) in points.iter().zip(fake) {
            let color = if is_fake { FAKE } else { REAL };
            let _ = Circle::with_center(ax.to_px(p[0], p[1]), 5)
                .into_styled(PrimitiveStyle::with_fill(color))
                .draw(&mut c);
        }
    }
    axes_box(&mut f, &ax, "t-SNE 1", "t-SNE 2", false);
    legend(&mut f, &[("real".into(), REAL), ("fake".into(), FAKE)]);
    save(&f, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_and_show_the_series() {
        let dir = std::env::temp_dir().join(format!("fw-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("roc.png");
        roc(
            &p,
            "ROC",
            &[("a".into(), vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)])],
        )
        .unwrap();
        let f = Frame::load(&p).unwrap();
        assert_eq!((f.width(), f.height()), (PLOT_SIZE, PLOT_SIZE));
        // The perfect curve runs up the left axis in the first series colour.
        let c = PALETTE[0];
        let mid = PLOT_SIZE / 2;
        let hit = (MARGIN as u32 - 2..MARGIN as u32 + 3)
            .any(|x| f.pixel(x, mid) == Some([c.r(), c.g(), c.b()]));
        assert!(hit);
        let s = dir.join("tsne.png");
        scatter(&s, "t-SNE", &[[0.0, 0.0], [1.0, 1.0]], &[false, true]).unwrap();
        assert!(Frame::load(&s).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
