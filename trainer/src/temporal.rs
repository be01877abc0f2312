//! `fakewatch-train temporal`: temporal fakes made from real clips, the
//! per-track sequences of the SDK ([`fakewatch_sdk::sequence`]) extracted
//! from them, and the GRU sequence model ([`crate::sequence`]) trained on
//! them and compared with the frame model on clips it never saw.
//!
//! Temporal fakes (issue 26): each real clip's largest face is self-blended
//! ([`crate::sbi`]) frame by frame in three ways — `flicker` (new blend
//! parameters every frame), `stable` (the same parameters throughout: the
//! case a frame model already sees) and `jump` (stable, then other
//! parameters from the middle on) — beside the untouched clip as the real.
//! The blended face is embedded at the real detection, as a swap in place.
//! Clips are split into train and test by name (seeded), so test windows
//! come from clips (and people) the model never saw.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use fakewatch_sdk::backend::Backend;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::geometry::Detection;
use fakewatch_sdk::perception::Face;
use fakewatch_sdk::sequence::{TrackSequence, FEATURES};
use fakewatch_sdk::{DeepfakeDetector, Frame};
use serde::Serialize;

use crate::rng::Rng;
use crate::sbi::{self_blend, SelfBlendConfig};
use crate::sequence::{train_gru, SequenceConfig, SequenceModel};

/// Arguments of `fakewatch-train temporal`.
#[derive(Debug, clap::Args)]
pub struct TemporalArgs {
    /// Directory of real clips (`*.mp4`); the temporal fakes are made from them.
    #[arg(long)]
    real_clips: PathBuf,
    /// A labelled clip folder to evaluate on, never trained on
    /// (`labels.csv` with `file,label` columns).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Bundle with a classifier (its detector, backbone and classifier make
    /// the per-frame features).
    #[arg(long, default_value = "models/default")]
    bundle: PathBuf,
    /// Steps per sequence window.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Frames read per clip (every `--every`-th from the start).
    #[arg(long, default_value_t = 48)]
    frames: usize,
    /// Distance between read frames.
    #[arg(long, default_value_t = 2)]
    every: usize,
    /// Share of the real clips held out for testing (split by clip name).
    #[arg(long, default_value_t = 0.3)]
    test_share: f64,
    /// Seed of the split, the blends and the GRU.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory: `results.json`, `sequence.onnx`.
    #[arg(long)]
    out: PathBuf,
}

/// How a clip's face is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Variant {
    Real,
    Flicker,
    Stable,
    Jump,
}

const VARIANTS: [Variant; 4] = [
    Variant::Real,
    Variant::Flicker,
    Variant::Stable,
    Variant::Jump,
];

/// Every step of one clip under one variant.
#[derive(Debug, Clone)]
struct ClipSteps {
    clip: String,
    test: bool,
    variant: Variant,
    fake: bool,
    steps: Vec<[f32; FEATURES]>,
}

/// FNV-1a of a name: a split that does not depend on the listing order.
fn name_hash(s: &str, seed: u64) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The largest face of a frame's detections.
fn largest(dets: Vec<Detection>) -> Option<Detection> {
    dets.into_iter().max_by(|a, b| {
        (a.bbox.width() * a.bbox.height()).total_cmp(&(b.bbox.width() * b.bbox.height()))
    })
}

/// A face of `frame` at `det`, scored: its P(fake) from the bundle.
fn scored(det: &DeepfakeDetector, frame: &Frame, d: &Detection) -> Result<(Face, f32)> {
    let face = det
        .perception()
        .faces_at(frame, vec![*d])?
        .pop()
        .context("no embedding")?;
    let p = det
        .score_faces(std::slice::from_ref(&face))?
        .first()
        .copied()
        .context("no score")?;
    Ok((face, p))
}

/// Faces per row of the strip that shows the generator.
const STRIP_FRAMES: usize = 8;
/// Side of a face in the strip.
const STRIP_TILE: u32 = 96;

