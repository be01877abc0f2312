//! Self-blended pseudo-fakes from real faces, after the idea of Shiohara &
//! Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022),
//! written from the paper's description for a 5-landmark detector.
//!
//! Source and target are two copies of the same real face. The source's
//! colour and sharpness are jittered and it is shifted and scaled slightly;
//! a soft mask around the inner face, built from the five MTCNN landmarks
//! (a convex outline, elastically deformed, blurred edge, random blend
//! ratio), pastes it over the target; a random JPEG re-compression follows.
//! What remains is what every face swap leaves — a blending boundary, a
//! colour and frequency mismatch, a small misalignment — with no identity
//! change, so a detector trained on it cannot lean on who the person is.

use anyhow::{ensure, Result};
use fakewatch_sdk::{Detection, Frame, Point};
use serde::{Deserialize, Serialize};

use crate::augment::{self, between, normal, quality_between, RgbF32};
use crate::rng::Rng;

/// Version of the generator; part of the embedding cache key, so a change
/// of the algorithm never reuses stale embeddings. Bump on any change that
/// alters the images.
pub const GENERATOR_VERSION: u32 = 1;

/// Blend ratios drawn from (SBI's choice: full blends are the most common).
pub const BLEND_RATIOS: [f32; 6] = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0];

/// The inner-face outline in landmark coordinates: `(a, b)` is the point
/// `eye_centre + a · (right_eye − left_eye) + b · (mouth_centre − eye_centre)`.
/// Brows above the eyes, cheeks beside them, the jaw below the mouth.
const OUTLINE: [(f32, f32); 10] = [
    (-0.85, -0.55),
    (0.0, -0.7),
    (0.85, -0.55),
    (1.05, 0.2),
    (0.95, 0.95),
    (0.55, 1.55),
    (0.0, 1.75),
    (-0.55, 1.55),
    (-0.95, 0.95),
    (-1.05, 0.2),
];

/// The mouth region in the same coordinates as [`OUTLINE`]: lips and the
/// skin around them, from below the nose to above the chin (`b = 1` is the
/// line through the mouth corners).
const MOUTH_OUTLINE: [(f32, f32); 8] = [
    (-0.8, 0.62),
    (0.0, 0.55),
    (0.8, 0.62),
    (0.95, 1.0),
    (0.65, 1.4),
    (0.0, 1.5),
    (-0.65, 1.4),
    (-0.95, 1.0),
];

/// Which part of the face a self-blend replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendRegion {
    /// The inner face (brows to jaw), as in SBI.
    #[default]
    Face,
    /// The mouth and the skin around it only (a lip-sync fake's region).
    Mouth,
}

/// Parameters of the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfBlendConfig {
    /// Range of the outline's scale around the nose (below 1: the inner
    /// face only; above: up to the hairline and jaw).
    pub mask_scale: [f32; 2],
    /// Elastic deformation of the mask, as a fraction of the face size.
    pub elastic: f32,
    /// Range of the mask edge's blur sigma, as a fraction of the face size.
    pub feather: [f32; 2],
    /// Strength of the source's colour jitter (see [`augment::color_jitter`]).
    pub color_strength: f32,
    /// Probability that the source is softened (downscaled and upscaled);
    /// otherwise it is sharpened.
    pub soften: f32,
    /// Largest shift of the source, as a fraction of the face size.
    pub shift: f32,
    /// Range of the source's scale.
    pub scale: [f32; 2],
    /// Probability of JPEG re-compression of the result.
    pub jpeg: f32,
    /// Its quality range (inclusive).
    pub jpeg_quality: [u8; 2],
    /// The region blended (the outline is scaled around the nose for the
    /// face, around the mouth's centre for the mouth).
    pub region: BlendRegion,
}

