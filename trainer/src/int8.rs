//! `fakewatch-train quantize`: the int8 twin of a trained bundle.
//!
//! Calibrates on faces of the bundle's own train split (detected and aligned
//! exactly as the edge app does), writes the backbone and the head as QDQ
//! ONNX ([`crate::quantize`]), writes a `…-int8` bundle beside the source
//! (the detector and the classifier stay float and are referenced, not
//! copied) and
//! measures both bundles on the test split through the SDK, so the int8
//! bundle carries its own metrics and the AUC change is on record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use fakewatch_sdk::backend::{Backend, InferenceModel, ModelEdit, ShapePolicy, Tensor};
use fakewatch_sdk::bundle::{sha256_file, Bundle, HeadSpec};
use fakewatch_sdk::score::Scorer;
use fakewatch_sdk::verdict::{Decision, Label};
use fakewatch_sdk::{Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tract_onnx::prelude::Framework;

use crate::cache::{self, EmbeddingCache};
use crate::dataset::{self, Split};
use crate::extract::{self, Job, Outcome};
use crate::fit::{self, FitConfig};
use crate::metrics;
use crate::quantize::{self, ActivationType, Calibration, CalibrationInput};
use crate::rng::Rng;

/// How activation ranges are chosen (command-line form of [`Calibration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Smallest and largest value seen.
    MinMax,
    /// `--percentile` of the values seen (drops rare outliers).
    Percentile,
}

/// Arguments of `fakewatch-train quantize`.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// Trained (fp32) bundle to quantize.
    pub bundle: PathBuf,
    /// Bundle directory to write (by convention the source's name + `-int8`).
    #[arg(long)]
    pub out: PathBuf,
    /// Where the int8 backbone is written (default: OUT/backbone-int8.onnx).
    /// Point it next to the fp32 backbone so bundles share one copy.
    #[arg(long)]
    pub backbone_out: Option<PathBuf>,
    /// Dataset directory (default: the one in the bundle's training record).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Train-split faces used for calibration.
    #[arg(long, default_value_t = 128)]
    pub calibration_faces: usize,
    /// Activation range estimator. min-max keeps FaceNet closest to fp32
    /// (embedding cosine 0.9989 against 0.9980 for the 99.99th percentile and
    /// 0.980 for the 99.9th, on the FaceNet bundle's test faces).
    #[arg(long, value_enum, default_value = "min-max")]
    pub method: Method,
    /// Percentile for `--method percentile`.
    #[arg(long, default_value_t = quantize::DEFAULT_PERCENTILE)]
    pub percentile: f64,
    /// Activation integer type: u8 (asymmetric, best on CPUs) or s8
    /// (symmetric, what TensorRT takes).
    #[arg(long, value_enum, default_value = "u8")]
    pub activations: ActivationType,
    /// Weight bits: 7 ("reduce range", the default) is safe everywhere; 8 is
    /// for targets without the saturation of onnxruntime's u8×s8 kernels on
    /// x86 CPUs with AVX2 but no VNNI (measured on the FaceNet bundle with
    /// ort-cpu on such a CPU: test AUC −0.006 with 8 bits, +0.002 with 7).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(7..=8))]
    pub weight_bits: u8,
    /// Backbone ops (ONNX node names) left in float, repeatable or
    /// comma-separated. `models/build_int8.sh` keeps faceres's
    /// `conv_dw_1/depthwise`: its int8 weights alone drop the embedding cosine
    /// to fp32 from 1 to 0.84 (every other layer alone: ≥ 0.998).
    #[arg(long, value_delimiter = ',')]
    pub keep_float: Vec<String>,
    /// Quantize only the backbone's weights (int8 in the file, float
    /// activations and biases): a quarter of the size with float accuracy,
    /// for backbones whose activations lose too much at 8 bits per tensor
    /// (faceres: embedding cosine to fp32 0.97 with activations, 0.993 weights
    /// only; see `models/build_int8.sh`). Runtimes then compute in float, so
    /// the weights keep all 8 bits whatever `--weight-bits` says (that
    /// applies to the head).
    #[arg(long)]
    pub weights_only: bool,
    /// Also quantize the MTCNN nets (P/R/O-Net), calibrated on the inputs the
    /// detector gives them on the calibration faces; written to
    /// `--detector-dir` as `mtcnn_*-int8.onnx`. Off by default: on tract an
    /// int8 detector is slower, not faster.
    #[arg(long)]
    pub detector: bool,
    /// Where the int8 MTCNN nets go (default: OUT).
    #[arg(long)]
    pub detector_dir: Option<PathBuf>,
    /// Do not measure the bundles on the test split.
    #[arg(long)]
    pub no_eval: bool,
    /// At most this many test samples in the evaluation (default: all).
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Embedding cache directory (see `fit --cache`).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Worker threads for the evaluation (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn load_proto(path: &Path) -> Result<tract_onnx::pb::ModelProto> {
    tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("reading {}", path.display()))
}

