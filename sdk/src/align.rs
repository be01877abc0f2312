//! Face alignment: the FaceNet margin crop and a 5-point similarity warp.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::geometry::{Detection, Point};
use crate::resample::{resize_area_chw, Normalize, Rect};

/// The 5-point template of ArcFace-style aligners on a 112 × 112 face
/// (eyes, nose tip, mouth corners), scaled to the output size.
pub const TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// How faces are cut out of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignerKind {
    /// Detection box ± `margin / 2` px each side, clamped to the frame,
    /// resized to `size × size` (davidsandberg/facenet's crop).
    FacenetMargin,
    /// Similarity transform of the 5 landmarks onto [`TEMPLATE_112`].
    Similarity,
    /// A square of `side × box width`, centred `shift × box width` below
    /// the box centre, kept inside the frame, resized to `size × size`:
    /// the face at one scale and with its aspect ratio kept, as in tight
    /// face-crop datasets (MTCNN's boxes are about 1.3× taller than wide,
    /// so the margin crop squeezes faces vertically).
    BoxSquare,
}

/// Side of a [`AlignerKind::BoxSquare`] crop when the bundle gives none.
pub const DEFAULT_SQUARE_SIDE: f32 = 1.0;
/// Accepted [`AlignerConfig::side`] range (multiples of the box width).
const SIDE_RANGE: std::ops::RangeInclusive<f32> = 0.25..=4.0;
/// Accepted [`AlignerConfig::shift`] range (fractions of the box width).
const SHIFT_RANGE: std::ops::RangeInclusive<f32> = -1.0..=1.0;

fn default_side() -> f32 {
    DEFAULT_SQUARE_SIDE
}

fn is_default_side(v: &f32) -> bool {
    *v == DEFAULT_SQUARE_SIDE
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// Aligner parameters (the bundle's `aligner` object).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignerConfig {
    /// Cropping method.
    pub kind: AlignerKind,
    /// Output side in pixels.
    pub size: u32,
    /// Total margin in source pixels (`FacenetMargin` only).
    #[serde(default)]
    pub margin: u32,
    /// Side of the square as a multiple of the detection box's width
    /// (`BoxSquare` only; absent: 1).
    #[serde(default = "default_side", skip_serializing_if = "is_default_side")]
    pub side: f32,
    /// Downward shift of the square's centre from the box centre, as a
    /// fraction of the box width (`BoxSquare` only; absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shift: f32,
}

impl Default for AlignerConfig {
    fn default() -> Self {
        Self {
            kind: AlignerKind::FacenetMargin,
            size: 160,
            margin: 32,
            side: DEFAULT_SQUARE_SIDE,
            shift: 0.0,
        }
    }
}

/// A 2-D similarity transform `p' = [a -b; b a] p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// `scale · cos θ`.
    pub a: f32,
    /// `scale · sin θ`.
    pub b: f32,
    /// Translation x.
    pub tx: f32,
    /// Translation y.
    pub ty: f32,
}

