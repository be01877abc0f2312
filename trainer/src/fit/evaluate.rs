//! Evaluation of a classifier: the SDK's aggregation replayed per video,
//! calibration and threshold chosen on validation, metrics and ECE on test.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use fakewatch_sdk::verdict::{Calibration, Decision, Verdict};
use serde::Serialize;

use crate::calibrate::{self, ReliabilityBin, ECE_BINS};
use crate::metrics::{self, Report};

use super::*;

/// Frame- and video-level metrics of one model on the test split, with the
/// calibration and threshold chosen on validation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Row name in the tables.
    pub name: String,
    /// Threshold on the reported score (0.5 on P(fake) when calibrated, else
    /// the EER point of the validation videos).
    pub threshold: f64,
    /// Aggregated score → P(fake), fitted on the validation videos (`None`:
    /// not configured, or the scores could not be calibrated).
    pub calibration: Option<Calibration>,
    /// The shipped decision replayed on the validation videos through the
    /// SDK's aggregation (what `scan` does with each video).
    pub validation: Report,
    /// Per face (the face's score through the calibration).
    pub frame: Report,
    /// Per video (the SDK's aggregation of its faces), `None` when each
    /// video has one face.
    pub video: Option<Report>,
    /// Expected calibration error on the test videos, before and after.
    pub calibration_error: CalibrationError,
}

/// Expected calibration error ([`ECE_BINS`] bins) of the test videos'
/// scores, with the reliability bins behind it.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationError {
    /// Bins of the ECE.
    pub bins: usize,
    /// ECE of the raw aggregated score read as a probability.
    pub before: f64,
    /// ECE of the reported score (the same as `before` when uncalibrated).
    pub after: f64,
    /// Reliability bins of the raw score.
    pub reliability_before: Vec<ReliabilityBin>,
    /// Reliability bins of the reported score.
    pub reliability_after: Vec<ReliabilityBin>,
}

/// Replays `decision` on each video of `rows` as `scan` would see it: its
/// faces (one track: a training video has one face per frame), aggregated
/// by the SDK. One verdict per video, in first-seen order, with the label.
pub(super) fn replay(
    decision: &Decision,
    scores: &[f64],
    rows: &Rows,
) -> (Vec<Verdict>, Vec<bool>) {
    let mut order: Vec<&str> = Vec::new();
    let mut faces: BTreeMap<&str, (Vec<f32>, bool)> = BTreeMap::new();
    for ((&s, v), &y) in scores.iter().zip(&rows.video).zip(&rows.y) {
        faces
            .entry(v)
            .or_insert_with(|| {
                order.push(v);
                (Vec::new(), y)
            })
            .0
            .push(s as f32);
    }
    order
        .iter()
        .filter_map(|v| faces.get(v))
        .map(|(s, y)| (decision.replay_track(s.iter().copied()), *y))
        .unzip()
}

/// The reported and raw scores of replayed verdicts (a video always has a
/// face, so both exist).
pub(super) fn scores_of(verdicts: &[Verdict]) -> (Vec<f64>, Vec<f64>) {
    verdicts
        .iter()
        .map(|v| {
            (
                f64::from(v.score.unwrap_or(f32::NAN)),
                f64::from(v.raw.unwrap_or(f32::NAN)),
            )
        })
        .unzip()
}

/// The validation videos a decision is chosen on: the dataset's own, without
/// the self-blended fakes added for training (they would shift the share of
/// fakes, and P(fake) with it, away from what the dataset's videos have),
/// unless the dataset's own lack a class. Returns their scores and rows
/// (without features: a replay needs labels and videos only).
pub(super) fn decision_rows(vs: &[f64], val: &Rows) -> (Vec<f64>, Rows) {
    let own = |v: &String| !v.ends_with(SELF_BLENDED);
    let mut rows = Rows::default();
    let mut scores = Vec::new();
    for ((&s, v), &y) in vs.iter().zip(&val.video).zip(&val.y) {
        if own(v) {
            scores.push(s);
            rows.video.push(v.clone());
            rows.y.push(y);
        }
    }
    if rows.both_classes() {
        (scores, rows)
    } else {
        let all = Rows {
            x: Vec::new(),
            y: val.y.clone(),
            video: val.video.clone(),
        };
        (vs.to_vec(), all)
    }
}