fn bar(len: usize, msg: &str) -> Result<ProgressBar> {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} eta {eta}",
    )?);
    pb.set_message(msg.to_string());
    Ok(pb)
}

/// Most recorded inputs kept per model (first seen) by [`Recorder`].
const RECORD_LIMIT: usize = 512;
/// Most recorded values kept per model (64 MiB of f32).
const RECORD_VALUES: usize = 16 << 20;

/// A backend that runs models on `inner` and keeps a copy of every input
/// item (batch split into items of batch 1), per model file: the exact
/// tensors the SDK feeds each net, for calibration.
struct Recorder {
    inner: Arc<dyn Backend>,
    /// The model files whose inputs are kept.
    record: Vec<PathBuf>,
    taps: Arc<Mutex<HashMap<PathBuf, Vec<CalibrationInput>>>>,
}

struct Tap {
    inner: Arc<dyn InferenceModel>,
    path: PathBuf,
    record: bool,
    taps: Arc<Mutex<HashMap<PathBuf, Vec<CalibrationInput>>>>,
}

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn load_edited(
        &self,
        path: &Path,
        policy: ShapePolicy,
        edit: &ModelEdit,
    ) -> fakewatch_sdk::Result<Arc<dyn InferenceModel>> {
        Ok(Arc::new(Tap {
            inner: self.inner.load_edited(path, policy, edit)?,
            path: path.to_path_buf(),
            record: self.record.iter().any(|p| p == path),
            taps: self.taps.clone(),
        }))
    }
}

