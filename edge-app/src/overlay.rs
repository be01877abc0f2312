//! Overlays drawn with embedded-graphics through the SDK's [`Canvas`]: the
//! detections of `faces --draw` and the verdict overlay of `run`.

use embedded_graphics::mono_font::{ascii::FONT_10X20, MonoTextStyle};
use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use fakewatch_sdk::draw::Canvas;
use fakewatch_sdk::verdict::{describe, Unknown};
use fakewatch_sdk::{BBox, Detection, Frame, Label};

/// Line width that stays visible from 480p to 4K.
pub fn stroke_for(frame: &Frame) -> u32 {
    (frame.width().max(frame.height()) / 400).max(2)
}

/// Outlines `b`; returns its top-left corner and height in whole pixels.
fn draw_box(canvas: &mut Canvas<'_>, b: BBox, color: Rgb888, stroke: u32) -> (i32, i32, u32) {
    let (x, y) = (b.x1.round() as i32, b.y1.round() as i32);
    let (w, h) = (
        b.width().max(1.0).round() as u32,
        b.height().max(1.0).round() as u32,
    );
    let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
        .into_styled(PrimitiveStyle::with_stroke(color, stroke))
        .draw(canvas);
    (x, y, h)
}

/// Draws boxes, landmarks and scores of `dets`.
pub fn draw_detections(frame: &mut Frame, dets: &[Detection], color: Rgb888) {
    let stroke = stroke_for(frame);
    let mut canvas = Canvas(frame);
    let text = MonoTextStyle::new(&FONT_10X20, color);
    for d in dets {
        let (x, y, _) = draw_box(&mut canvas, d.bbox, color, stroke);
        for p in d.landmarks.0 {
            let r = (stroke * 2).max(3);
            let _ = Circle::with_center(Point::new(p.x.round() as i32, p.y.round() as i32), r)
                .into_styled(PrimitiveStyle::with_fill(Rgb888::new(255, 64, 64)))
                .draw(&mut canvas);
        }
        let label = format!("{:.3}", d.score);
        let _ = Text::with_baseline(&label, Point::new(x, (y - 22).max(0)), text, Baseline::Top)
            .draw(&mut canvas);
    }
}

/// Colour of a verdict label.
pub fn label_color(label: Label) -> Rgb888 {
    match label {
        Label::Fake => Rgb888::new(230, 40, 40),
        Label::Real => Rgb888::new(40, 200, 80),
        Label::Unknown => Rgb888::new(240, 200, 40),
    }
}

/// Text magnification that keeps the 10×20 font legible: 1 up to 540 lines,
/// 2 at 1080p, 4 at 2160p.
pub fn text_scale(frame: &Frame) -> u32 {
    (frame.height() / 540).max(1)
}

/// A 1-bit canvas the font is rendered into before scaling.
struct Mask {
    w: u32,
    h: u32,
    bits: Vec<bool>,
}

impl OriginDimensions for Mask {
    fn size(&self) -> Size {
        Size::new(self.w, self.h)
    }
}

impl DrawTarget for Mask {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<BinaryColor>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.w && (p.y as u32) < self.h {
                self.bits[p.y as usize * self.w as usize + p.x as usize] = c.is_on();
            }
        }
        Ok(())
    }
}

/// Draws `text` at (`x`, `y`) magnified `scale` times, on a filled
/// background; returns the drawn width and height.
pub fn draw_text(
    frame: &mut Frame,
    text: &str,
    x: i32,
    y: i32,
    scale: u32,
    fg: Rgb888,
    bg: Rgb888,
) -> (u32, u32) {
    let (cw, ch) = (10u32, 20u32);
    let pad = 2u32;
    let n = text.chars().count() as u32;
    let mut mask = Mask {
        w: n * cw + 2 * pad,
        h: ch + 2 * pad,
        bits: vec![false; ((n * cw + 2 * pad) * (ch + 2 * pad)) as usize],
    };
    let style = MonoTextStyle::new(&FONT_10X20, BinaryColor::On);
    let _ = Text::with_baseline(
        text,
        Point::new(pad as i32, pad as i32),
        style,
        Baseline::Top,
    )
    .draw(&mut mask);
    let (fg, bg) = ([fg.r(), fg.g(), fg.b()], [bg.r(), bg.g(), bg.b()]);
    let s = scale.max(1);
    for my in 0..mask.h {
        for mx in 0..mask.w {
            let c = if mask.bits[(my * mask.w + mx) as usize] {
                fg
            } else {
                bg
            };
            for dy in 0..s {
                for dx in 0..s {
                    let (px, py) = (x + (mx * s + dx) as i32, y + (my * s + dy) as i32);
                    if px >= 0 && py >= 0 {
                        frame.set_pixel(px as u32, py as u32, c);
                    }
                }
            }
        }
    }
    (mask.w * s, mask.h * s)
}

