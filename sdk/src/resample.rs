//! Area resampling of frame regions into normalised planar (CHW) f32 tensors.
//!
//! Uses the semantics of PyTorch's `interpolate(mode="area")` (adaptive average
//! pooling): output cell `i` of `n` averages input cells
//! `floor(i·N/n) .. ceil((i+1)·N/n)`. That is what facenet-pytorch's MTCNN uses
//! for its pyramid and crops, so detections match the reference.

use crate::frame::Frame;

/// An integer pixel rectangle, `x0..x1` × `y0..y1` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl Rect {
    /// The whole frame.
    pub fn full(frame: &Frame) -> Self {
        Rect {
            x0: 0,
            y0: 0,
            x1: frame.width(),
            y1: frame.height(),
        }
    }
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }
    /// Whether the rectangle is non-empty and inside `frame`.
    pub fn fits(&self, frame: &Frame) -> bool {
        self.x0 < self.x1
            && self.y0 < self.y1
            && self.x1 <= frame.width()
            && self.y1 <= frame.height()
    }
}

/// Per-channel normalisation `(x - mean) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Value subtracted from each 0–255 channel value.
    pub mean: [f32; 3],
    /// Factor applied after subtracting.
    pub scale: f32,
    /// Write channels as B, G, R instead of R, G, B.
    pub bgr: bool,
}

impl Normalize {
    /// `(x - 127.5) / 128` on RGB, as MTCNN and FaceNet expect.
    pub const MTCNN: Normalize = Normalize {
        mean: [127.5; 3],
        scale: 0.0078125,
        bgr: false,
    };
}

fn windows(n_in: usize, n_out: usize) -> Vec<(usize, usize)> {
    (0..n_out)
        .map(|i| {
            let s = i * n_in / n_out;
            let e = ((i + 1) * n_in).div_ceil(n_out);
            (s, e.max(s + 1))
        })
        .collect()
}

/// Area-resamples `roi` of `frame` to `ow × oh` and writes it normalised, planar
/// (C, H, W), into `out` (length `3 * oh * ow`). Returns `false` (writing
/// nothing) when `roi` does not fit the frame, an output side is 0, or `out`
/// has the wrong length.
pub fn resize_area_chw(
    frame: &Frame,
    roi: Rect,
    ow: usize,
    oh: usize,
    norm: Normalize,
    out: &mut [f32],
) -> bool {
    if !roi.fits(frame) || ow == 0 || oh == 0 || out.len() != 3 * ow * oh {
        return false;
    }
    let (iw, ih) = (roi.width() as usize, roi.height() as usize);
    let cols = windows(iw, ow);
    let rows = windows(ih, oh);
    // Horizontal pass: ih rows × ow cells × 3 channels (sums, not means).
    let mut tmp = vec![0f32; ih * ow * 3];
    let data = frame.data();
    let stride = frame.stride();
    for y in 0..ih {
        let base = (roi.y0 as usize + y) * stride + roi.x0 as usize * 3;
        let src = &data[base..base + iw * 3];
        let dst = &mut tmp[y * ow * 3..(y + 1) * ow * 3];
        for (j, &(s, e)) in cols.iter().enumerate() {
            let mut acc = [0f32; 3];
            for p in src[s * 3..e * 3].chunks_exact(3) {
                acc[0] += f32::from(p[0]);
                acc[1] += f32::from(p[1]);
                acc[2] += f32::from(p[2]);
            }
            let inv = 1.0 / (e - s) as f32;
            dst[j * 3] = acc[0] * inv;
            dst[j * 3 + 1] = acc[1] * inv;
            dst[j * 3 + 2] = acc[2] * inv;
        }
    }
    let plane = ow * oh;
    let order: [usize; 3] = if norm.bgr { [2, 1, 0] } else { [0, 1, 2] };
    for (i, &(s, e)) in rows.iter().enumerate() {
        let inv = 1.0 / (e - s) as f32;
        for j in 0..ow {
            let mut acc = [0f32; 3];
            for y in s..e {
                let t = &tmp[(y * ow + j) * 3..(y * ow + j) * 3 + 3];
                acc[0] += t[0];
                acc[1] += t[1];
                acc[2] += t[2];
            }
            for (c, &src_c) in order.iter().enumerate() {
                out[c * plane + i * ow + j] = (acc[src_c] * inv - norm.mean[src_c]) * norm.scale;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_adaptive_pooling() {
        assert_eq!(windows(4, 2), vec![(0, 2), (2, 4)]);
        assert_eq!(windows(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
        assert_eq!(windows(2, 4), vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
    }

    #[test]
    fn averages_and_normalises() {
        // 2x2 image: a single output pixel is the mean of the four.
        let f =
            Frame::from_rgb(2, 2, vec![0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]).unwrap();
        let mut out = vec![0f32; 3];
        let n = Normalize {
            mean: [0.0; 3],
            scale: 1.0,
            bgr: false,
        };
        assert!(resize_area_chw(&f, Rect::full(&f), 1, 1, n, &mut out));
        assert_eq!(out, vec![127.5; 3]);
        let mut out = vec![0f32; 3];
        assert!(resize_area_chw(
            &f,
            Rect::full(&f),
            1,
            1,
            Normalize::MTCNN,
            &mut out
        ));
        assert_eq!(out, vec![0.0; 3]);
        // Out of bounds region refused.
        assert!(!resize_area_chw(
            &f,
            Rect {
                x0: 1,
                y0: 0,
                x1: 3,
                y1: 2
            },
            1,
            1,
            n,
            &mut out
        ));
    }

    #[test]
    fn bgr_order() {
        let f = Frame::from_rgb(1, 1, vec![10, 20, 30]).unwrap();
        let mut out = vec![0f32; 3];
        let n = Normalize {
            mean: [0.0; 3],
            scale: 1.0,
            bgr: true,
        };
        assert!(resize_area_chw(&f, Rect::full(&f), 1, 1, n, &mut out));
        assert_eq!(out, vec![30.0, 20.0, 10.0]);
    }
}