/// The steps of `path` under `variants` (the untouched clip for `Real`);
/// with `strip`, the first [`STRIP_FRAMES`] faces of each variant too.
fn clip_steps(
    det: &DeepfakeDetector,
    path: &Path,
    variants: &[Variant],
    a: &TemporalArgs,
    sbi: &SelfBlendConfig,
    mut strip: Option<&mut Vec<(Variant, Frame)>>,
) -> Result<Vec<(Variant, Vec<[f32; FEATURES]>)>> {
    let name = path.to_string_lossy().into_owned();
    let mut reader = fakewatch_sdk::video::VideoReader::open(&name)?;
    let mut seqs: Vec<(Variant, TrackSequence, Vec<[f32; FEATURES]>)> = variants
        .iter()
        .map(|&v| (v, TrackSequence::default(), Vec::new()))
        .collect();
    let clip_seed = name_hash(&name, a.seed);
    let (mut index, mut read) = (0usize, 0usize);
    while read < a.frames {
        let Some(frame) = reader.next_frame()? else {
            break;
        };
        index += 1;
        if (index - 1) % a.every != 0 {
            continue;
        }
        read += 1;
        let Some(d) = largest(det.perception().detect(&frame)?) else {
            continue;
        };
        for (variant, seq, rows) in &mut seqs {
            let blend_seed = match variant {
                Variant::Real => None,
                Variant::Flicker => Some(clip_seed ^ (read as u64).wrapping_mul(0x9E37)),
                Variant::Stable => Some(clip_seed),
                Variant::Jump => Some(clip_seed ^ u64::from(read > a.frames / 2)),
            };
            let blended;
            let shown = match blend_seed {
                None => &frame,
                Some(s) => match self_blend(&frame, &d, sbi, &mut Rng::new(s)) {
                    Ok(b) => {
                        blended = b.image;
                        &blended
                    }
                    Err(e) => {
                        log::debug!("{name}: {e}");
                        continue;
                    }
                },
            };
            if let Some(st) = strip.as_deref_mut() {
                if st.iter().filter(|(v, _)| v == variant).count() < STRIP_FRAMES {
                    if let Some(t) = fakewatch_sdk::draw::thumbnail(shown, &d.bbox, STRIP_TILE, 1.2)
                    {
                        st.push((*variant, t));
                    }
                }
            }
            let (face, p) = scored(det, shown, &d)?;
            seq.push(read as u64, face.detection.bbox, &face.embedding, p);
            if let Some(last) = seq.steps().last() {
                rows.push(last.features);
            }
        }
    }
    Ok(seqs.into_iter().map(|(v, _, rows)| (v, rows)).collect())
}

