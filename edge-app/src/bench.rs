//! `fakewatch bench`: per-stage latency of the perception path on a frame.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fakewatch_sdk::backend::{ShapePolicy, TractBackend};
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::perception::{Perception, PerceptionTimings, PNET_PLAN_CACHE};
use fakewatch_sdk::Frame;

/// How PNet's symbolic H×W input is planned.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum PnetPlans {
    /// One optimised plan per pyramid level.
    PerShape,
    /// One plan with symbolic H and W.
    Symbolic,
    /// Measure both.
    Both,
}

/// Arguments of `fakewatch bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Image to run on (default: tests/fixtures/t1.jpg cropped to 1280×720, 6 faces).
    input: Option<PathBuf>,
    /// Model bundle directory.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// PNet planning to measure.
    #[arg(long, value_enum, default_value_t = PnetPlans::Both)]
    pnet_plans: PnetPlans,
    /// Threads per frame (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn default_frame() -> Result<Frame> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/t1.jpg");
    let f = Frame::load(path).with_context(|| format!("loading {path}"))?;
    // Crop rows 60..780 of the 1280×886 photo: a 720p frame with all six faces.
    let (w, h) = (1280u32, 720u32);
    anyhow::ensure!(f.width() == w, "unexpected fixture size");
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 60..60 + h {
        data.extend_from_slice(f.row(y).context("row")?);
    }
    Ok(Frame::from_rgb(w, h, data)?)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// Peak resident set size of this process in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let frame = match &a.input {
        Some(p) => Frame::load(p)?,
        None => default_frame()?,
    };
    let dir = crate::find_bundle(a.bundle.clone())?;
    let bundle = Bundle::load(&dir)?;
    let per_shape = (
        "per-shape",
        ShapePolicy::PerShape {
            capacity: PNET_PLAN_CACHE,
        },
    );
    let symbolic = ("symbolic", ShapePolicy::Symbolic);
    let policies = match a.pnet_plans {
        PnetPlans::PerShape => vec![per_shape],
        PnetPlans::Symbolic => vec![symbolic],
        PnetPlans::Both => vec![per_shape, symbolic],
    };
    for (name, policy) in policies {
        let mut p = Perception::from_bundle_with(&bundle, &TractBackend, policy)?;
        p.set_threads(
            a.threads
                .unwrap_or_else(fakewatch_sdk::parallel::available_threads),
        );
        let (faces, _) = p.analyze_timed(&frame)?; // warm-up: builds per-shape plans
        let mut t: Vec<PerceptionTimings> = Vec::with_capacity(a.runs);
        let mut totals = Vec::with_capacity(a.runs);
        for _ in 0..a.runs.max(1) {
            let start = std::time::Instant::now();
            let (_, timing) = p.analyze_timed(&frame)?;
            totals.push(start.elapsed());
            t.push(timing);
        }
        let pyramid = median(t.iter().map(|x| x.detect.pyramid).collect());
        let pnet = median(t.iter().map(|x| x.detect.pnet).collect());
        let stage1 = median(t.iter().map(|x| x.detect.stage1_wall).collect());
        let rnet = median(t.iter().map(|x| x.detect.rnet).collect());
        let onet = median(t.iter().map(|x| x.detect.onet).collect());
        let embed = median(t.iter().map(|x| x.embed).collect());
        let total = median(totals);
        let n = faces.len().max(1) as f64;
        let cands = t.last().map(|x| x.detect.candidates).unwrap_or_default();
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "backend": "tract", "pnet_plans": name, "width": frame.width(), "height": frame.height(),
                    "faces": faces.len(), "runs": a.runs, "candidates": cands,
                    "ms": {"pyramid": pyramid, "pnet": pnet, "rnet": rnet, "onet": onet,
                           "embed": embed, "embed_per_face": embed / n, "total": total},
                    "fps": 1e3 / total, "peak_rss_mib": peak_rss_mib(),
                })
            );
        } else {
            println!(
                "tract, PNet {name}: {}x{} frame, {} faces, median of {} runs",
                frame.width(),
                frame.height(),
                faces.len(),
                a.runs
            );
            println!("  candidates after PNet/RNet/ONet: {cands:?}");
            for (stage, ms) in [
                ("pyramid", pyramid),
                ("pnet", pnet),
                ("stage1", stage1),
                ("rnet", rnet),
                ("onet", onet),
                ("embedding", embed),
                ("total", total),
            ] {
                println!("  {stage:<10} {ms:9.2} ms  {:5.1} %", 100.0 * ms / total);
            }
            println!(
                "  embedding per face {:.2} ms; {:.2} frames/s",
                embed / n,
                1e3 / total
            );
            if let Some(r) = peak_rss_mib() {
                println!("  peak RSS {r:.0} MiB");
            }
        }
    }
    Ok(())
}