impl InferenceModel for Tap {
    fn run(&self, input: &Tensor) -> fakewatch_sdk::Result<Vec<Tensor>> {
        if let (true, Ok(mut taps)) = (self.record, self.taps.lock()) {
            let v = taps.entry(self.path.clone()).or_default();
            let mut kept: usize = v.iter().map(|c| c.data.len()).sum();
            let mut shape = input.shape.clone();
            if let Some(b) = shape.first_mut() {
                *b = 1;
            }
            for i in 0..input.batch() {
                kept += input.item_len();
                if v.len() >= RECORD_LIMIT || kept > RECORD_VALUES {
                    break;
                }
                v.push(CalibrationInput {
                    shape: shape.clone(),
                    data: input.item(i).to_vec(),
                });
            }
        }
        self.inner.run(input)
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn preferred_batch(&self) -> usize {
        self.inner.preferred_batch()
    }
}

/// Aligned backbone inputs and fp32 embeddings of `n` train-split faces.
fn calibration_faces(
    perception: &Perception,
    samples: &[dataset::Sample],
    n: usize,
    seed: u64,
) -> Result<(Vec<CalibrationInput>, Vec<CalibrationInput>)> {
    let mut pool: Vec<&dataset::Sample> = samples
        .iter()
        .filter(|s| s.split == Split::Train && extract::is_image(&s.path))
        .collect();
    Rng::new(seed ^ 0x1a8).shuffle(&mut pool);
    let cfg = perception.embedder().config();
    let [c, h, w] = cfg.input;
    let norm = cfg.normalize();
    let (mut faces, mut embeddings) = (vec![], vec![]);
    let pb = bar(n, "calibration faces")?;
    for s in pool {
        if faces.len() >= n {
            break;
        }
        let frame = match Frame::load(&s.path) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("{}: {e}", s.path.display());
                continue;
            }
        };
        let dets = perception.detect(&frame)?;
        let Some(det) = dets
            .iter()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
        else {
            continue;
        };
        let mut buf = vec![0f32; c * h * w];
        perception
            .embedder()
            .aligner()
            .align_into(&frame, det, norm, &mut buf)?;
        let e = perception
            .embedder()
            .describe_detections(&frame, std::slice::from_ref(det))?;
        faces.push(CalibrationInput {
            shape: vec![1, c, h, w],
            data: buf,
        });
        if let Some(e) = e.first() {
            let x = e.scoring_input();
            embeddings.push(CalibrationInput {
                shape: vec![1, x.len()],
                data: x.to_vec(),
            });
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    ensure!(
        !faces.is_empty(),
        "no face found in the train split for calibration"
    );
    if faces.len() < n {
        log::warn!("only {} calibration faces (asked for {n})", faces.len());
    }
    Ok((faces, embeddings))
}

/// Quantizes the model at `src` with `inputs`, writes it to `dst`.
fn quantize_file(
    src: &Path,
    dst: &Path,
    inputs: &[CalibrationInput],
    how: &FilePlan,
    what: &str,
) -> Result<serde_json::Value> {
    let proto = load_proto(src)?;
    let mut plan = quantize::plan(&proto, &how.keep_float)
        .with_context(|| format!("planning {}", src.display()))?;
    if how.weights_only {
        plan.activations.clear();
    }
    let ranges = if plan.activations.is_empty() {
        HashMap::new()
    } else {
        let passes = if matches!(how.method, Calibration::MinMax) {
            1
        } else {
            2
        };
        let pb = bar(inputs.len() * passes, &format!("calibrating {what}"))?;
        let r = quantize::calibrate(&proto, &plan.activations, inputs, how.method, &|| pb.inc(1))?;
        pb.finish_and_clear();
        r
    };
    // 7-bit weights only avoid the saturation of integer u8×s8 kernels; with
    // float activations there are none, so weights-only keeps all 8 bits.
    let reduce_range = how.reduce_range && !how.weights_only;
    let (q, summary) = quantize::quantize(&proto, &plan, &ranges, how.act, reduce_range)?;
    crate::onnx::save(&q, dst)?;
    let (before, after) = (std::fs::metadata(src)?.len(), std::fs::metadata(dst)?.len());
    log::info!(
        "{what}: {} ops int8, {} activations, {} channel scales raised for the bias; {} → {} bytes",
        summary.ops,
        summary.activations,
        summary.bias_limited_channels,
        before,
        after
    );
    let mut j = json!({
        "source": src.file_name().and_then(|s| s.to_str()),
        "source_sha256": sha256_file(src)?,
        "ops": summary.ops, "activations": summary.activations,
        "weight_bits": if reduce_range { 7 } else { 8 },
        "bytes_fp32": before, "bytes_int8": after,
    });
    if !how.keep_float.is_empty() {
        j["kept_float"] = json!(how.keep_float);
    }
    if how.weights_only {
        j["weights_only"] = json!(true);
    }
    Ok(j)
}

/// How one model file is quantized (see [`QuantizeArgs`]).
#[derive(Clone)]
struct FilePlan {
    method: Calibration,
    act: ActivationType,
    /// 7-bit weights (ignored when `weights_only`).
    reduce_range: bool,
    /// Op names left in float.
    keep_float: Vec<String>,
    /// Weights only: no activation ranges, no calibration.
    weights_only: bool,
}

/// Faces of an evaluation: each face's sample index, score and embedding.
struct Scored {
    sample: Vec<usize>,
    score: Vec<f64>,
    embedding: Vec<Vec<f32>>,
}

/// Per-face scores of `bundle` on `samples` (through the extraction cache),
/// with each face's sample index.
fn score_samples(
    bundle: &Bundle,
    backend: &dyn Backend,
    samples: &[&dataset::Sample],
    cache_dir: &Path,
    threads: usize,
) -> Result<Scored> {
    let perception = Perception::from_bundle(bundle, backend)?;
    let mut cache = EmbeddingCache::open(
        cache_dir,
        &cache::perception_key_for(bundle, backend.name())?,
    )?;
    let jobs: Vec<Job> = samples
        .iter()
        .map(|s| Job::plain(s.path.clone(), None))
        .collect();
    let outcomes = extract::run(&perception, &jobs, &mut cache, threads)?;
    let (mut idx, mut emb, mut inputs) = (vec![], vec![], vec![]);
    for (i, o) in outcomes.iter().enumerate() {
        if let Outcome::Faces(f) = o {
            for face in f {
                idx.push(i);
                emb.push(face.embedding.clone());
                inputs.push(face.scoring_input().to_vec());
            }
        }
    }
    let scores = Scorer::from_bundle(bundle, backend)?.score(&inputs)?;
    Ok(Scored {
        sample: idx,
        score: scores.into_iter().map(f64::from).collect(),
        embedding: emb,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}

/// Runs the command.
pub fn run(a: QuantizeArgs, backend: &dyn Backend) -> Result<()> {
    let src = Bundle::load(&a.bundle).with_context(|| format!("bundle {}", a.bundle.display()))?;
    let sm = src.manifest().clone();
    // A frames-only bundle (`"head": "none"`) has no head to quantize.
    let head = sm.head.clone();
    let classifier = sm
        .classifier
        .clone()
        .context("the bundle has no classifier: quantize a trained bundle")?;
    let decision = sm.decision.clone().context("the bundle has no decision")?;
    let mut cfg: FitConfig = serde_json::from_value(
        sm.training
            .clone()
            .context("the bundle has no training record (needed to find its splits)")?,
    )
    .context("the bundle's training record is not a fit configuration")?;
    if let Some(d) = &a.dataset {
        cfg.dataset.path = d.clone();
    }
    let method = match a.method {
        Method::MinMax => Calibration::MinMax,
        Method::Percentile => Calibration::Percentile {
            percentile: a.percentile,
        },
    };
    ensure!(a.calibration_faces > 0, "--calibration-faces must be > 0");
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let backbone_out = a
        .backbone_out
        .clone()
        .unwrap_or_else(|| a.out.join("backbone-int8.onnx"));

    // 1. Calibration faces from the train split, as the edge app sees them.
    let mut samples = dataset::load(&cfg.dataset, cfg.seed)?;
    if let Some(n) = cfg.max_samples_per_split {
        samples = fit::subsample(samples, n, cfg.seed);
    }
    let taps = Arc::new(Mutex::new(HashMap::new()));
    let record = if a.detector {
        vec![
            src.resolve(&sm.detector.pnet)?,
            src.resolve(&sm.detector.rnet)?,
            src.resolve(&sm.detector.onet)?,
        ]
    } else {
        vec![]
    };
    // Calibration runs on tract, which computes QDQ exactly in float.
    let recorder = Recorder {
        inner: Arc::new(fakewatch_sdk::backend::TractBackend),
        record,
        taps: taps.clone(),
    };
    let perception = Perception::from_bundle(&src, &recorder)?;
    let (faces, embeddings) =
        calibration_faces(&perception, &samples, a.calibration_faces, cfg.seed)?;
    drop(perception);
    let mut taps = std::mem::take(
        &mut *taps
            .lock()
            .map_err(|_| anyhow::anyhow!("calibration recorder poisoned"))?,
    );

    // 2. Backbone and head to QDQ int8; the classifier is copied.
    let full = FilePlan {
        method,
        act: a.activations,
        reduce_range: a.weight_bits == 7,
        keep_float: vec![],
        weights_only: false,
    };
    let bb = quantize_file(
        &src.resolve(&sm.backbone.file)?,
        &backbone_out,
        &faces,
        &FilePlan {
            keep_float: a.keep_float.clone(),
            weights_only: a.weights_only,
            ..full.clone()
        },
        "backbone",
    )?;
    // A branch sees the same crop through its own normalisation: its
    // calibration inputs are the backbone's, mapped as the SDK maps them.
    let branch_files = sm
        .backbone
        .branches
        .iter()
        .map(|b| src.resolve(&b.file))
        .collect::<fakewatch_sdk::Result<Vec<_>>>()?;
    let edit = sm.backbone.model_edit(&branch_files)?;
    let mut branches = Vec::new();
    for (b, path) in edit.branches.iter().zip(&branch_files) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("branch model file name")?;
        let dst = backbone_out.with_file_name(format!("{stem}-int8.onnx"));
        // Each face is one CHW item: channel c is the c-th third of it.
        let mapped: Vec<CalibrationInput> = faces
            .iter()
            .map(|f| CalibrationInput {
                shape: f.shape.clone(),
                data: f
                    .data
                    .chunks(f.data.len().div_ceil(3).max(1))
                    .zip(b.offset)
                    .flat_map(|(plane, o)| plane.iter().map(move |x| x * b.scale + o))
                    .collect(),
            })
            .collect();
        // `--keep-float` names nodes of the main backbone; a branch is
        // quantized whole, weights-only when the backbone is.
        let plan = FilePlan {
            weights_only: a.weights_only,
            ..full.clone()
        };
        let j = quantize_file(path, &dst, &mapped, &plan, &format!("branch {}", b.prefix))?;
        branches.push((dst, j));
    }
    drop(faces);
    let hq = match &head {
        Some(h) => Some(quantize_file(
            &src.resolve(&h.file)?,
            &a.out.join("head.onnx"),
            &embeddings,
            &full,
            "head",
        )?),
        None => None,
    };
    let mut detector = serde_json::Map::new();
    let mut det_files: HashMap<&str, PathBuf> = HashMap::new();
    if a.detector {
        let dir = a.detector_dir.clone().unwrap_or_else(|| a.out.clone());
        std::fs::create_dir_all(&dir)?;
        for (key, file) in [
            ("pnet", &sm.detector.pnet),
            ("rnet", &sm.detector.rnet),
            ("onet", &sm.detector.onet),
        ] {
            let path = src.resolve(file)?;
            let inputs = taps
                .remove(&path)
                .with_context(|| format!("the detector never ran {}", path.display()))?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .context("model file name")?;
            let dst = dir.join(format!("{stem}-int8.onnx"));
            let j = quantize_file(&path, &dst, &inputs, &full, key)?;
            detector.insert(key.into(), json!({"inputs": inputs.len(), "model": j}));
            det_files.insert(key, dst);
        }
    }
    drop(taps);
    // The classifier is not quantized: the bundle references the source's file.
    let clf_file = fit::relative(&src.resolve(&classifier.file)?, &a.out)?;

    // 3. The bundle: the source's detector and decision, the int8 files.
    let rel = |p: &Path| fit::relative(p, &a.out);
    let mut m = sm.clone();
    m.name = format!("{}-int8", sm.name);
    m.created = fit::rfc3339_now();
    let det = |key: &str, file: &str| -> Result<String> {
        match det_files.get(key) {
            Some(p) => rel(p),
            None => rel(&src.resolve(file)?),
        }
    };
    m.detector.pnet = det("pnet", &sm.detector.pnet)?;
    m.detector.rnet = det("rnet", &sm.detector.rnet)?;
    m.detector.onet = det("onet", &sm.detector.onet)?;
    m.backbone.file = rel(&backbone_out)?;
    for (spec, (dst, _)) in m.backbone.branches.iter_mut().zip(&branches) {
        spec.file = rel(dst)?;
    }
    let branch_records: Vec<&serde_json::Value> = branches.iter().map(|(_, j)| j).collect();
    m.head = head.as_ref().map(|h| HeadSpec {
        file: "head.onnx".into(),
        dim: h.dim,
    });
    m.classifier = Some(fakewatch_sdk::bundle::ClassifierSpec {
        file: clf_file,
        kind: classifier.kind.clone(),
    });
    m.metrics = None;
    let calibration = json!({
        "faces": embeddings.len(), "split": "train", "calibration": method,
        "activations": a.activations, "weight_bits": a.weight_bits,
        "weights": "int8 symmetric, per output channel",
        "bias": "int32, scale = input scale × weight scale", "form": "QDQ (ONNX opset 13)",
    });
    m.training = Some(json!({
        "quantized_from": {"bundle": sm.name, "path": rel(&a.bundle)?},
        "quantization": calibration.clone(),
        "backbone": bb, "branches": branch_records, "head": hq, "detector": detector,
        "source_training": sm.training,
    }));
    fit::save_manifest(&mut m, &a.out)?;

    // 4. Both bundles on the test split, through the SDK.
    let mut report = json!({
        "name": m.name, "source": sm.name, "quantization": calibration,
        "backbone": bb, "head": hq,
    });
    if !a.no_eval {
        let int8 = Bundle::load(&a.out).context("the written bundle does not load")?;
        let mut test: Vec<&dataset::Sample> =
            samples.iter().filter(|s| s.split == Split::Test).collect();
        if let Some(n) = a.eval_limit {
            test.truncate(n);
        }
        let threads = a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cache_dir = a.cache.clone().unwrap_or_else(cache::default_dir);
        log::info!("evaluating the fp32 bundle on {} test samples", test.len());
        let Scored {
            sample: fi,
            score: fs,
            embedding: fe,
        } = score_samples(&src, backend, &test, &cache_dir, threads)?;
        log::info!("evaluating the int8 bundle on {} test samples", test.len());
        let Scored {
            sample: qi,
            score: qs,
            embedding: qe,
        } = score_samples(&int8, backend, &test, &cache_dir, threads)?;
        let labels = |idx: &[usize]| idx.iter().map(|&i| test[i].fake).collect::<Vec<_>>();
        // Reported scores and labels as the SDK's verdict gives them (P(fake)
        // through the bundle's calibration).
        let d = Decision::from_spec(Some(&decision));
        let reported = |s: &[f64]| -> Vec<f64> {
            s.iter()
                .map(|&v| f64::from(d.probability(v as f32)))
                .collect()
        };
        let (fs, qs) = (reported(&fs), reported(&qs));
        let is_fake = |p: f64| d.label(Some(p as f32)) == Label::Fake;
        let th = f64::from(decision.threshold);
        let fr =
            metrics::report(&fs, &labels(&fi), th).context("fp32: test split lacks a class")?;
        let qr =
            metrics::report(&qs, &labels(&qi), th).context("int8: test split lacks a class")?;
        // Face-by-face agreement where both found the same faces.
        let (mut cos_min, mut cos_sum, mut dmax, mut flips, mut n) =
            (f64::INFINITY, 0.0, 0f64, 0usize, 0usize);
        if fi == qi {
            for k in 0..fi.len() {
                let c = cosine(&fe[k], &qe[k]);
                cos_min = cos_min.min(c);
                cos_sum += c;
                dmax = dmax.max((fs[k] - qs[k]).abs());
                flips += usize::from(is_fake(fs[k]) != is_fake(qs[k]));
                n += 1;
            }
        }
        let agreement = (n > 0).then(|| {
            json!({"faces": n, "embedding_cosine_mean": cos_sum / n as f64,
                   "embedding_cosine_min": cos_min, "score_max_abs_diff": dmax,
                   "decision_flips": flips})
        });
        m.metrics = Some(json!({
            "split": "test", "level": "frame", "faces": qr.n,
            "auc": qr.auc, "eer": qr.eer, "acc": qr.acc,
            "precision": qr.precision, "recall": qr.recall, "f1": qr.f1,
            "video": null, "backend": backend.name(),
            "fp32": {"auc": fr.auc, "eer": fr.eer, "acc": fr.acc, "faces": fr.n},
            "agreement_with_fp32": agreement,
        }));
        fit::save_manifest(&mut m, &a.out)?;
        report["fp32"] = serde_json::to_value(fr)?;
        report["int8"] = serde_json::to_value(qr)?;
        report["agreement_with_fp32"] = agreement.unwrap_or(serde_json::Value::Null);
        println!(
            "test split ({} faces): AUC fp32 {:.4} → int8 {:.4} (Δ {:+.4}); acc {:.4} → {:.4}",
            qr.n,
            fr.auc,
            qr.auc,
            qr.auc - fr.auc,
            fr.acc,
            qr.acc
        );
    }
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!(
        "bundle {} written: backbone {} ({} → {} bytes)",
        a.out.display(),
        backbone_out.display(),
        bb["bytes_fp32"],
        bb["bytes_int8"]
    );
    Ok(())
}
