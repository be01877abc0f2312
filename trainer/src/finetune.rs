//! End-to-end fine-tuning of a backbone (`fakewatch-train finetune`).
//!
//! The backbone's own ONNX file is loaded into trainable candle modules
//! ([`TrainableGraph`]) and trained on aligned face crops with a binary
//! cross-entropy loss on a linear real/fake logit plus the semi-hard triplet
//! loss on its L2-normalised embedding (metric learning stays the heart of
//! it). Fakes come from the dataset, from the self-blend generator (new
//! blends at every step), or both; augmentations are applied to the aligned
//! crops. The tuned network is exported back into the source graph and
//! written as a perception bundle (`bundle.json` + `backbone.onnx`), which
//! `fakewatch-train fit` then turns into a full bundle exactly as it does for
//! a frozen backbone. Checkpoints are written every `checkpoint_every` steps
//! and `--resume` continues from the last one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use fakewatch_sdk::align::{Aligner, AlignerConfig};
use fakewatch_sdk::backend::Backend;
use fakewatch_sdk::bundle::{sha256_file, Bundle};
use fakewatch_sdk::geometry::Detection;
use fakewatch_sdk::{Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::dataset::{self, DatasetSpec, Sample, Split};
use crate::device::TrainDevice;
use crate::fit::{relative, subsample, FakeSource};
use crate::graph::TrainableGraph;
use crate::metrics;
use crate::rng::Rng;
use crate::sbi::{self, SelfBlendConfig};
use crate::triplet::{self, Mining};

/// File name of the tuned backbone inside the output directory.
pub const BACKBONE_FILE: &str = "backbone.onnx";
/// Checkpoint of the backbone weights.
pub const CHECKPOINT_FILE: &str = "checkpoint.onnx";
/// Checkpoint state (step, classifier weights, losses).
pub const CHECKPOINT_STATE: &str = "checkpoint.json";
/// Validation AUC per checkpoint, plotted.
pub const VALIDATION_PLOT: &str = "validation.png";
/// Checkpoint of the optimiser's moments (safetensors).
pub const CHECKPOINT_OPTIMIZER: &str = "checkpoint-adam.safetensors";
/// Steps between progress log lines when no terminal shows the bar.
const LOG_EVERY: usize = 10;
/// Largest difference allowed between the trainer's and tract's embeddings
/// of the exported backbone (relative to the largest magnitude).
pub const EXPORT_TOLERANCE: f32 = 1e-4;
/// Largest relative difference allowed between the CPU's and CUDA's losses
/// over three seeded fine-tuning steps (reductions run in another order on
/// a GPU; cuBLAS stays in full f32, no TF32).
#[cfg(test)]
const CUDA_LOSS_TOLERANCE: f32 = 1e-4;

/// Everything `finetune` needs; copied into the output for reproducibility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuneConfig {
    /// Name of the written perception bundle.
    pub name: String,
    /// Training data (image datasets: face crops or frames).
    pub dataset: DatasetSpec,
    /// Perception bundle whose detector, aligner and backbone are the start.
    pub perception: PathBuf,
    /// Side of the training (and exported) crops; default: the bundle's.
    #[serde(default)]
    pub input_size: Option<u32>,
    /// Where the training fakes come from.
    #[serde(default)]
    pub fakes: FakeSource,
    /// Self-blend generator settings.
    #[serde(default)]
    pub self_blend: SelfBlendConfig,
    /// Share of the fake half of a batch that is self-blended in `both` mode.
    #[serde(default = "half")]
    pub self_blend_share: f64,
    /// Augmentations of the aligned training crops (`None`: none).
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
    /// Optimiser steps.
    pub steps: usize,
    /// Faces per step (half real, half fake).
    pub batch: usize,
    /// Learning rate of the real/fake logit.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Learning rate of the backbone.
    #[serde(default = "default_backbone_lr")]
    pub backbone_lr: f64,
    /// The first k convolutions (and everything before the k-th) stay fixed.
    #[serde(default)]
    pub freeze_convs: usize,
    /// Weight of the triplet loss next to the cross-entropy.
    #[serde(default = "default_triplet_weight")]
    pub triplet_weight: f64,
    /// Triplet margin α on the unit sphere (squared distances in 0..4).
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// At most this many samples per split (seeded, whole groups).
    #[serde(default)]
    pub max_samples_per_split: Option<usize>,
    /// Validation faces scored at each checkpoint (0: none).
    #[serde(default = "default_val_faces")]
    pub val_faces: usize,
    /// Steps between checkpoints (0: only at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Seed of batches, blends and augmentations.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn half() -> f64 {
    0.5
}
fn default_lr() -> f64 {
    1e-2
}
fn default_backbone_lr() -> f64 {
    1e-5
}
fn default_triplet_weight() -> f64 {
    1.0
}
fn default_margin() -> f32 {
    0.5
}
fn default_val_faces() -> usize {
    256
}
fn default_checkpoint_every() -> usize {
    100
}
fn default_seed() -> u64 {
    42
}

