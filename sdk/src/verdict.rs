//! Scores → verdicts, in one place: how per-face scores aggregate over tracks
//! and videos ([`Aggregation`], [`Aggregator`]), how the aggregated classifier
//! output becomes a calibrated P(fake) ([`Calibration`]), where the label
//! changes ([`Decision`], [`Label`]), and how a live stream's labels stay
//! stable ([`Hysteresis`], [`VerdictStream`]). `fakewatch scan`, live mode,
//! the C ABI and the trainer's evaluation all go through this module; no other
//! code turns scores into labels (`docs/architecture.md` §3).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sequence::Fusion;

/// Decision threshold when a bundle states none (also the threshold of every
/// calibrated bundle: its score is P(fake)).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Frames sampled per video when a bundle states none (the paper uses ~25).
pub const DEFAULT_FRAMES: usize = 25;
/// Tracks shorter than this are outvoted by longer ones.
pub const MIN_TRACK_FRAMES: usize = 2;
/// Scores are clamped to `[LOGIT_EPS, 1 - LOGIT_EPS]` before taking a logit.
const LOGIT_EPS: f32 = 1e-6;

/// How frame scores are combined into a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each track's frames, then the most suspicious track.
    #[default]
    TrackMeanThenMax,
    /// Mean over every scored face, ignoring tracks.
    FrameMean,
}

impl Aggregation {
    /// The name used in `bundle.json` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrackMeanThenMax => "track_mean_then_max",
            Self::FrameMean => "frame_mean",
        }
    }
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

/// A monotone map from the aggregated classifier output to P(fake), fitted on
/// a bundle's validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Calibration {
    /// Platt scaling on the logit: `P(fake) = σ(a · logit(s) + b)`, `a > 0`.
    Platt {
        /// Slope on the logit of the aggregated score.
        a: f32,
        /// Offset.
        b: f32,
    },
}

impl Calibration {
    /// P(fake) of an aggregated score in `[0, 1]`.
    pub fn apply(&self, s: f32) -> f32 {
        match *self {
            Self::Platt { a, b } => sigmoid(a * logit(s) + b),
        }
    }

    /// A slope that is not positive and finite would reverse or flatten the
    /// scores: such a calibration is refused.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Platt { a, b } if a.is_finite() && a > 0.0 && b.is_finite() => Ok(()),
            Self::Platt { a, b } => Err(Error::config(format!(
                "Platt calibration needs a finite slope a > 0 and a finite offset (a {a}, b {b})"
            ))),
        }
    }
}

/// `ln(p / (1 - p))`, with `p` clamped away from 0 and 1.
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Keeps a live label from flapping when the score hovers near the
/// threshold: `real` → `fake` needs P(fake) ≥ threshold + margin, `fake` →
/// `real` needs P(fake) < threshold − margin, and either must hold without a
/// break for `min_dwell_s` seconds before the label changes. The first label
/// of a track or stream is the plain threshold's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hysteresis {
    /// Half-width of the band around the threshold, in P(fake).
    pub margin: f32,
    /// How long the score must stay beyond the band before the label
    /// changes, seconds.
    pub min_dwell_s: f32,
}

impl Hysteresis {
    /// Margin in `[0, 0.5)`, dwell finite and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..0.5).contains(&self.margin)
            || !self.min_dwell_s.is_finite()
            || self.min_dwell_s < 0.0
        {
            return Err(Error::config(format!(
                "hysteresis margin must be in [0, 0.5) and min_dwell_s >= 0 (margin {}, min_dwell_s {})",
                self.margin, self.min_dwell_s
            )));
        }
        Ok(())
    }
}

/// The `decision` section of `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSpec {
    /// Score at or above which a track or video is called fake: P(fake)
    /// when the bundle is calibrated (then 0.5), else the classifier's raw
    /// aggregated output.
    pub threshold: f32,
    /// How frame scores are combined.
    pub aggregation: Aggregation,
    /// Frames sampled per video by default.
    pub frames: usize,
    /// Maps the aggregated classifier output to P(fake); absent in bundles
    /// made before calibration existed (their score is the raw output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Live-mode label stability; absent: labels follow the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<Hysteresis>,
    /// Frames a video must yield before it gets a verdict (capped at the
    /// frames asked for); fewer, and the verdict is unknown, "too few
    /// frames". Absent (bundles made before it existed): 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_video_frames: Option<usize>,
}