/// One row per variant (real, flicker, stable, jump) of its first faces,
/// labelled, for a person to see what the generator does over time.
fn write_strip(tiles: &[(Variant, Frame)], clip: &str, path: &Path) -> Result<()> {
    use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
    use embedded_graphics::prelude::Point;
    use embedded_graphics::text::Alignment;
    let label_w = 90u32;
    let (w, h) = (
        label_w + STRIP_FRAMES as u32 * (STRIP_TILE + 4),
        40 + VARIANTS.len() as u32 * (STRIP_TILE + 8),
    );
    let mut f = Frame::filled(w, h, [255, 255, 255])?;
    fakewatch_sdk::plot::text(
        &mut f,
        &format!("{clip}: one face per read frame, left to right"),
        Point::new(w as i32 / 2, 22),
        Alignment::Center,
    );
    for (row, v) in VARIANTS.iter().enumerate() {
        let top = 36 + row as u32 * (STRIP_TILE + 8);
        fakewatch_sdk::plot::small_text(
            &mut f,
            &format!("{v:?}").to_lowercase(),
            Point::new(8, (top + STRIP_TILE / 2) as i32),
            Rgb888::BLACK,
        );
        for (col, (_, t)) in tiles.iter().filter(|(tv, _)| tv == v).enumerate() {
            fakewatch_sdk::draw::blit(&mut f, t, label_w + col as u32 * (STRIP_TILE + 4), top);
        }
    }
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Windows of `steps` rows (stride half a window), flattened.
fn windows(rows: &[[f32; FEATURES]], steps: usize) -> Vec<Vec<f32>> {
    let stride = (steps / 2).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start + steps <= rows.len() {
        out.push(
            rows[start..start + steps]
                .iter()
                .flatten()
                .copied()
                .collect(),
        );
        start += stride;
    }
    out
}

/// The frame model's score of a window: the mean of its frame logits.
fn frame_score(window: &[f32]) -> f64 {
    let n = window.len() / FEATURES;
    window
        .chunks(FEATURES)
        .map(|r| f64::from(r[0]))
        .sum::<f64>()
        / n.max(1) as f64
}

/// AUC of frame-only and GRU scores over `(window, fake)` pairs.
fn aucs(model: &SequenceModel, items: &[(&Vec<f32>, bool)]) -> (Option<f64>, Option<f64>, usize) {
    let labels: Vec<bool> = items.iter().map(|(_, l)| *l).collect();
    let frame: Vec<f64> = items.iter().map(|(w, _)| frame_score(w)).collect();
    let seq: Vec<f64> = items
        .iter()
        .map(|(w, _)| f64::from(model.logit(w)))
        .collect();
    (
        crate::metrics::roc_auc(&frame, &labels),
        crate::metrics::roc_auc(&seq, &labels),
        items.len(),
    )
}

/// One row of the results.
#[derive(Debug, Serialize)]
struct Row {
    set: String,
    items: usize,
    frame_auc: Option<f64>,
    gru_auc: Option<f64>,
}

/// Runs `fakewatch-train temporal`.
pub fn run(a: TemporalArgs, backend: &dyn Backend) -> Result<()> {
    ensure!(
        a.steps >= 2 && a.frames >= a.steps && a.every >= 1,
        "bad sizes"
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bundle = Bundle::load(&a.bundle)?;
    ensure!(
        bundle.manifest().classifier.is_some(),
        "{}: the bundle needs a classifier",
        a.bundle.display()
    );
    let det = DeepfakeDetector::from_bundle(&bundle, backend)?;
    let sbi = SelfBlendConfig::default();
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&a.real_clips)
        .with_context(|| format!("reading {}", a.real_clips.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    clips.sort();
    ensure!(clips.len() >= 4, "need at least 4 real clips");
    let started = std::time::Instant::now();
    let mut all: Vec<ClipSteps> = Vec::new();
    let mut strip_done = false;
    for (k, clip) in clips.iter().enumerate() {
        let name = clip
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let test = (name_hash(&name, a.seed) % 1000) as f64 / 1000.0 < a.test_share;
        // The first held-out clip is shown, for a person to check the fakes.
        let show = test && !strip_done;
        let mut strip = Vec::new();
        match clip_steps(&det, clip, &VARIANTS, &a, &sbi, show.then_some(&mut strip)) {
            Ok(v) => {
                for (variant, steps) in v {
                    all.push(ClipSteps {
                        clip: name.clone(),
                        test,
                        variant,
                        fake: variant != Variant::Real,
                        steps,
                    });
                }
            }
            Err(e) => log::warn!("{name}: {e:#}"),
        }
        if show && !strip.is_empty() {
            let path = a.out.join("strip.png");
            write_strip(&strip, &name, &path)?;
            log::info!(
                "{name}: the temporal fakes next to the real clip in {}",
                path.display()
            );
            strip_done = true;
        }
        log::info!(
            "{}/{} {name} ({}, {:.0} s)",
            k + 1,
            clips.len(),
            if test { "test" } else { "train" },
            started.elapsed().as_secs_f64()
        );
    }
    // Training windows: every variant of the training clips.
    let mut train_x = Vec::new();
    let mut train_y = Vec::new();
    for c in all.iter().filter(|c| !c.test) {
        for w in windows(&c.steps, a.steps) {
            train_x.push(w);
            train_y.push(c.fake);
        }
    }
    let cfg = SequenceConfig {
        seed: a.seed,
        ..SequenceConfig::default()
    };
    let model = train_gru(&train_x, &train_y, a.steps, FEATURES, &cfg)?;
    crate::onnx::save(&model.to_onnx()?, &a.out.join("sequence.onnx"))?;
    // Held-out clips: real against each kind of temporal fake, and all.
    let test_windows: Vec<(Variant, Vec<f32>)> = all
        .iter()
        .filter(|c| c.test)
        .flat_map(|c| {
            windows(&c.steps, a.steps)
                .into_iter()
                .map(|w| (c.variant, w))
        })
        .collect();
    let mut rows = Vec::new();
    for fake in [
        None,
        Some(Variant::Flicker),
        Some(Variant::Stable),
        Some(Variant::Jump),
    ] {
        let items: Vec<(&Vec<f32>, bool)> = test_windows
            .iter()
            .filter(|(v, _)| *v == Variant::Real || fake.is_none() || Some(*v) == fake)
            .map(|(v, w)| (w, *v != Variant::Real))
            .collect();
        let (frame_auc, gru_auc, n) = aucs(&model, &items);
        rows.push(Row {
            set: format!(
                "held-out clips, real vs {}",
                fake.map_or("all temporal fakes".into(), |v| format!("{v:?}")
                    .to_lowercase())
            ),
            items: n,
            frame_auc,
            gru_auc,
        });
    }
    // A labelled folder: one score per clip (mean over its windows).
    if let Some(dir) = &a.eval {
        let text = std::fs::read_to_string(dir.join("labels.csv"))
            .with_context(|| format!("reading {}/labels.csv", dir.display()))?;
        let (mut frame_s, mut seq_s, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for line in text.lines().skip(1) {
            let mut cols = line.split(',');
            let (Some(file), Some(label)) = (cols.next(), cols.next()) else {
                continue;
            };
            let path = dir.join(file);
            let steps = match clip_steps(&det, &path, &[Variant::Real], &a, &sbi, None) {
                Ok(mut v) => v.pop().map(|(_, s)| s).unwrap_or_default(),
                Err(e) => {
                    log::warn!("{file}: {e:#}");
                    continue;
                }
            };
            let ws = windows(&steps, a.steps);
            if ws.is_empty() {
                log::info!("{file}: fewer than {} steps with a face", a.steps);
                continue;
            }
            let mean =
                |f: &dyn Fn(&Vec<f32>) -> f64| ws.iter().map(f).sum::<f64>() / ws.len() as f64;
            frame_s.push(mean(&|w| frame_score(w)));
            seq_s.push(mean(&|w| f64::from(model.logit(w))));
            labels.push(label == "fake");
        }
        rows.push(Row {
            set: format!("{} (one score per clip)", dir.display()),
            items: labels.len(),
            frame_auc: crate::metrics::roc_auc(&frame_s, &labels),
            gru_auc: crate::metrics::roc_auc(&seq_s, &labels),
        });
    }
    for r in &rows {
        println!(
            "{:<60} {:>5} items  frame-only AUC {}  GRU AUC {}",
            r.set,
            r.items,
            r.frame_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
            r.gru_auc.map_or("n/a".into(), |v| format!("{v:.3}"))
        );
    }
    let split: Vec<_> = all
        .iter()
        .filter(|c| c.variant == Variant::Real)
        .map(|c| serde_json::json!({"clip": c.clip, "test": c.test, "steps": c.steps.len()}))
        .collect();
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "rows": rows, "clips": split, "train_windows": train_x.len(),
            "steps": a.steps, "frames": a.frames, "every": a.every, "seed": a.seed,
            "seconds": started.elapsed().as_secs_f64(),
        }))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_and_scores() {
        let rows: Vec<[f32; FEATURES]> = (0..10).map(|k| [k as f32; FEATURES]).collect();
        let w = windows(&rows, 4);
        assert_eq!(w.len(), 4, "starts 0, 2, 4, 6");
        assert_eq!(w[1][0], 2.0);
        assert!((frame_score(&w[0]) - 1.5).abs() < 1e-9);
        assert!(windows(&rows[..3], 4).is_empty());
        assert_ne!(name_hash("a.mp4", 1), name_hash("b.mp4", 1));
        assert_eq!(name_hash("a.mp4", 1), name_hash("a.mp4", 1));
    }
}
