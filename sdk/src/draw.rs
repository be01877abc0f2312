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
}
