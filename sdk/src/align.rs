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
}

impl Default for AlignerConfig {
    fn default() -> Self {
        Self {
            kind: AlignerKind::FacenetMargin,
            size: 160,
            margin: 32,
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
            AlignerKind::FacenetMargin => {
                let r = self
                    .margin_rect(det, frame.width(), frame.height())
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
}
