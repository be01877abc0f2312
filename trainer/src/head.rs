//! `fakewatch-train head`: train the triplet head and the logistic classifier
//! on cached embeddings, evaluate against the frames-only baseline, export
//! both networks as ONNX and check that tract reproduces the trainer's scores.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use fakewatch_sdk::backend::{Backend, ShapePolicy, TractBackend};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::logistic::{self, Logistic};
use crate::metrics::{self, Report};
use crate::onnx;
use crate::triplet::{self, Head, Mining, TripletConfig};

/// Arguments of `fakewatch-train head`.
#[derive(clap::Args)]
pub struct HeadArgs {
    /// Training embeddings (NDJSON from `fakewatch-train embed`).
    #[arg(long)]
    train: PathBuf,
    /// Test embeddings.
    #[arg(long)]
    test: PathBuf,
    /// Output directory for head.onnx, classifier.onnx and report.json.
    #[arg(long)]
    out: PathBuf,
    /// Negative mining.
    #[arg(long, value_enum, default_value_t = Mining::SemiHard)]
    mining: Mining,
    /// Optimiser steps.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Triplet margin α.
    #[arg(long, default_value_t = 1.0)]
    margin: f32,
    /// Batch size (half real, half fake).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Embeddings and labels read from NDJSON.
pub struct Set {
    /// Rows.
    pub x: Vec<Vec<f32>>,
    /// True = fake.
    pub y: Vec<bool>,
}

/// Reads an NDJSON file of `{"label": "real"|"fake", "embedding": [...]}` objects.
pub fn read_set(path: &Path) -> Result<Set> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let e: Vec<f32> = v["embedding"]
            .as_array()
            .with_context(|| format!("{}:{}: no embedding", path.display(), i + 1))?
            .iter()
            .map(|f| f.as_f64().unwrap_or(f64::NAN) as f32)
            .collect();
        ensure!(
            e.iter().all(|f| f.is_finite()),
            "{}:{}: non-finite embedding",
            path.display(),
            i + 1
        );
        x.push(e);
        y.push(v["label"] == "fake");
    }
    ensure!(!x.is_empty(), "{} has no rows", path.display());
    ensure!(
        x.iter().all(|r| r.len() == x[0].len()),
        "{}: rows differ in width",
        path.display()
    );
    Ok(Set { x, y })
}

fn project(head: &Head, x: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
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

fn evaluate(model: &Logistic, x: &[Vec<f32>], y: &[bool]) -> Result<(Vec<f64>, Report)> {
    let s: Vec<f64> = x.iter().map(|r| f64::from(model.predict(r))).collect();
    let r = metrics::report(&s, y, 0.5).context("test set needs both classes")?;
    Ok((s, r))
}

/// Runs the command.
pub fn run(a: HeadArgs) -> Result<()> {
    let train = read_set(&a.train)?;
    let test = read_set(&a.test)?;
    ensure!(
        train.x[0].len() == test.x[0].len(),
        "train and test embeddings differ in width"
    );
    std::fs::create_dir_all(&a.out)?;
    let cfg = TripletConfig {
        mining: a.mining,
        steps: a.steps,
        margin: a.margin,
        batch: a.batch,
        seed: a.seed,
        ..Default::default()
    };
    let pb = ProgressBar::new(cfg.steps as u64);
    pb.set_style(ProgressStyle::with_template(
        "triplet {bar:40} {pos}/{len} loss {msg} eta {eta}",
    )?);
    let head = triplet::train(&train.x, &train.y, &cfg, |_, l| {
        pb.inc(1);
        pb.set_message(format!("{l:.4}"));
    })?;
    pb.finish();

    // Frames-only baseline: the same classifier on raw embeddings.
    let raw = logistic::fit(
        &train.x,
        &train.y,
        logistic::EPOCHS,
        logistic::LEARNING_RATE,
        logistic::L2,
        a.seed,
    )?;
    let (_, raw_report) = evaluate(&raw, &test.x, &test.y)?;
    let htrain = project(&head, &train.x)?;
    let htest = project(&head, &test.x)?;
    let clf = logistic::fit(
        &htrain,
        &train.y,
        logistic::EPOCHS,
        logistic::LEARNING_RATE,
        logistic::L2,
        a.seed,
    )?;
    let (scores, report) = evaluate(&clf, &htest, &test.y)?;

    // Export and verify in tract.
    let head_path = a.out.join("head.onnx");
    let clf_path = a.out.join("classifier.onnx");
    onnx::save(&onnx::head_model(&head.to_dense()?)?, &head_path)?;
    onnx::save(&onnx::logistic_model(&clf.w, clf.b)?, &clf_path)?;
    let th = TractBackend.load(&head_path, ShapePolicy::Symbolic)?;
    let tc = TractBackend.load(&clf_path, ShapePolicy::Symbolic)?;
    let d = test.x[0].len();
    let xin = fakewatch_sdk::backend::Tensor::new(
        vec![test.x.len(), d],
        test.x.iter().flatten().copied().collect(),
    )?;
    let feats = th.run(&xin)?.remove(0);
    let p = tc.run(&feats)?.remove(0);
    let max_diff = p
        .data
        .iter()
        .zip(&scores)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    ensure!(
        max_diff < 1e-4,
        "tract scores differ from the trainer's by {max_diff}"
    );

    let out = json!({
        "train_rows": train.x.len(), "test_rows": test.x.len(), "config": cfg,
        "frames_only_logistic": raw_report, "triplet_logistic": report,
        "tract_max_abs_diff": max_diff,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    println!(
        "{:<24} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "frame level", "ACC", "P", "R", "F1", "AUC", "EER"
    );
    for (name, r) in [
        ("frames only + logistic", raw_report),
        (&*format!("triplet ({:?}) + logistic", a.mining), report),
    ] {
        println!(
            "{name:<24} {:6.3} {:6.3} {:6.3} {:6.3} {:6.3} {:6.3}",
            r.acc, r.precision, r.recall, r.f1, r.auc, r.eer
        );
    }
    println!("tract reproduces the exported scores to {max_diff:.1e}");
    Ok(())
}