impl Default for SelfBlendConfig {
    fn default() -> Self {
        Self {
            mask_scale: [0.65, 1.0],
            elastic: 0.04,
            feather: [0.02, 0.08],
            color_strength: 0.1,
            soften: 0.5,
            shift: 0.03,
            scale: [0.95, 1.05],
            jpeg: 0.5,
            jpeg_quality: [60, 95],
            region: BlendRegion::Face,
        }
    }
}

impl SelfBlendConfig {
    /// Checks ranges and probabilities.
    pub fn validate(&self) -> Result<()> {
        let ordered = |[lo, hi]: [f32; 2]| lo.is_finite() && hi.is_finite() && lo <= hi;
        ensure!(
            ordered(self.mask_scale) && self.mask_scale[0] > 0.1,
            "self_blend.mask_scale must be an increasing range above 0.1"
        );
        ensure!(
            ordered(self.feather) && self.feather[0] >= 0.0,
            "self_blend.feather must be a non-negative range"
        );
        ensure!(
            ordered(self.scale) && self.scale[0] > 0.5 && self.scale[1] < 2.0,
            "self_blend.scale must be an increasing range within 0.5..2"
        );
        for (name, v) in [
            ("elastic", self.elastic),
            ("shift", self.shift),
            ("color_strength", self.color_strength),
        ] {
            ensure!(
                (0.0..=0.5).contains(&v),
                "self_blend.{name} must lie within 0..=0.5"
            );
        }
        for (name, p) in [("soften", self.soften), ("jpeg", self.jpeg)] {
            ensure!(
                (0.0..=1.0).contains(&p),
                "self_blend.{name}: probability {p} is outside 0..=1"
            );
        }
        let [qlo, qhi] = self.jpeg_quality;
        ensure!(
            1 <= qlo && qlo <= qhi && qhi <= 100,
            "self_blend.jpeg_quality must lie within 1..=100"
        );
        Ok(())
    }
}

/// A generated pseudo-fake.
#[derive(Debug, Clone)]
pub struct SelfBlended {
    /// The blended image, the size of the input.
    pub image: Frame,
    /// Blend weight of the source per pixel (`0..=1`, row-major).
    pub mask: Vec<f32>,
}

/// Makes one pseudo-fake of the face `det` in `frame`.
pub fn self_blend(
    frame: &Frame,
    det: &Detection,
    cfg: &SelfBlendConfig,
    rng: &mut Rng,
) -> Result<SelfBlended> {
    let lm = &det.landmarks.0;
    ensure!(
        lm.iter().all(|p| p.x.is_finite() && p.y.is_finite()),
        "landmarks are not finite"
    );
    let face = (det.bbox.width() * det.bbox.height()).max(0.0).sqrt();
    ensure!(face >= 8.0, "face too small to blend ({face:.1} px)");
    let target = RgbF32::from_frame(frame);
    let (w, h) = (target.width, target.height);

    // Source: colour and frequency jitter, then a small shift and scale.
    let mut source = target.clone();
    augment::color_jitter(&mut source, cfg.color_strength, rng);
    if rng.uniform() < cfg.soften {
        source = augment::downscale(&source, between(rng, [0.5, 0.9]));
    } else {
        augment::sharpen(&mut source, 1.0, between(rng, [0.3, 1.0]));
    }
    let centre = lm[2];
    let s = between(rng, cfg.scale);
    let dx = between(rng, [-cfg.shift, cfg.shift]) * face;
    let dy = between(rng, [-cfg.shift, cfg.shift]) * face;

    let mut mask = outline_mask(lm, w, h, face, cfg, rng);
    let ratio = BLEND_RATIOS[rng.below(BLEND_RATIOS.len())];
    mask.iter_mut().for_each(|m| *m *= ratio);

    let mut out = target.clone();
    for y in 0..h {
        for x in 0..w {
            let m = mask[y * w + x];
            if m <= 0.0 {
                continue;
            }
            let sx = centre.x + (x as f32 - centre.x - dx) / s;
            let sy = centre.y + (y as f32 - centre.y - dy) / s;
            let p = source.sample(sx, sy);
            let i = (y * w + x) * 3;
            for (o, pc) in out.data[i..i + 3].iter_mut().zip(p) {
                *o = m * pc + (1.0 - m) * *o;
            }
        }
    }
    if rng.uniform() < cfg.jpeg {
        out = augment::jpeg(&out, quality_between(rng, cfg.jpeg_quality))?;
    }
    Ok(SelfBlended {
        image: out.to_frame()?,
        mask,
    })
}

