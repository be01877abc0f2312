//! The whole method in one type: perception (MTCNN → aligner → backbone),
//! scoring (head → classifier), tracking and aggregation into a verdict.
//!
//! ```no_run
//! use fakewatch_sdk::{backend::TractBackend, bundle::Bundle, DeepfakeDetector, Frame};
//! let bundle = Bundle::load("models/default")?;
//! let detector = DeepfakeDetector::builder(&bundle)
//!     .threads(2)
//!     .build(&TractBackend)?;
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
use crate::score::Scorer;
use crate::sequence::{SequenceScorer, TrackSequence};
use crate::track::{Tracker, TrackerConfig};
use crate::verdict::{Aggregator, Decision, LabelChange, Verdict, VerdictStream};
use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// The bundle's sequence model, if it has one.
    sequence: Option<SequenceScorer>,
    decision: Decision,
    tracker: TrackerConfig,
}

impl DeepfakeDetector {
    /// Loads every model of a bundle that has a classifier, with the
    /// bundle's decision and default settings (see [`Self::builder`]).
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Arc<Self>> {
        Self::builder(bundle).build(backend)
    }

    /// A detector of `bundle` with settings changed from the bundle's.
    pub fn builder(bundle: &Bundle) -> DetectorBuilder<'_> {
        DetectorBuilder {
            bundle,
            decision: bundle.decision(),
            threads: None,
            tracker: TrackerConfig::default(),
        }
    }

    /// Assembles a detector from loaded parts.
    pub fn from_parts(perception: Perception, scorer: Scorer, decision: Decision) -> Arc<Self> {
        Arc::new(Self {
            perception,
            scorer,
            sequence: None,
            decision,
            tracker: TrackerConfig::default(),
        })
    }

    /// The perception path.
    pub fn perception(&self) -> &Perception {
        &self.perception
    }

    /// The decision parameters.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The bundle's sequence model, if it has one.
    pub fn sequence_model(&self) -> Option<&SequenceScorer> {
        self.sequence.as_ref()
    }

    /// How `n` frames of a file are sampled: spread evenly, or, when the
    /// bundle has a sequence model, as runs of its window at the frame step
    /// it was trained on (so its windows see the motion it learnt).
    pub fn file_sampling(&self, n: usize) -> crate::sampling::Sampling {
        match &self.sequence {
            Some(q) => crate::sampling::Sampling::Runs {
                n,
                run: q.steps(),
                stride: q.frame_step(),
            },
            None => crate::sampling::Sampling::Even(n),
        }
    }

    /// Classifier output of each face (the raw score the verdict module
    /// aggregates and calibrates).
    pub fn score_faces(&self, faces: &[Face]) -> Result<Vec<f32>> {
        let e: Vec<&[f32]> = faces.iter().map(Face::scoring_input).collect();
        self.scorer.score(&e)
    }

    /// A new video: fresh tracks and scores. Tracks that end keep their
    /// scores in the verdict (a video's verdict covers every face seen). The
    /// session holds the detector, so it may move to another thread or
    /// outlive the caller's handle.
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            detector: Arc::clone(self),
            tracker: Tracker::new(self.tracker),
            aggregator: Aggregator::new(self.decision),
            stream: VerdictStream::new(),
            sequences: BTreeMap::new(),
            frames: 0,
            faces: 0,
            live: false,
        }
    }

    /// A new live stream: as [`Self::session`], but a track that ends is
    /// forgotten, so the verdict describes the faces on screen now.
    pub fn live_session(self: &Arc<Self>) -> Session {
        Session {
            live: true,
            ..self.session()
        }
    }
}

/// Settings of a [`DeepfakeDetector`] that differ from its bundle's.
#[derive(Debug, Clone)]
pub struct DetectorBuilder<'a> {
    bundle: &'a Bundle,
    decision: Decision,
    threads: Option<usize>,
    tracker: TrackerConfig,
}

impl DetectorBuilder<'_> {
    /// The decision (default: the bundle's; change one with
    /// [`Decision::set_threshold`] and friends).
    pub fn decision(mut self, decision: Decision) -> Self {
        self.decision = decision;
        self
    }

    /// Threads each frame's detection and embedding spread over (default:
    /// the perception's own default).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Tracker parameters of the detector's sessions.
    pub fn tracker(mut self, config: TrackerConfig) -> Self {
        self.tracker = config;
        self
    }

    /// Loads the bundle's models on `backend`. A bundle without a
    /// classifier is an [`crate::Error::Bundle`].
    pub fn build(self, backend: &dyn Backend) -> Result<Arc<DeepfakeDetector>> {
        let mut perception = Perception::from_bundle(self.bundle, backend)?;
        if let Some(n) = self.threads {
            perception.set_threads(n);
        }
        Ok(Arc::new(DeepfakeDetector {
            perception,
            scorer: Scorer::from_bundle(self.bundle, backend)?,
            sequence: SequenceScorer::from_bundle(self.bundle, backend)?,
            decision: self.decision,
            tracker: self.tracker,
        }))
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
    /// Head + classifier, and the sequence model where the bundle has one.
    pub score: Duration,
}