impl DecisionSpec {
    /// Range checks of every field.
    pub fn validate(&self) -> Result<()> {
        check_threshold(self.threshold)?;
        if self.frames == 0 {
            return Err(Error::config("decision frames must be at least 1"));
        }
        if let Some(c) = &self.calibration {
            c.validate()?;
        }
        if let Some(h) = &self.hysteresis {
            h.validate()?;
        }
        if self.min_video_frames == Some(0) {
            return Err(Error::config(
                "decision min_video_frames must be at least 1",
            ));
        }
        Ok(())
    }
}

fn check_threshold(t: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&t) {
        return Err(Error::config(format!(
            "threshold {t} is not a probability in [0, 1]"
        )));
    }
    Ok(())
}

/// The verdict of a video, stream or track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Score below the threshold.
    Real,
    /// Score at or above the threshold.
    Fake,
    /// No verdict: see [`Verdict::unknown`] for why.
    Unknown,
}

impl Label {
    fn of(score: Option<f32>, threshold: f32) -> Self {
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
    /// `"REAL"`, `"FAKE"` or `"UNKNOWN"`, for overlays.
    pub fn as_upper(self) -> &'static str {
        match self {
            Self::Real => "REAL",
            Self::Fake => "FAKE",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// Why a verdict is [`Label::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// No face was seen.
    NoFace,
    /// Faces were seen, but no track has the frames a verdict needs yet.
    TooFewFrames,
    /// The input could not be read or analysed.
    Error,
}

impl Unknown {
    /// `"no face"`, `"too few frames"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoFace => "no face",
            Self::TooFewFrames => "too few frames",
            Self::Error => "error",
        }
    }
}

/// Decision parameters: the bundle's `decision` section, with run-time
/// settings (window, frames a track needs) added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Score at or above which the verdict is fake (P(fake) when calibrated).
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
    /// Frames a track needs before it has a label of its own and counts
    /// towards the verdict (live mode's `--verdict-after`; 1 for files).
    pub min_frames: usize,
    /// Aggregated classifier output → P(fake); `None`: the raw output is
    /// reported.
    pub calibration: Option<Calibration>,
    /// Live label stability (none: margin 0, dwell 0).
    pub hysteresis: Hysteresis,
    /// Frames a video must yield before it gets a verdict (capped at
    /// [`Decision::frames`]); see [`Decision::video_verdict`].
    pub min_video_frames: usize,
    /// How a track's sequence logit combines with its frame score (the
    /// bundle's sequence section; `None`: frame scores alone).
    pub fusion: Option<Fusion>,
}

impl Default for Decision {
    fn default() -> Self {
        Self::from_spec(None)
    }
}

impl Decision {
    /// The decision a bundle's section describes, defaults where it states
    /// none. The section is assumed valid ([`DecisionSpec::validate`] runs
    /// when a bundle loads).
    pub fn from_spec(spec: Option<&DecisionSpec>) -> Self {
        let frames = spec.map_or(DEFAULT_FRAMES, |d| d.frames);
        Self {
            threshold: spec.map_or(DEFAULT_THRESHOLD, |d| d.threshold),
            aggregation: spec.map_or_else(Aggregation::default, |d| d.aggregation),
            frames,
            window: frames.max(1),
            min_track_frames: MIN_TRACK_FRAMES,
            min_frames: 1,
            calibration: spec.and_then(|d| d.calibration),
            hysteresis: spec.and_then(|d| d.hysteresis).unwrap_or_default(),
            min_video_frames: spec.and_then(|d| d.min_video_frames).unwrap_or(1),
            fusion: None,
        }
    }

    /// Overrides the threshold (`--threshold`); it must be in `[0, 1]`.
    pub fn set_threshold(&mut self, threshold: f32) -> Result<()> {
        check_threshold(threshold)?;
        self.threshold = threshold;
        Ok(())
    }

