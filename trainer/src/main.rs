//! `fakewatch-train`: datasets and embedding extraction for training the
//! metric-learning head. Extraction runs the SDK's own detector, aligner and
//! backbone, so what is trained is exactly what runs on the device.

mod dataset;
mod head;
mod logistic;
mod metrics;
mod onnx;
mod triplet;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fakewatch_sdk::backend::TractBackend;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::{Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "fakewatch-train",
    version,
    about = "Train and evaluate fakewatch bundles"
)]
struct Cli {
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
    },
    /// Train the triplet head + logistic classifier on cached embeddings,
    /// evaluate against the frames-only baseline, export and verify ONNX.
    Head(head::HeadArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("fakewatch-train: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Head(a) => head::run(a),
        Command::Embed {
            dataset,
            bundle,
            out,
            split,
            limit,
        } => {
            let rows = dataset::read_labels(&dataset)?;
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| split.as_ref().is_none_or(|s| &r.split == s))
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            let bundle =
                Bundle::load(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
            let perception = Perception::from_bundle(&bundle, &TractBackend)?;
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            let pb = ProgressBar::new(rows.len() as u64);
            pb.set_style(ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {per_sec} eta {eta}",
            )?);
            let (mut found, mut failed) = (0usize, 0usize);
            for r in &rows {
                pb.inc(1);
                let path = dataset.join(&r.file);
                let faces = Frame::load(&path).and_then(|f| perception.analyze(&f));
                match faces {
                    Ok(faces) => {
                        // The crop's subject is its largest face.
                        let best = faces.iter().max_by(|a, b| {
                            a.detection.bbox.area().total_cmp(&b.detection.bbox.area())
                        });
                        if let Some(face) = best {
                            found += 1;
                            let line = serde_json::json!({
                                "file": r.file, "label": r.label, "group": r.group,
                                "identity": r.identity, "split": r.split,
                                "score": face.detection.score, "embedding": face.embedding.0,
                            });
                            writeln!(w, "{line}")?;
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        log::warn!("{}: {e}", path.display());
                    }
                }
            }
            pb.finish();
            w.flush()?;
            log::info!(
                "{} rows, face found in {found}, {failed} unreadable",
                rows.len()
            );
            Ok(())
        }
    }
}
