//! Seeded image augmentations for training data, in Rust: JPEG
//! re-compression at a random quality, downscale and upscale, Gaussian blur,
//! sharpening, noise, colour jitter and horizontal flip (the SDK's
//! [`Frame::flip_horizontal`]). Also the float image
//! type and the filters the self-blend generator ([`crate::sbi`]) builds on.
//!
//! Everything takes an explicit [`Rng`], so one seed reproduces one image.

use anyhow::{ensure, Result};
use fakewatch_sdk::Frame;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// An RGB image with `f32` samples in `0..=255`, interleaved, no padding.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbF32 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` samples.
    pub data: Vec<f32>,
}

impl RgbF32 {
    /// Copies a frame.
    pub fn from_frame(f: &Frame) -> Self {
        Self {
            width: f.width() as usize,
            height: f.height() as usize,
            data: f.to_packed().into_iter().map(f32::from).collect(),
        }
    }

    /// Rounds and clamps back into a frame.
    pub fn to_frame(&self) -> Result<Frame> {
        let bytes = self
            .data
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        Ok(Frame::from_rgb(
            u32::try_from(self.width)?,
            u32::try_from(self.height)?,
            bytes,
        )?)
    }

    /// The pixel at `(x, y)`, with coordinates clamped to the image.
    fn at(&self, x: isize, y: isize) -> [f32; 3] {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Bilinear sample at a real position (edges clamped).
    pub fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (xi, yi) = (x0 as isize, y0 as isize);
        let p = [
            self.at(xi, yi),
            self.at(xi + 1, yi),
            self.at(xi, yi + 1),
            self.at(xi + 1, yi + 1),
        ];
        std::array::from_fn(|c| {
            let top = p[0][c] + (p[1][c] - p[0][c]) * fx;
            let bottom = p[2][c] + (p[3][c] - p[2][c]) * fx;
            top + (bottom - top) * fy
        })
    }