    /// Overrides the frames sampled per video (`--frames`): the window
    /// follows. At least 1.
    pub fn set_frames(&mut self, frames: usize) -> Result<()> {
        if frames == 0 {
            return Err(Error::config("frames must be at least 1"));
        }
        self.frames = frames;
        self.window = frames;
        Ok(())
    }

    /// Whether the reported score is a calibrated P(fake).
    pub fn is_calibrated(&self) -> bool {
        self.calibration.is_some()
    }

    /// The reported score of an aggregated classifier output: P(fake) when
    /// calibrated, else the output itself.
    pub fn probability(&self, raw: f32) -> f32 {
        self.calibration.map_or(raw, |c| c.apply(raw))
    }

    /// The label of a reported score under the plain threshold.
    pub fn label(&self, score: Option<f32>) -> Label {
        Label::of(score, self.threshold)
    }

    /// A video's verdict once `analysed` frames of it were analysed: unknown
    /// ("too few frames") below [`Decision::min_video_frames`] (capped at
    /// the frames asked for), else `v` unchanged. A container whose timing
    /// misleads the sampler, or a clip shorter than asked, then says so
    /// instead of judging on one frame.
    pub fn video_verdict(&self, v: Verdict, analysed: usize) -> Verdict {
        if analysed >= self.min_video_frames.min(self.frames).max(1) || v.unknown.is_some() {
            return v;
        }
        Verdict {
            label: Label::Unknown,
            score: None,
            raw: None,
            unknown: Some(Unknown::TooFewFrames),
            tracks: v.tracks,
        }
    }

    /// The label of the aggregate of `scores`, taken as one track's frames
    /// (how the trainer replays a validation video), with its score.
    pub fn replay_track(&self, scores: impl IntoIterator<Item = f32>) -> Verdict {
        let mut a = Aggregator::new(*self);
        for s in scores {
            a.add(0, s);
        }
        a.verdict()
    }
}

/// The aggregated score of one track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackVerdict {
    /// Track id.
    pub id: u32,
    /// Reported score of the track: its window mean's (P(fake) when
    /// calibrated), fused with its sequence score where the bundle has a
    /// sequence model and the track has enough steps.
    pub score: f32,
    /// The window mean's reported score alone, when `score` is fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_score: Option<f32>,
    /// The sequence model's own score of the track's newest window
    /// (σ of its logit), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_score: Option<f32>,
    /// Frames scored for the track (in total, not only the window).
    pub frames: usize,
    /// The track's own label ([`Label::Unknown`] until it has
    /// [`Decision::min_frames`] frames).
    pub label: Label,
}

/// A video's or stream's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Real, fake or unknown.
    pub label: Label,
    /// Reported score (P(fake) when the bundle is calibrated), `None` when
    /// no track has a verdict.
    pub score: Option<f32>,
    /// The aggregated classifier output before calibration.
    pub raw: Option<f32>,
    /// Why the label is unknown (`None` when it is not).
    pub unknown: Option<Unknown>,
    /// Per-track scores, by id.
    pub tracks: Vec<TrackVerdict>,
}

impl Verdict {
    /// The verdict of an input that could not be analysed.
    pub fn error() -> Self {
        Self {
            label: Label::Unknown,
            score: None,
            raw: None,
            unknown: Some(Unknown::Error),
            tracks: Vec::new(),
        }
    }

    /// What a person reads: `FAKE  P(fake) 0.93`, `REAL  P(fake) 0.08`
    /// (`score` instead of `P(fake)` for an uncalibrated bundle), or
    /// `UNKNOWN  no face`.
    pub fn describe(&self, calibrated: bool) -> String {
        describe(self.label, self.score, self.unknown, calibrated)
    }
}

/// `FAKE  P(fake) 0.93` / `REAL  score 0.41` / `UNKNOWN  too few frames`.
pub fn describe(
    label: Label,
    score: Option<f32>,
    unknown: Option<Unknown>,
    calibrated: bool,
) -> String {
    let what = if calibrated { "P(fake)" } else { "score" };
    match (label, score) {
        (Label::Unknown, _) | (_, None) => format!(
            "{}  {}",
            Label::Unknown.as_upper(),
            unknown.unwrap_or(Unknown::NoFace).as_str()
        ),
        (l, Some(s)) => format!("{}  {what} {s:.2}", l.as_upper()),
    }
}

