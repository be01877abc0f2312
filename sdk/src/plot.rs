//! Line and scatter plots drawn onto [`Frame`]s with embedded-graphics: a
//! [`Panel`] maps data coordinates into a rectangle of the frame and draws
//! its box, ticks, labels, series and reference lines. The trainer's ROC,
//! reliability, training-curve and t-SNE figures and the edge app's scan
//! timelines (`fakewatch scan --explain`) are all drawn with it.

use embedded_graphics::mono_font::{ascii::FONT_6X10, ascii::FONT_9X15, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Text};

use crate::draw::Canvas;
use crate::frame::Frame;

/// Colours of successive series.
pub const PALETTE: [Rgb888; 6] = [
    Rgb888::new(31, 119, 180),
    Rgb888::new(214, 39, 40),
    Rgb888::new(44, 160, 44),
    Rgb888::new(255, 127, 14),
    Rgb888::new(148, 103, 189),
    Rgb888::new(23, 190, 207),
];

/// The colour of series `i` (the palette, repeated).
pub fn series_color(i: usize) -> Rgb888 {
    PALETTE[i % PALETTE.len()]
}

/// Data ranges of a panel's axes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axes {
    /// Left end of x.
    pub x0: f64,
    /// Right end of x.
    pub x1: f64,
    /// Bottom end of y.
    pub y0: f64,
    /// Top end of y.
    pub y1: f64,
}

impl Axes {
    /// Both axes over `0..=1`.
    pub const UNIT: Axes = Axes {
        x0: 0.0,
        x1: 1.0,
        y0: 0.0,
        y1: 1.0,
    };

    /// Axes spanning `points`, each side padded by `pad` of its span (unit
    /// axes when there are no points).
    pub fn spanning(points: impl IntoIterator<Item = (f64, f64)>, pad: f64) -> Axes {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 || y0 > y1 {
            return Axes::UNIT;
        }
        // A zero span (one point) still gets a box around it.
        let grow = |span: f64| if span > 0.0 { span * pad } else { 1e-6 };
        let (px, py) = (grow(x1 - x0), grow(y1 - y0));
        Axes {
            x0: x0 - px,
            x1: x1 + px,
            y0: y0 - py,
            y1: y1 + py,
        }
    }
}

/// A plotting rectangle of a frame (pixels) with its data axes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panel {
    /// Left edge, pixels.
    pub left: i32,
    /// Top edge, pixels.
    pub top: i32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Data ranges.
    pub axes: Axes,
}

/// Black, 1 px.
fn thin() -> PrimitiveStyle<Rgb888> {
    PrimitiveStyle::with_stroke(Rgb888::BLACK, 1)
}

