//! The bundle's decision stages: triplet head + classifier (embedding →
//! P(fake)), and how frame scores become a verdict.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, InferenceModel, ShapePolicy, Tensor};
use crate::bundle::Bundle;
use crate::error::{Error, Result};

/// Faces scored per model call.
pub const SCORE_BATCH: usize = 64;
/// Decision threshold when a bundle states none.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Frames sampled per video when a bundle states none (the paper uses ~25).
pub const DEFAULT_FRAMES: usize = 25;

/// Head + classifier of a bundle.
pub struct Scorer {
    head: Option<Arc<dyn InferenceModel>>,
    classifier: Arc<dyn InferenceModel>,
    input_dim: usize,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("head", &self.head.as_ref().map(|h| h.name().to_string()))
            .field("classifier", &self.classifier.name())
            .field("input_dim", &self.input_dim)
            .finish()
    }
}

impl Scorer {
    /// Loads the bundle's head (optional: a frames-only bundle classifies the
    /// raw embedding) and classifier. A bundle without a classifier cannot
    /// score faces: that is an [`Error::Bundle`].
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Self> {
        let m = bundle.manifest();
        let Some(c) = &m.classifier else {
            return Err(Error::Bundle {
                path: bundle.dir().into(),
                reason: "has no classifier: it can detect faces but not score them \
                         (train one with `fakewatch-train fit`)"
                    .into(),
            });
        };
        let head = match &m.head {
            Some(h) => Some(backend.load(&bundle.resolve(&h.file)?, ShapePolicy::Symbolic)?),
            None => None,
        };
        let classifier = backend.load(&bundle.resolve(&c.file)?, ShapePolicy::Symbolic)?;
        Ok(Self {
            head,
            classifier,
            input_dim: m.backbone.scoring_dim(),
        })
    }

    /// P(fake) of each scoring input, in order: a face's
    /// [`crate::perception::Face::scoring_input`] (its pooled features when
    /// the bundle's backbone has them, else its embedding's values).
    pub fn score<V: AsRef<[f32]>>(&self, inputs: &[V]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(SCORE_BATCH) {
            let mut data = Vec::with_capacity(chunk.len() * self.input_dim);
            for e in chunk {
                let e = e.as_ref();
                if e.len() != self.input_dim {
                    return Err(Error::config(format!(
                        "scoring input has {} values, the bundle's backbone gives {}",
                        e.len(),
                        self.input_dim
                    )));
                }
                data.extend_from_slice(e);
            }
            let mut x = Tensor::new(vec![chunk.len(), self.input_dim], data)?;
            if let Some(h) = &self.head {
                x = first_output(h.as_ref(), &x)?;
            }
            let p = first_output(self.classifier.as_ref(), &x)?;
            if p.data.len() != chunk.len() {
                return Err(Error::model(
                    self.classifier.name(),
                    format!("gave {} scores for {} faces", p.data.len(), chunk.len()),
                ));
            }
            for v in p.data {
                if !v.is_finite() {
                    return Err(Error::model(self.classifier.name(), "non-finite score"));
                }
                out.push(v.clamp(0.0, 1.0));
            }
        }
        Ok(out)
    }
}

fn first_output(m: &dyn InferenceModel, x: &Tensor) -> Result<Tensor> {
    m.run(x)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::model(m.name(), "produced no output"))
}

/// How frame scores are combined into a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each track's frames, then the most suspicious track.
    TrackMeanThenMax,
    /// Mean over every scored face, ignoring tracks.
    FrameMean,
}

impl std::str::FromStr for Aggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "track_mean_then_max" => Ok(Self::TrackMeanThenMax),
            "frame_mean" => Ok(Self::FrameMean),
            other => Err(Error::config(format!(
                "unknown aggregation {other:?} (track_mean_then_max or frame_mean)"
            ))),
        }
    }
}

/// The verdict of a video, stream or track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Score below the threshold.
    Real,
    /// Score at or above the threshold.
    Fake,
    /// No face was seen.
    Unknown,
}

impl Label {
    /// The label of `score` under `threshold`.
    pub fn of(score: Option<f32>, threshold: f32) -> Self {
        match score {
            None => Self::Unknown,
            Some(s) if s >= threshold => Self::Fake,
            Some(_) => Self::Real,
        }
    }
    /// `"real"`, `"fake"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Fake => "fake",
            Self::Unknown => "unknown",
        }
    }
}

/// Decision parameters (from the bundle's `decision` section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// P(fake) at or above which the verdict is fake.
    pub threshold: f32,
    /// How frame scores combine.
    pub aggregation: Aggregation,
    /// Frames sampled per video by default.
    pub frames: usize,
    /// Most recent frame scores kept per track (the sliding window).
    pub window: usize,
    /// Tracks seen in fewer frames do not decide the verdict while a longer
    /// track exists (a one-frame false detection must not outvote a face
    /// seen throughout).
    pub min_track_frames: usize,
}

/// Tracks shorter than this are outvoted by longer ones.
pub const MIN_TRACK_FRAMES: usize = 2;

impl Decision {
    /// The bundle's decision, defaults where it states none.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self> {
        let d = bundle.manifest().decision.as_ref();
        let aggregation = match d {
            Some(d) => d.aggregation.parse()?,
            None => Aggregation::TrackMeanThenMax,
        };
        let frames = d.map_or(DEFAULT_FRAMES, |d| d.frames);
        Ok(Self {
            threshold: d.map_or(DEFAULT_THRESHOLD, |d| d.threshold),
            aggregation,
            frames,
            window: frames.max(1),
            min_track_frames: MIN_TRACK_FRAMES,
        })
    }
}