/// Side of one tile in [`example_grid`].
pub const GRID_TILE: usize = 160;

/// A PNG-ready image for people to check the generator: one row per input,
/// with the face, the blend mask, the self-blended result and the absolute
/// difference (×4), each scaled to [`GRID_TILE`] pixels.
pub fn example_grid(rows: &[(Frame, SelfBlended)]) -> Result<Frame> {
    ensure!(!rows.is_empty(), "no examples to show");
    let t = GRID_TILE;
    let (w, h) = (4 * t, rows.len() * t);
    let mut canvas = RgbF32 {
        width: w,
        height: h,
        data: vec![255.0; w * h * 3],
    };
    for (r, (face, blended)) in rows.iter().enumerate() {
        let a = RgbF32::from_frame(face);
        let b = RgbF32::from_frame(&blended.image);
        ensure!(
            (a.width, a.height) == (b.width, b.height) && blended.mask.len() == a.width * a.height,
            "example {r}: image, blend and mask sizes differ"
        );
        let mask = RgbF32 {
            width: a.width,
            height: a.height,
            data: blended.mask.iter().flat_map(|m| [m * 255.0; 3]).collect(),
        };
        let diff = RgbF32 {
            width: a.width,
            height: a.height,
            data: a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| ((x - y).abs() * 4.0).min(255.0))
                .collect(),
        };
        for (c, tile) in [a, mask, b, diff].iter().enumerate() {
            let small = tile.resize(t, t);
            for y in 0..t {
                let dst = ((r * t + y) * w + c * t) * 3;
                canvas.data[dst..dst + t * 3]
                    .copy_from_slice(&small.data[y * t * 3..(y + 1) * t * 3]);
            }
        }
    }
    canvas.to_frame()
}

