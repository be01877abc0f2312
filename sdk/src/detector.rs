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
use crate::perception::{Face, Perception, PerceptionTimings};
use crate::score::{Aggregator, Decision, Scorer, Verdict};
use crate::track::{Tracker, TrackerConfig};
use std::time::{Duration, Instant};

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
        let e: Vec<&[f32]> = faces.iter().map(Face::scoring_input).collect();
        self.scorer.score(&e)
    }

    /// A new video: fresh tracks and scores. Tracks that end keep their
    /// scores in the verdict (a video's verdict covers every face seen).
    pub fn session(&self) -> Session<'_> {
        Session {
            detector: self,
            tracker: Tracker::new(self.tracker),
            aggregator: Aggregator::new(self.decision),
            frames: 0,
            faces: 0,
            live: false,
        }
    }

    /// A new live stream: as [`Self::session`], but a track that ends is
    /// forgotten, so the verdict describes the faces on screen now.
    pub fn live_session(&self) -> Session<'_> {
        Session {
            live: true,
            ..self.session()
        }
    }
}

/// What one frame did to a [`Session`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// The frame's faces, scored and tracked.
    pub faces: Vec<ScoredFace>,
    /// Tracks that appeared in this frame.
    pub started: Vec<u32>,
    /// Tracks that ended with this frame (missed too often).
    pub ended: Vec<u32>,
    /// Time per stage.
    pub timings: StepTimings,
}

/// Time spent per stage of [`Session::step`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Detection and embedding.
    pub perception: PerceptionTimings,
    /// Head + classifier.
    pub score: Duration,
}

/// The state of one video or stream.
#[derive(Debug)]
pub struct Session<'a> {
    detector: &'a DeepfakeDetector,
    tracker: Tracker,
    aggregator: Aggregator,
    frames: usize,
    faces: usize,
    live: bool,
}

impl Session<'_> {
    /// Detects, embeds, tracks and scores the faces of the next frame.
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<ScoredFace>> {
        Ok(self.step(frame)?.faces)
    }

    /// As [`Self::process`], also reporting track changes and timings.
    pub fn step(&mut self, frame: &Frame) -> Result<Step> {
        let (faces, perception) = self.detector.perception.analyze_timed(frame)?;
        let mut step = self.add_faces_step(faces)?;
        step.timings.perception = perception;
        Ok(step)
    }

    /// As [`Self::process`] for faces already detected and embedded.
    pub fn add_faces(&mut self, faces: Vec<Face>) -> Result<Vec<ScoredFace>> {
        Ok(self.add_faces_step(faces)?.faces)
    }

    fn add_faces_step(&mut self, faces: Vec<Face>) -> Result<Step> {
        let t = Instant::now();
        let scores = self.detector.score_faces(&faces)?;
        let score_time = t.elapsed();
        let boxes: Vec<_> = faces.iter().map(|f| f.detection.bbox).collect();
        let embs: Vec<_> = faces.iter().map(|f| f.embedding.clone()).collect();
        let update = self.tracker.update(&boxes, Some(&embs));
        if self.live {
            for id in &update.ended {
                self.aggregator.remove(*id);
            }
        }
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
        Ok(Step {
            faces: out,
            started: update.started,
            ended: update.ended,
            timings: StepTimings {
                perception: PerceptionTimings::default(),
                score: score_time,
            },
        })
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
