//! Per-track sequences: each track keeps its last [`CAPACITY`] analysed
//! frames as fixed-size feature rows (`heapless`), the input of a sequence
//! model (the paper's LSTM/GRU baseline, issue 26) that looks at how a face
//! changes over time where a frame model sees one frame at a time.
//!
//! The features of a step (`track-motion-v1`, in [`FEATURE_NAMES`] order):
//! the frame classifier's logit, the box centre's move since the track's
//! previous step (in box widths / heights), the change of the box's log
//! width and log height, and how much the face's embedding changed
//! (1 − cosine). A track's first step has no previous one: its changes
//! are 0. Scan, live mode and the C ABI fill them through [`crate::Session`]
//! alike, and the trainer reads them the same way.
//!
//! A second feature set, `face-crops-v1` ([`CROP_FEATURE_SET`]), is the
//! pixels themselves: each step keeps a small square crop of the face
//! ([`face_crop`]), and a 3-D convolution network (the paper's C3D
//! baseline) reads the newest window of them as one clip `[1, 3, T, S, S]`.
//! The crops live in a ring allocated once per track ([`CropRing`]); only
//! bundles whose model reads them make them.
//!
//! A bundle may carry a sequence model ([`SequenceSpec`]): an ONNX file that
//! turns a track's newest [`SequenceSpec::steps`] steps into a logit, and a
//! [`Fusion`] rule, learned on validation clips, that combines it with the
//! track's frame score. [`crate::Session`] runs it for every track with
//! enough steps and the verdict module fuses the two
//! ([`crate::verdict::Aggregator`]); a bundle without one behaves as if
//! there were no sequences.

use std::sync::Arc;

use heapless::Deque;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, InferenceModel, ShapePolicy, Tensor};
use crate::bundle::Bundle;
use crate::embed::Embedding;
use crate::error::{Error, Result};
use crate::geometry::BBox;

/// Features per step.
pub const FEATURES: usize = 6;
/// Steps a track keeps (its newest ones).
pub const CAPACITY: usize = 32;
/// Name of the feature set (stored with a sequence model).
pub const FEATURE_SET: &str = "track-motion-v1";
/// Name of the crop feature set: a window of face crops, planar RGB.
pub const CROP_FEATURE_SET: &str = "face-crops-v1";
/// Sides a crop model may ask for, in pixels.
pub const CROP_SIDES: std::ops::RangeInclusive<u32> = 16..=128;
/// Side of the square a crop covers, as a multiple of the box's longer side
/// (the same square as the explanation's thumbnails).
pub const CROP_CONTEXT: f32 = 1.2;
/// Samples per crop pixel along each axis (their mean is the pixel: an
/// area filter, so shrinking a face does not alias its edges).
const CROP_SUPERSAMPLE: u32 = 3;
/// What each feature is, in order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "frame_logit",
    "centre_dx",
    "centre_dy",
    "log_width_change",
    "log_height_change",
    "appearance_change",
];

/// One analysed frame of a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceStep {
    /// The session's frame number (0 for its first analysed frame).
    pub frame: u64,
    /// The features, in [`FEATURE_NAMES`] order.
    pub features: [f32; FEATURES],
}

/// The newest steps of one track.
#[derive(Debug, Clone, Default)]
pub struct TrackSequence {
    steps: Deque<SequenceStep, CAPACITY>,
    last_box: Option<BBox>,
    last_embedding: Option<Embedding>,
    crops: Option<CropRing>,
}

