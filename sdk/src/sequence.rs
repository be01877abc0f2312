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
    /// ONNX file: input `[1, steps, FEATURES]` raw features, output the logit.
    pub file: String,
    /// Feature set the model reads (must be [`FEATURE_SET`]).
    pub features: String,
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
        if self.features != FEATURE_SET {
            return Err(Error::config(format!(
                "sequence model reads feature set {:?}; this SDK makes {FEATURE_SET:?}",
                self.features
            )));
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
}

impl std::fmt::Debug for SequenceScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceScorer")
            .field("model", &self.model.name())
            .field("steps", &self.steps)
            .field("frame_step", &self.frame_step)
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
        }))
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
    /// steps than the window.
    pub fn logit(&self, seq: &TrackSequence) -> Result<Option<f32>> {
        let Some(w) = seq.window(self.steps) else {
            return Ok(None);
        };
        let x = Tensor::new(vec![1, self.steps, FEATURES], w)?;
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
}