/// A tick label with as many decimals as the axis span needs.
pub fn tick(v: f64, span: f64) -> String {
    match span.abs() {
        s if s >= 10.0 => format!("{v:.0}"),
        s if s >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

impl Panel {
    /// The pixel of data point `(x, y)`.
    pub fn to_px(&self, x: f64, y: f64) -> Point {
        let a = &self.axes;
        let px =
            f64::from(self.left) + (x - a.x0) / (a.x1 - a.x0).max(1e-12) * f64::from(self.width);
        let py = f64::from(self.top + self.height as i32)
            - (y - a.y0) / (a.y1 - a.y0).max(1e-12) * f64::from(self.height);
        Point::new(px.round() as i32, py.round() as i32)
    }

    /// The box, five ticks per axis (when `ticks`), and the axis labels
    /// (x below the box, y above its top-left corner).
    pub fn frame_box(&self, f: &mut Frame, xlabel: &str, ylabel: &str, ticks: bool) {
        let mut c = Canvas(f);
        let _ = Rectangle::new(
            Point::new(self.left, self.top),
            Size::new(self.width, self.height),
        )
        .into_styled(thin())
        .draw(&mut c);
        let small = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
        let label = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
        let a = self.axes;
        if ticks {
            for i in 0..=5 {
                let t = f64::from(i) / 5.0;
                let x = a.x0 + t * (a.x1 - a.x0);
                let y = a.y0 + t * (a.y1 - a.y0);
                let px = self.to_px(x, a.y0);
                let py = self.to_px(a.x0, y);
                let _ = Line::new(px, px + Point::new(0, 5))
                    .into_styled(thin())
                    .draw(&mut c);
                let _ = Text::with_alignment(
                    &tick(x, a.x1 - a.x0),
                    px + Point::new(0, 16),
                    small,
                    Alignment::Center,
                )
                .draw(&mut c);
                let _ = Line::new(py, py - Point::new(5, 0))
                    .into_styled(thin())
                    .draw(&mut c);
                let _ = Text::with_alignment(
                    &tick(y, a.y1 - a.y0),
                    py - Point::new(8, -3),
                    small,
                    Alignment::Right,
                )
                .draw(&mut c);
            }
        }
        let bottom = self.top + self.height as i32;
        let _ = Text::with_alignment(
            xlabel,
            Point::new(self.left + self.width as i32 / 2, bottom + 38),
            label,
            Alignment::Center,
        )
        .draw(&mut c);
        let _ = Text::new(ylabel, Point::new(self.left - 54, self.top - 12), label).draw(&mut c);
    }

    /// A polyline through `pts` (`width` px), with a dot on each point when
    /// `markers`.
    pub fn polyline(
        &self,
        f: &mut Frame,
        pts: &[(f64, f64)],
        color: Rgb888,
        width: u32,
        markers: bool,
    ) {
        let mut c = Canvas(f);
        for w in pts.windows(2) {
            let _ = Line::new(self.to_px(w[0].0, w[0].1), self.to_px(w[1].0, w[1].1))
                .into_styled(PrimitiveStyle::with_stroke(color, width))
                .draw(&mut c);
        }
        if markers {
            self.dots(f, pts, color);
        }
    }

    /// Dots at `pts`.
    pub fn dots(&self, f: &mut Frame, pts: &[(f64, f64)], color: Rgb888) {
        let mut c = Canvas(f);
        for p in pts {
            let _ = Circle::with_center(self.to_px(p.0, p.1), 5)
                .into_styled(PrimitiveStyle::with_fill(color))
                .draw(&mut c);
        }
    }

    /// A dashed horizontal line at `y` across the panel.
    pub fn dashed_hline(&self, f: &mut Frame, y: f64, color: Rgb888) {
        let mut c = Canvas(f);
        let (a, b) = (self.to_px(self.axes.x0, y), self.to_px(self.axes.x1, y));
        let mut x = a.x;
        while x < b.x {
            let end = (x + 8).min(b.x);
            let _ = Line::new(Point::new(x, a.y), Point::new(end, a.y))
                .into_styled(PrimitiveStyle::with_stroke(color, 2))
                .draw(&mut c);
            x += 14;
        }
    }
}

/// Text in the 9×15 font, black, its baseline at `at`, aligned as asked.
pub fn text(f: &mut Frame, s: &str, at: Point, alignment: Alignment) {
    let style = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
    let _ = Text::with_alignment(s, at, style, alignment).draw(&mut Canvas(f));
}

/// Small (6×10) text in `color`, its baseline at `at`.
pub fn small_text(f: &mut Frame, s: &str, at: Point, color: Rgb888) {
    let style = MonoTextStyle::new(&FONT_6X10, color);
    let _ = Text::new(s, at, style).draw(&mut Canvas(f));
}

/// A legend: one colour swatch and name per line, the last line's baseline
/// at `bottom_left`.
pub fn legend(f: &mut Frame, entries: &[(String, Rgb888)], bottom_left: Point) {
    let mut c = Canvas(f);
    let style = MonoTextStyle::new(&FONT_9X15, Rgb888::BLACK);
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = bottom_left.y - 20 * (entries.len() - 1 - i) as i32;
        let x = bottom_left.x;
        let _ = Rectangle::new(Point::new(x, y - 8), Size::new(14, 10))
            .into_styled(PrimitiveStyle::with_fill(*color))
            .draw(&mut c);
        let _ = Text::new(name, Point::new(x + 20, y), style).draw(&mut c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_maps_into_the_panel_and_lines_land_there() {
        let p = Panel {
            left: 10,
            top: 20,
            width: 100,
            height: 50,
            axes: Axes {
                x0: 0.0,
                x1: 10.0,
                y0: 0.0,
                y1: 1.0,
            },
        };
        assert_eq!(p.to_px(0.0, 0.0), Point::new(10, 70));
        assert_eq!(p.to_px(10.0, 1.0), Point::new(110, 20));
        assert_eq!(p.to_px(5.0, 0.5), Point::new(60, 45));
        let mut f = Frame::filled(130, 100, [255, 255, 255]).unwrap();
        let red = Rgb888::new(214, 39, 40);
        p.polyline(&mut f, &[(0.0, 0.5), (10.0, 0.5)], red, 1, false);
        assert_eq!(f.pixel(60, 45), Some([214, 39, 40]));
        p.dashed_hline(&mut f, 0.2, red);
        assert_eq!(f.pixel(12, 60), Some([214, 39, 40]), "a dash");
        assert_eq!(f.pixel(21, 60), Some([255, 255, 255]), "a gap");
        let a = Axes::spanning([(1.0, 2.0), (3.0, 6.0)], 0.0);
        assert_eq!((a.x0, a.x1, a.y0, a.y1), (1.0, 3.0, 2.0, 6.0));
        assert_eq!(Axes::spanning([], 0.1), Axes::UNIT);
        assert_eq!(tick(0.5, 1.0), "0.5");
        assert_eq!(tick(0.25, 0.5), "0.25");
    }
}
