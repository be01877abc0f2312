//! `fit`'s configuration: what `trainer/configs/*.json` hold.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use fakewatch_sdk::sampling::Sampling;
use fakewatch_sdk::verdict::{Aggregation, Decision, DecisionSpec, Hysteresis, DEFAULT_FRAMES};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::dataset::DatasetSpec;
use crate::forest::ForestConfig;
use crate::identity::PseudoIdentityConfig;
use crate::logistic;
use crate::onnx::BagVote;
use crate::rng::Rng;
use crate::sbi::SelfBlendConfig;
use crate::triplet::TripletConfig;

/// What sits between the backbone and the classifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// The paper's metric-learning head, trained with triplet mining.
    #[default]
    Triplet,
    /// None: the classifier scores the backbone's vector (its pooled
    /// features when it has them) directly.
    None,
}

/// Which classifier goes into the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// SGD logistic regression.
    Logistic,
    /// Random forest.
    RandomForest,
}

impl ClassifierKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Logistic => "logistic",
            Self::RandomForest => "random_forest",
        }
    }
}

/// SGD logistic settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogisticConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Initial learning rate.
    pub learning_rate: f32,
    /// L2 strength.
    pub l2: f32,
    /// Candidate L2 strengths: when not empty, `fit` trains one classifier
    /// per value on the training split, keeps the one with the best
    /// validation AUC, and records it as `l2` in the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l2_grid: Vec<f32>,
    /// How the weights are found: `sgd` (the paper's mini-batch SGD,
    /// `epochs` and `learning_rate`) or `lbfgs` (full-batch, to the optimum).
    #[serde(default)]
    pub solver: LogisticSolver,
}

/// The logistic classifier's optimiser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogisticSolver {
    /// Seeded mini-batch SGD with a decaying rate.
    #[default]
    Sgd,
    /// Full-batch L-BFGS to the regularised optimum.
    Lbfgs,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self {
            epochs: logistic::EPOCHS,
            learning_rate: logistic::LEARNING_RATE,
            l2: logistic::L2,
            l2_grid: Vec::new(),
            solver: LogisticSolver::Sgd,
        }
    }
}

/// The paper's class balancing: k bags, each with every face of the
/// smaller class and one disjoint part of the larger class, one classifier
/// per bag, combined in one classifier file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaggingConfig {
    /// Number of bags; 0: larger class ÷ smaller class, rounded (balanced
    /// bags, as in the paper).
    #[serde(default)]
    pub bags: usize,
    /// How the bags' scores are combined.
    #[serde(default)]
    pub vote: BagVote,
}

/// Largest number of bags a configuration may ask for.
pub const MAX_BAGS: usize = 64;

/// The training rows of each bag: every row of the smaller class, plus one
/// of `k` disjoint, equally sized parts of the larger class (seeded shuffle;
/// the remainder of fewer than `k` rows is left out). With `bags` 0, `k` is
/// the class ratio rounded (at least 1).
pub fn balanced_bags(y: &[bool], bags: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    let fake: Vec<usize> = (0..y.len()).filter(|&i| y[i]).collect();
    let real: Vec<usize> = (0..y.len()).filter(|&i| !y[i]).collect();
    ensure!(
        !fake.is_empty() && !real.is_empty(),
        "bagging needs faces of both classes"
    );
    let (small, mut large) = if fake.len() <= real.len() {
        (fake, real)
    } else {
        (real, fake)
    };
    let k = if bags == 0 {
        ((large.len() as f64 / small.len() as f64).round() as usize).max(1)
    } else {
        bags
    };
    ensure!(
        k <= MAX_BAGS && k <= large.len(),
        "{k} bags for {} faces of the larger class (at most {MAX_BAGS})",
        large.len()
    );
    Rng::new(seed ^ 0xBA65).shuffle(&mut large);
    let part = large.len() / k;
    Ok((0..k)
        .map(|b| {
            let mut rows = small.clone();
            rows.extend_from_slice(&large[b * part..(b + 1) * part]);
            rows.sort_unstable();
            rows
        })
        .collect())
}

/// How the aggregated score becomes P(fake).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationKind {
    /// Platt scaling fitted on the validation videos; the threshold is 0.5.
    #[default]
    Platt,
    /// None: the raw score, thresholded at its validation EER point.
    None,
}

/// Live-mode hysteresis written into bundles unless configured otherwise:
/// the label changes only 0.1 beyond the threshold and is held 5 s
/// (`bench/flips.py` measures what it does to real talking heads).
pub const DEFAULT_HYSTERESIS: Hysteresis = Hysteresis {
    margin: 0.1,
    min_dwell_s: 5.0,
};

/// Frames a video must yield before it gets a verdict, written into bundles
/// unless configured otherwise. Not fitted to data: the least evidence a
/// video verdict should rest on (a container whose timing misleads the
/// sampler once gave one frame of eight, and a confident verdict from it).
pub const DEFAULT_MIN_VIDEO_FRAMES: usize = 4;

/// The bundle's decision settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Aggregation written into the bundle (and replayed on validation).
    pub aggregation: Aggregation,
    /// Frames sampled per video at inference.
    pub frames: usize,
    /// Fixed threshold on the reported score; `None`: 0.5 when calibrated,
    /// else the EER point on the validation videos.
    pub threshold: Option<f32>,
    /// Calibration of the aggregated score.
    pub calibration: CalibrationKind,
    /// Live-mode label stability (`None`: labels follow the threshold).
    pub hysteresis: Option<Hysteresis>,
    /// Frames a video must yield before it gets a verdict (fewer: unknown,
    /// "too few frames"; capped at the frames asked for).
    pub min_video_frames: usize,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            aggregation: Aggregation::default(),
            frames: DEFAULT_FRAMES,
            threshold: None,
            calibration: CalibrationKind::default(),
            hysteresis: Some(DEFAULT_HYSTERESIS),
            min_video_frames: DEFAULT_MIN_VIDEO_FRAMES,
        }
    }
}