impl FineTuneConfig {
    /// Checks every value before any work starts.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.name.trim().is_empty(), "name must not be empty");
        ensure!(self.steps > 0, "steps must be > 0");
        ensure!(
            self.batch >= 4 && self.batch.is_multiple_of(2),
            "batch must be even and >= 4 (half real, half fake)"
        );
        for (n, v) in [("lr", self.lr), ("backbone_lr", self.backbone_lr)] {
            ensure!(v.is_finite() && v >= 0.0, "{n} must be finite and >= 0");
        }
        ensure!(
            self.triplet_weight.is_finite() && self.triplet_weight >= 0.0,
            "triplet_weight must be finite and >= 0"
        );
        ensure!(
            self.margin.is_finite() && self.margin > 0.0,
            "margin must be > 0"
        );
        ensure!(
            (0.0..=1.0).contains(&self.self_blend_share),
            "self_blend_share must be in 0..=1"
        );
        if let Some(s) = self.input_size {
            ensure!((32..=512).contains(&s), "input_size must be in 32..=512");
        }
        if let Some(a) = &self.augment {
            a.validate().context("augment")?;
        }
        self.self_blend.validate().context("self_blend")?;
        Ok(())
    }
}

/// Arguments of `fakewatch-train finetune`.
#[derive(clap::Args)]
pub struct FineTuneArgs {
    /// Configuration file (JSON; see `trainer/configs/`).
    #[arg(long)]
    config: PathBuf,
    /// Output directory (a perception bundle when done).
    #[arg(long)]
    out: PathBuf,
    /// Dataset root, overriding the configuration's.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Continue from the checkpoint in OUT.
    #[arg(long)]
    resume: bool,
    /// Threads for face detection and candle (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where candle trains: cpu, cuda or cuda:N (CUDA needs the `cuda`
    /// feature; see docs/training-gpu.md). Checkpoints are device-free, so
    /// `--resume` may continue on another device.
    #[arg(long, default_value_t = TrainDevice::Cpu)]
    device: TrainDevice,
}

/// A training face: its file, label and detection.
#[derive(Debug, Clone)]
struct FaceItem {
    path: PathBuf,
    fake: bool,
    det: Detection,
}

/// What is saved at a checkpoint next to the backbone weights.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    step: usize,
    logit_w: Vec<f32>,
    logit_b: f32,
    losses: Vec<StepLoss>,
    validation: Vec<ValPoint>,
    seconds: f64,
}

/// Losses of one step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct StepLoss {
    step: usize,
    bce: f32,
    triplet: f32,
}

/// Validation AUC of the logit at one checkpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ValPoint {
    step: usize,
    auc: Option<f64>,
}