#[derive(Debug, Clone)]
struct TrackScores {
    id: u32,
    window: VecDeque<f32>,
    frames: usize,
    /// Newest sequence logit.
    sequence: Option<f32>,
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

    /// The decision in use.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Adds one face's classifier output to its track.
    pub fn add(&mut self, track: u32, score: f32) {
        self.all_sum += f64::from(score);
        self.all_n += 1;
        let window = self.decision.window.max(1);
        let i = match self.tracks.iter().position(|t| t.id == track) {
            Some(i) => i,
            None => {
                self.tracks.push(TrackScores {
                    id: track,
                    window: VecDeque::with_capacity(window),
                    frames: 0,
                    sequence: None,
                });
                self.tracks.len() - 1
            }
        };
        let t = &mut self.tracks[i];
        if t.window.len() == window {
            t.window.pop_front();
        }
        t.window.push_back(score);
        t.frames += 1;
    }

    /// Sets the sequence model's logit of the newest window of a track
    /// that has scores (see [`crate::sequence::SequenceScorer`]); it is
    /// fused with the frame score under [`Decision::fusion`].
    pub fn set_sequence(&mut self, track: u32, logit: f32) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.id == track) {
            t.sequence = Some(logit);
        }
    }

    /// Forgets a track (it left the scene in live mode).
    pub fn remove(&mut self, track: u32) {
        self.tracks.retain(|t| t.id != track);
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        let d = &self.decision;
        // Per track: window mean (raw), its reported score, and the score
        // that decides (fused with the sequence logit where there is one).
        struct Row {
            id: u32,
            raw: f32,
            frames: usize,
            frame_score: f32,
            score: f32,
            sequence: Option<f32>,
        }
        let mut rows: Vec<Row> = self
            .tracks
            .iter()
            .filter(|t| !t.window.is_empty())
            .map(|t| {
                let raw = t.window.iter().sum::<f32>() / t.window.len() as f32;
                let frame_score = d.probability(raw);
                let score = match (d.fusion, t.sequence) {
                    (Some(f), Some(z)) => f.apply(frame_score, z),
                    _ => frame_score,
                };
                Row {
                    id: t.id,
                    raw,
                    frames: t.frames,
                    frame_score,
                    score,
                    sequence: t.sequence,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        let judged = |frames: usize| frames >= d.min_frames.max(1);
        let longest = rows
            .iter()
            .filter(|r| judged(r.frames))
            .map(|r| r.frames)
            .max();
        // (raw, reported) of the verdict. Calibration is monotone, so the
        // track with the highest reported score also has the highest raw
        // mean when nothing is fused.
        let (raw, score) = match (d.aggregation, longest) {
            (_, None) => (None, None),
            (Aggregation::FrameMean, Some(_)) => {
                let raw = (self.all_n > 0).then(|| (self.all_sum / self.all_n as f64) as f32);
                (raw, raw.map(|r| d.probability(r)))
            }
            (Aggregation::TrackMeanThenMax, Some(longest)) => {
                let need = d.min_track_frames.min(longest).max(d.min_frames);
                rows.iter()
                    .filter(|r| r.frames >= need)
                    .max_by(|a, b| a.score.total_cmp(&b.score).then(a.raw.total_cmp(&b.raw)))
                    .map_or((None, None), |r| (Some(r.raw), Some(r.score)))
            }
        };
        let tracks: Vec<TrackVerdict> = rows
            .iter()
            .map(|r| {
                let fused = r.sequence.is_some() && d.fusion.is_some();
                TrackVerdict {
                    id: r.id,
                    score: r.score,
                    frame_score: fused.then_some(r.frame_score),
                    sequence_score: r.sequence.map(sigmoid),
                    frames: r.frames,
                    label: if judged(r.frames) {
                        d.label(Some(r.score))
                    } else {
                        Label::Unknown
                    },
                }
            })
            .collect();
        let unknown = match score {
            Some(_) => None,
            None if tracks.is_empty() => Some(Unknown::NoFace),
            None => Some(Unknown::TooFewFrames),
        };
        Verdict {
            label: d.label(score),
            score,
            raw,
            unknown,
            tracks,
        }
    }
}

/// Where a label changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole stream (its worst judged track).
    Stream,
    /// One track.
    Track(u32),
}

/// A label change of a live stream or one of its tracks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelChange {
    /// Stream or track.
    pub scope: Scope,
    /// The new label.
    pub label: Label,
    /// The label before (`None` for the first).
    pub previous: Option<Label>,
    /// The reported score at the change.
    pub score: Option<f32>,
    /// Why the new label is unknown.
    pub unknown: Option<Unknown>,
}