impl DecisionConfig {
    /// The SDK decision this configuration ships, before calibration and
    /// threshold are chosen: what the validation replay aggregates with.
    pub(super) fn uncalibrated(&self) -> Decision {
        Decision::from_spec(Some(&DecisionSpec {
            threshold: fakewatch_sdk::verdict::DEFAULT_THRESHOLD,
            aggregation: self.aggregation,
            frames: self.frames,
            calibration: None,
            hysteresis: self.hysteresis,
            min_video_frames: Some(self.min_video_frames),
        }))
    }
}

/// Everything `fit` needs; copied into the bundle for reproducibility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    /// Bundle name.
    pub name: String,
    /// Training data.
    pub dataset: DatasetSpec,
    /// Bundle whose detector, aligner and backbone are used (and referenced).
    pub perception: PathBuf,
    /// Frames taken from each training video.
    #[serde(default = "default_sampling")]
    pub sampling: Sampling,
    /// At most this many samples per split (seeded, whole groups); for quick runs.
    #[serde(default)]
    pub max_samples_per_split: Option<usize>,
    /// What sits between the backbone and the classifier.
    #[serde(default)]
    pub head: HeadKind,
    /// Triplet head (used when `head` is `triplet`).
    #[serde(default)]
    pub triplet: TripletConfig,
    /// Classifier written into the bundle.
    #[serde(default = "default_classifier")]
    pub classifier: ClassifierKind,
    /// Bagging of the classifier (`None`: one classifier on every face).
    #[serde(default)]
    pub bagging: Option<BaggingConfig>,
    /// Logistic settings.
    #[serde(default)]
    pub logistic: LogisticConfig,
    /// Forest settings.
    #[serde(default)]
    pub forest: ForestConfig,
    /// Decision settings.
    #[serde(default)]
    pub decision: DecisionConfig,
    /// Also train the paper's comparison rows (frames only; random / hard
    /// mining; both classifiers) for the report.
    #[serde(default)]
    pub compare: bool,
    /// Test points in the t-SNE plots (0: no t-SNE).
    #[serde(default = "default_tsne_points")]
    pub tsne_points: usize,
    /// Seed of everything not seeded above.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where the fakes of the train and validation splits come from. The
    /// test split always keeps the dataset's own fakes.
    #[serde(default)]
    pub fakes: FakeSource,
    /// Self-blend generator settings (`fakes`: `self_blended` or `both`).
    #[serde(default)]
    pub self_blend: SelfBlendConfig,
    /// Share of real train/validation samples that get a self-blended copy
    /// (seeded choice; 1: every one).
    #[serde(default = "default_share")]
    pub self_blend_share: f64,
    /// Augment every train sample once (flip, colour, scale, blur, noise,
    /// JPEG; `None`: the samples as they are). With self-blended fakes this
    /// gives real faces the same re-compression the blends get, so the
    /// classifier cannot tell them apart by compression alone.
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
    /// Also measure the bundle on the test split re-compressed as JPEG at
    /// this quality (robustness; `None`: skip).
    #[serde(default)]
    pub robustness_jpeg: Option<u8>,
    /// Also measure the bundle on the test split's real faces against a
    /// self-blended copy of each (seeded, the generator's settings): the
    /// other fake source. A bundle trained on the dataset's fakes meets
    /// blends it never saw here, as a self-blended one meets the dataset's
    /// fakes in the test AUC — the two directions of leave-one-source-out.
    #[serde(default)]
    pub self_blended_test: bool,
    /// Split by pseudo-identities (groups clustered by face embedding)
    /// instead of the dataset's own split, for datasets that name no
    /// identities (`None`: the dataset's split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_identities: Option<PseudoIdentityConfig>,
}

/// Source of the training fakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeSource {
    /// The dataset's fakes (the paper's setting).
    #[default]
    Real,
    /// Self-blended fakes made from the real faces only; the dataset's fakes
    /// are never seen before the test (the SBI protocol: an honest
    /// cross-manipulation test).
    SelfBlended,
    /// The dataset's fakes plus self-blended ones.
    Both,
}

impl FakeSource {
    pub(super) fn keeps_dataset_fakes(self) -> bool {
        self != Self::SelfBlended
    }
    pub(super) fn blends(self) -> bool {
        self != Self::Real
    }
}

pub(super) fn default_share() -> f64 {
    1.0
}

pub(super) fn default_sampling() -> Sampling {
    Sampling::Even(DEFAULT_FRAMES)
}
pub(super) fn default_classifier() -> ClassifierKind {
    ClassifierKind::Logistic
}
pub(super) fn default_tsne_points() -> usize {
    600
}
pub(super) fn default_seed() -> u64 {
    42
}

impl FitConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.sampling.max_frames() > 0,
            "sampling must take at least one frame"
        );
        ensure!(
            self.decision.min_video_frames > 0,
            "decision.min_video_frames must be at least 1"
        );
        ensure!(
            (0.0..=1.0).contains(&self.self_blend_share),
            "self_blend_share must lie within 0..=1"
        );
        if let Some(q) = self.robustness_jpeg {
            ensure!(
                (1..=100).contains(&q),
                "robustness_jpeg must lie within 1..=100"
            );
        }
        if let Some(b) = &self.bagging {
            ensure!(
                b.bags <= MAX_BAGS,
                "bagging.bags must be at most {MAX_BAGS}"
            );
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        if let Some(p) = &self.pseudo_identities {
            p.validate()?;
        }
        self.self_blend.validate()
    }
}