/// The face crop of `bbox` in `frame` that crop sequence models read: the
/// square of [`CROP_CONTEXT`] × the box's longer side around its centre,
/// area-sampled to `side × side`, planar RGB (`[3, side, side]`, bytes).
/// Outside the frame is black. `None` for an empty box or a side outside
/// [`CROP_SIDES`].
pub fn face_crop(frame: &crate::Frame, bbox: &BBox, side: u32) -> Option<Vec<u8>> {
    let span = (bbox.x2 - bbox.x1).max(bbox.y2 - bbox.y1) * CROP_CONTEXT;
    if !span.is_finite() || span <= 1.0 || !CROP_SIDES.contains(&side) {
        return None;
    }
    let (cx, cy) = ((bbox.x1 + bbox.x2) / 2.0, (bbox.y1 + bbox.y2) / 2.0);
    let (x0, y0) = (cx - span / 2.0, cy - span / 2.0);
    let s = side as usize;
    let step = span / side as f32;
    let sub = step / CROP_SUPERSAMPLE as f32;
    let taps = CROP_SUPERSAMPLE * CROP_SUPERSAMPLE;
    let mut out = vec![0u8; 3 * s * s];
    for y in 0..s {
        for x in 0..s {
            let mut acc = [0u32; 3];
            for j in 0..CROP_SUPERSAMPLE {
                let sy = y0 + y as f32 * step + (j as f32 + 0.5) * sub;
                for i in 0..CROP_SUPERSAMPLE {
                    let sx = x0 + x as f32 * step + (i as f32 + 0.5) * sub;
                    if sx < 0.0 || sy < 0.0 {
                        continue;
                    }
                    if let Some(p) = frame.pixel(sx as u32, sy as u32) {
                        for c in 0..3 {
                            acc[c] += u32::from(p[c]);
                        }
                    }
                }
            }
            for c in 0..3 {
                out[c * s * s + y * s + x] = ((acc[c] + taps / 2) / taps) as u8;
            }
        }
    }
    Some(out)
}

/// A track's newest face crops: a ring of `capacity` crops of one side,
/// allocated once when the track's first crop arrives.
#[derive(Debug, Clone)]
pub struct CropRing {
    side: usize,
    capacity: usize,
    data: Vec<u8>,
    /// Slot the next crop goes to.
    next: usize,
    len: usize,
}

impl CropRing {
    /// An empty ring of `capacity` crops of `side × side` pixels.
    pub fn new(side: usize, capacity: usize) -> Self {
        Self {
            side,
            capacity,
            data: vec![0; capacity * 3 * side * side],
            next: 0,
            len: 0,
        }
    }

    fn crop_len(&self) -> usize {
        3 * self.side * self.side
    }

    /// Adds a crop (planar RGB, [`face_crop`]); the oldest goes when full.
    /// A crop of another size is refused.
    pub fn push(&mut self, crop: &[u8]) -> Result<()> {
        let n = self.crop_len();
        if crop.len() != n || self.capacity == 0 {
            return Err(Error::config(format!(
                "a crop of {} bytes for a ring of {n}-byte crops",
                crop.len()
            )));
        }
        self.data[self.next * n..(self.next + 1) * n].copy_from_slice(crop);
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        Ok(())
    }

    /// Crops kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no crop is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest `n` crops as one clip `[3, n, side, side]` (channel,
    /// time oldest first, row, column), pixel values 0–255; `None` with
    /// fewer than `n` kept (or `n` 0).
    pub fn window(&self, n: usize) -> Option<Vec<f32>> {
        if n == 0 || n > self.len {
            return None;
        }
        let plane = self.side * self.side;
        let crop = self.crop_len();
        let mut out = vec![0f32; 3 * n * plane];
        for t in 0..n {
            // Slot of the t-th of the newest n, oldest first.
            let slot = (self.next + self.capacity - n + t) % self.capacity;
            let src = &self.data[slot * crop..(slot + 1) * crop];
            for c in 0..3 {
                let dst = &mut out[(c * n + t) * plane..(c * n + t + 1) * plane];
                for (d, s) in dst.iter_mut().zip(&src[c * plane..(c + 1) * plane]) {
                    *d = f32::from(*s);
                }
            }
        }
        Some(out)
    }
}

/// `ln(p / (1 − p))`, with `p` kept away from 0 and 1 (the verdict
/// module's logit: one definition for frame features and fusion).
pub use crate::verdict::logit;

impl TrackSequence {
    /// Adds the track's face in session frame `frame`: its box, embedding
    /// and P(fake) from the frame classifier. The oldest step goes when
    /// [`CAPACITY`] are kept.
    pub fn push(&mut self, frame: u64, bbox: BBox, embedding: &Embedding, p_fake: f32) {
        let (w, h) = (bbox.width().max(1.0), bbox.height().max(1.0));
        let mut features = [0f32; FEATURES];
        features[0] = logit(p_fake);
        if let Some(prev) = self.last_box {
            let (pw, ph) = (prev.width().max(1.0), prev.height().max(1.0));
            let centre = |b: &BBox| ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
            let ((cx, cy), (px, py)) = (centre(&bbox), centre(&prev));
            features[1] = (cx - px) / pw;
            features[2] = (cy - py) / ph;
            features[3] = (w / pw).ln();
            features[4] = (h / ph).ln();
        }
        if let Some(prev) = &self.last_embedding {
            let dot: f32 = prev.0.iter().zip(&embedding.0).map(|(a, b)| a * b).sum();
            features[5] = 1.0 - dot;
        }
        self.push_features(frame, features);
        self.last_box = Some(bbox);
        // Per face and frame: reuse the previous embedding's buffer.
        match &mut self.last_embedding {
            Some(e) => e.0.clone_from(&embedding.0),
            None => self.last_embedding = Some(embedding.clone()),
        }
    }

