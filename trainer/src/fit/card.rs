//! What `fit` writes beside the models: `bundle.json`, the score
//! histograms, tables and the model card.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use fakewatch_sdk::bundle::{sha256_file, Bundle, BundleManifest, ClassifierSpec, HeadSpec};
use fakewatch_sdk::pooling::PoolStat;
use fakewatch_sdk::verdict::{Aggregation, Calibration, DecisionSpec, DEFAULT_FRAMES};
use serde::Serialize;
use serde_json::json;

use crate::triplet::Mining;

use super::*;

pub(super) fn mining_name(m: Mining) -> &'static str {
    match m {
        Mining::SemiHard => "semi-hard",
        Mining::Hard => "hard",
        Mining::Random => "random",
    }
}

/// Per-face scores of one split as two histograms over `0..=1`: what a
/// deployment needs to re-calibrate its threshold, or to tell a confident
/// verdict from a marginal one.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreDistribution {
    /// Which split the scores come from.
    pub split: &'static str,
    /// Number of equal-width bins over `0..=1`.
    pub bins: usize,
    /// Real faces per bin.
    pub real: Vec<usize>,
    /// Fake faces per bin.
    pub fake: Vec<usize>,
}

/// Bins of [`ScoreDistribution`].
pub const SCORE_BINS: usize = 20;

impl ScoreDistribution {
    /// Histograms of validation scores by label.
    pub(super) fn new(scores: &[f64], labels: &[bool]) -> Self {
        let mut d = Self {
            split: "val",
            bins: SCORE_BINS,
            real: vec![0; SCORE_BINS],
            fake: vec![0; SCORE_BINS],
        };
        for (&s, &y) in scores.iter().zip(labels) {
            let b = ((s.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
            if y {
                d.fake[b] += 1;
            } else {
                d.real[b] += 1;
            }
        }
        d
    }
}

/// What `fit` measured, for the bundle's `metrics`.
pub(super) struct Measured<'a> {
    pub(super) eval: &'a Evaluation,
    pub(super) test: &'a Rows,
    pub(super) robustness: Option<&'a Evaluation>,
    pub(super) self_blended: Option<&'a Evaluation>,
    pub(super) distribution: &'a ScoreDistribution,
}

pub(super) fn write_manifest(
    cfg: &FitConfig,
    base: &Bundle,
    out: &Path,
    measured: Measured<'_>,
) -> Result<BundleManifest> {
    let Measured {
        eval,
        test,
        robustness,
        self_blended,
        distribution,
    } = measured;
    let bm = base.manifest();
    let rel = |name: &str| -> Result<String> { relative(&base.resolve(name)?, out) };
    let mut detector = bm.detector.clone();
    detector.pnet = rel(&bm.detector.pnet)?;
    detector.rnet = rel(&bm.detector.rnet)?;
    detector.onet = rel(&bm.detector.onet)?;
    let mut backbone = bm.backbone.clone();
    backbone.file = rel(&bm.backbone.file)?;
    for b in &mut backbone.branches {
        b.file = rel(&b.file)?;
    }
    let head_dim = cfg.triplet.layers.last().copied().unwrap_or(0);
    let mut m = BundleManifest {
        format: fakewatch_sdk::bundle::BUNDLE_FORMAT,
        name: cfg.name.clone(),
        created: rfc3339_now(),
        detector,
        aligner: bm.aligner,
        backbone,
        head: (cfg.head == HeadKind::Triplet).then(|| HeadSpec {
            file: "head.onnx".into(),
            dim: head_dim,
        }),
        classifier: Some(ClassifierSpec {
            file: "classifier.onnx".into(),
            kind: cfg.classifier.as_str().into(),
        }),
        decision: Some(DecisionSpec {
            threshold: (eval.threshold as f32).clamp(0.0, 1.0),
            aggregation: cfg.decision.aggregation,
            frames: cfg.decision.frames,
            calibration: eval.calibration,
            hysteresis: cfg.decision.hysteresis,
            min_video_frames: Some(cfg.decision.min_video_frames),
        }),
        sequence: None,
        metrics: Some(json!({
            "split": "test", "level": "frame", "faces": test.x.len(),
            "auc": eval.frame.auc, "eer": eval.frame.eer, "acc": eval.frame.acc,
            "precision": eval.frame.precision, "recall": eval.frame.recall, "f1": eval.frame.f1,
            "video": eval.video,
            "validation": eval.validation,
            "calibration_error": {
                "level": "video", "bins": eval.calibration_error.bins,
                "before": eval.calibration_error.before, "after": eval.calibration_error.after,
            },
            "fakes": cfg.fakes,
            "robustness": robustness.map(|r| json!({
                "jpeg_quality": cfg.robustness_jpeg,
                "auc": r.frame.auc, "eer": r.frame.eer, "acc": r.frame.acc,
                "video_auc": r.video.as_ref().map(|v| v.auc),
            })),
            "self_blended_test": self_blended.map(|r| json!({
                "faces": r.frame.n, "auc": r.frame.auc, "eer": r.frame.eer, "acc": r.frame.acc,
            })),
            "validation_scores": distribution,
        })),
        training: Some(serde_json::to_value(cfg)?),
        files: BTreeMap::new(),
    };
    save_manifest(&mut m, out)?;
    Ok(m)
}

/// Hashes every file `m` references (relative to the bundle directory `out`)
/// into `m.files` and writes `out/bundle.json`.
pub(crate) fn save_manifest(m: &mut BundleManifest, out: &Path) -> Result<()> {
    m.files.clear();
    let names: Vec<String> = m
        .referenced_files()
        .into_iter()
        .map(str::to_string)
        .collect();
    for f in names {
        let path = out.join(&f);
        let sha = sha256_file(&path).with_context(|| format!("hashing {}", path.display()))?;
        m.files.insert(f, sha);
    }
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_string_pretty(m)? + "\n",
    )?;
    Ok(())
}