    /// Resamples to `width`×`height` (bilinear; blurred first when shrinking,
    /// so the result does not alias).
    pub fn resize(&self, width: usize, height: usize) -> Self {
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        let shrink = sx.max(sy);
        let src = if shrink > 1.0 {
            let mut b = self.clone();
            b.blur(0.5 * (shrink * shrink - 1.0).sqrt());
            b
        } else {
            self.clone()
        };
        let mut data = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let p = src.sample((x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5);
                data.extend_from_slice(&p);
            }
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Gaussian blur with standard deviation `sigma` pixels (separable;
    /// `sigma < 0.1` leaves the image as it is).
    pub fn blur(&mut self, sigma: f32) {
        blur_channels(&mut self.data, self.width, self.height, 3, sigma);
    }
}

/// Gaussian blur of an interleaved `channels`-channel buffer, in place.
pub fn blur_channels(data: &mut [f32], width: usize, height: usize, channels: usize, sigma: f32) {
    if sigma < 0.1 || width == 0 || height == 0 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mut tmp = vec![0.0f32; data.len()];
    let dims = (width, height, channels);
    // Horizontal pass into tmp, vertical pass back into data.
    blur_pass(data, &mut tmp, dims, &kernel, true);
    blur_pass(&tmp, data, dims, &kernel, false);
}

/// One 1-D pass of a separable filter along rows (`horizontal`) or columns,
/// edges clamped.
fn blur_pass(
    src: &[f32],
    dst: &mut [f32],
    (width, height, channels): (usize, usize, usize),
    kernel: &[f32],
    horizontal: bool,
) {
    let radius = (kernel.len() / 2) as isize;
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let mut acc = 0.0;
                for (k, w) in kernel.iter().enumerate() {
                    let off = k as isize - radius;
                    let (xx, yy) = if horizontal {
                        ((x as isize + off).clamp(0, width as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + off).clamp(0, height as isize - 1) as usize)
                    };
                    acc += w * src[(yy * width + xx) * channels + c];
                }
                dst[(y * width + x) * channels + c] = acc;
            }
        }
    }
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut Rng) -> f32 {
    let u1 = rng.uniform().max(1e-7);
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Uniform in `[lo, hi)`.
pub fn between(rng: &mut Rng, [lo, hi]: [f32; 2]) -> f32 {
    lo + (hi - lo) * rng.uniform()
}

/// Random brightness, contrast, saturation and per-channel gain, each drawn
/// within `±strength` (brightness in units of 255).
pub fn color_jitter(img: &mut RgbF32, strength: f32, rng: &mut Rng) {
    let s = strength.max(0.0);
    let brightness = between(rng, [-s, s]) * 255.0;
    let contrast = 1.0 + between(rng, [-s, s]);
    let saturation = 1.0 + between(rng, [-s, s]);
    let gain: [f32; 3] = std::array::from_fn(|_| 1.0 + between(rng, [-s, s]) * 0.5);
    let n = (img.data.len() / 3).max(1) as f32;
    let mean = img.data.iter().sum::<f32>() / (3.0 * n);
    for px in img.data.chunks_exact_mut(3) {
        let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
        for c in 0..3 {
            let v = grey + (px[c] - grey) * saturation;
            let v = mean + (v - mean) * contrast + brightness;
            px[c] = (v * gain[c]).clamp(0.0, 255.0);
        }
    }
}

/// Unsharp mask: `img + amount * (img - blur(img, sigma))`.
pub fn sharpen(img: &mut RgbF32, sigma: f32, amount: f32) {
    let mut b = img.clone();
    b.blur(sigma);
    for (v, bv) in img.data.iter_mut().zip(&b.data) {
        *v = (*v + amount * (*v - bv)).clamp(0.0, 255.0);
    }
}

/// Adds Gaussian noise of standard deviation `sigma` (units of 255).
pub fn noise(img: &mut RgbF32, sigma: f32, rng: &mut Rng) {
    for v in &mut img.data {
        *v = (*v + sigma * normal(rng)).clamp(0.0, 255.0);
    }
}

/// Shrinks by `factor` (0 < factor ≤ 1) and scales back up: the softness of
/// a face that was small in the frame.
pub fn downscale(img: &RgbF32, factor: f32) -> RgbF32 {
    let w = ((img.width as f32 * factor).round() as usize).max(1);
    let h = ((img.height as f32 * factor).round() as usize).max(1);
    img.resize(w, h).resize(img.width, img.height)
}

/// JPEG encode and decode at `quality`.
pub fn jpeg(img: &RgbF32, quality: u8) -> Result<RgbF32> {
    Ok(RgbF32::from_frame(
        &img.to_frame()?.jpeg_roundtrip(quality)?,
    ))
}

/// Which augmentations the data loader applies, each with its probability
/// and range. Defaults follow common practice for forgery detectors: mild
/// enough that a face stays a face, strong enough to hide compression and
/// scale differences between sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Probability of colour jitter, and its strength.
    pub color: f32,
    /// Jitter strength (see [`color_jitter`]).
    pub color_strength: f32,
    /// Probability of a downscale-upscale, and the factor range.
    pub downscale: f32,
    /// Downscale factor range.
    pub downscale_range: [f32; 2],
    /// Probability of a Gaussian blur, and its sigma range (pixels).
    pub blur: f32,
    /// Blur sigma range.
    pub blur_sigma: [f32; 2],
    /// Probability of Gaussian noise, and its sigma range (units of 255).
    pub noise: f32,
    /// Noise sigma range.
    pub noise_sigma: [f32; 2],
    /// Probability of JPEG re-compression, and the quality range.
    pub jpeg: f32,
    /// JPEG quality range (inclusive).
    pub jpeg_quality: [u8; 2],
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: 0.5,
            color: 0.5,
            color_strength: 0.1,
            downscale: 0.2,
            downscale_range: [0.5, 0.9],
            blur: 0.1,
            blur_sigma: [0.3, 1.2],
            noise: 0.1,
            noise_sigma: [2.0, 6.0],
            jpeg: 0.5,
            jpeg_quality: [60, 95],
        }
    }
}