    /// Adds a step of features made elsewhere (a replay of recorded
    /// steps); the next [`Self::push`] still measures its changes from the
    /// last face pushed through it.
    pub fn push_features(&mut self, frame: u64, features: [f32; FEATURES]) {
        if self.steps.is_full() {
            self.steps.pop_front();
        }
        // Room was made above.
        let _ = self.steps.push_back(SequenceStep { frame, features });
    }

    /// Adds the track's face crop of this step to its crop ring (made on
    /// the first call, `capacity` crops of `side` pixels).
    pub fn push_crop(&mut self, crop: &[u8], side: usize, capacity: usize) -> Result<()> {
        self.crops
            .get_or_insert_with(|| CropRing::new(side, capacity))
            .push(crop)
    }

    /// The track's crop ring, when crops are pushed to it.
    pub fn crops(&self) -> Option<&CropRing> {
        self.crops.as_ref()
    }

    /// Steps kept.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether no step is kept.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The kept steps, oldest first.
    pub fn steps(&self) -> impl Iterator<Item = &SequenceStep> {
        self.steps.iter()
    }

    /// The newest `n` steps' features, oldest first, row-major
    /// (`n × FEATURES`), or `None` with fewer than `n` kept (or `n` 0).
    pub fn window(&self, n: usize) -> Option<Vec<f32>> {
        if n == 0 || n > self.steps.len() {
            return None;
        }
        Some(
            self.steps
                .iter()
                .skip(self.steps.len() - n)
                .flat_map(|s| s.features)
                .collect(),
        )
    }
}

/// How a track's frame score and its sequence model's logit combine:
/// `P(fake) = σ(frame · logit(p) + sequence · z + bias)`, where `p` is the
/// track's (calibrated) frame score and `z` the sequence logit. A logistic
/// regression on validation clips fits the three numbers; `frame 1,
/// sequence 0, bias 0` is the frame score unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    /// Weight of the frame score's logit.
    pub frame: f32,
    /// Weight of the sequence model's logit.
    pub sequence: f32,
    /// Offset.
    pub bias: f32,
}

impl Fusion {
    /// The rule that ignores the sequence model.
    pub const FRAME_ONLY: Self = Self {
        frame: 1.0,
        sequence: 0.0,
        bias: 0.0,
    };

    /// The fused P(fake) of frame score `p` and sequence logit `z`.
    pub fn apply(&self, p: f32, z: f32) -> f32 {
        crate::verdict::sigmoid(self.frame * logit(p) + self.sequence * z + self.bias)
    }

    /// Every weight must be finite.
    pub fn validate(&self) -> Result<()> {
        if [self.frame, self.sequence, self.bias]
            .iter()
            .all(|v| v.is_finite())
        {
            Ok(())
        } else {
            Err(Error::config(format!(
                "fusion weights must be finite ({self:?})"
            )))
        }
    }
}

/// The `sequence` section of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// ONNX file: input `[1, steps, FEATURES]` raw features
    /// ([`FEATURE_SET`]) or `[1, 3, steps, side, side]` crops
    /// ([`CROP_FEATURE_SET`]), output the logit.
    pub file: String,
    /// Feature set the model reads: [`FEATURE_SET`] or [`CROP_FEATURE_SET`].
    pub features: String,
    /// Side of the crops in pixels ([`CROP_FEATURE_SET`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_size: Option<u32>,
    /// Steps per window (at most [`CAPACITY`]).
    pub steps: usize,
    /// Source frames between two steps of the training windows (how densely
    /// the model expects a track to be analysed; informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_step: Option<usize>,
    /// How its logit combines with the frame score.
    pub fusion: Fusion,
}