/// A face on a live overlay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceMark {
    /// Box in frame pixels.
    pub bbox: BBox,
    /// Track id.
    pub track: Option<u32>,
    /// The track's verdict.
    pub label: Label,
    /// The track's score (its window mean; P(fake) when calibrated).
    pub score: Option<f32>,
}

/// The stream-wide part of a live overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    /// Stream verdict.
    pub label: Label,
    /// Stream score (P(fake) when calibrated).
    pub score: Option<f32>,
    /// Why the stream verdict is unknown.
    pub unknown: Option<Unknown>,
    /// Whether scores are calibrated P(fake) (else raw classifier scores).
    pub calibrated: bool,
    /// Figures line (fps, latency).
    pub figures: String,
    /// No analysis has finished yet (the verdict is not "no face" but "not yet").
    pub pending: bool,
}

/// Draws boxes coloured by verdict with track id and score, a verdict banner
/// and a figures line.
pub fn draw_live(frame: &mut Frame, faces: &[FaceMark], banner: &Banner) {
    let stroke = stroke_for(frame);
    let scale = text_scale(frame);
    let black = Rgb888::new(0, 0, 0);
    for f in faces {
        let color = label_color(f.label);
        let (x, y, h) = draw_box(&mut Canvas(frame), f.bbox, color, stroke);
        let id = f.track.map_or("-".to_string(), |t| t.to_string());
        let text = format!(
            "#{id} {}",
            describe(f.label, f.score, None, banner.calibrated)
        );
        let th = (20 + 4) * scale as i32;
        let ty = if y - th >= 0 { y - th } else { y + h as i32 };
        draw_text(frame, &text, x, ty, scale, black, color);
    }
    let verdict = if banner.pending {
        "ANALYSING".to_string()
    } else {
        describe(
            banner.label,
            banner.score,
            banner.unknown,
            banner.calibrated,
        )
    };
    let (_, bh) = draw_text(
        frame,
        &verdict,
        0,
        0,
        scale * 2,
        Rgb888::new(255, 255, 255),
        label_color(banner.label),
    );
    draw_text(
        frame,
        &banner.figures,
        0,
        bh as i32,
        scale,
        Rgb888::new(255, 255, 255),
        black,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_overlay_colours_boxes_by_verdict_and_scales_text() {
        let mut f = Frame::filled(1920, 1080, [128, 128, 128]).unwrap();
        let faces = [FaceMark {
            bbox: BBox {
                x1: 800.0,
                y1: 400.0,
                x2: 1000.0,
                y2: 650.0,
            },
            track: Some(3),
            label: Label::Fake,
            score: Some(0.97),
        }];
        let banner = Banner {
            label: Label::Fake,
            score: Some(0.97),
            unknown: None,
            calibrated: true,
            figures: "25.0 fps".into(),
            pending: false,
        };
        draw_live(&mut f, &faces, &banner);
        // Box edge in the fake colour, inside untouched.
        assert_eq!(f.pixel(900, 400), Some([230, 40, 40]));
        assert_eq!(f.pixel(900, 520), Some([128, 128, 128]));
        // The banner at 1080p is drawn at 4x: 24 px of font box -> 96 px tall.
        assert_eq!(text_scale(&f), 2);
        assert_eq!(f.pixel(2, 90), Some([230, 40, 40]));
        assert_eq!(f.pixel(2, 100), Some([0, 0, 0]));
    }
}