/// The soft blend mask: the landmark outline, scaled, elastically deformed
/// and blurred.
fn outline_mask(
    lm: &[Point; 5],
    w: usize,
    h: usize,
    face: f32,
    cfg: &SelfBlendConfig,
    rng: &mut Rng,
) -> Vec<f32> {
    let eye = Point {
        x: (lm[0].x + lm[1].x) / 2.0,
        y: (lm[0].y + lm[1].y) / 2.0,
    };
    let mouth = Point {
        x: (lm[3].x + lm[4].x) / 2.0,
        y: (lm[3].y + lm[4].y) / 2.0,
    };
    let across = (lm[1].x - lm[0].x, lm[1].y - lm[0].y);
    let down = (mouth.x - eye.x, mouth.y - eye.y);
    let scale = between(rng, cfg.mask_scale);
    let (outline, anchor, inside_points): (&[(f32, f32)], Point, &[Point]) = match cfg.region {
        BlendRegion::Face => (&OUTLINE, lm[2], lm),
        BlendRegion::Mouth => (&MOUTH_OUTLINE, mouth, &lm[3..]),
    };
    let mut points: Vec<Point> = outline
        .iter()
        .map(|&(a, b)| {
            let p = Point {
                x: eye.x + a * across.0 + b * down.0,
                y: eye.y + a * across.1 + b * down.1,
            };
            Point {
                x: anchor.x + (p.x - anchor.x) * scale,
                y: anchor.y + (p.y - anchor.y) * scale,
            }
        })
        .collect();
    points.extend_from_slice(inside_points);
    let hull = convex_hull(points);

    // A smooth random displacement field: normal offsets on a 4×4 grid,
    // interpolated bilinearly.
    const GRID: usize = 4;
    let amp = cfg.elastic * face;
    let field: Vec<(f32, f32)> = (0..GRID * GRID)
        .map(|_| (amp * normal(rng), amp * normal(rng)))
        .collect();
    let disp = |x: f32, y: f32| -> (f32, f32) {
        let gx = (x / w.max(1) as f32 * (GRID - 1) as f32).clamp(0.0, (GRID - 1) as f32);
        let gy = (y / h.max(1) as f32 * (GRID - 1) as f32).clamp(0.0, (GRID - 1) as f32);
        let (x0, y0) = (
            (gx.floor() as usize).min(GRID - 2),
            (gy.floor() as usize).min(GRID - 2),
        );
        let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
        let f = |i: usize, j: usize| field[j * GRID + i];
        let lerp =
            |a: (f32, f32), b: (f32, f32), t: f32| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        lerp(
            lerp(f(x0, y0), f(x0 + 1, y0), fx),
            lerp(f(x0, y0 + 1), f(x0 + 1, y0 + 1), fx),
            fy,
        )
    };
    let mut mask = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (x as f32, y as f32);
            let (ddx, ddy) = disp(px, py);
            if inside(&hull, px + ddx, py + ddy) {
                mask[y * w + x] = 1.0;
            }
        }
    }
    augment::blur_channels(&mut mask, w, h, 1, between(rng, cfg.feather) * face);
    mask.iter_mut().for_each(|m| *m = m.clamp(0.0, 1.0));
    mask
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in image
/// coordinates' mathematical sense, without repeated end point.
fn convex_hull(mut pts: Vec<Point>) -> Vec<Point> {
    pts.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
    if pts.len() < 3 {
        return pts;
    }
    let cross =
        |o: Point, a: Point, b: Point| (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
    let mut hull: Vec<Point> = Vec::with_capacity(pts.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &Point>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// Whether `(x, y)` lies in the convex polygon `hull` (from [`convex_hull`]).
fn inside(hull: &[Point], x: f32, y: f32) -> bool {
    if hull.len() < 3 {
        return false;
    }
    (0..hull.len()).all(|i| {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        (b.x - a.x) * (y - a.y) - (b.y - a.y) * (x - a.x) >= 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::{BBox, Landmarks};

    fn face_frame() -> (Frame, Detection) {
        let (w, h) = (96u32, 112u32);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[
                    (120 + (x % 32)) as u8,
                    (90 + (y % 16) * 2) as u8,
                    (60 + ((x + y) % 8) * 4) as u8,
                ]);
            }
        }
        let frame = Frame::from_rgb(w, h, data).unwrap();
        let p = |x, y| Point { x, y };
        let det = Detection {
            bbox: BBox {
                x1: 16.0,
                y1: 12.0,
                x2: 80.0,
                y2: 100.0,
            },
            score: 0.99,
            landmarks: Landmarks([
                p(36.0, 48.0),
                p(60.0, 48.0),
                p(48.0, 62.0),
                p(38.0, 76.0),
                p(58.0, 76.0),
            ]),
        };
        (frame, det)
    }

    #[test]
    fn hull_and_inside() {
        let p = |x, y| Point { x, y };
        let hull = convex_hull(vec![
            p(0.0, 0.0),
            p(10.0, 0.0),
            p(10.0, 10.0),
            p(0.0, 10.0),
            p(5.0, 5.0),
        ]);
        assert_eq!(hull.len(), 4);
        assert!(inside(&hull, 5.0, 5.0));
        assert!(inside(&hull, 0.5, 9.5));
        assert!(!inside(&hull, 11.0, 5.0));
        assert!(!inside(&hull, 5.0, -0.5));
    }

    #[test]
    fn blend_changes_the_face_not_the_corners() {
        let (frame, det) = face_frame();
        let cfg = SelfBlendConfig {
            jpeg: 0.0,
            ..SelfBlendConfig::default()
        };
        let b = self_blend(&frame, &det, &cfg, &mut Rng::new(5)).unwrap();
        assert_eq!(
            (b.image.width(), b.image.height()),
            (frame.width(), frame.height())
        );
        let w = frame.width() as usize;
        // Mask: strong at the nose, zero in the corners.
        assert!(b.mask[62 * w + 48] > 0.2, "{}", b.mask[62 * w + 48]);
        assert_eq!(b.mask[0], 0.0);
        assert_eq!(b.mask[b.mask.len() - 1], 0.0);
        // Corners untouched (no JPEG), the face changed.
        assert_eq!(b.image.pixel(0, 0), frame.pixel(0, 0));
        assert_eq!(b.image.pixel(95, 111), frame.pixel(95, 111));
        let diff: u32 = (40..70)
            .flat_map(|y| (36..60).map(move |x| (x, y)))
            .map(|(x, y)| {
                let (a, c) = (b.image.pixel(x, y).unwrap(), frame.pixel(x, y).unwrap());
                (0..3).map(|i| a[i].abs_diff(c[i]) as u32).sum::<u32>()
            })
            .sum();
        assert!(diff > 0, "the blend left the face unchanged");
    }

    #[test]
    fn a_mouth_blend_covers_the_mouth_and_not_the_eyes() {
        let (frame, det) = face_frame();
        let cfg = SelfBlendConfig {
            jpeg: 0.0,
            feather: [0.0, 0.0],
            elastic: 0.0,
            region: BlendRegion::Mouth,
            ..SelfBlendConfig::default()
        };
        let face = SelfBlendConfig {
            region: BlendRegion::Face,
            ..cfg.clone()
        };
        let w = frame.width() as usize;
        for seed in 0..8 {
            let m = self_blend(&frame, &det, &cfg, &mut Rng::new(seed))
                .unwrap()
                .mask;
            // Between the mouth corners (48, 76): blended; at the eyes (36, 48), (60, 48): not.
            assert!(
                m[76 * w + 48] > 0.2,
                "seed {seed}: mouth {}",
                m[76 * w + 48]
            );
            assert_eq!(m[48 * w + 36], 0.0, "seed {seed}: left eye");
            assert_eq!(m[48 * w + 60], 0.0, "seed {seed}: right eye");
            let f = self_blend(&frame, &det, &face, &mut Rng::new(seed))
                .unwrap()
                .mask;
            assert!(
                m.iter().filter(|&&v| v > 0.0).count() < f.iter().filter(|&&v| v > 0.0).count(),
                "seed {seed}: the mouth region is smaller than the face's"
            );
        }
    }

    #[test]
    fn blend_is_seeded() {
        let (frame, det) = face_frame();
        let cfg = SelfBlendConfig::default();
        let a = self_blend(&frame, &det, &cfg, &mut Rng::new(9)).unwrap();
        let b = self_blend(&frame, &det, &cfg, &mut Rng::new(9)).unwrap();
        let c = self_blend(&frame, &det, &cfg, &mut Rng::new(10)).unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.mask, b.mask);
        assert_ne!(a.mask, c.mask);
    }

    #[test]
    fn bad_input_is_an_error() {
        let (frame, mut det) = face_frame();
        det.landmarks.0[1].x = f32::NAN;
        assert!(self_blend(&frame, &det, &SelfBlendConfig::default(), &mut Rng::new(1)).is_err());
        let (frame, mut det) = face_frame();
        det.bbox.x2 = det.bbox.x1 + 2.0;
        det.bbox.y2 = det.bbox.y1 + 2.0;
        assert!(self_blend(&frame, &det, &SelfBlendConfig::default(), &mut Rng::new(1)).is_err());
        let bad = SelfBlendConfig {
            mask_scale: [1.2, 0.9],
            ..SelfBlendConfig::default()
        };
        assert!(bad.validate().is_err());
        SelfBlendConfig::default().validate().unwrap();
    }
}