/// One label held under [`Hysteresis`].
#[derive(Debug, Clone, Copy, Default)]
struct Stable {
    label: Option<Label>,
    /// Since when the score has been beyond the band on the other side.
    beyond_since: Option<Duration>,
}

impl Stable {
    /// The label after `score` at time `at`, and whether it changed.
    fn update(&mut self, d: &Decision, score: Option<f32>, at: Duration) -> (Label, bool) {
        let h = d.hysteresis;
        let next = match (self.label, score) {
            (_, None) => Label::Unknown,
            (None | Some(Label::Unknown), s) => d.label(s),
            (Some(cur), Some(s)) => {
                let other = match cur {
                    Label::Real if s >= d.threshold + h.margin => Some(Label::Fake),
                    Label::Fake if s < d.threshold - h.margin => Some(Label::Real),
                    _ => None,
                };
                match other {
                    None => {
                        self.beyond_since = None;
                        cur
                    }
                    Some(o) => {
                        let since = *self.beyond_since.get_or_insert(at);
                        if at.saturating_sub(since).as_secs_f32() >= h.min_dwell_s {
                            o
                        } else {
                            cur
                        }
                    }
                }
            }
        };
        let changed = self.label != Some(next);
        if changed {
            self.label = Some(next);
            self.beyond_since = None;
        }
        (next, changed)
    }
}

/// Stable labels of a live stream and its tracks: turns successive
/// [`Verdict`]s into the labels to show and the [`LabelChange`]s to report.
#[derive(Debug, Clone, Default)]
pub struct VerdictStream {
    stream: Stable,
    tracks: Vec<(u32, Stable)>,
}

impl VerdictStream {
    /// A stream with no label yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `decision`'s hysteresis to `verdict` at stream time `at`:
    /// rewrites its labels (stream and tracks) to the held ones and returns
    /// what changed, tracks first. A track gets its first label once it has
    /// [`Decision::min_frames`] frames; tracks no longer in the verdict are
    /// forgotten.
    pub fn update(
        &mut self,
        decision: &Decision,
        verdict: &mut Verdict,
        at: Duration,
    ) -> Vec<LabelChange> {
        let mut changes = Vec::new();
        self.tracks
            .retain(|(id, _)| verdict.tracks.iter().any(|t| t.id == *id));
        for t in &mut verdict.tracks {
            if t.frames < decision.min_frames.max(1) {
                continue;
            }
            let i = match self.tracks.iter().position(|(id, _)| *id == t.id) {
                Some(i) => i,
                None => {
                    self.tracks.push((t.id, Stable::default()));
                    self.tracks.len() - 1
                }
            };
            let s = &mut self.tracks[i].1;
            let previous = s.label;
            let (label, changed) = s.update(decision, Some(t.score), at);
            t.label = label;
            if changed {
                changes.push(LabelChange {
                    scope: Scope::Track(t.id),
                    label,
                    previous,
                    score: Some(t.score),
                    unknown: None,
                });
            }
        }
        let previous = self.stream.label;
        let (label, changed) = self.stream.update(decision, verdict.score, at);
        verdict.label = label;
        if changed {
            changes.push(LabelChange {
                scope: Scope::Stream,
                label,
                previous,
                score: verdict.score,
                unknown: verdict.unknown,
            });
        }
        changes
    }

