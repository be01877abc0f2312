//! The detection overlay used by `--draw`, drawn with embedded-graphics
//! through the SDK's [`Canvas`].

use embedded_graphics::mono_font::{ascii::FONT_10X20, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use fakewatch_sdk::draw::Canvas;
use fakewatch_sdk::{Detection, Frame};

/// Line width that stays visible from 480p to 4K.
pub fn stroke_for(frame: &Frame) -> u32 {
    (frame.width().max(frame.height()) / 400).max(2)
}

/// Draws boxes, landmarks and scores of `dets`.
pub fn draw_detections(frame: &mut Frame, dets: &[Detection], color: Rgb888) {
    let stroke = stroke_for(frame);
    let mut canvas = Canvas(frame);
    let text = MonoTextStyle::new(&FONT_10X20, color);
    for d in dets {
        let b = d.bbox;
        let (x, y) = (b.x1.round() as i32, b.y1.round() as i32);
        let (w, h) = (
            b.width().max(1.0).round() as u32,
            b.height().max(1.0).round() as u32,
        );
        let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
            .into_styled(PrimitiveStyle::with_stroke(color, stroke))
            .draw(&mut canvas);
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
