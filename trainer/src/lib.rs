//! `fakewatch-train` as a library: datasets, extraction (the SDK's own
//! detector, aligner and backbone, so what is trained is exactly what runs on
//! the device), the triplet head, classifiers, calibration, metrics, plots,
//! ONNX writing, int8 quantisation and fine-tuning. [`Cli`] and [`run`] are
//! the command line; `main.rs` only parses it.

pub mod alloc;
mod augment;
pub mod c3d;
mod cache;
mod calibrate;
mod cpu_ops;
mod dataset;
mod device;
mod extract;
mod finetune;
mod fit;
mod forest;
mod graph;
mod identity;
mod int8;
mod logistic;
mod metrics;
mod onnx;
mod plot;
mod quantize;
mod rng;
mod sbi;
pub mod sequence;
mod signing;
mod standardize;
#[cfg(feature = "gst")]
mod temporal;
mod triplet;
mod tsne;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::runtime::BackendArgs;
use fakewatch_sdk::Perception;

#[derive(Parser)]
#[command(
    name = "fakewatch-train",
    version,
    about = "Train and evaluate fakewatch bundles"
)]
pub struct Cli {
    /// Backend that runs the detector and backbone during embedding
    /// extraction (embeddings agree with tract's within 1e-5, so every
    /// backend shares tract's cache).
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed every face crop of a labelled dataset (labels.csv layout) with a
    /// bundle's detector + aligner + backbone; write one JSON line per crop.
    Embed {
        /// Dataset directory holding labels.csv (columns file,label,...,split).
        dataset: PathBuf,
        /// Bundle whose perception models are used.
        #[arg(long)]
        bundle: PathBuf,
        /// Output NDJSON file.
        #[arg(long)]
        out: PathBuf,
        /// Only rows of this split.
        #[arg(long)]
        split: Option<String>,
        /// At most this many rows (after the split filter).
        #[arg(long)]
        limit: Option<usize>,
        /// Embedding cache directory (default: $FAKEWATCH_CACHE,
        /// $XDG_CACHE_HOME/fakewatch or ~/.cache/fakewatch).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Train, evaluate and write a bundle from a labelled dataset (the
    /// paper's method end to end; configuration in a JSON file).
    Fit(fit::FitArgs),
    /// Fine-tune a perception bundle's backbone end to end on real/fake faces
    /// (cross-entropy + semi-hard triplet loss; real, self-blended or both
    /// kinds of fakes) and write a perception bundle with the tuned backbone
    /// for `fit`. Checkpoints every N steps; `--resume` continues.
    Finetune(finetune::FineTuneArgs),
    /// Time the forward and backward pass of one fine-tuning step on seeded
    /// random crops and print the medians (ms).
    FinetuneBench(finetune::BenchArgs),
    /// Temporal fakes from real clips (self-blends that flicker, hold or
    /// jump), the SDK's per-track sequences of them, a GRU sequence model
    /// trained on some clips and compared with the frame model on the
    /// others (and on a labelled clip folder); needs GStreamer.
    #[cfg(feature = "gst")]
    Temporal(temporal::TemporalArgs),
    /// Post-training int8 quantization of a trained bundle: calibrates on its
    /// train split, writes QDQ ONNX for the backbone and head and a `…-int8`
    /// bundle with its own test metrics beside the fp32 ones.
    Quantize(int8::QuantizeArgs),
    /// Write example self-blended fakes (face, mask, blend, difference) of
    /// a dataset's real faces to a PNG grid, for a person to check the
    /// generator before training on it.
    SelfBlendGrid {
        /// Dataset directory holding labels.csv.
        dataset: PathBuf,
        /// Bundle whose detector finds the landmarks.
        #[arg(long, default_value = "models/base")]
        bundle: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Number of examples (rows).
        #[arg(long, default_value_t = 8)]
        count: usize,
        /// Generator settings (JSON object of `self_blend` fields; default: the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of the choice of faces and of the blends.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Make an ed25519 key pair for signing bundles: OUT (secret, mode 0600)
    /// and OUT.pub (give it to the devices).
    Keygen {
        /// Secret key file to create.
        out: PathBuf,
    },
    /// Sign a bundle's bundle.json (which lists every file's sha256) with a
    /// secret key, writing bundle.sig next to it.
    Sign {
        /// Bundle directory.
        bundle: PathBuf,
        /// Secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
}

/// Runs the command `cli` describes.
pub fn run(cli: Cli) -> Result<()> {
    let backend = cli.backend.spec(None).open()?;
    match cli.command {
        Command::Fit(a) => fit::run(a, backend.as_ref()),
        Command::Finetune(a) => finetune::run(a, backend.as_ref()),
        Command::FinetuneBench(a) => finetune::bench(a),
        #[cfg(feature = "gst")]
        Command::Temporal(a) => temporal::run(a, backend.as_ref()),
        Command::Quantize(a) => int8::run(a, backend.as_ref()),
        Command::Keygen { out } => {
            let public = signing::keygen(&out)?;
            println!("{}", public.display());
            Ok(())
        }
        Command::Sign { bundle, key } => {
            println!("{}", signing::sign_bundle(&bundle, &key)?);
            Ok(())
        }
        Command::SelfBlendGrid {
            dataset,
            bundle,
            out,
            count,
            config,
            seed,
        } => self_blend_grid(
            &dataset,
            &bundle,
            &out,
            count,
            config.as_deref(),
            seed,
            backend.as_ref(),
        ),
        Command::Embed {
            dataset,
            bundle,
            out,
            split,
            limit,
            cache,
            threads,
        } => {
            let rows = dataset::read_labels(&dataset)?;
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| split.as_ref().is_none_or(|s| &r.split == s))
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            let bundle =
                Bundle::load(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
            let perception = Perception::from_bundle(&bundle, backend.as_ref())?;
            let cache_dir = cache.unwrap_or_else(cache::default_dir);
            let mut cache = cache::EmbeddingCache::open(
                &cache_dir,
                &cache::perception_key_for(&bundle, backend.name())?,
            )?;
            log::info!(
                "embedding cache {} ({} entries)",
                cache.path().display(),
                cache.len()
            );
            let jobs: Vec<_> = rows
                .iter()
                .map(|r| extract::Job::plain(dataset.join(&r.file), None))
                .collect();
            let threads = threads.unwrap_or_else(default_threads);
            let outcomes = extract::run(&perception, &jobs, &mut cache, threads)?;
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            let (mut found, mut failed) = (0usize, 0usize);
            for (r, o) in rows.iter().zip(&outcomes) {
                match o {
                    extract::Outcome::Faces(faces) => {
                        let Some(face) = faces.first() else { continue };
                        found += 1;
                        let line = serde_json::json!({
                            "file": r.file, "label": r.label, "group": r.group,
                            "identity": r.identity, "split": r.split,
                            "score": face.score, "embedding": face.embedding,
                            "features": face.features,
                        });
                        writeln!(w, "{line}")?;
                    }
                    extract::Outcome::Failed(e) => {
                        failed += 1;
                        log::warn!("{}: {e}", r.file);
                    }
                }
            }
            w.flush()?;
            log::info!(
                "{} rows, face found in {found}, {failed} unreadable",
                rows.len()
            );
            Ok(())
        }
    }
}

/// Worker threads for extraction: one per core.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `fakewatch-train self-blend-grid`.
fn self_blend_grid(
    dataset: &std::path::Path,
    bundle: &std::path::Path,
    out: &std::path::Path,
    count: usize,
    config: Option<&std::path::Path>,
    seed: u64,
    backend: &dyn fakewatch_sdk::backend::Backend,
) -> Result<()> {
    anyhow::ensure!((1..=64).contains(&count), "--count must lie within 1..=64");
    let cfg: sbi::SelfBlendConfig = match config {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => sbi::SelfBlendConfig::default(),
    };
    cfg.validate()?;
    let mut rows: Vec<_> = dataset::read_labels(dataset)?
        .into_iter()
        .filter(|r| r.label == "real")
        .collect();
    let mut rng = crate::rng::Rng::new(seed);
    rng.shuffle(&mut rows);
    let b = Bundle::load(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let perception = Perception::from_bundle(&b, backend)?;
    let mut examples = Vec::new();
    for r in &rows {
        if examples.len() == count {
            break;
        }
        let path = dataset.join(&r.file);
        let frame = fakewatch_sdk::Frame::load(&path)?;
        let dets = perception.detect(&frame)?;
        let Some(det) = dets
            .iter()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
        else {
            log::warn!("{}: no face", path.display());
            continue;
        };
        let blended = sbi::self_blend(&frame, det, &cfg, &mut rng)?;
        examples.push((frame, blended));
    }
    let grid = sbi::example_grid(&examples)?;
    grid.save(out)?;
    println!("{} ({} examples)", out.display(), examples.len());
    Ok(())
}
