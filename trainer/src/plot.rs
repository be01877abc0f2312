//! PNG plots drawn with embedded-graphics on an SDK frame: ROC curves,
//! reliability diagrams, training curves and 2-D scatter plots (t-SNE of
//! embeddings), as in the paper's figures 5–7.

use std::path::Path;

use anyhow::{Context, Result};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle};
use embedded_graphics::text::Alignment;
use fakewatch_sdk::draw::Canvas;
use fakewatch_sdk::plot::{legend, series_color, text, Axes, Panel};
use fakewatch_sdk::Frame;

/// Side of a plot in pixels.
pub const PLOT_SIZE: u32 = 640;
const MARGIN: i32 = 60;
/// Colour of real samples.
pub const REAL: Rgb888 = Rgb888::new(31, 119, 180);
/// Colour of fake samples.
pub const FAKE: Rgb888 = Rgb888::new(214, 39, 40);

/// The square plotting area of a figure, over `axes`.
fn panel(axes: Axes) -> Panel {
    let side = PLOT_SIZE - 2 * MARGIN as u32;
    Panel {
        left: MARGIN,
        top: MARGIN,
        width: side,
        height: side,
        axes,
    }
}

fn frame(title: &str) -> Result<Frame> {
    let mut f = Frame::filled(PLOT_SIZE, PLOT_SIZE, [255, 255, 255])?;
    text(
        &mut f,
        title,
        Point::new(PLOT_SIZE as i32 / 2, 30),
        Alignment::Center,
    );
    Ok(f)
}

/// A legend in the lower middle of the plot.
fn lower_legend(f: &mut Frame, entries: &[(String, Rgb888)]) {
    legend(
        f,
        entries,
        Point::new(PLOT_SIZE as i32 / 2 - 110, PLOT_SIZE as i32 - MARGIN - 20),
    );
}

fn save(f: &Frame, path: &Path) -> Result<()> {
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// ROC curves: each series is a name and its `(fpr, tpr)` points.
pub fn roc(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    lines(
        path,
        title,
        Axes::UNIT,
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
        Axes::UNIT,
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
    lines(path, title, ax, labels, series, false, true)
}

fn lines(
    path: &Path,
    title: &str,
    ax: Axes,
    (xlabel, ylabel): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
    // A diagonal (chance for ROC, perfect calibration for reliability).
    diagonal: bool,
    // A dot on every point.
    markers: bool,
) -> Result<()> {
    let mut f = frame(title)?;
    let p = panel(ax);
    if diagonal {
        let _ = Line::new(p.to_px(ax.x0, ax.y0), p.to_px(ax.x1, ax.y1))
            .into_styled(PrimitiveStyle::with_stroke(Rgb888::new(180, 180, 180), 1))
            .draw(&mut Canvas(&mut f));
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        p.polyline(&mut f, pts, series_color(i), 2, markers);
    }
    p.frame_box(&mut f, xlabel, ylabel, true);
    let entries: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), series_color(i)))
        .collect();
    lower_legend(&mut f, &entries);
    save(&f, path)
}

/// A 2-D scatter of points labelled real (false) or fake (true).
pub fn scatter(path: &Path, title: &str, points: &[[f64; 2]], fake: &[bool]) -> Result<()> {
    let mut f = frame(title)?;
    let p = panel(Axes::spanning(points.iter().map(|q| (q[0], q[1])), 0.05));
    for (q, &is_fake) in points.iter().zip(fake) {
        p.dots(&mut f, &[(q[0], q[1])], if is_fake { FAKE } else { REAL });
    }
    p.frame_box(&mut f, "t-SNE 1", "t-SNE 2", false);
    lower_legend(&mut f, &[("real".into(), REAL), ("fake".into(), FAKE)]);
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
        let c = series_color(0);
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