/// Calibration and threshold of `decision` chosen on the validation
/// scores `vs` of `val` (pass them through [`decision_rows`]): the shipped
/// decision.
pub(super) fn choose_decision(cfg: &DecisionConfig, vs: &[f64], val: &Rows) -> Result<Decision> {
    let mut d = cfg.uncalibrated();
    let (verdicts, vy) = replay(&d, vs, val);
    let (_, raw) = scores_of(&verdicts);
    d.calibration = match cfg.calibration {
        CalibrationKind::None => None,
        CalibrationKind::Platt => match calibrate::fit_platt(&raw, &vy) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("{e:#}: the bundle reports raw scores");
                None
            }
        },
    };
    d.threshold = match (cfg.threshold, d.calibration) {
        (Some(t), _) => t,
        (None, Some(_)) => fakewatch_sdk::verdict::DEFAULT_THRESHOLD,
        (None, None) => {
            metrics::eer(&raw, &vy)
                .context("validation split needs both classes")?
                .1 as f32
        }
    };
    d.threshold = d.threshold.clamp(0.0, 1.0);
    Ok(d)
}

/// Metrics of the verdicts `decision` gives the videos of `rows` (scores
/// `s`), at its threshold.
pub(super) fn replayed_report(decision: &Decision, s: &[f64], rows: &Rows) -> Option<Report> {
    let (verdicts, y) = replay(decision, s, rows);
    let (p, _) = scores_of(&verdicts);
    metrics::report(&p, &y, f64::from(decision.threshold))
}

/// The L2 strength of `cfg.logistic.l2_grid` whose classifier, trained on
/// `train`, has the best face-level AUC on `val` (ties: the stronger L2).
pub(super) fn select_l2(
    cfg: &FitConfig,
    train: (&[Vec<f32>], &[bool]),
    val: (&[Vec<f32>], &Rows),
) -> Result<f32> {
    let mut best: Option<(f64, f32)> = None;
    let mut grid = cfg.logistic.l2_grid.clone();
    grid.sort_by(|a, b| b.total_cmp(a));
    for l2 in grid {
        ensure!(
            l2.is_finite() && l2 >= 0.0,
            "l2_grid values must be finite and >= 0"
        );
        let mut c = cfg.clone();
        c.logistic.l2 = l2;
        let clf = Classifier::fit_configured(ClassifierKind::Logistic, train.0, train.1, &c)?;
        let auc = metrics::roc_auc(&clf.predict(val.0), &val.1.y).unwrap_or(0.5);
        log::info!("logistic l2 {l2:e}: validation AUC {auc:.4}");
        if best.is_none_or(|(a, _)| auc > a) {
            best = Some((auc, l2));
        }
    }
    let (auc, l2) = best.context("empty l2_grid")?;
    log::info!("logistic l2 {l2:e} chosen (validation AUC {auc:.4})");
    Ok(l2)
}

pub(super) fn evaluate(
    name: &str,
    clf: &Classifier,
    val: (&[Vec<f32>], &Rows),
    test: (&[Vec<f32>], &Rows),
    cfg: &DecisionConfig,
) -> Result<(Evaluation, Vec<f64>)> {
    let (vs, vrows) = decision_rows(&clf.predict(val.0), val.1);
    let d = choose_decision(cfg, &vs, &vrows)?;
    let threshold = f64::from(d.threshold);
    let validation =
        replayed_report(&d, &vs, &vrows).context("validation split needs both classes")?;
    let ts = clf.predict(test.0);
    let tp: Vec<f64> = ts
        .iter()
        .map(|&s| f64::from(d.probability(s as f32)))
        .collect();
    let frame =
        metrics::report(&tp, &test.1.y, threshold).context("test split needs both classes")?;
    let (verdicts, ty) = replay(&d, &ts, test.1);
    let (p, raw) = scores_of(&verdicts);
    let video = if verdicts.len() < ts.len() {
        metrics::report(&p, &ty, threshold)
    } else {
        None
    };
    let calibration_error = CalibrationError {
        bins: ECE_BINS,
        before: calibrate::ece(&raw, &ty, ECE_BINS),
        after: calibrate::ece(&p, &ty, ECE_BINS),
        reliability_before: calibrate::reliability(&raw, &ty, ECE_BINS),
        reliability_after: calibrate::reliability(&p, &ty, ECE_BINS),
    };
    Ok((
        Evaluation {
            name: name.into(),
            threshold,
            calibration: d.calibration,
            validation,
            frame,
            video,
            calibration_error,
        },
        ts,
    ))
}
