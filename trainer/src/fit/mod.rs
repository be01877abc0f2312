//! `fakewatch-train fit`: the paper's method end to end, from a labelled
//! dataset to a deployable bundle, in one seeded command.
//!
//! dataset → (cached) MTCNN + aligner + backbone → triplet head (semi-hard)
//! → classifier → calibration and threshold on validation (replaying the
//! SDK's aggregation per video) → metrics on test → ONNX export checked in
//! tract → `bundle.json`, report, plots and model card.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use fakewatch_sdk::backend::{Backend, TractBackend};
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::score::Scorer;
use fakewatch_sdk::Perception;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::cache::{self, EmbeddingCache};
use crate::calibrate::ReliabilityBin;
use crate::dataset::{self, Split};
use crate::extract::{self, Job, Outcome, Transform};
use crate::forest::{self, Forest};
use crate::identity;
use crate::logistic::{self, Logistic};
use crate::metrics;
use crate::onnx::BagVote;
use crate::rng::Rng;
use crate::standardize::Standardizer;
use crate::triplet::{self, Head, Mining, TripletConfig};
use crate::{onnx, plot, tsne};

mod card;
mod config;
mod evaluate;

pub(crate) use card::save_manifest;
use card::*;
pub use card::{rfc3339_now, ScoreDistribution};
pub use config::*;
pub use evaluate::Evaluation;
use evaluate::*;

/// Suffix of the video name of a self-blended face (its own video for the
/// video-level metrics).
const SELF_BLENDED: &str = "#self-blended";

/// What one extraction job contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// The sample as it is.
    Plain,
    /// A self-blended fake of a real sample.
    Blended,
    /// A re-compressed copy of a test sample.
    Recompressed,
    /// A self-blended fake of a real test sample
    /// ([`FitConfig::self_blended_test`]).
    BlendedTest,
}

/// The extraction jobs of a fit: every sample the configuration keeps, a
/// self-blended copy of the chosen real train/validation samples, and a
/// re-compressed copy of each test sample. Returns `(sample index, role,
/// job)`.
fn plan_jobs(cfg: &FitConfig, samples: &[dataset::Sample]) -> Vec<(usize, Role, Job)> {
    let sampling = |s: &dataset::Sample| (!extract::is_image(&s.path)).then_some(cfg.sampling);
    let blend = std::sync::Arc::new(cfg.self_blend.clone());
    let augment = cfg.augment.clone().map(std::sync::Arc::new);
    let mut pick = Rng::new(cfg.seed ^ 0x5b1);
    // A self-blended copy of sample `i`, seeded per sample and per use.
    let blend_job = |i: usize, s: &dataset::Sample, mix: u64| {
        let mut job = Job::plain(s.path.clone(), sampling(s));
        job.transform = Some(Transform::SelfBlend {
            seed: cfg.seed.wrapping_add(i as u64).wrapping_mul(mix),
            config: blend.clone(),
        });
        job
    };
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let test = s.split == Split::Test;
        if test || !s.fake || cfg.fakes.keeps_dataset_fakes() {
            let mut job = Job::plain(s.path.clone(), sampling(s));
            if let (Split::Train, Some(a)) = (s.split, &augment) {
                job.transform = Some(Transform::Augment {
                    seed: cfg
                        .seed
                        .wrapping_add(i as u64)
                        .wrapping_mul(0xA24B_AED4_963E_E407),
                    config: a.clone(),
                });
            }
            out.push((i, Role::Plain, job));
        }
        if !test
            && !s.fake
            && cfg.fakes.blends()
            && f64::from(pick.uniform()) < cfg.self_blend_share
        {
            out.push((i, Role::Blended, blend_job(i, s, 0x2545_F491_4F6C_DD1D)));
        }
        if test && !s.fake && cfg.self_blended_test {
            out.push((i, Role::BlendedTest, blend_job(i, s, 0x9E37_79B9_7F4A_7C15)));
        }
        if let (true, Some(q)) = (test, cfg.robustness_jpeg) {
            let mut job = Job::plain(s.path.clone(), sampling(s));
            job.transform = Some(Transform::Jpeg(q));
            out.push((i, Role::Recompressed, job));
        }
    }
    out
}