impl AugmentConfig {
    /// Checks probabilities and ranges.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("flip", self.flip),
            ("color", self.color),
            ("downscale", self.downscale),
            ("blur", self.blur),
            ("noise", self.noise),
            ("jpeg", self.jpeg),
        ] {
            ensure!(
                (0.0..=1.0).contains(&p),
                "augment.{name}: probability {p} is outside 0..=1"
            );
        }
        let [dlo, dhi] = self.downscale_range;
        ensure!(
            0.05 <= dlo && dlo <= dhi && dhi <= 1.0,
            "augment.downscale_range must lie within 0.05..=1"
        );
        let [qlo, qhi] = self.jpeg_quality;
        ensure!(
            1 <= qlo && qlo <= qhi && qhi <= 100,
            "augment.jpeg_quality must lie within 1..=100"
        );
        for (name, [lo, hi]) in [
            ("blur_sigma", self.blur_sigma),
            ("noise_sigma", self.noise_sigma),
        ] {
            ensure!(
                0.0 <= lo && lo <= hi,
                "augment.{name} must be a non-negative range"
            );
        }
        Ok(())
    }

    /// Applies the augmentations in a fixed order (geometry, colour, scale,
    /// blur, noise, compression), each with its probability.
    pub fn apply(&self, frame: &Frame, rng: &mut Rng) -> Result<RgbF32> {
        let mut out = if rng.uniform() < self.flip {
            RgbF32::from_frame(&frame.flip_horizontal())
        } else {
            RgbF32::from_frame(frame)
        };
        if rng.uniform() < self.color {
            color_jitter(&mut out, self.color_strength, rng);
        }
        if rng.uniform() < self.downscale {
            out = downscale(&out, between(rng, self.downscale_range));
        }
        if rng.uniform() < self.blur {
            out.blur(between(rng, self.blur_sigma));
        }
        if rng.uniform() < self.noise {
            noise(&mut out, between(rng, self.noise_sigma), rng);
        }
        if rng.uniform() < self.jpeg {
            out = jpeg(&out, quality_between(rng, self.jpeg_quality))?;
        }
        Ok(out)
    }
}

/// A JPEG quality drawn uniformly from an inclusive range.
pub fn quality_between(rng: &mut Rng, [lo, hi]: [u8; 2]) -> u8 {
    let span = usize::from(hi.saturating_sub(lo)) + 1;
    lo.saturating_add(rng.below(span) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> RgbF32 {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[
                    (x * 255 / w) as f32,
                    (y * 255 / h) as f32,
                    ((x + y) % 256) as f32,
                ]);
            }
        }
        RgbF32 {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn frame_roundtrip_is_exact() {
        let img = gradient(17, 9);
        let back = RgbF32::from_frame(&img.to_frame().unwrap());
        assert_eq!(back, img);
    }

    #[test]
    fn blur_keeps_a_constant_image_and_smooths_an_edge() {
        let mut flat = RgbF32 {
            width: 8,
            height: 8,
            data: vec![100.0; 8 * 8 * 3],
        };
        flat.blur(2.0);
        assert!(flat.data.iter().all(|v| (v - 100.0).abs() < 1e-3));
        let mut edge = RgbF32 {
            width: 16,
            height: 1,
            data: (0..16)
                .flat_map(|x| [if x < 8 { 0.0 } else { 255.0 }; 3])
                .collect(),
        };
        edge.blur(1.5);
        let (a, b) = (edge.data[7 * 3], edge.data[8 * 3]);
        assert!(a > 20.0 && b < 235.0, "edge not smoothed: {a} {b}");
        assert!(edge.data[0] < 1.0 && edge.data[15 * 3] > 254.0);
    }

    #[test]
    fn resize_keeps_size_and_mean() {
        let img = gradient(40, 30);
        let small = img.resize(20, 15);
        assert_eq!((small.width, small.height), (20, 15));
        let mean = |i: &RgbF32| i.data.iter().sum::<f32>() / i.data.len() as f32;
        assert!((mean(&small) - mean(&img)).abs() < 3.0);
        let back = downscale(&img, 0.5);
        assert_eq!((back.width, back.height), (40, 30));
    }

    #[test]
    fn augment_is_seeded_and_validated() {
        let cfg = AugmentConfig {
            flip: 1.0,
            color: 1.0,
            downscale: 1.0,
            blur: 1.0,
            noise: 1.0,
            jpeg: 1.0,
            ..AugmentConfig::default()
        };
        cfg.validate().unwrap();
        let img = gradient(32, 32);
        let frame = img.to_frame().unwrap();
        let a = cfg.apply(&frame, &mut Rng::new(3)).unwrap();
        let b = cfg.apply(&frame, &mut Rng::new(3)).unwrap();
        let c = cfg.apply(&frame, &mut Rng::new(4)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, img);
        assert!(a.data.iter().all(|v| (0.0..=255.0).contains(v)));
        let bad = AugmentConfig {
            jpeg: 1.5,
            ..AugmentConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = AugmentConfig {
            jpeg_quality: [90, 10],
            ..AugmentConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn quality_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let q = quality_between(&mut rng, [60, 95]);
            assert!((60..=95).contains(&q));
        }
        assert_eq!(quality_between(&mut rng, [100, 100]), 100);
    }
}