/// Detects the largest face of every sample (in parallel); samples without
/// a face or unreadable are dropped with a count.
fn detect_all(perception: &Perception, samples: &[&Sample], threads: usize) -> Vec<FaceItem> {
    let bar = ProgressBar::new(samples.len() as u64).with_style(
        ProgressStyle::with_template("detect {bar:30} {pos}/{len} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let chunk = samples.len().div_ceil(threads.max(1)).max(1);
    let found: Vec<Option<FaceItem>> = std::thread::scope(|s| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                s.spawn(move || {
                    part.iter()
                        .map(|smp| {
                            bar.inc(1);
                            let frame = Frame::load(&smp.path).ok()?;
                            let dets = perception.detect(&frame).ok()?;
                            let det = dets
                                .into_iter()
                                .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))?;
                            Some(FaceItem {
                                path: smp.path.clone(),
                                fake: smp.fake,
                                det,
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    bar.finish_and_clear();
    found.into_iter().flatten().collect()
}

/// The normalised input tensor data of one face (`3 × s × s`).
struct Prepare<'a> {
    aligner: &'a Aligner,
    norm: fakewatch_sdk::resample::Normalize,
    cfg: &'a FineTuneConfig,
}

impl Prepare<'_> {
    fn item_len(&self) -> usize {
        self.aligner.item_len()
    }

    /// Loads, optionally blends (a self-blended fake), aligns and augments.
    fn face(&self, item: &FaceItem, blend: bool, augment: bool, rng: &mut Rng) -> Result<Vec<f32>> {
        let mut frame = Frame::load(&item.path)?;
        if blend {
            frame = sbi::self_blend(&frame, &item.det, &self.cfg.self_blend, rng)?.image;
        }
        let mut buf = vec![0f32; self.item_len()];
        match (&self.cfg.augment, augment) {
            (Some(a), true) => {
                let crop = self.aligner.align_rgb(&frame, &item.det)?;
                let crop = a.apply(&crop, rng)?.to_frame()?;
                let size = self.aligner.config().size as usize;
                let full = fakewatch_sdk::resample::Rect::full(&crop);
                ensure!(
                    fakewatch_sdk::resample::resize_area_chw(
                        &crop, full, size, size, self.norm, &mut buf
                    ),
                    "augmented crop cannot be resized"
                );
            }
            _ => self
                .aligner
                .align_into(&frame, &item.det, self.norm, &mut buf)?,
        }
        Ok(buf)
    }
}

/// The model under training: backbone, then a linear logit on its
/// L2-normalised embedding.
struct Model {
    graph: TrainableGraph,
    w: Var,
    b: Var,
}

impl Model {
    /// Embeddings (L2-normalised) and logits of a batch.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.graph.forward(x)?;
        let f = f.flatten_from(1)?;
        let norm = (f.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        let e = f.broadcast_div(&norm)?;
        let logit = e
            .matmul(&self.w.as_tensor().unsqueeze(1)?)?
            .squeeze(1)?
            .broadcast_add(self.b.as_tensor())?;
        Ok((e, logit))
    }
}

/// Adam (Kingma & Ba) over groups of variables with their own learning
/// rates, with moments that a checkpoint saves, so a resumed run continues
/// exactly where it stopped.
struct Adam {
    groups: Vec<(Vec<Var>, f64)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
}

/// Adam's decay rates and epsilon (the usual defaults).
const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const ADAM_EPS: f64 = 1e-8;

impl Adam {
    fn new(groups: Vec<(Vec<Var>, f64)>) -> Result<Self> {
        let m: Vec<Tensor> = groups
            .iter()
            .flat_map(|(g, _)| g)
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        // Moments are replaced, never written in place, so v may start as
        // the same zero tensors as m.
        Ok(Self {
            v: m.clone(),
            m,
            groups,
            t: 0,
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.t += 1;
        let (b1, b2) = ADAM_BETAS;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let mut k = 0;
        for (vars, lr) in &self.groups {
            for var in vars {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let m = ((&self.m[k] * b1)? + (g * (1.0 - b1))?)?;
                    let v = ((&self.v[k] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + ADAM_EPS)?)?;
                    var.set(&(var.as_tensor() - (update * *lr)?)?)?;
                    self.m[k] = m;
                    self.v[k] = v;
                }
                k += 1;
            }
        }
        Ok(())
    }

    /// Saves the moments (the step count is in the checkpoint state).
    fn save(&self, path: &Path) -> Result<()> {
        let mut map = std::collections::HashMap::new();
        for (k, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            map.insert(format!("m.{k}"), m.clone());
            map.insert(format!("v.{k}"), v.clone());
        }
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Restores the moments saved at step `t`.
    fn load(&mut self, path: &Path, t: usize) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        for k in 0..self.m.len() {
            for (name, slot) in [("m", &mut self.m[k]), ("v", &mut self.v[k])] {
                let saved = map
                    .get(&format!("{name}.{k}"))
                    .with_context(|| format!("{}: no {name}.{k}", path.display()))?;
                ensure!(
                    saved.dims() == slot.dims(),
                    "{}: {name}.{k} has another shape",
                    path.display()
                );
                *slot = saved.to_device(slot.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// Fails when the backbone's embeddings of a batch have collapsed to zero
/// (every ReLU before the output dead, usually from a backbone learning rate
/// too high for its folded batch-norm weights). Training cannot recover from
/// that: no gradient reaches the backbone any more, the cross-entropy sticks
/// at ln 2 and the triplet loss at its margin.
fn check_not_collapsed(e: &Tensor, step: usize, backbone_lr: f64) -> Result<()> {
    let dead = e
        .abs()?
        .sum(1)?
        .to_vec1::<f32>()?
        .iter()
        .filter(|&&v| v < COLLAPSED_EMBEDDING)
        .count();
    ensure!(
        dead < e.dim(0)?,
        "step {step}: the backbone's embeddings collapsed to zero for the whole batch \
         (dead activations); restart with a lower backbone_lr than {backbone_lr}"
    );
    Ok(())
}

/// Below this L1 norm (after L2 normalisation, where a live embedding has
/// L1 norm ≥ 1) an embedding counts as collapsed.
const COLLAPSED_EMBEDDING: f32 = 1e-3;

/// Binary cross-entropy with logits, mean over the batch.
fn bce_with_logits(logit: &Tensor, y: &Tensor) -> Result<Tensor> {
    // max(z, 0) − z·y + log(1 + e^(−|z|))
    let pos = logit.relu()?;
    let soft = (logit.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos - logit.mul(y)?)? + soft)?.mean_all()?)
}

/// One batch's losses: the BCE of the logit, and the triplet loss of the
/// embedding over the semi-hard triplets mined in it (0 when there are none).
struct BatchLoss {
    /// `bce + triplet_weight × triplet`, to differentiate.
    total: Tensor,
    bce: Tensor,
    triplet: Tensor,
}

/// The forward pass and losses of one training step; also returns the
/// embeddings. Shared by `finetune` and `finetune-bench`.
fn batch_loss(
    model: &Model,
    x: &Tensor,
    labels: &[bool],
    margin: f32,
    triplet_weight: f64,
    rng: &mut Rng,
) -> Result<(Tensor, BatchLoss)> {
    let y = Tensor::from_vec(
        labels
            .iter()
            .map(|&l| f32::from(u8::from(l)))
            .collect::<Vec<_>>(),
        labels.len(),
        x.device(),
    )?;
    let (e, logit) = model.forward(x)?;
    let bce = bce_with_logits(&logit, &y)?;
    let d = triplet::pairwise_sq_dist(&e)?;
    let dv = d.flatten_all()?.to_vec1::<f32>()?;
    let triplets = triplet::mine(&dv, labels, Mining::SemiHard, rng);
    let trip = if triplets.is_empty() {
        Tensor::new(0f32, x.device())?
    } else {
        triplet::triplet_loss(&d, &triplets, margin)?
    };
    let total = (&bce + (&trip * triplet_weight)?)?;
    Ok((
        e,
        BatchLoss {
            total,
            bce,
            triplet: trip,
        },
    ))
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

/// Triplet margin of `finetune-bench`'s synthetic batches.
const BENCH_MARGIN: f32 = 0.5;

/// Runs `fakewatch-train finetune`.
pub fn run(a: FineTuneArgs, backend: &dyn Backend) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg: FineTuneConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", a.config.display()))?;
    if let Some(d) = a.dataset {
        cfg.dataset.path = d;
    }
    cfg.validate()
        .with_context(|| format!("checking {}", a.config.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let dev = a.device.open()?;
    log::info!("training on {}", a.device);

    let base = Bundle::load(&cfg.perception)
        .with_context(|| format!("perception bundle {}", cfg.perception.display()))?;
    let perception = Perception::from_bundle(&base, backend)?;
    let bm = base.manifest();
    let size = cfg.input_size.unwrap_or(bm.aligner.size);
    let aligner = Aligner::new(AlignerConfig { size, ..bm.aligner })?;
    let prep = Prepare {
        aligner: &aligner,
        norm: bm.backbone.normalize(),
        cfg: &cfg,
    };

    // 1. Faces of the train and validation splits.
    let mut samples = dataset::load(&cfg.dataset, cfg.seed)?;
    if let Some(n) = cfg.max_samples_per_split {
        samples = subsample(samples, n, cfg.seed);
    }
    ensure!(
        samples.iter().all(|s| crate::extract::is_image(&s.path)),
        "fine-tuning reads image datasets (face crops or frames); extract video frames first"
    );
    let pick = |split: Split, keep_fakes: bool| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.split == split && (keep_fakes || !s.fake))
            .collect()
    };
    let keep_fakes = cfg.fakes != FakeSource::SelfBlended;
    let train_samples = pick(Split::Train, keep_fakes);
    let val_samples = pick(Split::Val, true);
    let t0 = Instant::now();
    let train = detect_all(&perception, &train_samples, threads);
    let val_all = detect_all(&perception, &val_samples, threads);
    log::info!(
        "faces: train {} of {} samples, validation {} of {} ({:.0} s)",
        train.len(),
        train_samples.len(),
        val_all.len(),
        val_samples.len(),
        t0.elapsed().as_secs_f64()
    );
    let real: Vec<usize> = (0..train.len()).filter(|&i| !train[i].fake).collect();
    let fake: Vec<usize> = (0..train.len()).filter(|&i| train[i].fake).collect();
    ensure!(!real.is_empty(), "no real training face was found");
    ensure!(
        cfg.fakes == FakeSource::SelfBlended || !fake.is_empty(),
        "no fake training face was found (use \"fakes\": \"self_blended\")"
    );
    let mut val = val_all;
    Rng::new(cfg.seed ^ 0x7A1).shuffle(&mut val);
    val.truncate(cfg.val_faces);

    // 2. Model, optimisers, checkpoint.
    ensure!(
        bm.backbone.branches.is_empty(),
        "fine-tuning a backbone with branches is not supported: fine-tune each network on its own"
    );
    let backbone_path = base.resolve(&bm.backbone.file)?;
    let mut graph = TrainableGraph::load(&backbone_path)?;
    ensure!(
        cfg.freeze_convs <= graph.conv_count(),
        "freeze_convs {} but the backbone has {} convolutions",
        cfg.freeze_convs,
        graph.conv_count()
    );
    graph.freeze_convs(cfg.freeze_convs)?;
    let dim = bm.backbone.dim;
    let mut state = State::default();
    if a.resume {
        let s: State = serde_json::from_str(
            &std::fs::read_to_string(a.out.join(CHECKPOINT_STATE))
                .context("--resume: no checkpoint.json in the output directory")?,
        )?;
        graph.load_weights(&a.out.join(CHECKPOINT_FILE))?;
        ensure!(s.logit_w.len() == dim, "checkpoint is of another backbone");
        log::info!("resuming at step {}", s.step);
        state = s;
    } else {
        state.logit_w = vec![0.0; dim];
    }
    graph.move_to(&dev)?;
    let model = Model {
        graph,
        w: Var::from_tensor(&Tensor::from_vec(state.logit_w.clone(), dim, &dev)?)?,
        b: Var::from_tensor(&Tensor::new(state.logit_b, &dev)?)?,
    };
    log::info!(
        "backbone {}: {} trainable weights ({} convolutions frozen), crops {size}x{size}",
        backbone_path.display(),
        model.graph.trainable_len(),
        cfg.freeze_convs
    );
    let mut adam = Adam::new(vec![
        (model.graph.vars(), cfg.backbone_lr),
        (vec![model.w.clone(), model.b.clone()], cfg.lr),
    ])?;
    if a.resume {
        adam.load(&a.out.join(CHECKPOINT_OPTIMIZER), state.step)?;
    }

    // 3. Training.
    let item = prep.item_len();
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("finetune {bar:30} {pos}/{len} {msg} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step as u64);
    let started = Instant::now();
    let seconds_before = state.seconds;
    let steps_before = state.step;
    while state.step < cfg.steps {
        let step = state.step;
        // Every step has its own generator, so a resumed run draws the same batches.
        let mut rng = Rng::new(cfg.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let half_batch = cfg.batch / 2;
        let mut data = Vec::with_capacity(cfg.batch * item);
        let mut labels = Vec::with_capacity(cfg.batch);
        for k in 0..cfg.batch {
            let want_fake = k >= half_batch;
            let blend = want_fake
                && match cfg.fakes {
                    FakeSource::Real => false,
                    FakeSource::SelfBlended => true,
                    FakeSource::Both => f64::from(rng.uniform()) < cfg.self_blend_share,
                };
            let pool = if want_fake && !blend { &fake } else { &real };
            let face = &train[pool[rng.below(pool.len())]];
            match prep.face(face, blend, true, &mut rng) {
                Ok(v) => {
                    data.extend(v);
                    labels.push(want_fake);
                }
                Err(e) => log::debug!("{}: {e}", face.path.display()),
            }
        }
        ensure!(
            labels.iter().any(|&l| l) && labels.iter().any(|&l| !l),
            "step {step}: no face of one class could be prepared"
        );
        let n = labels.len();
        let x = Tensor::from_vec(data, (n, 3, size as usize, size as usize), &dev)?;
        let (
            e,
            BatchLoss {
                total: loss,
                bce,
                triplet: trip,
            },
        ) = batch_loss(
            &model,
            &x,
            &labels,
            cfg.margin,
            cfg.triplet_weight,
            &mut rng,
        )?;
        check_not_collapsed(&e, step, cfg.backbone_lr)?;
        let (bv, tv) = (scalar(&bce)?, scalar(&trip)?);
        ensure!(
            bv.is_finite() && tv.is_finite(),
            "loss became {bv}/{tv} at step {step}"
        );
        let grads = loss.backward()?;
        adam.step(&grads)?;
        state.losses.push(StepLoss {
            step,
            bce: bv,
            triplet: tv,
        });
        state.step += 1;
        bar.set_message(format!("bce {bv:.3} triplet {tv:.3}"));
        bar.inc(1);
        if bar.is_hidden() && state.step.is_multiple_of(LOG_EVERY) {
            // No terminal (a log file, a service): progress as log lines.
            let done = state.step - steps_before;
            let per_step = started.elapsed().as_secs_f64() / done.max(1) as f64;
            log::info!(
                "step {}/{}: bce {bv:.4} triplet {tv:.4} ({per_step:.1} s/step, {:.0} s left)",
                state.step,
                cfg.steps,
                per_step * (cfg.steps - state.step) as f64
            );
        }
        let at_end = state.step == cfg.steps;
        if at_end || (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every)) {
            let auc = validate(&model, &prep, &val)?;
            state.validation.push(ValPoint {
                step: state.step,
                auc,
            });
            state.logit_w = model.w.as_tensor().to_vec1::<f32>()?;
            state.logit_b = scalar(model.b.as_tensor())?;
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            model.graph.save(
                &a.out.join(CHECKPOINT_FILE),
                Some((size as usize, size as usize)),
            )?;
            adam.save(&a.out.join(CHECKPOINT_OPTIMIZER))?;
            std::fs::write(a.out.join(CHECKPOINT_STATE), serde_json::to_vec(&state)?)?;
            plot_validation(&a.out.join(VALIDATION_PLOT), &cfg.name, &state.validation)?;
            let line = format!(
                "step {}: validation AUC {}",
                state.step,
                auc.map_or("n/a".into(), |v| format!("{v:.4}"))
            );
            if bar.is_hidden() {
                log::info!("{line}");
            } else {
                bar.println(line);
            }
        }
    }
    bar.finish_and_clear();

    // 4. Export and check that tract reproduces the trainer's embeddings.
    let out_backbone = a.out.join(BACKBONE_FILE);
    model
        .graph
        .save(&out_backbone, Some((size as usize, size as usize)))?;
    let export_error = check_export(&model, &prep, &val, &out_backbone, backend)?;
    write_bundle(&cfg, &base, &a.out, size, &state, export_error)?;
    log::info!(
        "wrote {} ({} steps in {:.0} s; tract vs trainer {export_error:.1e})",
        a.out.display(),
        state.step,
        state.seconds
    );
    Ok(())
}

/// Arguments of `fakewatch-train finetune-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Backbone ONNX file to time.
    #[arg(long, default_value = "models/faceres.onnx")]
    backbone: PathBuf,
    /// Side of the input crops.
    #[arg(long, default_value_t = 160)]
    size: usize,
    /// Faces per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Convolutions held fixed (as `freeze_convs` in a configuration).
    #[arg(long, default_value_t = 3)]
    freeze_convs: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// cpu, cuda or cuda:N (as `finetune --device`).
    #[arg(long, default_value_t = TrainDevice::Cpu)]
    device: TrainDevice,
}

/// `fakewatch-train finetune-bench`: times the forward and backward pass of
/// one training step (seeded random crops, the same loss as `finetune`)
/// and prints medians; the figure that sets how long a fine-tuning run takes.
pub fn bench(a: BenchArgs) -> Result<()> {
    ensure!(
        a.batch >= 4 && a.batch.is_multiple_of(2),
        "batch must be even and >= 4"
    );
    ensure!(a.steps > 0, "steps must be > 0");
    let dev = a.device.open()?;
    let mut graph = TrainableGraph::load(&a.backbone)?;
    graph.freeze_convs(a.freeze_convs)?;
    graph.move_to(&dev)?;
    let probe = graph.forward(&Tensor::zeros((1, 3, a.size, a.size), DType::F32, &dev)?)?;
    let dim = probe.elem_count();
    let model = Model {
        graph,
        w: Var::from_tensor(&Tensor::zeros(dim, DType::F32, &dev)?)?,
        b: Var::from_tensor(&Tensor::new(0f32, &dev)?)?,
    };
    let mut rng = Rng::new(7);
    let n = a.batch;
    let data: Vec<f32> = (0..n * 3 * a.size * a.size)
        .map(|_| rng.uniform() * 2.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(data, (n, 3, a.size, a.size), &dev)?;
    let labels: Vec<bool> = (0..n).map(|k| k >= n / 2).collect();
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for step in 0..=a.steps {
        let t0 = Instant::now();
        let (_, losses) = batch_loss(&model, &x, &labels, BENCH_MARGIN, 1.0, &mut rng)?;
        let loss = losses.total;
        let loss_value = scalar(&loss)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        // A GPU runs asynchronously: wait for the backward pass to finish.
        dev.synchronize()?;
        let t2 = Instant::now();
        drop(grads);
        log::debug!("step {step}: loss {loss_value:.4}");
        if step > 0 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    let mut ops = std::collections::BTreeMap::new();
    model.graph.forward_timed(&x, Some(&mut ops))?;
    let mut ops: Vec<_> = ops.into_iter().collect();
    ops.sort_by_key(|op| std::cmp::Reverse(op.1));
    for (op, t) in ops {
        log::info!("forward {op}: {:.0} ms", t.as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, b) = (median(&mut fwd), median(&mut bwd));
    let (hits, misses) = crate::alloc::stats();
    log::info!("large buffers: {hits} reused, {misses} from the system");
    println!(
        "{}: batch {n} at {s}x{s}, {} trainable weights, {}: forward {f:.0} ms, backward {b:.0} ms, step {:.0} ms (median of {})",
        a.backbone.display(),
        model.graph.trainable_len(),
        match a.device {
            TrainDevice::Cpu => format!("cpu, {} threads", candle_core::utils::get_num_threads()),
            d => d.to_string(),
        },
        f + b,
        a.steps,
        s = a.size,
    );
    Ok(())
}

/// Validation AUC of the logit (`None` without both classes).
fn validate(model: &Model, prep: &Prepare<'_>, val: &[FaceItem]) -> Result<Option<f64>> {
    if val.is_empty() {
        return Ok(None);
    }
    let size = prep.aligner.config().size as usize;
    let mut scores = Vec::with_capacity(val.len());
    let mut labels = Vec::with_capacity(val.len());
    let mut rng = Rng::new(0);
    for chunk in val.chunks(32) {
        let mut data = Vec::with_capacity(chunk.len() * prep.item_len());
        for f in chunk {
            data.extend(prep.face(f, false, false, &mut rng)?);
            labels.push(f.fake);
        }
        let x = Tensor::from_vec(data, (chunk.len(), 3, size, size), &model.graph.device())?;
        let (_, logit) = model.forward(&x)?;
        scores.extend(logit.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    Ok(metrics::roc_auc(&scores, &labels))
}

/// Validation AUC per checkpoint as a PNG (rewritten at each checkpoint, so
/// a long run can be watched).
fn plot_validation(path: &Path, name: &str, points: &[ValPoint]) -> Result<()> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.auc.map(|a| (p.step as f64, a)))
        .collect();
    crate::plot::curves(
        path,
        &format!("{name}: validation AUC"),
        ("step", "AUC"),
        &[("validation AUC (val split, its own fakes)".into(), pts)],
        (0.5, 0.8),
    )
}

/// Runs the exported file with the SDK's backend on a few validation faces
/// and returns the largest relative difference to the trainer's embeddings.
fn check_export(
    model: &Model,
    prep: &Prepare<'_>,
    val: &[FaceItem],
    path: &Path,
    backend: &dyn Backend,
) -> Result<f32> {
    let size = prep.aligner.config().size as usize;
    let faces: Vec<&FaceItem> = val.iter().take(4).collect();
    if faces.is_empty() {
        return Ok(0.0);
    }
    let mut rng = Rng::new(0);
    let mut data = Vec::new();
    for f in &faces {
        data.extend(prep.face(f, false, false, &mut rng)?);
    }
    let n = faces.len();
    let x = Tensor::from_vec(data.clone(), (n, 3, size, size), &model.graph.device())?;
    let ours = model.graph.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
    let loaded = backend.load(path, fakewatch_sdk::backend::ShapePolicy::FixedBatch(n))?;
    let out = loaded.run(&fakewatch_sdk::backend::Tensor::new(
        vec![n, 3, size, size],
        data,
    )?)?;
    let theirs = &out.first().context("exported backbone has no output")?.data;
    ensure!(
        theirs.len() == ours.len(),
        "exported backbone gives {} values, the trainer {}",
        theirs.len(),
        ours.len()
    );
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let err = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    ensure!(
        err <= EXPORT_TOLERANCE,
        "{} runs the exported backbone {err:.2e} away from the trainer",
        backend.name()
    );
    Ok(err)
}

/// Writes the perception bundle: the base's detector (referenced), the
/// aligner at the training size and the tuned backbone.
fn write_bundle(
    cfg: &FineTuneConfig,
    base: &Bundle,
    out: &Path,
    size: u32,
    state: &State,
    export_error: f32,
) -> Result<()> {
    let bm = base.manifest();
    let rel = |name: &str| -> Result<String> { relative(&base.resolve(name)?, out) };
    let mut m = bm.clone();
    m.name = cfg.name.clone();
    m.created = crate::fit::rfc3339_now();
    m.detector.pnet = rel(&bm.detector.pnet)?;
    m.detector.rnet = rel(&bm.detector.rnet)?;
    m.detector.onet = rel(&bm.detector.onet)?;
    m.aligner.size = size;
    m.backbone.file = BACKBONE_FILE.into();
    m.backbone.input = [3, size as usize, size as usize];
    m.head = None;
    m.classifier = None;
    m.decision = None;
    let last_auc = state.validation.last().and_then(|v| v.auc);
    m.metrics = Some(serde_json::json!({
        "finetune_validation_auc": last_auc,
        "finetune_validation": state.validation,
        "export_max_relative_error": export_error,
    }));
    m.training = Some(serde_json::json!({
        "finetune": cfg,
        "base": base.dir(),
        "steps": state.step,
        "seconds": state.seconds,
        "final_losses": state.losses.iter().rev().take(20).collect::<Vec<_>>(),
    }));
    m.files.clear();
    for f in m
        .referenced_files()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    {
        let sha = sha256_file(&out.join(&f))?;
        m.files.insert(f, sha);
    }
    let path = out.join(fakewatch_sdk::bundle::BUNDLE_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&m)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Bundle::load(out).context("the written perception bundle does not load")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Losses of three seeded fine-tuning steps (BCE + semi-hard triplet,
    /// Adam) of the tiny test backbone on `dev` with `path`.
    fn three_steps(dev: &Device, path: crate::cpu_ops::OpPath) -> Vec<(f32, f32)> {
        let mut graph = TrainableGraph::from_model(crate::onnx::tiny_backbone(3)).unwrap();
        graph.move_to(dev).unwrap();
        graph.set_op_path(path).unwrap();
        let model = Model {
            graph,
            w: Var::from_tensor(&Tensor::zeros(16, DType::F32, dev).unwrap()).unwrap(),
            b: Var::from_tensor(&Tensor::new(0f32, dev).unwrap()).unwrap(),
        };
        let mut adam = Adam::new(vec![
            (model.graph.vars(), 1e-2),
            (vec![model.w.clone(), model.b.clone()], 1e-1),
        ])
        .unwrap();
        let n = 8;
        let labels: Vec<bool> = (0..n).map(|k| k >= n / 2).collect();
        (0..3u64)
            .map(|step| {
                let mut rng = Rng::new(11 + step);
                let data: Vec<f32> = (0..n * 3 * 16 * 16)
                    .map(|i| {
                        // Fakes are brighter: a signal to learn.
                        let fake = i >= n / 2 * 3 * 16 * 16;
                        rng.uniform() * 2.0 - 1.0 + if fake { 0.3 } else { 0.0 }
                    })
                    .collect();
                let x = Tensor::from_vec(data, (n, 3, 16, 16), dev).unwrap();
                let (_, l) = batch_loss(&model, &x, &labels, 0.2, 1.0, &mut rng).unwrap();
                let grads = l.total.backward().unwrap();
                adam.step(&grads).unwrap();
                (scalar(&l.bce).unwrap(), scalar(&l.triplet).unwrap())
            })
            .collect()
    }

    /// Largest difference between two runs' losses, relative to the loss.
    fn loss_gap(a: &[(f32, f32)], b: &[(f32, f32)]) -> f32 {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| [(x.0, y.0), (x.1, y.1)])
            .map(|(x, y)| (x - y).abs() / x.abs().max(1e-3))
            .fold(0.0, f32::max)
    }

    /// The paths a GPU trains on give the CPU's losses. On the CPU, the
    /// portable ops (what CUDA runs) against the CPU kernels; where a CUDA
    /// device opens, CUDA against the CPU, within
    /// [`CUDA_LOSS_TOLERANCE`]. Without one that part is skipped, loudly.
    #[test]
    fn cpu_and_cuda_losses_agree() {
        use crate::cpu_ops::OpPath;
        let cpu = three_steps(&Device::Cpu, OpPath::CpuKernel);
        assert!(cpu.iter().all(|l| l.0.is_finite() && l.1.is_finite()));
        assert!(cpu[2].0 < cpu[0].0, "the BCE falls: {cpu:?}");
        eprintln!("losses (bce, triplet): {cpu:?}");
        let portable = three_steps(&Device::Cpu, OpPath::Portable);
        let gap = loss_gap(&cpu, &portable);
        assert!(
            gap < 1e-5,
            "portable ops on the CPU: {gap:e} ({cpu:?} vs {portable:?})"
        );
        match crate::device::TrainDevice::Cuda(0).open() {
            Ok(dev) => {
                let cuda = three_steps(&dev, OpPath::for_device(&dev));
                let gap = loss_gap(&cpu, &cuda);
                eprintln!("CPU vs CUDA losses: largest relative gap {gap:e}");
                assert!(
                    gap < CUDA_LOSS_TOLERANCE,
                    "CUDA: {gap:e} ({cpu:?} vs {cuda:?})"
                );
            }
            Err(e) => eprintln!("SKIPPED the CUDA half of cpu_and_cuda_losses_agree: {e:#}"),
        }
    }

    #[test]
    fn bce_matches_the_formula() {
        let z = Tensor::new(&[2.0f32, -1.0, 0.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
        let got = scalar(&bce_with_logits(&z, &y).unwrap()).unwrap();
        let want = [(2.0f32, 1.0f32), (-1.0, 0.0), (0.0, 1.0)]
            .iter()
            .map(|&(z, y)| {
                let p = 1.0 / (1.0 + (-z).exp());
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f32>()
            / 3.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn every_shipped_configuration_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy();
            let checked = if name.starts_with("finetune-") {
                serde_json::from_str::<FineTuneConfig>(&text)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| c.validate())
            } else {
                serde_json::from_str::<crate::fit::FitConfig>(&text)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| c.validate())
            };
            assert!(checked.is_ok(), "{name}: {checked:?}");
            n += 1;
        }
        assert!(n >= 10, "only {n} configurations in {}", dir.display());
    }

    #[test]
    fn collapsed_embeddings_are_an_error() {
        let live = Tensor::new(&[[0.6f32, 0.8], [0.0, 0.0]], &Device::Cpu).unwrap();
        check_not_collapsed(&live, 3, 1e-4).unwrap();
        let dead = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let err = check_not_collapsed(&dead, 3, 1e-4).unwrap_err().to_string();
        assert!(
            err.contains("step 3") && err.contains("backbone_lr"),
            "{err}"
        );
    }

    #[test]
    fn config_is_checked() {
        let ok: FineTuneConfig = serde_json::from_str(
            r#"{"name":"t","dataset":{"layout":"labels_csv","path":"d"},
                "perception":"models/base-faceres","steps":2,"batch":4}"#,
        )
        .unwrap();
        ok.validate().unwrap();
        for bad in [
            FineTuneConfig {
                batch: 3,
                ..ok.clone()
            },
            FineTuneConfig {
                steps: 0,
                ..ok.clone()
            },
            FineTuneConfig {
                margin: 0.0,
                ..ok.clone()
            },
            FineTuneConfig {
                backbone_lr: f64::NAN,
                ..ok.clone()
            },
            FineTuneConfig {
                input_size: Some(8),
                ..ok.clone()
            },
            FineTuneConfig {
                self_blend_share: 2.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<FineTuneConfig>(r#"{"name":"t","bogus":1}"#).is_err());
    }
}