    /// The held label of a track, if it has one.
    pub fn track_label(&self, id: u32) -> Option<Label> {
        self.tracks
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, s)| s.label)
    }

    /// The held label of the stream, if it has one.
    pub fn label(&self) -> Option<Label> {
        self.stream.label
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
            min_frames: 1,
            calibration: None,
            hysteresis: Hysteresis::default(),
            min_video_frames: 1,
            fusion: None,
        }
    }

    #[test]
    fn a_sequence_logit_is_fused_into_its_track_only_with_a_fusion_rule() {
        let mut a = Aggregator::new(decision());
        for _ in 0..3 {
            a.add(0, 0.3);
            a.add(1, 0.4);
        }
        let frame_only = a.verdict();
        // Without a fusion rule a sequence logit is reported, not fused.
        a.set_sequence(0, 4.0);
        let reported = a.verdict();
        assert_eq!(
            (reported.score, reported.raw),
            (frame_only.score, frame_only.raw)
        );
        assert_eq!(reported.tracks[0].score, 0.3);
        assert_eq!(reported.tracks[0].frame_score, None);
        assert!(reported.tracks[0].sequence_score.is_some());
        assert_eq!(frame_only.raw, Some(0.4));
        let fused = |fusion: Fusion| {
            let mut a = Aggregator::new(Decision {
                fusion: Some(fusion),
                ..decision()
            });
            for _ in 0..3 {
                a.add(0, 0.3);
                a.add(1, 0.4);
            }
            a.set_sequence(0, 4.0);
            a.set_sequence(7, 9.0); // no such track: ignored
            a.verdict()
        };
        // The frame-only rule gives the frame scores back (to rounding).
        let same = fused(Fusion::FRAME_ONLY);
        assert_eq!(same.label, frame_only.label);
        assert!((same.score.unwrap() - 0.4).abs() < 1e-6);
        assert_eq!(same.tracks[0].frame_score, Some(0.3));
        assert!((same.tracks[0].sequence_score.unwrap() - sigmoid(4.0)).abs() < 1e-6);
        assert_eq!(
            same.tracks[1].sequence_score, None,
            "track 1 has no sequence yet"
        );
        // A rule that trusts the sequence: track 0 becomes the fake one and
        // decides, its frame mean is the verdict's raw score.
        let v = fused(Fusion {
            frame: 1.0,
            sequence: 1.0,
            bias: 0.0,
        });
        assert_eq!(v.label, Label::Fake);
        let want = sigmoid(logit(0.3) + 4.0);
        assert!((v.score.unwrap() - want).abs() < 1e-6, "{v:?}");
        assert_eq!(v.raw, Some(0.3));
        assert_eq!(v.tracks[0].label, Label::Fake);
        assert_eq!(v.tracks[1].label, Label::Real);
        // Tracks without a sequence serialise as before.
        let json = serde_json::to_value(&v.tracks[1]).unwrap();
        assert!(json.get("sequence_score").is_none() && json.get("frame_score").is_none());
    }

    #[test]
    fn a_video_with_fewer_frames_than_the_bundle_needs_is_unknown() {
        let mut d = decision();
        d.min_video_frames = 4;
        let mut a = Aggregator::new(d);
        a.add(0, 0.9);
        let v = a.verdict();
        assert_eq!(v.label, Label::Fake);
        let short = d.video_verdict(v.clone(), 1);
        assert_eq!(short.label, Label::Unknown);
        assert_eq!(short.unknown, Some(Unknown::TooFewFrames));
        assert_eq!(short.score, None);
        assert_eq!(short.tracks, v.tracks);
        assert_eq!(d.video_verdict(v.clone(), 4), v);
        // Capped at the frames asked for: `--frames 2` needs 2.
        d.frames = 2;
        assert_eq!(d.video_verdict(v.clone(), 2), v);
        // An unknown keeps its own reason.
        let none = Aggregator::new(d).verdict();
        assert_eq!(d.video_verdict(none, 0).unknown, Some(Unknown::NoFace));
        // Bundles without the field need one frame; zero is refused.
        let spec: DecisionSpec =
            serde_json::from_str(r#"{"threshold": 0.5, "aggregation": "frame_mean", "frames": 8}"#)
                .unwrap();
        assert_eq!(Decision::from_spec(Some(&spec)).min_video_frames, 1);
        let zero = DecisionSpec {
            min_video_frames: Some(0),
            ..spec
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn worst_track_decides_and_window_slides() {
        let mut a = Aggregator::new(decision());
        assert_eq!(a.verdict().label, Label::Unknown);
        assert_eq!(a.verdict().score, None);
        assert_eq!(a.verdict().unknown, Some(Unknown::NoFace));
        for s in [0.1, 0.2, 0.3] {
            a.add(1, s);
        }
        for s in [0.9, 0.7] {
            a.add(2, s);
        }
        let v = a.verdict();
        assert_eq!(v.label, Label::Fake);
        assert_eq!(v.unknown, None);
        assert!((v.score.unwrap() - 0.8).abs() < 1e-6);
        assert_eq!(v.tracks[0].label, Label::Real);
        assert_eq!(v.tracks[1].label, Label::Fake);
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
    fn too_few_frames_is_unknown_with_its_reason() {
        let mut d = decision();
        d.min_frames = 3;
        let mut a = Aggregator::new(d);
        a.add(1, 0.9);
        a.add(1, 0.9);
        let v = a.verdict();
        assert_eq!(v.label, Label::Unknown);
        assert_eq!(v.unknown, Some(Unknown::TooFewFrames));
        assert_eq!(v.tracks[0].label, Label::Unknown);
        assert_eq!(v.describe(true), "UNKNOWN  too few frames");
        a.add(1, 0.9);
        assert_eq!(a.verdict().label, Label::Fake);
        assert_eq!(a.verdict().describe(true), "FAKE  P(fake) 0.90");
        assert_eq!(Verdict::error().describe(true), "UNKNOWN  error");
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
        assert_eq!(Aggregation::FrameMean.as_str(), "frame_mean");
    }

    #[test]
    fn calibration_maps_raw_scores_monotonically_and_keeps_raw() {
        let mut d = decision();
        d.calibration = Some(Calibration::Platt { a: 2.0, b: -1.0 });
        let mut a = Aggregator::new(d);
        a.add(1, 0.5);
        let v = a.verdict();
        // logit(0.5) = 0 → σ(-1) = 0.2689.
        assert!((v.score.unwrap() - 0.268_941_4).abs() < 1e-5, "{v:?}");
        assert_eq!(v.raw, Some(0.5));
        assert_eq!(v.label, Label::Real);
        assert!((v.tracks[0].score - v.score.unwrap()).abs() < 1e-7);
        let c = Calibration::Platt { a: 1.5, b: 0.3 };
        let mut last = 0.0;
        for i in 0..=100 {
            let p = c.apply(i as f32 / 100.0);
            assert!(p >= last && (0.0..=1.0).contains(&p));
            last = p;
        }
        assert!(Calibration::Platt { a: -1.0, b: 0.0 }.validate().is_err());
        assert!(Calibration::Platt {
            a: f32::NAN,
            b: 0.0
        }
        .validate()
        .is_err());
    }

    #[test]
    fn bundle_section_parses_and_validates() {
        let old: DecisionSpec = serde_json::from_str(
            r#"{"threshold": 0.88, "aggregation": "track_mean_then_max", "frames": 25}"#,
        )
        .unwrap();
        let d = Decision::from_spec(Some(&old));
        assert_eq!(d.calibration, None);
        assert_eq!(d.hysteresis, Hysteresis::default());
        assert_eq!(d.threshold, 0.88);
        let new: DecisionSpec = serde_json::from_str(
            r#"{"threshold": 0.5, "aggregation": "frame_mean", "frames": 10,
                "calibration": {"kind": "platt", "a": 1.2, "b": -0.1},
                "hysteresis": {"margin": 0.1, "min_dwell_s": 5}}"#,
        )
        .unwrap();
        new.validate().unwrap();
        assert_eq!(
            Decision::from_spec(Some(&new)).calibration,
            Some(Calibration::Platt { a: 1.2, b: -0.1 })
        );
        let back: DecisionSpec =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
        for bad in [
            r#"{"threshold": 0.5, "aggregation": "max", "frames": 10}"#,
            r#"{"threshold": 0.5, "aggregation": "frame_mean", "frames": 10,
                "calibration": {"kind": "isotonic"}}"#,
            r#"{"threshold": 0.5, "aggregation": "frame_mean", "frames": 10,
                "calibration": {"kind": "platt", "a": 1, "b": 0, "c": 2}}"#,
        ] {
            assert!(serde_json::from_str::<DecisionSpec>(bad).is_err(), "{bad}");
        }
        let mut s = new.clone();
        s.threshold = 1.5;
        assert!(s.validate().is_err());
        let mut s = new.clone();
        s.hysteresis = Some(Hysteresis {
            margin: 0.6,
            min_dwell_s: 1.0,
        });
        assert!(s.validate().is_err());
        let mut s = new;
        s.calibration = Some(Calibration::Platt { a: 0.0, b: 0.0 });
        assert!(s.validate().is_err());
        let mut d = Decision::default();
        assert!(d.set_threshold(-0.1).is_err());
        assert!(d.set_frames(0).is_err());
        d.set_threshold(0.7).unwrap();
        assert_eq!(d.threshold, 0.7);
    }

    /// A score hovering around the threshold flips the plain label on every
    /// crossing; with hysteresis it holds.
    #[test]
    fn hysteresis_and_dwell_hold_a_hovering_label() {
        let hover = [0.48, 0.52, 0.47, 0.53, 0.49, 0.51, 0.46, 0.54];
        let count = |h: Hysteresis| {
            let mut d = decision();
            d.hysteresis = h;
            let mut s = VerdictStream::new();
            let mut n = 0;
            for (i, &p) in hover.iter().enumerate() {
                let mut a = Aggregator::new(Decision { window: 1, ..d });
                a.add(1, p);
                let mut v = a.verdict();
                let at = Duration::from_secs(i as u64);
                n += s
                    .update(&d, &mut v, at)
                    .iter()
                    .filter(|c| c.scope == Scope::Stream && c.previous.is_some())
                    .count();
            }
            n
        };
        assert_eq!(count(Hysteresis::default()), 7);
        let band = Hysteresis {
            margin: 0.05,
            min_dwell_s: 0.0,
        };
        assert_eq!(count(band), 0);
        // Dwell alone: no crossing lasts 3 s.
        let dwell = Hysteresis {
            margin: 0.0,
            min_dwell_s: 3.0,
        };
        assert_eq!(count(dwell), 0);
        // A crossing that lasts does change the label, once it has lasted.
        let mut d = decision();
        d.hysteresis = dwell;
        let mut s = VerdictStream::new();
        let mut labels = Vec::new();
        for (t, p) in [0.2, 0.7, 0.7, 0.3, 0.7, 0.7, 0.7, 0.7]
            .into_iter()
            .enumerate()
        {
            let mut a = Aggregator::new(d);
            a.add(1, p);
            let mut v = a.verdict();
            s.update(&d, &mut v, Duration::from_secs(t as u64));
            labels.push(v.label);
        }
        use Label::{Fake as F, Real as R};
        assert_eq!(labels, [R, R, R, R, R, R, R, F]);
        // A clear change still goes through once the dwell has passed.
        let mut d = decision();
        d.hysteresis = band;
        let mut s = VerdictStream::new();
        let step = |s: &mut VerdictStream, p: f32, t: u64| {
            let mut a = Aggregator::new(d);
            a.add(1, p);
            let mut v = a.verdict();
            let c = s.update(&d, &mut v, Duration::from_secs(t));
            (v.label, c)
        };
        let (l, c) = step(&mut s, 0.2, 0);
        assert_eq!(l, Label::Real);
        assert_eq!(c.len(), 2, "first labels of the track and the stream");
        assert_eq!(step(&mut s, 0.54, 1).0, Label::Real);
        let (l, c) = step(&mut s, 0.56, 2);
        assert_eq!(l, Label::Fake);
        assert_eq!(c[1].previous, Some(Label::Real));
        assert_eq!(s.track_label(1), Some(Label::Fake));
        assert_eq!(step(&mut s, 0.46, 3).0, Label::Fake);
        assert_eq!(step(&mut s, 0.44, 4).0, Label::Real);
        // The face leaves: the stream is unknown at once, the track forgotten.
        let mut v = Aggregator::new(d).verdict();
        let c = s.update(&d, &mut v, Duration::from_secs(5));
        assert_eq!(v.label, Label::Unknown);
        assert_eq!(c[0].unknown, Some(Unknown::NoFace));
        assert_eq!(s.track_label(1), None);
    }
}