/// Current UTC time as RFC 3339 (seconds), without a date crate.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(super) fn table_md(table: &[Evaluation]) -> String {
    let mut s = String::from(
        "| model (frame level, test split) | ACC | P | R | F1 | AUC | EER |\n|---|---|---|---|---|---|---|\n",
    );
    for e in table {
        let r = &e.frame;
        s += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            e.name, r.acc, r.precision, r.recall, r.f1, r.auc, r.eer
        );
    }
    s
}

pub(super) fn print_table(table: &[Evaluation]) {
    println!(
        "{:<36} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "frame level (test)", "ACC", "P", "R", "F1", "AUC", "EER"
    );
    for e in table {
        let r = &e.frame;
        println!(
            "{:<36} {:6.3} {:6.3} {:6.3} {:6.3} {:6.3} {:6.3}",
            e.name, r.acc, r.precision, r.recall, r.f1, r.auc, r.eer
        );
    }
}

/// What the model card says of the decision: calibration, threshold, ECE.
pub(super) fn decision_text(e: &Evaluation) -> String {
    let ce = &e.calibration_error;
    match e.calibration {
        Some(Calibration::Platt { a, b }) => format!(
            "Platt calibration fitted on the validation videos of the dataset's own reals and \
             fakes (replaying the SDK's aggregation): P(fake) = σ({a:.4} · logit(s) {sign} \
             {babs:.4}). The verdict is fake at \
             P(fake) ≥ {thr:.2}. Expected calibration error on the test videos ({bins} bins): \
             {before:.3} raw → {after:.3} calibrated (`reliability.png`). Validation, \
             replayed: AUC {vauc:.4}, accuracy {vacc:.4}.",
            sign = if b < 0.0 { '−' } else { '+' },
            babs = b.abs(),
            thr = e.threshold,
            bins = ce.bins,
            before = ce.before,
            after = ce.after,
            vauc = e.validation.auc,
            vacc = e.validation.acc,
        ),
        None => format!(
            "No calibration: the score is the raw classifier output, fake at ≥ {thr:.4} \
             (the equal-error point of the validation videos, replaying the SDK's \
             aggregation). Test ECE of the raw score ({bins} bins): {before:.3}.",
            thr = e.threshold,
            bins = ce.bins,
            before = ce.before,
        ),
    }
}