impl Similarity {
    /// Least-squares similarity mapping `src` onto `dst` (Umeyama 1991, no
    /// reflection). `None` if the source points coincide.
    pub fn estimate(src: &[Point], dst: &[Point]) -> Option<Self> {
        if src.len() != dst.len() || src.is_empty() {
            return None;
        }
        let n = src.len() as f32;
        let mean = |p: &[Point]| {
            let (sx, sy) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q.x, y + q.y));
            (sx / n, sy / n)
        };
        let (msx, msy) = mean(src);
        let (mdx, mdy) = mean(dst);
        let (mut num_a, mut num_b, mut den) = (0f32, 0f32, 0f32);
        for (s, d) in src.iter().zip(dst) {
            let (xs, ys) = (s.x - msx, s.y - msy);
            let (xd, yd) = (d.x - mdx, d.y - mdy);
            num_a += xs * xd + ys * yd;
            num_b += xs * yd - ys * xd;
            den += xs * xs + ys * ys;
        }
        if den.is_nan() || den <= 1e-6 || !num_a.is_finite() || !num_b.is_finite() {
            return None;
        }
        let (a, b) = (num_a / den, num_b / den);
        Some(Self {
            a,
            b,
            tx: mdx - (a * msx - b * msy),
            ty: mdy - (b * msx + a * msy),
        })
    }
    /// Applies the transform.
    pub fn apply(&self, p: Point) -> Point {
        Point {
            x: self.a * p.x - self.b * p.y + self.tx,
            y: self.b * p.x + self.a * p.y + self.ty,
        }
    }
    /// The inverse transform (`None` if degenerate).
    pub fn inverse(&self) -> Option<Self> {
        let d = self.a * self.a + self.b * self.b;
        if d.is_nan() || d <= 1e-12 {
            return None;
        }
        let (a, b) = (self.a / d, -self.b / d);
        Some(Self {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// Cuts faces out of frames into normalised CHW tensors for a backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aligner {
    config: AlignerConfig,
}

impl Aligner {
    /// A validated aligner.
    pub fn new(config: AlignerConfig) -> Result<Self> {
        if !(16..=1024).contains(&config.size) {
            return Err(Error::config(format!(
                "aligner size {} not in 16..=1024",
                config.size
            )));
        }
        if config.margin > 4 * config.size {
            return Err(Error::config(format!(
                "aligner margin {} is implausibly large",
                config.margin
            )));
        }
        if !SIDE_RANGE.contains(&config.side) {
            return Err(Error::config(format!(
                "aligner side {} not in {:?} box widths",
                config.side, SIDE_RANGE
            )));
        }
        if !SHIFT_RANGE.contains(&config.shift) {
            return Err(Error::config(format!(
                "aligner shift {} not in {:?} box widths",
                config.shift, SHIFT_RANGE
            )));
        }
        Ok(Self { config })
    }

    /// The parameters.
    pub fn config(&self) -> &AlignerConfig {
        &self.config
    }

    /// Values one aligned face occupies (`3 · size²`).
    pub fn item_len(&self) -> usize {
        3 * self.config.size as usize * self.config.size as usize
    }

    /// The FaceNet crop rectangle for `det` (box ± margin/2, clamped), or `None`
    /// when it is empty after clamping.
    pub fn margin_rect(&self, det: &Detection, width: u32, height: u32) -> Option<Rect> {
        let m = self.config.margin as f32 / 2.0;
        let b = det.bbox;
        let clamp = |v: f32, hi: u32| {
            if v.is_finite() {
                v.clamp(0.0, hi as f32) as u32
            } else {
                0
            }
        };
        let r = Rect {
            x0: clamp(b.x1 - m, width),
            y0: clamp(b.y1 - m, height),
            x1: clamp(b.x2 + m, width),
            y1: clamp(b.y2 + m, height),
        };
        (r.x0 < r.x1 && r.y0 < r.y1).then_some(r)
    }

    /// The [`AlignerKind::BoxSquare`] rectangle for `det`: a square of
    /// `side × box width` centred `shift × box width` below the box centre,
    /// moved inside the frame (never cut, so the face keeps its scale and
    /// aspect), and shrunk to the frame's shorter side only when larger.
    /// `None` for a degenerate box or an empty frame.
    pub fn square_rect(&self, det: &Detection, width: u32, height: u32) -> Option<Rect> {
        let b = det.bbox;
        let bw = b.x2 - b.x1;
        let cx = (b.x1 + b.x2) / 2.0;
        let cy = (b.y1 + b.y2) / 2.0 + self.config.shift * bw;
        let side = (self.config.side * bw).round();
        if !(side.is_finite() && cx.is_finite() && cy.is_finite()) || side < 1.0 {
            return None;
        }
        let side = (side as u32).min(width).min(height);
        if side == 0 {
            return None;
        }
        let place = |centre: f32, extent: u32| {
            let hi = (extent - side) as f32;
            (centre - side as f32 / 2.0).round().clamp(0.0, hi) as u32
        };
        let (x0, y0) = (place(cx, width), place(cy, height));
        Some(Rect {
            x0,
            y0,
            x1: x0 + side,
            y1: y0 + side,
        })
    }

    /// The source rectangle of a rectangle-cropping aligner
    /// ([`Self::margin_rect`] or [`Self::square_rect`]); `None` for
    /// [`AlignerKind::Similarity`], which warps instead.
    pub fn crop_rect(&self, det: &Detection, width: u32, height: u32) -> Option<Rect> {
        match self.config.kind {
            AlignerKind::FacenetMargin => self.margin_rect(det, width, height),
            AlignerKind::BoxSquare => self.square_rect(det, width, height),
            AlignerKind::Similarity => None,
        }
    }

    /// Writes the aligned face of `det`, normalised by `norm`, into `out`
    /// (length [`Self::item_len`]).
    pub fn align_into(
        &self,
        frame: &Frame,
        det: &Detection,
        norm: Normalize,
        out: &mut [f32],
    ) -> Result<()> {
        if out.len() != self.item_len() {
            return Err(Error::config("aligner output buffer has the wrong length"));
        }
        let size = self.config.size as usize;
        match self.config.kind {
            AlignerKind::FacenetMargin | AlignerKind::BoxSquare => {
                let r = self
                    .crop_rect(det, frame.width(), frame.height())
                    .ok_or_else(|| Error::frame("face box lies outside the frame"))?;
                if r.width() as usize >= size && r.height() as usize >= size {
                    if resize_area_chw(frame, r, size, size, norm, out) {
                        return Ok(());
                    }
                    return Err(Error::frame("face crop does not fit the frame"));
                }
                // Upscaling: bilinear through the affine sampler.
                let sx = r.width() as f32 / size as f32;
                let sy = r.height() as f32 / size as f32;
                warp_bilinear(
                    frame,
                    |x, y| {
                        (
                            r.x0 as f32 + (x + 0.5) * sx - 0.5,
                            r.y0 as f32 + (y + 0.5) * sy - 0.5,
                        )
                    },
                    size,
                    norm,
                    out,
                );
                Ok(())
            }
            AlignerKind::Similarity => {
                let k = self.config.size as f32 / 112.0;
                let dst: Vec<Point> = TEMPLATE_112
                    .iter()
                    .map(|p| Point {
                        x: p[0] * k,
                        y: p[1] * k,
                    })
                    .collect();
                let t = Similarity::estimate(&det.landmarks.0, &dst)
                    .and_then(|t| t.inverse())
                    .ok_or_else(|| Error::frame("degenerate landmarks"))?;
                warp_bilinear(
                    frame,
                    |x, y| {
                        let p = t.apply(Point { x, y });
                        (p.x, p.y)
                    },
                    size,
                    norm,
                    out,
                );
                Ok(())
            }
        }
    }

    /// The aligned face as an RGB image (for inspection and training data).
    pub fn align_rgb(&self, frame: &Frame, det: &Detection) -> Result<Frame> {
        let mut buf = vec![0f32; self.item_len()];
        let id = Normalize {
            mean: [0.0; 3],
            scale: 1.0,
            bgr: false,
        };
        self.align_into(frame, det, id, &mut buf)?;
        let s = self.config.size as usize;
        let plane = s * s;
        let mut rgb = vec![0u8; plane * 3];
        for i in 0..plane {
            for c in 0..3 {
                rgb[i * 3 + c] = buf[c * plane + i].round().clamp(0.0, 255.0) as u8;
            }
        }
        Frame::from_rgb(self.config.size, self.config.size, rgb)
    }
}

/// Samples `size × size` output pixels at source positions `map(x, y)` with
/// bilinear interpolation (black outside the frame), normalised, CHW.
fn warp_bilinear(
    frame: &Frame,
    map: impl Fn(f32, f32) -> (f32, f32),
    size: usize,
    norm: Normalize,
    out: &mut [f32],
) {
    let (w, h) = (frame.width() as i64, frame.height() as i64);
    let plane = size * size;
    let order: [usize; 3] = if norm.bgr { [2, 1, 0] } else { [0, 1, 2] };
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let p = frame.pixel(x as u32, y as u32).unwrap_or([0; 3]);
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    };
    for oy in 0..size {
        for ox in 0..size {
            let (sx, sy) = map(ox as f32, oy as f32);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (xi, yi) = (x0 as i64, y0 as i64);
            let (a, b, c, d) = (
                px(xi, yi),
                px(xi + 1, yi),
                px(xi, yi + 1),
                px(xi + 1, yi + 1),
            );
            for (ch, &src) in order.iter().enumerate() {
                let top = a[src] + (b[src] - a[src]) * fx;
                let bot = c[src] + (d[src] - c[src]) * fx;
                let v = top + (bot - top) * fy;
                out[ch * plane + oy * size + ox] = (v - norm.mean[src]) * norm.scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{BBox, Landmarks};

    #[test]
    fn similarity_recovers_a_known_transform() {
        let t = Similarity {
            a: 1.2 * 0.3f32.cos(),
            b: 1.2 * 0.3f32.sin(),
            tx: 5.0,
            ty: -3.0,
        };
        let src: Vec<Point> = TEMPLATE_112
            .iter()
            .map(|p| Point { x: p[0], y: p[1] })
            .collect();
        let dst: Vec<Point> = src.iter().map(|&p| t.apply(p)).collect();
        let e = Similarity::estimate(&src, &dst).unwrap();
        assert!((e.a - t.a).abs() < 1e-4 && (e.b - t.b).abs() < 1e-4);
        assert!((e.tx - t.tx).abs() < 1e-2 && (e.ty - t.ty).abs() < 1e-2);
        let back = e.inverse().unwrap().apply(dst[2]);
        assert!((back.x - src[2].x).abs() < 1e-3 && (back.y - src[2].y).abs() < 1e-3);
        let same = vec![Point { x: 1.0, y: 1.0 }; 5];
        assert!(Similarity::estimate(&same, &dst).is_none());
    }

    #[test]
    fn margin_rect_clamps() {
        let al = Aligner::new(AlignerConfig::default()).unwrap();
        let det = Detection {
            bbox: BBox::new(-10.0, 5.0, 50.0, 90.0),
            score: 1.0,
            landmarks: Landmarks::default(),
        };
        assert_eq!(
            al.margin_rect(&det, 60, 100),
            Some(Rect {
                x0: 0,
                y0: 0,
                x1: 60,
                y1: 100
            })
        );
        let off = Detection {
            bbox: BBox::new(200.0, 200.0, 300.0, 300.0),
            ..det
        };
        assert_eq!(al.margin_rect(&off, 60, 100), None);
    }

    #[test]
    fn upscaled_crop_of_flat_colour_is_flat() {
        let f = Frame::filled(40, 40, [200, 100, 50]).unwrap();
        let al = Aligner::new(AlignerConfig {
            kind: AlignerKind::FacenetMargin,
            size: 64,
            margin: 0,
            ..AlignerConfig::default()
        })
        .unwrap();
        let det = Detection {
            bbox: BBox::new(5.0, 5.0, 35.0, 35.0),
            score: 1.0,
            landmarks: Landmarks::default(),
        };
        let rgb = al.align_rgb(&f, &det).unwrap();
        assert_eq!(rgb.pixel(0, 0), Some([200, 100, 50]));
        assert_eq!(rgb.pixel(63, 63), Some([200, 100, 50]));
    }

    #[test]
    fn similarity_warp_puts_landmarks_on_template() {
        // A frame with a bright dot at each template point shifted by (20, 10): the
        // aligned output must show the dots at the template positions.
        let mut f = Frame::filled(200, 200, [0, 0, 0]).unwrap();
        let mut pts = [Point::default(); 5];
        for (i, p) in TEMPLATE_112.iter().enumerate() {
            pts[i] = Point {
                x: p[0] + 20.0,
                y: p[1] + 10.0,
            };
            f.set_pixel(
                pts[i].x.round() as u32,
                pts[i].y.round() as u32,
                [255, 255, 255],
            );
        }
        let al = Aligner::new(AlignerConfig {
            kind: AlignerKind::Similarity,
            size: 112,
            margin: 0,
            ..AlignerConfig::default()
        })
        .unwrap();
        let det = Detection {
            bbox: BBox::default(),
            score: 1.0,
            landmarks: Landmarks(pts),
        };
        let out = al.align_rgb(&f, &det).unwrap();
        let p = TEMPLATE_112[2];
        let v = out.pixel(p[0].round() as u32, p[1].round() as u32).unwrap();
        assert!(v[0] > 100, "{v:?}");
    }

    fn square(side: f32, shift: f32) -> Aligner {
        Aligner::new(AlignerConfig {
            kind: AlignerKind::BoxSquare,
            size: 32,
            margin: 0,
            side,
            shift,
        })
        .unwrap()
    }

    fn det(x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            bbox: BBox::new(x1, y1, x2, y2),
            score: 1.0,
            landmarks: Landmarks::default(),
        }
    }

    #[test]
    fn square_rect_keeps_scale_and_aspect() {
        // A 100 × 130 box (MTCNN's usual aspect): a 0.8 × 100 = 80 px square,
        // its centre 0.1 × 100 = 10 px below the box centre (150, 215).
        let r = square(0.8, 0.1)
            .square_rect(&det(100.0, 150.0, 200.0, 280.0), 640, 480)
            .unwrap();
        assert_eq!(
            r,
            Rect {
                x0: 110,
                y0: 185,
                x1: 190,
                y1: 265
            }
        );
        // Near the frame's edge the square moves inside instead of being cut.
        let r = square(0.8, 0.1)
            .square_rect(&det(-20.0, 400.0, 80.0, 530.0), 640, 480)
            .unwrap();
        assert_eq!((r.x0, r.width(), r.height(), r.y1), (0, 80, 80, 480));
        // Larger than the frame: shrunk to its shorter side.
        let r = square(2.0, 0.0)
            .square_rect(&det(0.0, 0.0, 100.0, 100.0), 150, 120)
            .unwrap();
        assert_eq!((r.width(), r.height()), (120, 120));
        assert!(square(1.0, 0.0)
            .square_rect(&det(f32::NAN, 0.0, 10.0, 10.0), 100, 100)
            .is_none());
        assert!(square(1.0, 0.0)
            .square_rect(&det(5.0, 5.0, 5.2, 9.0), 100, 100)
            .is_none());
    }

    #[test]
    fn square_crop_does_not_squeeze_a_circle() {
        // A filled circle inside a tall box: the square crop keeps it round
        // (as wide as high in the output); the margin crop of the same box
        // squeezes it vertically.
        let mut f = Frame::filled(200, 200, [0, 0, 0]).unwrap();
        for y in 0..200u32 {
            for x in 0..200u32 {
                let (dx, dy) = (x as f32 - 100.0, y as f32 - 100.0);
                if dx * dx + dy * dy <= 30.0 * 30.0 {
                    f.set_pixel(x, y, [255, 255, 255]);
                }
            }
        }
        let tall = det(60.0, 48.0, 140.0, 152.0);
        let extent = |rgb: &Frame| {
            let s = rgb.width();
            let lit = |x: u32, y: u32| rgb.pixel(x, y).is_some_and(|p| p[0] > 127);
            let wide = (0..s).filter(|&x| lit(x, s / 2)).count();
            let high = (0..s).filter(|&y| lit(s / 2, y)).count();
            (wide, high)
        };
        let (w, h) = extent(&square(1.0, 0.0).align_rgb(&f, &tall).unwrap());
        assert!(w.abs_diff(h) <= 1, "square crop {w} × {h}");
        let margin = Aligner::new(AlignerConfig {
            size: 32,
            margin: 0,
            ..AlignerConfig::default()
        })
        .unwrap();
        let (w, h) = extent(&margin.align_rgb(&f, &tall).unwrap());
        assert!(w > h + 3, "margin crop {w} × {h}");
    }

    #[test]
    fn square_parameters_are_checked() {
        let bad = |side, shift| {
            Aligner::new(AlignerConfig {
                kind: AlignerKind::BoxSquare,
                side,
                shift,
                ..AlignerConfig::default()
            })
            .is_err()
        };
        assert!(bad(0.0, 0.0) && bad(f32::NAN, 0.0) && bad(1.0, 2.0) && bad(1.0, f32::NAN));
        assert!(!bad(0.88, 0.11));
    }
}