/// Arguments of `fakewatch-train fit`.
#[derive(clap::Args)]
pub struct FitArgs {
    /// Configuration file (JSON; see `trainer/configs/`).
    #[arg(long)]
    config: PathBuf,
    /// Output bundle directory.
    #[arg(long)]
    out: PathBuf,
    /// Dataset root, overriding the configuration's.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Embedding cache directory (default: $FAKEWATCH_CACHE,
    /// $XDG_CACHE_HOME/fakewatch or ~/.cache/fakewatch).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Extraction threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the triplet head and the random forest, overriding
    /// `triplet.seed` and `forest.seed` (the data split, the self-blends and
    /// the logistic regression keep the configuration's `seed`, so the
    /// embedding cache is reused): reruns with several values measure how
    /// much of a result is training noise.
    #[arg(long)]
    train_seed: Option<u64>,
}

/// Face rows of one split.
#[derive(Default)]
struct Rows {
    x: Vec<Vec<f32>>,
    y: Vec<bool>,
    video: Vec<String>,
}

impl Rows {
    fn both_classes(&self) -> bool {
        self.y.iter().any(|&v| v) && self.y.iter().any(|&v| !v)
    }
}

/// A trained classifier of either kind, or bags of them.
enum Classifier {
    Logistic(Logistic),
    Forest(Forest),
    Bagged(Vec<Classifier>, BagVote),
}