pub(super) fn model_card(
    cfg: &FitConfig,
    m: &BundleManifest,
    main: &Evaluation,
    table: &[Evaluation],
    (train, val, test): (&Rows, &Rows, &Rows),
) -> String {
    let count = |r: &Rows| {
        let f = r.y.iter().filter(|&&v| v).count();
        format!("{} faces ({} real, {f} fake)", r.x.len(), r.x.len() - f)
    };
    let d = m.decision.as_ref();
    let fakes = match cfg.fakes {
        FakeSource::Real => "the dataset's own (the paper's setting)".to_string(),
        FakeSource::SelfBlended => {
            "self-blended copies of the real faces only (none of the dataset's fakes)".to_string()
        }
        FakeSource::Both => format!(
            "the dataset's own plus self-blended copies of {:.0} % of the real faces",
            cfg.self_blend_share * 100.0
        ),
    };
    format!(
        "# Model card: {name}\n\n\
Generated by `fakewatch-train fit` on {created}. Reproduce with\n\
`fakewatch-train fit --config FILE --out DIR` (the configuration is copied into\n\
`bundle.json`'s `training` section; `models/build_*.sh` do this for the committed bundles).\n\n\
## Method\n\
Kumar & Bhavsar 2020, *Detecting Deepfakes with Metric Learning*: MTCNN faces → frozen\n\
backbone `{backbone}` ({vector} of a {size}×{size} crop) → {stages}\n\
→ {aggregation} ({frames} frames per video) → {decision}\n\n\
## Data\n\
`{path}` ({layout:?} layout), split by identity / source video, never per frame.\n\
Train and validation fakes: {fakes}. The test split keeps the dataset's own fakes.\n\
- train: {ntrain}\n- val: {nval}\n- test: {ntest}\n\n\
The shared DFDC data is research-only (DFDC terms): this bundle is for research and\n\
evaluation, not for decisions about people.\n\n\
## Test metrics\n\n{table}\n\
Frame level = one face crop. Threshold-dependent columns (ACC, P, R, F1) use each row's\n\
decision (calibrated P(fake) at 0.5, or the validation EER point), on calibrated scores.\n\n\
## Limits\n\
Frozen face-recognition embeddings are built to ignore the artefacts a forgery leaves; on\n\
deepfakes from other datasets this method is near chance (see `../shared/docs/findings.md`).\n\
Treat `fake` as a prompt for review, not proof.\n",
        name = m.name,
        created = m.created,
        backbone = m.backbone.file,
        vector = match &m.backbone.features {
            Some(f) => {
                let stats: Vec<&str> = f
                    .stats
                    .iter()
                    .map(|s| match s {
                        PoolStat::Mean => "global-average-pooled",
                        PoolStat::Max => "global-max-pooled",
                        PoolStat::Std => "spatial standard deviation of",
                    })
                    .collect();
                let branches: String = m
                    .backbone
                    .branches
                    .iter()
                    .map(|b| format!(" + {} (branch {})", b.file, b.prefix))
                    .collect();
                format!(
                    "{}-d {} activations of {} levels{branches}, standardised on the \
                     training split",
                    f.dim,
                    stats.join(" / "),
                    f.pool.len()
                )
            }
            None => format!("{}-d embedding", m.backbone.dim),
        },
        size = m.backbone.input[2],
        fakes = fakes,
        stages = match cfg.head {
            HeadKind::Triplet => format!(
                "triplet head {:?} trained with online {} mining, margin α = {}, batch {}, \
                 {} Adam steps → {} classifier",
                cfg.triplet.layers,
                mining_name(cfg.triplet.mining),
                cfg.triplet.margin,
                cfg.triplet.batch,
                cfg.triplet.steps,
                cfg.classifier.as_str()
            ),
            HeadKind::None => format!(
                "{} classifier on that vector (no triplet head; with \"compare\": true the \
                 paper's head rows are listed below)",
                cfg.classifier.as_str()
            ),
        },
        aggregation = match d.map(|d| d.aggregation).unwrap_or_default() {
            Aggregation::TrackMeanThenMax => "mean over each track's frames, then the worst track",
            Aggregation::FrameMean => "mean over every face",
        },
        frames = d.map_or(DEFAULT_FRAMES, |d| d.frames),
        decision = decision_text(main),
        path = cfg.dataset.path.display(),
        layout = cfg.dataset.layout,
        ntrain = count(train),
        nval = count(val),
        ntest = count(test),
        table = table_md(table),
    )
}
