//! Drawing onto RGB frames with embedded-graphics: a `DrawTarget` over the
//! frame buffer (overlays, plots), with pixels outside the frame clipped.

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Pixel, Size};

use crate::frame::Frame;

/// A frame as an embedded-graphics draw target.
#[derive(Debug)]
pub struct Canvas<'a>(pub &'a mut Frame);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.0
                    .set_pixel(p.x as u32, p.y as u32, [c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// A `side`² nearest-neighbour thumbnail of the square around `b`, the
/// square `context` × the box's larger side, black outside the frame;
/// `None` for an empty box.
pub fn thumbnail(
    frame: &Frame,
    b: &crate::geometry::BBox,
    side: u32,
    context: f32,
) -> Option<Frame> {
    let span = (b.x2 - b.x1).max(b.y2 - b.y1) * context;
    if span.is_nan() || span <= 1.0 || side == 0 {
        return None;
    }
    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
    let (x0, y0) = (cx - span / 2.0, cy - span / 2.0);
    let mut out = Frame::filled(side, side, [0, 0, 0]).ok()?;
    let step = span / side as f32;
    for y in 0..side {
        let sy = y0 + (y as f32 + 0.5) * step;
        if sy < 0.0 || sy >= frame.height() as f32 {
            continue;
        }
        for x in 0..side {
            let sx = x0 + (x as f32 + 0.5) * step;
            if sx < 0.0 || sx >= frame.width() as f32 {
                continue;
            }
            if let Some(p) = frame.pixel(sx as u32, sy as u32) {
                out.set_pixel(x, y, p);
            }
        }
    }
    Some(out)
}

/// Copies `src` into `dst` with its top-left corner at `(left, top)`
/// (clipped at `dst`'s edges).
pub fn blit(dst: &mut Frame, src: &Frame, left: u32, top: u32) {
    for y in 0..src.height() {
        for x in 0..src.width() {
            if let Some(p) = src.pixel(x, y) {
                dst.set_pixel(left + x, top + y, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::prelude::*;
    use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};

    #[test]
    fn draws_inside_and_clips_outside() {
        let mut f = Frame::filled(8, 8, [0, 0, 0]).unwrap();
        Rectangle::new(Point::new(-2, -2), Size::new(4, 4))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(255, 0, 0)))
            .draw(&mut Canvas(&mut f))
            .unwrap();
        assert_eq!(f.pixel(0, 0), Some([255, 0, 0]));
        assert_eq!(f.pixel(1, 1), Some([255, 0, 0]));
        assert_eq!(f.pixel(2, 2), Some([0, 0, 0]));
    }

    #[test]
    fn thumbnails_cut_squares_and_blit_pastes_them() {
        let mut f = Frame::filled(40, 20, [200, 0, 0]).unwrap();
        for y in 0..20 {
            for x in 20..40 {
                f.set_pixel(x, y, [0, 0, 200]);
            }
        }
        let b = crate::geometry::BBox {
            x1: 25.0,
            y1: 5.0,
            x2: 35.0,
            y2: 15.0,
        };
        let t = thumbnail(&f, &b, 8, 1.0).unwrap();
        assert_eq!((t.width(), t.height()), (8, 8));
        assert_eq!(t.pixel(4, 4), Some([0, 0, 200]));
        // Three times the box reaches past the bottom edge: black there.
        let t = thumbnail(&f, &b, 8, 3.0).unwrap();
        assert_eq!(t.pixel(4, 7), Some([0, 0, 0]));
        let empty = crate::geometry::BBox { x2: 25.0, ..b };
        assert!(thumbnail(&f, &crate::geometry::BBox { y2: 5.0, ..empty }, 8, 1.0).is_none());
        let mut dst = Frame::filled(10, 10, [255, 255, 255]).unwrap();
        blit(&mut dst, &t, 6, 6);
        assert_eq!(dst.pixel(6, 6), t.pixel(0, 0));
        assert_eq!(dst.pixel(5, 5), Some([255, 255, 255]));
    }
}
