//! `fakewatch faces`: the detector alone, per image or sampled video frame.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::AppContext;
use clap::Args;
use embedded_graphics::pixelcolor::Rgb888;
use fakewatch_sdk::{Detection, Frame, Perception};
use serde_json::json;

use crate::inputs::is_image;
use crate::overlay::draw_detections;

/// Arguments of `fakewatch faces`.
#[derive(Args)]
pub struct FacesArgs {
    /// Image or video file (or GStreamer URI).
    input: String,
    /// Model bundle directory.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// One JSON object per image or sampled frame.
    #[arg(long)]
    json: bool,
    /// Frames sampled evenly from a video.
    #[arg(long, default_value_t = 25)]
    frames: usize,
    /// Also run the backbone and report each embedding's norm.
    #[arg(long)]
    embed: bool,
    /// Write the picture with boxes and landmarks (videos: one file per frame, `_NNNNN` appended).
    #[arg(long, value_name = "OUT.png")]
    draw: Option<PathBuf>,
    /// Threads per frame (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Smallest face side in pixels (default: the bundle's).
    #[arg(long)]
    min_face: Option<f32>,
    /// Face detector (ONet) confidence threshold (default: the bundle's).
    /// Not P(fake): `scan --threshold` is that.
    #[arg(long)]
    detect_threshold: Option<f32>,
}

/// Runs `fakewatch faces`.
pub fn run(a: FacesArgs, ctx: &AppContext) -> Result<()> {
    let dir = crate::find_bundle(a.bundle.clone())?;
    let bundle = ctx.load_bundle(&dir)?;
    let mut perception = Perception::from_bundle(&bundle, ctx.backend())?;
    let threads = a
        .threads
        .unwrap_or_else(fakewatch_sdk::parallel::available_threads);
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    perception.set_threads(threads);
    let mut cfg = *perception.detector().config();
    if let Some(m) = a.min_face {
        cfg.min_face = m;
    }
    if let Some(t) = a.detect_threshold {
        cfg.thresholds[2] = t;
    }
    perception.set_detector_config(cfg)?;

    let frames: Vec<(u64, Frame)> = if is_image(&a.input) {
        vec![(0, Frame::load(&a.input)?)]
    } else {
        video_frames(&a.input, a.frames)?
    };
    let multi = frames.len() > 1 || !is_image(&a.input);
    for (k, frame) in &frames {
        let dets = perception.detect(frame)?;
        let norms = if a.embed {
            Some(perception.embed(frame, &dets)?)
        } else {
            None
        };
        if a.json {
            let faces: Vec<_> = dets
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut o = json!({
                        "box": d.bbox.to_array(),
                        "score": d.score,
                        "landmarks": d.landmarks.0.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>(),
                    });
                    if let Some(e) = norms.as_ref().and_then(|n| n.get(i)) {
                        o["embedding_norm"] = json!(e.norm());
                    }
                    o
                })
                .collect();
            println!("{}", json!({"input": a.input, "frame": k, "faces": faces}));
        } else {
            println!("{} frame {k}: {} face(s)", a.input, dets.len());
            for (i, d) in dets.iter().enumerate() {
                let b = d.bbox;
                let norm = norms
                    .as_ref()
                    .and_then(|n| n.get(i))
                    .map(|e| format!(" |emb|={:.3}", e.norm()));
                println!(
                    "  [{:.1}, {:.1}, {:.1}, {:.1}] p={:.4}{}",
                    b.x1,
                    b.y1,
                    b.x2,
                    b.y2,
                    d.score,
                    norm.unwrap_or_default()
                );
            }
        }
        if let Some(out) = &a.draw {
            let path = if multi {
                frame_path(out, *k)
            } else {
                out.clone()
            };
            draw(frame, &dets, &path)?;
        }
    }
    Ok(())
}

fn draw(frame: &Frame, dets: &[Detection], path: &Path) -> Result<()> {
    let mut f = frame.clone();
    draw_detections(&mut f, dets, Rgb888::new(0, 255, 0));
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

fn frame_path(out: &Path, k: u64) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = out
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    out.with_file_name(format!("{stem}_{k:05}.{ext}"))
}

#[cfg(feature = "gst")]
fn video_frames(input: &str, n: usize) -> Result<Vec<(u64, Frame)>> {
    Ok(fakewatch_sdk::video::sample_frames(input, n)?.1)
}

#[cfg(not(feature = "gst"))]
fn video_frames(input: &str, _n: usize) -> Result<Vec<(u64, Frame)>> {
    anyhow::bail!("{input}: video input needs the `gst` feature (this build has no GStreamer)")
}