/// The state of one video or stream.
#[derive(Debug)]
pub struct Session {
    detector: Arc<DeepfakeDetector>,
    tracker: Tracker,
    aggregator: Aggregator,
    stream: VerdictStream,
    /// The newest steps of each track on screen (see [`crate::sequence`]).
    sequences: BTreeMap<u32, TrackSequence>,
    frames: usize,
    faces: usize,
    live: bool,
}

impl Session {
    /// The detector this session runs.
    pub fn detector(&self) -> &DeepfakeDetector {
        &self.detector
    }

    /// Starts over: forgets tracks, scores and labels (same detector, same
    /// kind of session).
    pub fn reset(&mut self) {
        let live = self.live;
        *self = self.detector.session();
        self.live = live;
    }

    /// Detects, embeds, tracks and scores the faces of the next frame.
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<ScoredFace>> {
        Ok(self.step(frame)?.faces)
    }

    /// As [`Self::process`], also reporting track changes and timings.
    pub fn step(&mut self, frame: &Frame) -> Result<Step> {
        let (faces, perception) = self.detector.perception.analyze_timed(frame)?;
        let mut step = self.add_faces_step(faces, Some(frame))?;
        step.timings.perception = perception;
        Ok(step)
    }

    /// As [`Self::process`] for faces already detected and embedded. A
    /// sequence model that reads face crops
    /// ([`crate::sequence::CROP_FEATURE_SET`]) gets none from here (there
    /// are no pixels): use [`Self::add_faces_in`] for those bundles.
    pub fn add_faces(&mut self, faces: Vec<Face>) -> Result<Vec<ScoredFace>> {
        Ok(self.add_faces_step(faces, None)?.faces)
    }

    /// As [`Self::add_faces`], with the frame the faces were found in (for
    /// sequence models that read face crops).
    pub fn add_faces_in(&mut self, frame: &Frame, faces: Vec<Face>) -> Result<Vec<ScoredFace>> {
        Ok(self.add_faces_step(faces, Some(frame))?.faces)
    }

    fn add_faces_step(&mut self, faces: Vec<Face>, pixels: Option<&Frame>) -> Result<Step> {
        let t = Instant::now();
        let scores = self.detector.score_faces(&faces)?;
        let mut score_time = t.elapsed();
        let boxes: Vec<_> = faces.iter().map(|f| f.detection.bbox).collect();
        let embs: Vec<_> = faces.iter().map(|f| f.embedding.clone()).collect();
        let update = self.tracker.update(&boxes, Some(&embs));
        if self.live {
            for id in &update.ended {
                self.aggregator.remove(*id);
            }
        }
        // A track that ended is not continued: its sequence goes (so memory
        // is bounded by the tracks on screen).
        for id in &update.ended {
            self.sequences.remove(id);
        }
        let frame = self.frames as u64;
        self.frames += 1;
        self.faces += faces.len();
        let mut out = Vec::with_capacity(faces.len());
        for ((face, p), id) in faces.into_iter().zip(scores).zip(update.ids) {
            if let Some(id) = id {
                self.aggregator.add(id, p);
                let seq = self.sequences.entry(id).or_default();
                seq.push(frame, face.detection.bbox, &face.embedding, p);
                if let Some(model) = &self.detector.sequence {
                    let t = Instant::now();
                    if let Some(frame) = pixels {
                        model.push_crop(seq, frame, &face.detection.bbox)?;
                    }
                    if let Some(z) = model.logit(seq)? {
                        self.aggregator.set_sequence(id, z);
                    }
                    score_time += t.elapsed();
                }
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

    /// The newest steps of track `id`, while it is on screen.
    pub fn sequence(&self, id: u32) -> Option<&TrackSequence> {
        self.sequences.get(&id)
    }

    /// Faces scored.
    pub fn faces(&self) -> usize {
        self.faces
    }

    /// The verdict so far, labelled under the plain threshold (a file's
    /// verdict).
    pub fn verdict(&self) -> Verdict {
        self.aggregator.verdict()
    }

    /// The verdict of a stream at stream time `at`: labels held under the
    /// decision's hysteresis, with the label changes since the last call
    /// (see [`VerdictStream::update`]).
    pub fn stream_verdict(&mut self, at: Duration) -> (Verdict, Vec<LabelChange>) {
        let mut v = self.aggregator.verdict();
        let changes = self.stream.update(self.aggregator.decision(), &mut v, at);
        (v, changes)
    }
}