impl SequenceSpec {
    /// Checks the feature set, the window and the fusion weights.
    pub fn validate(&self) -> Result<()> {
        match (self.features.as_str(), self.crop_size) {
            (FEATURE_SET, None) => {}
            (FEATURE_SET, Some(_)) => {
                return Err(Error::config(format!(
                    "crop_size is for {CROP_FEATURE_SET:?}, not {FEATURE_SET:?}"
                )))
            }
            (CROP_FEATURE_SET, Some(s)) if CROP_SIDES.contains(&s) => {}
            (CROP_FEATURE_SET, s) => {
                return Err(Error::config(format!(
                    "{CROP_FEATURE_SET:?} needs crop_size {}–{} (got {s:?})",
                    CROP_SIDES.start(),
                    CROP_SIDES.end()
                )))
            }
            (other, _) => {
                return Err(Error::config(format!(
                    "sequence model reads feature set {other:?}; this SDK makes {FEATURE_SET:?} and {CROP_FEATURE_SET:?}"
                )))
            }
        }
        if self.steps < 2 || self.steps > CAPACITY {
            return Err(Error::config(format!(
                "sequence window of {} steps: it must be 2 to {CAPACITY}",
                self.steps
            )));
        }
        self.fusion.validate()
    }
}

/// A bundle's sequence model, loaded: scores a track's newest window.
pub struct SequenceScorer {
    model: Arc<dyn InferenceModel>,
    steps: usize,
    frame_step: usize,
    /// Side of the crops it reads (`None`: motion features).
    crop_size: Option<u32>,
}

impl std::fmt::Debug for SequenceScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceScorer")
            .field("model", &self.model.name())
            .field("steps", &self.steps)
            .field("frame_step", &self.frame_step)
            .field("crop_size", &self.crop_size)
            .finish()
    }
}

impl SequenceScorer {
    /// The bundle's sequence model, or `None` when it has none.
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Option<Self>> {
        let Some(spec) = &bundle.manifest().sequence else {
            return Ok(None);
        };
        let model = backend.load(&bundle.resolve(&spec.file)?, ShapePolicy::FixedBatch(1))?;
        Ok(Some(Self {
            model,
            steps: spec.steps,
            frame_step: spec.frame_step.unwrap_or(1).max(1),
            crop_size: spec.crop_size,
        }))
    }

    /// Side of the face crops the model reads ([`CROP_FEATURE_SET`]),
    /// `None` for a model of motion features.
    pub fn crop_size(&self) -> Option<u32> {
        self.crop_size
    }

    /// Adds a track's face in `frame` to its crop ring when the model reads
    /// crops (a no-op otherwise, or for a box with no crop).
    pub fn push_crop(
        &self,
        seq: &mut TrackSequence,
        frame: &crate::Frame,
        bbox: &BBox,
    ) -> Result<()> {
        let Some(side) = self.crop_size else {
            return Ok(());
        };
        match face_crop(frame, bbox, side) {
            Some(c) => seq.push_crop(&c, side as usize, self.steps),
            None => Ok(()),
        }
    }

    /// Steps per window.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Source frames between two steps of its training windows (1 when the
    /// bundle does not say).
    pub fn frame_step(&self) -> usize {
        self.frame_step
    }

