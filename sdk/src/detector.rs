//! The whole method in one type: perception (MTCNN → aligner → backbone),
//! scoring (head → classifier), tracking and aggregation into a verdict.
//!
//! ```no_run
//! use fakewatch_sdk::{backend::TractBackend, bundle::Bundle, DeepfakeDetector, Frame};
//! let bundle = Bundle::load("models/default")?;
//! let detector = DeepfakeDetector::from_bundle(&bundle, &TractBackend)?;
//! let mut session = detector.session();
//! session.process(&Frame::load("frame.jpg")?)?;
//! println!("{:?}", session.verdict());
//! # Ok::<(), fakewatch_sdk::Error>(())
//! ```

use crate::backend::Backend;
use crate::bundle::Bundle;
use crate::error::Result;
use crate::frame::Frame;
use crate::perception::{Face, Perception};
use crate::score::{Aggregator, Decision, Scorer, Verdict};
use crate::track::{Tracker, TrackerConfig};

/// A face with its track and P(fake).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFace {
    /// Detection and embedding.
    pub face: Face,
    /// Track id (`None` when the track limit was full).
    pub track: Option<u32>,
    /// P(fake) of this face in this frame.
    pub p_fake: f32,
}

/// Perception + scorer + decision of one bundle.
#[derive(Debug)]
pub struct DeepfakeDetector {
    perception: Perception,
    scorer: Scorer,
    decision: Decision,
    tracker: TrackerConfig,
}

impl DeepfakeDetector {
    /// Loads every model of a bundle that has a classifier.
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Self> {
        Self::from_parts(
            Perception::from_bundle(bundle, backend)?,
            Scorer::from_bundle(bundle, backend)?,
            Decision::from_bundle(bundle)?,
        )
    }

    /// Assembles a detector from loaded parts.
    pub fn from_parts(perception: Perception, scorer: Scorer, decision: Decision) -> Result<Self> {
        Ok(Self {
            perception,
            scorer,
            decision,
            tracker: TrackerConfig::default(),
        })
    }

    /// The perception path.
    pub fn perception(&self) -> &Perception {
        &self.perception
    }

    /// The perception path, for changing detector settings.
    pub fn perception_mut(&mut self) -> &mut Perception {
        &mut self.perception
    }

    /// The decision parameters.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Replaces the decision parameters.
    pub fn set_decision(&mut self, decision: Decision) {
        self.decision = decision;
    }

    /// Replaces the tracker parameters of new sessions.
    pub fn set_tracker_config(&mut self, config: TrackerConfig) {
        self.tracker = config;
    }

    /// P(fake) of each face.
    pub fn score_faces(&self, faces: &[Face]) -> Result<Vec<f32>> {
        let e: Vec<_> = faces.iter().map(|f| f.embedding.clone()).collect();
        self.scorer.score(&e)
    }

    /// A new video or stream: fresh tracks and scores.
    pub fn session(&self) -> Session<'_> {
        Session {
            detector: self,
            tracker: Tracker::new(self.tracker),
            aggregator: Aggregator::new(self.decision),
            frames: 0,
            faces: 0,
        }
    }
}

/// The state of one video or stream.
#[derive(Debug)]
pub struct Session<'a> {
    detector: &'a DeepfakeDetector,
    tracker: Tracker,
    aggregator: Aggregator,
    frames: usize,
    faces: usize,
}

impl Session<'_> {
    /// Detects, embeds, tracks and scores the faces of the next frame.
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<ScoredFace>> {
        let faces = self.detector.perception.analyze(frame)?;
        self.add_faces(faces)
    }

    /// As [`Self::process`] for faces already detected and embedded.
    pub fn add_faces(&mut self, faces: Vec<Face>) -> Result<Vec<ScoredFace>> {
        let scores = self.detector.score_faces(&faces)?;
        let boxes: Vec<_> = faces.iter().map(|f| f.detection.bbox).collect();
        let embs: Vec<_> = faces.iter().map(|f| f.embedding.clone()).collect();
        // Ended tracks keep their scores in the verdict (a video's verdict
        // covers every face seen); live mode will forget them.
        let update = self.tracker.update(&boxes, Some(&embs));
        self.frames += 1;
        self.faces += faces.len();
        let mut out = Vec::with_capacity(faces.len());
        for ((face, p), id) in faces.into_iter().zip(scores).zip(update.ids) {
            if let Some(id) = id {
                self.aggregator.add(id, p);
            }
            out.push(ScoredFace {
                face,
                track: id,
                p_fake: p,
            });
        }
        Ok(out)
    }

    /// Frames processed.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Faces scored.
    pub fn faces(&self) -> usize {
        self.faces
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.aggregator.verdict()
    }
}