/// The aggregated score of one track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackVerdict {
    /// Track id.
    pub id: u32,
    /// Mean P(fake) over the track's window.
    pub score: f32,
    /// Frames scored for the track (in total, not only the window).
    pub frames: usize,
}

/// A video's or stream's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Real, fake or unknown.
    pub label: Label,
    /// P(fake), `None` when no face was scored.
    pub score: Option<f32>,
    /// Per-track scores, by id.
    pub tracks: Vec<TrackVerdict>,
}

#[derive(Debug, Clone)]
struct TrackScores {
    id: u32,
    window: std::collections::VecDeque<f32>,
    frames: usize,
}

/// Collects per-face scores by track and turns them into a [`Verdict`].
#[derive(Debug, Clone)]
pub struct Aggregator {
    decision: Decision,
    tracks: Vec<TrackScores>,
    all_sum: f64,
    all_n: usize,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(decision: Decision) -> Self {
        Self {
            decision,
            tracks: Vec::new(),
            all_sum: 0.0,
            all_n: 0,
        }
    }

    /// Adds one face's score to its track.
    pub fn add(&mut self, track: u32, score: f32) {
        self.all_sum += f64::from(score);
        self.all_n += 1;
        let window = self.decision.window.max(1);
        let t = match self.tracks.iter().position(|t| t.id == track) {
            Some(i) => &mut self.tracks[i],
            None => {
                self.tracks.push(TrackScores {
                    id: track,
                    window: std::collections::VecDeque::with_capacity(window),
                    frames: 0,
                });
                let last = self.tracks.len() - 1;
                &mut self.tracks[last]
            }
        };
        if t.window.len() == window {
            t.window.pop_front();
        }
        t.window.push_back(score);
        t.frames += 1;
    }

    /// Forgets a track (it left the scene in live mode).
    pub fn remove(&mut self, track: u32) {
        self.tracks.retain(|t| t.id != track);
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        let mut tracks: Vec<TrackVerdict> = self
            .tracks
            .iter()
            .filter(|t| !t.window.is_empty())
            .map(|t| TrackVerdict {
                id: t.id,
                score: t.window.iter().sum::<f32>() / t.window.len() as f32,
                frames: t.frames,
            })
            .collect();
        tracks.sort_by_key(|t| t.id);
        let score = match self.decision.aggregation {
            Aggregation::FrameMean => {
                (self.all_n > 0).then(|| (self.all_sum / self.all_n as f64) as f32)
            }
            Aggregation::TrackMeanThenMax => {
                let longest = tracks.iter().map(|t| t.frames).max().unwrap_or(0);
                let need = self.decision.min_track_frames.min(longest);
                tracks
                    .iter()
                    .filter(|t| t.frames >= need)
                    .map(|t| t.score)
                    .reduce(f32::max)
            }
        };
        Verdict {
            label: Label::of(score, self.decision.threshold),
            score,
            tracks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Decision {
        Decision {
            threshold: 0.5,
            aggregation: Aggregation::TrackMeanThenMax,
            frames: 25,
            window: 3,
            min_track_frames: 2,
        }
    }

    #[test]
    fn worst_track_decides_and_window_slides() {
        let mut a = Aggregator::new(decision());
        assert_eq!(a.verdict().label, Label::Unknown);
        assert_eq!(a.verdict().score, None);
        for s in [0.1, 0.2, 0.3] {
            a.add(1, s);
        }
        for s in [0.9, 0.7] {
            a.add(2, s);
        }
        let v = a.verdict();
        assert_eq!(v.label, Label::Fake);
        assert!((v.score.unwrap() - 0.8).abs() < 1e-6);
        // Window of 3: the 0.1 slides out of track 1.
        a.add(1, 0.4);
        assert!((a.verdict().tracks[0].score - 0.3).abs() < 1e-6);
        assert_eq!(a.verdict().tracks[0].frames, 4);
        a.remove(2);
        assert_eq!(a.verdict().label, Label::Real);
    }

    #[test]
    fn a_one_frame_track_does_not_outvote_a_long_one() {
        let mut a = Aggregator::new(decision());
        a.add(1, 0.2);
        a.add(1, 0.3);
        a.add(7, 0.99);
        assert_eq!(a.verdict().label, Label::Real);
        // With only short tracks, the worst one counts.
        let mut b = Aggregator::new(decision());
        b.add(3, 0.2);
        b.add(4, 0.8);
        assert_eq!(b.verdict().score, Some(0.8));
    }

    #[test]
    fn frame_mean_and_parsing() {
        let mut d = decision();
        d.aggregation = "frame_mean".parse().unwrap();
        let mut a = Aggregator::new(d);
        a.add(1, 0.2);
        a.add(2, 0.6);
        assert!((a.verdict().score.unwrap() - 0.4).abs() < 1e-6);
        assert!("max".parse::<Aggregation>().is_err());
        assert_eq!(Label::of(Some(0.5), 0.5), Label::Fake);
        assert_eq!(Label::of(Some(0.49), 0.5).as_str(), "real");
    }
}