impl Classifier {
    /// The configured classifier: bagged when the configuration says so.
    fn fit_configured(
        kind: ClassifierKind,
        x: &[Vec<f32>],
        y: &[bool],
        cfg: &FitConfig,
    ) -> Result<Self> {
        let Some(bagging) = cfg.bagging else {
            return Self::fit(kind, x, y, cfg);
        };
        let bags = balanced_bags(y, bagging.bags, cfg.seed)?;
        log::info!(
            "bagging: {} bags of {} faces, {:?}",
            bags.len(),
            bags[0].len(),
            bagging.vote
        );
        let members = bags
            .iter()
            .map(|rows| {
                let bx: Vec<Vec<f32>> = rows.iter().map(|&i| x[i].clone()).collect();
                let by: Vec<bool> = rows.iter().map(|&i| y[i]).collect();
                Self::fit(kind, &bx, &by, cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Bagged(members, bagging.vote))
    }

    fn fit(kind: ClassifierKind, x: &[Vec<f32>], y: &[bool], cfg: &FitConfig) -> Result<Self> {
        Ok(match kind {
            ClassifierKind::Logistic => Self::Logistic(match cfg.logistic.solver {
                LogisticSolver::Sgd => logistic::fit(
                    x,
                    y,
                    cfg.logistic.epochs,
                    cfg.logistic.learning_rate,
                    cfg.logistic.l2,
                    cfg.seed,
                )?,
                LogisticSolver::Lbfgs => {
                    logistic::fit_lbfgs(x, y, cfg.logistic.l2, logistic::LBFGS_MAX_ITER)?
                }
            }),
            ClassifierKind::RandomForest => Self::Forest(forest::fit(x, y, &cfg.forest)?),
        })
    }
    fn predict_one(&self, r: &[f32]) -> f32 {
        match self {
            Self::Logistic(m) => m.predict(r),
            Self::Forest(f) => f.predict(r),
            Self::Bagged(members, vote) => {
                let s: Vec<f32> = members.iter().map(|m| m.predict_one(r)).collect();
                onnx::combine_bags(&s, *vote)
            }
        }
    }
    fn predict(&self, x: &[Vec<f32>]) -> Vec<f64> {
        x.iter().map(|r| f64::from(self.predict_one(r))).collect()
    }
    fn onnx(&self) -> Result<tract_onnx::pb::ModelProto> {
        match self {
            Self::Logistic(m) => onnx::logistic_model(&m.w, m.b),
            Self::Forest(f) => onnx::forest_model(f),
            Self::Bagged(members, vote) => onnx::bagged_model(
                members.iter().map(Self::onnx).collect::<Result<_>>()?,
                *vote,
            ),
        }
    }
}

fn project(head: &Head, x: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let d = x[0].len();
    let mut out = Vec::with_capacity(x.len());
    for chunk in x.chunks(1024) {
        let t = Tensor::from_vec(
            chunk.iter().flatten().copied().collect::<Vec<f32>>(),
            (chunk.len(), d),
            &Device::Cpu,
        )?;
        out.extend(head.forward(&t)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

fn train_head(train: &Rows, cfg: &TripletConfig) -> Result<Head> {
    let pb = ProgressBar::new(cfg.steps as u64);
    pb.set_style(ProgressStyle::with_template(
        "triplet {msg} {bar:40} {pos}/{len} eta {eta}",
    )?);
    let mining = format!("{:?}", cfg.mining);
    let head = triplet::train(&train.x, &train.y, cfg, |_, l| {
        pb.inc(1);
        pb.set_message(format!("{mining} loss {l:.4}"));
    })?;
    pb.finish_and_clear();
    Ok(head)
}

/// Keeps at most `n` samples of each split, whole groups at a time (seeded).
pub(crate) fn subsample(
    samples: Vec<dataset::Sample>,
    n: usize,
    seed: u64,
) -> Vec<dataset::Sample> {
    let mut groups: BTreeMap<(u8, String), Vec<dataset::Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry((s.split as u8, s.group.clone()))
            .or_default()
            .push(s);
    }
    let mut keys: Vec<_> = groups.keys().cloned().collect();
    Rng::new(seed).shuffle(&mut keys);
    let mut count = [0usize; 3];
    let mut out = Vec::new();
    for k in keys {
        let g = &groups[&k];
        let c = &mut count[k.0 as usize];
        if *c + g.len() <= n {
            *c += g.len();
            out.extend(g.iter().cloned());
        }
    }
    out
}

/// `to` relative to the directory `from` (both made absolute first).
pub(crate) fn relative(to: &Path, from: &Path) -> Result<String> {
    let abs = |p: &Path| -> Result<PathBuf> {
        let p = std::path::absolute(p)?;
        // Lexically resolve `..` so a referenced `../facenet.onnx` normalises.
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        Ok(out)
    };
    let (to, from) = (abs(to)?, abs(from)?);
    let tc: Vec<_> = to.components().collect();
    let fc: Vec<_> = from.components().collect();
    let common = tc.iter().zip(&fc).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..fc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c);
    }
    rel.to_str()
        .map(|s| s.replace('\\', "/"))
        .context("non-UTF-8 path")
}

/// Runs the command.
pub fn run(a: FitArgs, backend: &dyn Backend) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg: FitConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", a.config.display()))?;
    if let Some(d) = a.dataset {
        cfg.dataset.path = d;
    }
    if let Some(seed) = a.train_seed {
        cfg.triplet.seed = seed;
        cfg.forest.seed = seed;
    }
    cfg.validate()
        .with_context(|| format!("checking {}", a.config.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;

    // 1. Faces and embeddings, through the cache.
    let base = Bundle::load(&cfg.perception)
        .with_context(|| format!("perception bundle {}", cfg.perception.display()))?;
    let perception = Perception::from_bundle(&base, backend)?;
    let mut samples = dataset::load(&cfg.dataset, cfg.seed)?;
    if let Some(n) = cfg.max_samples_per_split {
        samples = subsample(samples, n, cfg.seed);
    }
    let cache_dir = a.cache.unwrap_or_else(cache::default_dir);
    let mut cache = EmbeddingCache::open(
        &cache_dir,
        &cache::perception_key_for(&base, backend.name())?,
    )?;
    log::info!(
        "{} samples; embedding cache {} ({} entries)",
        samples.len(),
        cache.path().display(),
        cache.len()
    );
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match &cfg.pseudo_identities {
        Some(p) => {
            // The plain faces first (the main pass finds them in the cache).
            let jobs: Vec<Job> = samples
                .iter()
                .map(|s| {
                    Job::plain(
                        s.path.clone(),
                        (!extract::is_image(&s.path)).then_some(cfg.sampling),
                    )
                })
                .collect();
            let outcomes = extract::run(&perception, &jobs, &mut cache, threads)?;
            let report = identity::assign(
                &mut samples,
                |i| match &outcomes[i] {
                    Outcome::Faces(f) if !f.is_empty() => {
                        let mut m = f[0].embedding.clone();
                        for face in &f[1..] {
                            m.iter_mut().zip(&face.embedding).for_each(|(a, b)| *a += b);
                        }
                        Some(m)
                    }
                    _ => None,
                },
                p,
                cfg.dataset.val_test_fraction,
                cfg.seed,
            )?;
            let count = |split| samples.iter().filter(|s| s.split == split).count();
            log::info!(
                "split by pseudo-identity (average linkage of face embeddings, cosine distance \
                 <= {}): {} groups -> {} pseudo-identities (largest {} groups; {} groups without \
                 a face split on their own); train {} / val {} / test {} samples",
                report.max_distance,
                report.groups,
                report.identities,
                report.largest,
                report.groups_without_face,
                count(Split::Train),
                count(Split::Val),
                count(Split::Test)
            );
            if let Some(l) = report.leak {
                log::info!(
                    "identities the dataset names: {:.1} % of {} held-out samples share one \
                     with a training sample under the pseudo-identity split, {:.1} % under a \
                     split by source group",
                    100.0 * l.pseudo_split,
                    l.held_out,
                    100.0 * l.group_split
                );
            }
        }
        None if samples.iter().all(|s| s.identity.is_empty()) => log::warn!(
            "the dataset names no identities: its split is by source group, which leaks \
             people the dataset reuses across videos; \"pseudo_identities\": {{}} splits by \
             face-embedding clusters instead"
        ),
        None => {}
    }
    let planned = plan_jobs(&cfg, &samples);
    let jobs: Vec<Job> = planned.iter().map(|(_, _, j)| j.clone()).collect();
    let outcomes = extract::run(&perception, &jobs, &mut cache, threads)?;
    let (mut train, mut val, mut test) = (Rows::default(), Rows::default(), Rows::default());
    let mut recompressed = Rows::default();
    // Test reals and their self-blends (`self_blended_test`).
    let mut blended_test = Rows::default();
    let (mut no_face, mut failed) = (0usize, 0usize);
    for ((i, role, _), o) in planned.iter().zip(&outcomes) {
        let s = &samples[*i];
        if let (Role::Plain, Split::Test, false, true, Outcome::Faces(f)) =
            (role, s.split, s.fake, cfg.self_blended_test, o)
        {
            for face in f {
                blended_test.x.push(face.scoring_input().to_vec());
                blended_test.y.push(false);
                blended_test.video.push(s.video.clone());
            }
        }
        let rows = match (role, s.split) {
            (Role::Recompressed, _) => &mut recompressed,
            (Role::BlendedTest, _) => &mut blended_test,
            (_, Split::Train) => &mut train,
            (_, Split::Val) => &mut val,
            (_, Split::Test) => &mut test,
        };
        let (fake, video) = match role {
            Role::Blended | Role::BlendedTest => (true, format!("{}{SELF_BLENDED}", s.video)),
            _ => (s.fake, s.video.clone()),
        };
        match o {
            Outcome::Faces(f) if f.is_empty() => no_face += 1,
            Outcome::Faces(f) => {
                for face in f {
                    rows.x.push(face.scoring_input().to_vec());
                    rows.y.push(fake);
                    rows.video.push(video.clone());
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                log::warn!("{}: {e}", s.path.display());
            }
        }
    }
    let blended = |r: &Rows| r.video.iter().filter(|v| v.ends_with(SELF_BLENDED)).count();
    log::info!(
        "faces: train {} ({} self-blended), val {} ({} self-blended), test {} (+{} re-compressed); \
         {no_face} samples without a face, {failed} unreadable",
        train.x.len(),
        blended(&train),
        val.x.len(),
        blended(&val),
        test.x.len(),
        recompressed.x.len()
    );
    for (name, r) in [("train", &train), ("val", &val), ("test", &test)] {
        ensure!(
            r.both_classes(),
            "the {name} split needs real and fake faces"
        );
    }

    // Pooled multi-level features differ in scale level by level: they are
    // standardised on the training split, and the standardisation is folded
    // into the head's first layer, so the bundle takes raw pooled features.
    let raw_test = test.x.clone();
    let raw_val = val.x.clone();
    let standardizer = match &base.manifest().backbone.features {
        None => None,
        Some(f) => {
            let s = Standardizer::fit(&train.x).context("no training faces")?;
            for r in [
                &mut train,
                &mut val,
                &mut test,
                &mut recompressed,
                &mut blended_test,
            ] {
                s.apply(&mut r.x);
            }
            log::info!(
                "{}-d pooled features of {} tensors, standardised on {} training faces",
                f.dim,
                f.pool.len(),
                train.x.len()
            );
            Some(s)
        }
    };

    // 2. The bundle's model: triplet head (or none) + classifier.
    let head = match cfg.head {
        HeadKind::Triplet => Some(train_head(&train, &cfg.triplet)?),
        HeadKind::None => None,
    };
    let through_head = |x: &[Vec<f32>]| -> Result<Vec<Vec<f32>>> {
        match &head {
            Some(h) => project(h, x),
            None => Ok(x.to_vec()),
        }
    };
    let (htrain, hval, htest) = (
        through_head(&train.x)?,
        through_head(&val.x)?,
        through_head(&test.x)?,
    );
    let fixed = cfg.decision.clone();
    if cfg.classifier == ClassifierKind::Logistic && !cfg.logistic.l2_grid.is_empty() {
        cfg.logistic.l2 = select_l2(&cfg, (&htrain, &train.y), (&hval, &val))?;
    }
    let clf = Classifier::fit_configured(cfg.classifier, &htrain, &train.y, &cfg)?;
    let main_name = format!(
        "{} + {}{}",
        match cfg.head {
            HeadKind::Triplet => format!("triplet {}", mining_name(cfg.triplet.mining)),
            HeadKind::None => "frames only".to_string(),
        },
        cfg.classifier.as_str(),
        match &clf {
            Classifier::Bagged(m, vote) => format!(" ({} bags, {})", m.len(), vote.label()),
            _ => String::new(),
        }
    );
    let (main_eval, main_scores) =
        evaluate(&main_name, &clf, (&hval, &val), (&htest, &test), &fixed)?;
    let robustness = match cfg.robustness_jpeg {
        Some(q) if recompressed.both_classes() => {
            let hr = through_head(&recompressed.x)?;
            let name = format!("{main_name}, test re-compressed JPEG q{q}");
            let (e, _) = evaluate(&name, &clf, (&hval, &val), (&hr, &recompressed), &fixed)?;
            log::info!("{name}: AUC {:.3}", e.frame.auc);
            Some(e)
        }
        Some(q) => {
            log::warn!("no test faces of both classes survived JPEG q{q}: robustness not measured");
            None
        }
        None => None,
    };
    let self_blended = if !cfg.self_blended_test {
        None
    } else if blended_test.both_classes() {
        let hb = through_head(&blended_test.x)?;
        let name = format!("{main_name}, test reals vs their self-blends");
        let (e, _) = evaluate(&name, &clf, (&hval, &val), (&hb, &blended_test), &fixed)?;
        log::info!("{name}: AUC {:.3}", e.frame.auc);
        Some(e)
    } else {
        log::warn!("no self-blended test faces survived detection: not measured");
        None
    };
    let distribution = ScoreDistribution::new(&clf.predict(&hval), &val.y);

    // 3. The paper's comparison rows.
    let mut table = vec![];
    let mut roc_series = vec![];
    let mut raw_eval_scores = None;
    if cfg.compare {
        for kind in [ClassifierKind::Logistic, ClassifierKind::RandomForest] {
            let c = Classifier::fit_configured(kind, &train.x, &train.y, &cfg)?;
            let name = format!("frames only + {}", kind.as_str());
            let (e, s) = evaluate(&name, &c, (&val.x, &val), (&test.x, &test), &fixed)?;
            log::info!("{name}: AUC {:.3}", e.frame.auc);
            if kind == cfg.classifier {
                raw_eval_scores = Some((name.clone(), s));
            }
            table.push(e);
        }
        for mining in [Mining::Random, Mining::SemiHard, Mining::Hard] {
            let main_head = head.is_some() && mining == cfg.triplet.mining;
            let (hx, hv, ht) = if main_head {
                (htrain.clone(), hval.clone(), htest.clone())
            } else {
                let h = train_head(
                    &train,
                    &TripletConfig {
                        mining,
                        ..cfg.triplet.clone()
                    },
                )?;
                (
                    project(&h, &train.x)?,
                    project(&h, &val.x)?,
                    project(&h, &test.x)?,
                )
            };
            for kind in [ClassifierKind::Logistic, ClassifierKind::RandomForest] {
                let name = format!("triplet {} + {}", mining_name(mining), kind.as_str());
                let (e, s) = if main_head && kind == cfg.classifier {
                    (main_eval.clone(), main_scores.clone())
                } else {
                    let c = Classifier::fit_configured(kind, &hx, &train.y, &cfg)?;
                    evaluate(&name, &c, (&hv, &val), (&ht, &test), &fixed)?
                };
                log::info!("{name}: AUC {:.3}", e.frame.auc);
                if kind == cfg.classifier && !main_head {
                    roc_series.push((name.clone(), s));
                }
                table.push(e);
            }
        }
    } else {
        table.push(main_eval.clone());
    }

    // 4. Export, then check tract reproduces the trainer through the SDK.
    let head_file = "head.onnx";
    let clf_file = "classifier.onnx";
    let mut clf_model = clf.onnx()?;
    match &head {
        Some(h) => {
            let mut dense = h.to_dense()?;
            if let (Some(s), Some(first)) = (&standardizer, dense.first_mut()) {
                s.fold_into(first);
            }
            onnx::save(&onnx::head_model(&dense)?, &a.out.join(head_file))?;
        }
        None => {
            // A previous run's head must not be mistaken for this bundle's.
            let stale = a.out.join(head_file);
            if stale.exists() {
                std::fs::remove_file(&stale)
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
            if let Some(s) = &standardizer {
                onnx::prepend_standardization(&mut clf_model, &s.mean, &s.inv_std)?;
            }
        }
    }
    onnx::save(&clf_model, &a.out.join(clf_file))?;
    let manifest = write_manifest(
        &cfg,
        &base,
        &a.out,
        Measured {
            eval: &main_eval,
            test: &test,
            robustness: robustness.as_ref(),
            self_blended: self_blended.as_ref(),
            distribution: &distribution,
        },
    )?;
    let bundle = Bundle::load(&a.out).context("the written bundle does not load")?;
    let scorer = Scorer::from_bundle(&bundle, &TractBackend)?;
    let sdk_scores = scorer.score(&raw_test)?;
    let max_diff = sdk_scores
        .iter()
        .zip(&main_scores)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    ensure!(
        max_diff < 1e-4,
        "the SDK's scores differ from the trainer's by {max_diff}"
    );
    // The bundle's decision, as the SDK reads it, replayed on the validation
    // videos with the SDK's scores, must give the trainer's validation
    // metrics: the threshold was chosen under the rule that ships.
    let sdk_val: Vec<f64> = scorer.score(&raw_val)?.into_iter().map(f64::from).collect();
    let (sdk_val, sdk_rows) = decision_rows(&sdk_val, &val);
    let sdk_validation = replayed_report(&bundle.decision(), &sdk_val, &sdk_rows)
        .context("validation split needs both classes")?;
    let replay_check = json!({
        "auc": sdk_validation.auc, "acc": sdk_validation.acc, "threshold": sdk_validation.threshold,
        "trainer_auc": main_eval.validation.auc, "trainer_acc": main_eval.validation.acc,
    });
    ensure!(
        (sdk_validation.auc - main_eval.validation.auc).abs() < VALIDATION_REPLAY_TOL
            && (sdk_validation.acc - main_eval.validation.acc).abs()
                <= 1.0 / sdk_validation.n as f64 + 1e-12,
        "the bundle's decision replayed by the SDK on validation differs from the trainer's: {replay_check}"
    );

    // 5. Report, plots, model card.
    let mut series = vec![];
    if let Some((n, s)) = raw_eval_scores {
        series.push((n, s));
    }
    series.push((main_name.clone(), main_scores.clone()));
    series.extend(roc_series);
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                metrics::roc_curve(s, &test.y)
                    .into_iter()
                    .map(|(fpr, tpr, _)| (fpr, tpr))
                    .collect(),
            )
        })
        .collect();
    plot::roc(
        &a.out.join("roc.png"),
        "ROC, test split (frame level)",
        &curves,
    )?;
    let ce = &main_eval.calibration_error;
    let bins = |b: &[ReliabilityBin]| b.iter().map(|b| (b.predicted, b.observed)).collect();
    let mut rel = vec![(
        format!("raw score (ECE {:.3})", ce.before),
        bins(&ce.reliability_before),
    )];
    if main_eval.calibration.is_some() {
        rel.push((
            format!("calibrated (ECE {:.3})", ce.after),
            bins(&ce.reliability_after),
        ));
    }
    plot::reliability(
        &a.out.join("reliability.png"),
        "Reliability, test videos",
        &rel,
    )?;
    if cfg.tsne_points > 1 {
        let mut idx: Vec<usize> = (0..test.x.len()).collect();
        Rng::new(cfg.seed).shuffle(&mut idx);
        idx.truncate(cfg.tsne_points);
        let labels: Vec<bool> = idx.iter().map(|&i| test.y[i]).collect();
        let t = tsne::TsneConfig {
            seed: cfg.seed,
            ..Default::default()
        };
        let pick = |x: &[Vec<f32>]| idx.iter().map(|&i| x[i].clone()).collect::<Vec<_>>();
        let before = tsne::embed(&pick(&test.x), &t);
        plot::scatter(
            &a.out.join("tsne_backbone.png"),
            "test faces: backbone embedding",
            &before,
            &labels,
        )?;
        if head.is_some() {
            let after = tsne::embed(&pick(&htest), &t);
            plot::scatter(
                &a.out.join("tsne_head.png"),
                "test faces: triplet head",
                &after,
                &labels,
            )?;
        }
    }
    let report = json!({
        "name": cfg.name,
        "faces": {"train": train.x.len(), "val": val.x.len(), "test": test.x.len()},
        "samples_without_face": no_face, "unreadable": failed,
        "bundle": main_eval, "table": table, "robustness": robustness,
        "self_blended_test": self_blended,
        "validation_scores": distribution,
        "sdk_max_abs_diff": max_diff, "sdk_validation_replay": replay_check, "config": cfg,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        a.out.join("MODEL_CARD.md"),
        model_card(&cfg, &manifest, &main_eval, &table, (&train, &val, &test)),
    )?;
    print_table(&table);
    let ce = &main_eval.calibration_error;
    println!(
        "bundle {} written: {} threshold {:.4}, test AUC {:.4}, test ECE {:.3} -> {:.3}; \
         the SDK reproduces the trainer's scores to {max_diff:.1e} and its validation metrics",
        a.out.display(),
        if main_eval.calibration.is_some() {
            "P(fake)"
        } else {
            "raw-score"
        },
        main_eval.threshold,
        main_eval.frame.auc,
        ce.before,
        ce.after,
    );
    Ok(())
}

/// Largest accepted AUC difference between the trainer's validation metrics
/// and the SDK's replay of the written bundle (scores agree to 1e-4, which
/// can swap near-tied videos).
const VALIDATION_REPLAY_TOL: f64 = 1e-3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::AugmentConfig;

    #[test]
    fn relative_paths_between_bundles() {
        let r = relative(
            Path::new("models/base/../facenet.onnx"),
            Path::new("models/default"),
        )
        .unwrap();
        assert_eq!(r, "../facenet.onnx");
        let r = relative(Path::new("/a/b/c.onnx"), Path::new("/a/b")).unwrap();
        assert_eq!(r, "c.onnx");
    }

    fn sample(split: Split, fake: bool) -> dataset::Sample {
        let name = format!("{split:?}-{fake}");
        dataset::Sample {
            path: PathBuf::from(format!("{name}.jpg")),
            fake,
            video: name.clone(),
            group: format!("{split:?}"),
            identity: String::new(),
            split,
        }
    }

    fn config(fakes: FakeSource) -> FitConfig {
        let mut c: FitConfig = serde_json::from_value(json!({
            "name": "t",
            "dataset": {"layout": "labels_csv", "path": "."},
            "perception": "models/base",
        }))
        .unwrap();
        c.fakes = fakes;
        c
    }

    #[test]
    fn jobs_per_fake_source() {
        let samples: Vec<_> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .flat_map(|s| [sample(s, false), sample(s, true)])
            .collect();
        let roles = |cfg: &FitConfig| -> Vec<(Split, bool, Role)> {
            plan_jobs(cfg, &samples)
                .into_iter()
                .map(|(i, r, _)| (samples[i].split, samples[i].fake, r))
                .collect()
        };
        let real = roles(&config(FakeSource::Real));
        assert_eq!(real.len(), 6);
        assert!(real.iter().all(|r| r.2 == Role::Plain));

        // SBI protocol: no dataset fake before the test; each real train/val
        // face gets a blended twin.
        let sbi = roles(&config(FakeSource::SelfBlended));
        assert!(!sbi.iter().any(|&(s, fake, _)| fake && s != Split::Test));
        let blended: Vec<_> = sbi.iter().filter(|r| r.2 == Role::Blended).collect();
        assert_eq!(blended.len(), 2);
        assert!(blended.iter().all(|r| !r.1 && r.0 != Split::Test));
        assert_eq!(sbi.len(), 6);

        let mut both = config(FakeSource::Both);
        both.robustness_jpeg = Some(30);
        both.augment = Some(AugmentConfig::default());
        let jobs = plan_jobs(&both, &samples);
        assert_eq!(jobs.len(), 6 + 2 + 2);
        for (i, role, job) in &jobs {
            let s = &samples[*i];
            match (role, &job.transform) {
                (Role::Recompressed, Some(Transform::Jpeg(30))) => assert_eq!(s.split, Split::Test),
                (Role::Blended, Some(Transform::SelfBlend { .. })) => assert!(!s.fake),
                (Role::Plain, Some(Transform::Augment { .. })) => assert_eq!(s.split, Split::Train),
                (Role::Plain, None) => assert_ne!(s.split, Split::Train),
                other => panic!("unexpected job {other:?}"),
            }
        }
        // A share of zero blends none.
        both.self_blend_share = 0.0;
        assert!(!roles(&both).iter().any(|r| r.2 == Role::Blended));
    }

    #[test]
    fn balanced_bags_split_the_larger_class() {
        // 3 fakes, 10 reals: auto gives round(10/3) = 3 bags of 3 + 3.
        let y: Vec<bool> = (0..13).map(|i| i < 3).collect();
        let bags = balanced_bags(&y, 0, 7).unwrap();
        assert_eq!(bags.len(), 3);
        let mut seen_real = std::collections::BTreeSet::new();
        for b in &bags {
            assert_eq!(
                b.iter().filter(|&&i| y[i]).count(),
                3,
                "every fake in every bag"
            );
            let reals: Vec<usize> = b.iter().copied().filter(|&i| !y[i]).collect();
            assert_eq!(reals.len(), 3);
            for r in reals {
                assert!(seen_real.insert(r), "real row {r} in two bags");
            }
        }
        assert_eq!(balanced_bags(&y, 2, 7).unwrap()[0].len(), 3 + 5);
        assert_eq!(balanced_bags(&y, 0, 7).unwrap(), bags, "seeded");
        assert_ne!(balanced_bags(&y, 0, 8).unwrap(), bags);
        assert!(balanced_bags(&y, 11, 7).is_err(), "more bags than reals");
        assert!(balanced_bags(&[true, true], 0, 7).is_err(), "one class");
    }

    #[test]
    fn config_checks() {
        let mut c = config(FakeSource::Both);
        c.validate().unwrap();
        c.self_blend_share = 1.5;
        assert!(c.validate().is_err());
        let mut c = config(FakeSource::Real);
        c.robustness_jpeg = Some(0);
        assert!(c.validate().is_err());
        let d = ScoreDistribution::new(&[0.0, 0.5, 1.0, 0.97], &[false, false, true, true]);
        assert_eq!(d.real.iter().sum::<usize>(), 2);
        assert_eq!(d.fake[SCORE_BINS - 1], 2);
        assert_eq!(d.real[SCORE_BINS / 2], 1);
    }

    #[test]
    fn rfc3339_has_the_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }

    #[test]
    fn validation_replays_the_sdk_aggregation_and_calibrates() {
        let rows = Rows {
            x: vec![vec![]; 3],
            y: vec![true, true, false],
            video: vec!["a".into(), "a".into(), "b".into()],
        };
        let d = DecisionConfig::default().uncalibrated();
        let (v, y) = replay(&d, &[0.2, 0.4, 0.9], &rows);
        assert_eq!(y, vec![true, false]);
        let (p, raw) = scores_of(&v);
        assert!((raw[0] - 0.3).abs() < 1e-6 && (raw[1] - 0.9).abs() < 1e-6);
        assert_eq!(p, raw, "uncalibrated: the score is the raw mean");
        // A split the scores rank well: Platt fits, the threshold is 0.5,
        // and the report at that decision is what replaying it gives.
        let mut val = Rows::default();
        let mut scores = Vec::new();
        for i in 0..40 {
            let fake = i % 2 == 0;
            for f in 0..3 {
                val.x.push(vec![]);
                val.y.push(fake);
                val.video.push(format!("v{i}"));
                let base = if fake { 0.7 } else { 0.4 };
                scores.push(base + 0.01 * f as f64 + 0.003 * i as f64 - 0.06);
            }
        }
        let cfg = DecisionConfig::default();
        let d = choose_decision(&cfg, &scores, &val).unwrap();
        assert!(d.is_calibrated());
        assert_eq!(d.threshold, 0.5);
        let r = replayed_report(&d, &scores, &val).unwrap();
        assert_eq!(r.n, 40);
        assert!(r.auc > 0.99 && r.acc > 0.9, "{r:?}");
        let none = DecisionConfig {
            calibration: CalibrationKind::None,
            ..cfg
        };
        let d = choose_decision(&none, &scores, &val).unwrap();
        assert!(!d.is_calibrated());
        assert!(d.threshold > 0.4 && d.threshold < 0.7, "{}", d.threshold);
    }
}