    /// The logit of the track's newest window, `None` while it has fewer
    /// steps (or, for a crop model, crops) than the window.
    pub fn logit(&self, seq: &TrackSequence) -> Result<Option<f32>> {
        let x = match self.crop_size {
            None => {
                let Some(w) = seq.window(self.steps) else {
                    return Ok(None);
                };
                Tensor::new(vec![1, self.steps, FEATURES], w)?
            }
            Some(side) => {
                let Some(w) = seq.crops().and_then(|r| r.window(self.steps)) else {
                    return Ok(None);
                };
                let s = side as usize;
                Tensor::new(vec![1, 3, self.steps, s, s], w)?
            }
        };
        let out = self.model.run(&x)?;
        match out.first().and_then(|t| t.data.first()) {
            Some(z) if z.is_finite() => Ok(Some(*z)),
            Some(_) => Err(Error::model(self.model.name(), "non-finite sequence logit")),
            None => Err(Error::model(self.model.name(), "gave no output")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox {
            x1: x,
            y1: y,
            x2: x + w,
            y2: y + h,
        }
    }

    #[test]
    fn steps_measure_motion_scale_and_appearance() {
        let mut s = TrackSequence::default();
        let a = Embedding(vec![1.0, 0.0]);
        let b = Embedding(vec![0.0, 1.0]);
        s.push(0, bx(100.0, 50.0, 40.0, 50.0), &a, 0.5);
        // Moved right by a quarter width, twice as tall, another face.
        s.push(3, bx(110.0, 25.0, 40.0, 100.0), &b, 0.9);
        let steps: Vec<_> = s.steps().copied().collect();
        assert_eq!(
            steps[0].features, [0.0; FEATURES],
            "nothing before the first"
        );
        let f = steps[1].features;
        assert_eq!(steps[1].frame, 3);
        assert!((f[0] - logit(0.9)).abs() < 1e-6);
        assert!((f[1] - 0.25).abs() < 1e-6, "{f:?}");
        assert!(f[2].abs() < 1e-6, "the centre stayed at the same height");
        assert!(f[3].abs() < 1e-6 && (f[4] - 2f32.ln()).abs() < 1e-6);
        assert!((f[5] - 1.0).abs() < 1e-6, "orthogonal embeddings");
        assert_eq!(s.window(2).map(|w| w.len()), Some(2 * FEATURES));
        assert_eq!(s.window(3), None);
        assert_eq!(s.window(0), None);
        assert!(logit(0.0).is_finite() && logit(1.0).is_finite());
    }

    #[test]
    fn keeps_the_newest_steps() {
        let mut s = TrackSequence::default();
        let e = Embedding(vec![1.0]);
        for k in 0..CAPACITY as u64 + 5 {
            s.push(k, bx(0.0, 0.0, 10.0, 10.0), &e, 0.5);
        }
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s.steps().next().map(|st| st.frame), Some(5));
        let w = s.window(2).unwrap();
        assert_eq!(w.len(), 2 * FEATURES);
    }

    #[test]
    fn crop_rings_keep_the_newest_crops_as_a_channel_major_clip() {
        let side = 2;
        let mut r = CropRing::new(side, 3);
        assert!(r.is_empty() && r.window(1).is_none());
        // Crop k is filled with k in red, 10k in green, 100 + k in blue.
        for k in 0..5u8 {
            let mut c = vec![0u8; 3 * side * side];
            c[..4].fill(k);
            c[4..8].fill(10 * k);
            c[8..].fill(100 + k);
            r.push(&c).unwrap();
        }
        assert_eq!(r.len(), 3);
        assert!(r.push(&[0; 5]).is_err(), "a crop of another size");
        let w = r.window(2).unwrap();
        // [3, 2, 2, 2]: red of crops 3 and 4, then green, then blue.
        let plane = |c: usize, t: usize| w[(c * 2 + t) * 4];
        assert_eq!((plane(0, 0), plane(0, 1)), (3.0, 4.0));
        assert_eq!((plane(1, 0), plane(1, 1)), (30.0, 40.0));
        assert_eq!((plane(2, 0), plane(2, 1)), (103.0, 104.0));
        assert_eq!(r.window(3).map(|w| w[0]), Some(2.0), "oldest kept is 2");
        assert!(r.window(4).is_none());
    }

    #[test]
    fn face_crops_are_area_sampled_squares_around_the_box() {
        // Red up to column 31, blue after; the box is the whole 60 × 60
        // frame, so the crop's square (1.2 × 60) reaches past every edge.
        // Crop pixels are 3 frame pixels wide: the one over columns 30–32
        // mixes both colours.
        let mut f = crate::Frame::filled(60, 60, [0, 0, 255]).unwrap();
        for y in 0..60 {
            for x in 0..31 {
                f.set_pixel(x, y, [255, 0, 0]);
            }
        }
        let c = face_crop(&f, &bx(0.0, 0.0, 60.0, 60.0), 24).unwrap();
        let at = |ch: usize, x: usize, y: usize| c[ch * 24 * 24 + y * 24 + x];
        assert_eq!(at(0, 0, 0), 0, "outside the frame is black");
        assert_eq!((at(0, 6, 12), at(2, 6, 12)), (255, 0), "red half");
        assert_eq!((at(0, 17, 12), at(2, 17, 12)), (0, 255), "blue half");
        // The column on the boundary averages both colours.
        let mid = (0..24).find(|&x| at(0, x, 12) > 0 && at(2, x, 12) > 0);
        assert!(mid.is_some(), "no blended column at the boundary");
        assert!(face_crop(&f, &bx(0.0, 0.0, 0.5, 0.5), 24).is_none());
        assert!(face_crop(&f, &bx(0.0, 0.0, 60.0, 60.0), 8).is_none());
        let mut s = TrackSequence::default();
        s.push_crop(&c, 24, 4).unwrap();
        assert_eq!(s.crops().map(CropRing::len), Some(1));
    }
}
