//! `fakewatch bench`: per-stage latency with its FLOP floor, scan and live
//! throughput, peak memory, and the ratio to the Python reference pipeline.
//!
//! Frames are the repository photo (default), a given image, or generated:
//! `--sizes 480p,720p,1080p --faces 1,4,10` lays 1, 4 or 10 faces cut from
//! `tests/fixtures/t1.jpg` out on a grid over a grey gradient. `--scan` and
//! `--live` encode each generated frame into a moving H.264 clip (the content
//! pans 1 px per frame) and time `scan` on it in this process and
//! `fakewatch run` on it as a paced source in a child process. `--reference`
//! runs `bench/reference/reference.py` on the same clips and compares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::AppContext;
use clap::{Args, ValueEnum};
use embedded_graphics::pixelcolor::Rgb888;
use fakewatch_sdk::backend::{tract_flops, tract_peak_flops, ShapePolicy};
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::perception::{Perception, PerceptionTimings, PNET_PLAN_CACHE};
use fakewatch_sdk::score::Scorer;
use fakewatch_sdk::sequence::{SequenceScorer, TrackSequence};
use fakewatch_sdk::{Detection, Frame};
use serde_json::{json, Value};

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
    /// Image to run on (default: tests/fixtures/t1.jpg cropped to 1280×720,
    /// 6 faces; or generated frames with --sizes / --faces).
    input: Option<PathBuf>,
    /// Model bundle directory.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Timed runs per case (after one warm-up run); figures are medians.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// PNet planning to measure.
    #[arg(long, value_enum, default_value_t = PnetPlans::PerShape)]
    pnet_plans: PnetPlans,
    /// Threads per frame (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Generated frame sizes: 480p, 720p, 1080p or WxH (comma-separated).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Faces per generated frame (comma-separated, 1..=30).
    #[arg(long, value_delimiter = ',')]
    faces: Vec<usize>,
    /// Also time `scan` of a generated clip (videos per minute).
    #[arg(long)]
    scan: bool,
    /// Also run `fakewatch run` on a paced generated clip.
    #[arg(long)]
    live: bool,
    /// Also run `fakewatch run` with N paced copies of the generated clip as
    /// N streams of one process, for each N given (comma-separated), and
    /// report per-stream output rate, drops, analysis rate, first-verdict
    /// latency and RSS per added stream.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    streams: Vec<usize>,
    /// Frames per generated clip.
    #[arg(long, default_value_t = 150)]
    clip_frames: u32,
    /// Frame rate of generated clips.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Frames sampled per video by the scan timing (and the reference).
    #[arg(long, default_value_t = 8)]
    scan_frames: usize,
    /// Run the Python reference pipeline on the same clips (implies --scan).
    #[arg(long)]
    reference: bool,
    /// Python interpreter with numpy and onnxruntime for --reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where generated clips go (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Soak: run `fakewatch run --loop` on a generated 720p clip for this many
    /// seconds, sampling its RSS every --soak-interval, and report the slope.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Seconds between RSS samples of a soak.
    #[arg(long, default_value_t = 60)]
    soak_interval: u64,
    /// Fail the soak when RSS grows faster than this (MiB per hour, after warm-up).
    #[arg(long)]
    max_rss_slope: Option<f64>,
    /// Also measure every stage with these backends (comma-separated, e.g.
    /// `ort-cpu`) on the same frames, beside the main `--backend`.
    #[arg(long, value_delimiter = ',', value_name = "BACKENDS")]
    compare: Vec<String>,
    /// Print one JSON object per case instead of tables.
    #[arg(long)]
    json: bool,
}

fn default_frame() -> Result<Frame> {
    let f = fixture()?;
    // Crop rows 60..780 of the 1280×886 photo: a 720p frame with all six faces.
    let (w, h) = (1280u32, 720u32);
    anyhow::ensure!(f.width() == w, "unexpected fixture size");
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 60..60 + h {
        data.extend_from_slice(f.row(y).context("row")?);
    }
    Ok(Frame::from_rgb(w, h, data)?)
}

fn fixture() -> Result<Frame> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/t1.jpg");
    Frame::load(path).with_context(|| format!("loading {path}"))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// Peak resident set size of this process in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// Resident set size of this process now, in MiB (Linux), if known.
pub fn rss_mib() -> Option<f64> {
    proc_status_mib("VmRSS:")
}

fn proc_status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Least-squares slope of `y` over `x` (`None` with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `480p`, `720p`, `1080p` or `WxH`.
fn parse_size(s: &str) -> Result<(u32, u32)> {
    Ok(match s {
        "480p" => (854, 480),
        "720p" => (1280, 720),
        "1080p" => (1920, 1080),
        other => {
            let (w, h) = other
                .split_once('x')
                .with_context(|| format!("size {other:?}: use 480p, 720p, 1080p or WxH"))?;
            let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
            anyhow::ensure!(
                (64..=7680).contains(&w) && (64..=4320).contains(&h),
                "size {other:?} out of range"
            );
            (w, h)
        }
    })
}

/// Face patches cut from the fixture photo around its six detections.
fn face_patches(p: &Perception) -> Result<Vec<image::RgbImage>> {
    let photo = fixture()?;
    let dets = p.detect(&photo)?;
    anyhow::ensure!(!dets.is_empty(), "no face found in the fixture photo");
    let mut rgb = Vec::with_capacity(photo.width() as usize * photo.height() as usize * 3);
    for y in 0..photo.height() {
        rgb.extend_from_slice(photo.row(y).context("row")?);
    }
    let img =
        image::RgbImage::from_raw(photo.width(), photo.height(), rgb).context("fixture buffer")?;
    Ok(dets
        .iter()
        .map(|d| {
            let c = d.bbox.center();
            let side = d.bbox.width().max(d.bbox.height()) * 1.6;
            let x0 = (c.x - side / 2.0).clamp(0.0, photo.width() as f32 - 1.0) as u32;
            let y0 = (c.y - side / 2.0).clamp(0.0, photo.height() as f32 - 1.0) as u32;
            let w = (side as u32).min(photo.width() - x0);
            let h = (side as u32).min(photo.height() - y0);
            image::imageops::crop_imm(&img, x0, y0, w, h).to_image()
        })
        .collect())
}

/// A `w × h` frame (plus `pad` extra columns for panning) with `n` faces on a
/// grid over a grey gradient.
fn generated(patches: &[image::RgbImage], w: u32, h: u32, n: usize, pad: u32) -> image::RgbImage {
    let cw = w + pad;
    let mut img = image::RgbImage::from_fn(cw, h, |x, y| {
        let v = (90 + (x * 60 / cw) + (y * 40 / h)) as u8;
        image::Rgb([v, v, v.saturating_add(10)])
    });
    let cols = ((n as f64 * f64::from(w) / f64::from(h)).sqrt().ceil() as u32).max(1);
    let rows = (n as u32).div_ceil(cols).max(1);
    let cell = (w / cols).min(h / rows);
    let side = (cell as f32 * 0.85) as u32;
    let x_off = (w - cell * cols) / 2;
    let y_off = (h - cell * rows) / 2;
    for i in 0..n as u32 {
        let p = &patches[i as usize % patches.len()];
        let scaled = image::imageops::resize(p, side, side, image::imageops::FilterType::Triangle);
        let x = x_off + (i % cols) * cell + (cell - side) / 2;
        let y = y_off + (i / cols) * cell + (cell - side) / 2;
        image::imageops::overlay(&mut img, &scaled, i64::from(x), i64::from(y));
    }
    img
}

fn to_frame(img: &image::RgbImage) -> Result<Frame> {
    Ok(Frame::from_rgb(
        img.width(),
        img.height(),
        img.as_raw().clone(),
    )?)
}

/// Cuts the `w`-wide window at column `x` of `img`.
fn window(img: &image::RgbImage, x: u32, w: u32) -> Result<Frame> {
    to_frame(&image::imageops::crop_imm(img, x, 0, w, img.height()).to_image())
}

/// FLOPs of one run of each model, for the floors.
struct Flops {
    peak: f64,
    pnet_level: Box<dyn Fn(usize, usize) -> Result<f64>>,
    rnet: f64,
    onet: f64,
    backbone: f64,
}

fn flops(bundle: &Bundle) -> Result<Flops> {
    let m = bundle.manifest();
    let pnet = bundle.resolve(&m.detector.pnet)?;
    let [c, h, w] = m.backbone.input;
    Ok(Flops {
        peak: tract_peak_flops(Duration::from_millis(400))?,
        pnet_level: Box::new(move |hs, ws| Ok(tract_flops(&pnet, &[1, 3, hs, ws])?)),
        rnet: tract_flops(&bundle.resolve(&m.detector.rnet)?, &[1, 3, 24, 24])?,
        onet: tract_flops(&bundle.resolve(&m.detector.onet)?, &[1, 3, 48, 48])?,
        // A backbone's branches run in the same pass: their work counts too.
        backbone: std::iter::once(&m.backbone.file)
            .chain(m.backbone.branches.iter().map(|b| &b.file))
            .map(|f| tract_flops(&bundle.resolve(f)?, &[1, c, h, w]))
            .sum::<fakewatch_sdk::Result<f64>>()?,
    })
}

/// One frame's stage medians.
struct StageFigures {
    rows: Vec<(&'static str, f64, f64)>, // stage, ms, GFLOP
    total: f64,
    faces: usize,
    candidates: [usize; 3],
}

fn measure_stages(
    p: &Perception,
    (scorer, seq): (&Scorer, Option<&SequenceScorer>),
    frame: &Frame,
    runs: usize,
    fl: &Flops,
) -> Result<StageFigures> {
    let (faces, _) = p.analyze_timed(frame)?; // warm-up: builds per-shape plans
    let dets: Vec<Detection> = faces.iter().map(|f| f.detection).collect();
    let mut t: Vec<PerceptionTimings> = Vec::new();
    let (mut totals, mut align, mut score, mut overlay) = (vec![], vec![], vec![], vec![]);
    // A full track ring, for the sequence model's window (its cost does not
    // depend on the values).
    let mut ring = TrackSequence::default();
    for k in 0..fakewatch_sdk::sequence::CAPACITY {
        ring.push_features(
            k as u64,
            [((k as f32) * 0.3).sin(); fakewatch_sdk::sequence::FEATURES],
        );
        // A crop model's ring holds crops too (of the first face).
        if let (Some(q), Some(d)) = (seq, dets.first()) {
            q.push_crop(&mut ring, frame, &d.bbox)?;
        }
    }
    let mut sequence = vec![];
    let aligner = p.embedder().aligner();
    let norm = p.embedder().config().normalize();
    let mut buf = vec![0f32; aligner.item_len()];
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let (f, timing) = p.analyze_timed(frame)?;
        let inputs: Vec<&[f32]> = f.iter().map(|x| x.scoring_input()).collect();
        let s0 = Instant::now();
        scorer.score(&inputs)?;
        score.push(s0.elapsed());
        if let Some(q) = seq {
            // One window per face, as a session scores each track (a crop
            // model's crop included).
            let q0 = Instant::now();
            for face in &f {
                q.push_crop(&mut ring, frame, &face.detection.bbox)?;
                q.logit(&ring)?;
            }
            sequence.push(q0.elapsed());
        }
        totals.push(start.elapsed());
        t.push(timing);
        let a0 = Instant::now();
        for d in &dets {
            aligner.align_into(frame, d, norm, &mut buf)?;
        }
        align.push(a0.elapsed());
        let mut copy = frame.clone();
        let o0 = Instant::now();
        crate::overlay::draw_detections(&mut copy, &dets, Rgb888::new(255, 0, 0));
        overlay.push(o0.elapsed());
    }
    let cands = t.last().map(|x| x.detect.candidates).unwrap_or_default();
    let mut pnet_flops = 0.0;
    for s in p.detector().config().scales(frame.width(), frame.height()) {
        let hs = (frame.height() as f32 * s + 1.0) as usize;
        let ws = (frame.width() as f32 * s + 1.0) as usize;
        pnet_flops += (fl.pnet_level)(hs, ws)?;
    }
    let n = faces.len() as f64;
    let g = 1e-9;
    let embed = median(t.iter().map(|x| x.embed).collect());
    let align_ms = median(align);
    let mut rows = vec![
        (
            "pyramid+pnet",
            median(t.iter().map(|x| x.detect.stage1_wall).collect()),
            pnet_flops * g,
        ),
        (
            "rnet",
            median(t.iter().map(|x| x.detect.rnet).collect()),
            cands[0] as f64 * fl.rnet * g,
        ),
        (
            "onet",
            median(t.iter().map(|x| x.detect.onet).collect()),
            cands[1] as f64 * fl.onet * g,
        ),
        ("alignment", align_ms, 0.0),
        ("backbone", (embed - align_ms).max(0.0), n * fl.backbone * g),
        ("head+classifier", median(score), 0.0),
        ("overlay", median(overlay), 0.0),
    ];
    if seq.is_some() {
        rows.insert(rows.len() - 1, ("sequence model", median(sequence), 0.0));
    }
    Ok(StageFigures {
        rows,
        total: median(totals),
        faces: faces.len(),
        candidates: cands,
    })
}

/// Encodes `clip_frames` windows of `canvas` (panning right) at `fps`.
#[cfg(feature = "gst")]
fn write_clip(canvas: &image::RgbImage, w: u32, frames: u32, fps: u32, path: &Path) -> Result<()> {
    use crate::live::sinks::{open, SinkSpec};
    let mut sink = open(&SinkSpec::File(path.to_path_buf()), f64::from(fps))?;
    let pad = canvas.width() - w;
    for k in 0..frames {
        let x = if pad == 0 { 0 } else { k % (2 * pad) };
        let x = if x > pad { 2 * pad - x } else { x };
        let f = window(canvas, x, w)?;
        sink.write(&f, Duration::from_secs_f64(f64::from(k) / f64::from(fps)))?;
    }
    sink.finish()
}

#[cfg(not(feature = "gst"))]
fn write_clip(_: &image::RgbImage, _: u32, _: u32, _: u32, _: &Path) -> Result<()> {
    bail!("--scan/--live/--reference need GStreamer (feature `gst`) to write clips")
}

/// `fakewatch run` on `clip` in a child process; its events.
fn live_run(
    ctx: &AppContext,
    clip: &Path,
    bundle: &Path,
    threads: usize,
    dir: &Path,
) -> Result<Value> {
    let events = live_events(ctx, clip, bundle, threads, dir, &[])?;
    events
        .into_iter()
        .find(|v| v["event"] == "summary")
        .context("no summary event")
}

/// Output rate a stream must keep, as a share of the clip's rate, for the
/// multi-stream bench to count it as keeping up (30 fps of 30, with the
/// rate measured between the first and last frame).
const KEEPS_RATE: f64 = 0.97;
/// Largest share of a stream's frames that may be dropped.
const MAX_DROPPED: f64 = 0.05;
/// Latest first verdict of a stream, ms after its first frame.
const MAX_FIRST_VERDICT_MS: f64 = 1000.0;

/// `fakewatch run` with `n` paced copies of `clip` as `n` streams, for each
/// `n` of `counts`: per-stream figures from the run's summary.
fn streams_run(
    ctx: &AppContext,
    clip: &Path,
    bundle: &Path,
    threads: usize,
    dir: &Path,
    counts: &[usize],
    fps: u32,
) -> Result<Value> {
    let mut rows = Vec::new();
    let mut rss_one: Option<f64> = None;
    for &n in counts {
        let mut extra: Vec<String> = vec!["--stats-interval".into(), "0".into()];
        for k in 1..n {
            extra.push("--source".into());
            extra.push(format!("s{k}={}", clip.display()));
        }
        extra.push("--max-streams".into());
        extra.push(n.max(1).to_string());
        // The first source is the clip itself (named s0 when n > 1).
        let first = if n > 1 {
            PathBuf::from(format!("s0={}", clip.display()))
        } else {
            clip.to_path_buf()
        };
        let events = live_events(ctx, &first, bundle, threads, dir, &extra)?;
        let summary = events
            .iter()
            .find(|v| v["event"] == "summary")
            .context("no summary event")?;
        let per: Vec<&Value> = match summary.get("streams").and_then(Value::as_object) {
            Some(m) => m.values().collect(),
            None => vec![summary],
        };
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let out_fps: Vec<f64> = per.iter().map(|v| f(v, "processed_fps")).collect();
        let analysed: Vec<f64> = per.iter().map(|v| f(v, "analyzed_fps")).collect();
        let dropped: Vec<f64> = per
            .iter()
            .map(|v| f(v, "dropped") / f(v, "frames_in").max(1.0))
            .collect();
        let first: Vec<f64> = per
            .iter()
            .map(|v| {
                v["first_verdict_latency_ms"]
                    .as_f64()
                    .unwrap_or(f64::INFINITY)
            })
            .collect();
        let rss = f(summary, "peak_rss_mib");
        if n == 1 {
            rss_one = Some(rss);
        }
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let (out_fps, analysed, dropped, first) = (
            sorted(out_fps),
            sorted(analysed),
            sorted(dropped),
            sorted(first),
        );
        let mid = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        let min = |v: &[f64]| v.first().copied().unwrap_or(f64::NAN);
        let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
        let keeps = min(&out_fps) >= KEEPS_RATE * f64::from(fps)
            && max(&dropped) <= MAX_DROPPED
            && max(&first) <= MAX_FIRST_VERDICT_MS;
        rows.push(json!({
            "streams": n,
            "output_fps_min": min(&out_fps), "output_fps_median": mid(&out_fps),
            "dropped_share_max": max(&dropped),
            "analysed_fps_median": mid(&analysed), "analysed_fps_min": min(&analysed),
            "first_verdict_ms_median": mid(&first), "first_verdict_ms_max": max(&first),
            "peak_rss_mib": rss,
            "rss_per_added_stream_mib": rss_one.filter(|_| n > 1).map(|r| (rss - r) / (n - 1) as f64),
            "keeps_up": keeps,
        }));
    }
    Ok(Value::Array(rows))
}

/// Runs `fakewatch run --source clip` with `extra` arguments; all its events.
fn live_events(
    ctx: &AppContext,
    clip: &Path,
    bundle: &Path,
    threads: usize,
    dir: &Path,
    extra: &[String],
) -> Result<Vec<Value>> {
    let events = dir.join(format!(
        "{}.events.ndjson",
        clip.file_stem().and_then(|s| s.to_str()).unwrap_or("clip")
    ));
    // `file:` sinks append: a reused --work-dir would otherwise hand back
    // the events of an earlier run.
    match std::fs::remove_file(&events) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", events.display())),
    }
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(k) = ctx.bundle_key() {
        cmd.arg("--bundle-key").arg(k.to_string());
    }
    let out = cmd
        .arg("run")
        .arg("--source")
        .arg(clip)
        .arg("--bundle")
        .arg(bundle)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--events")
        .arg(format!("file:{}", events.display()))
        .args(if extra.is_empty() {
            vec!["--stats-interval".to_string(), "0".to_string()]
        } else {
            extra.to_vec()
        })
        .output()
        .context("starting fakewatch run")?;
    if !out.status.success() {
        bail!(
            "fakewatch run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&events)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

/// The soak: a looping paced clip for `secs`, RSS sampled from `stats` events.
fn soak(
    ctx: &AppContext,
    a: &BenchArgs,
    p: &Perception,
    bundle: &Path,
    threads: usize,
    secs: u64,
    work: &Path,
) -> Result<()> {
    anyhow::ensure!(secs >= 10, "--soak needs at least 10 seconds");
    anyhow::ensure!(a.soak_interval > 0, "--soak-interval must be > 0");
    let patches = face_patches(p)?;
    let n = a.faces.first().copied().unwrap_or(4);
    let (w, h) = (1280, 720);
    let canvas = generated(&patches, w, h, n, w / 20);
    let clip = work.join("soak.mp4");
    write_clip(&canvas, w, a.clip_frames, a.fps, &clip)?;
    let extra: Vec<String> = [
        "--loop".to_string(),
        "--max-frames".to_string(),
        (secs * u64::from(a.fps)).to_string(),
        "--stats-interval".to_string(),
        a.soak_interval.to_string(),
    ]
    .into();
    let started = Instant::now();
    let events = live_events(ctx, &clip, bundle, threads, work, &extra)?;
    let samples: Vec<(f64, f64)> = events
        .iter()
        .filter(|v| v["event"] == "stats")
        .filter_map(|v| Some((v["t_ms"].as_f64()? / 1e3, v["rss_mib"].as_f64()?)))
        .collect();
    // Warm-up (plans built, buffers grown): the first quarter, at most a minute.
    let warm = (secs as f64 / 4.0).min(60.0);
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm)
        .collect();
    let per_hour = slope(&steady).map(|s| s * 3600.0);
    let summary = events.iter().find(|v| v["event"] == "summary").cloned();
    let report = json!({
        "soak_seconds": secs, "wall_seconds": started.elapsed().as_secs_f64(),
        "interval_s": a.soak_interval, "faces": n, "samples": samples,
        "warmup_s": warm, "rss_slope_mib_per_hour": per_hour,
        "summary": summary,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "soak: {secs} s of a looping 720p clip with {n} faces, RSS every {} s",
            a.soak_interval
        );
        for (t, r) in &samples {
            println!("  t={t:7.1} s  rss {r:7.1} MiB");
        }
        if let Some(s) = &summary {
            println!(
                "  frames in {} processed {} dropped {} analysed {}; peak RSS {} MiB; errors {}",
                s["frames_in"],
                s["frames_processed"],
                s["dropped"],
                s["frames_analyzed"],
                s["peak_rss_mib"],
                s["errors"]
            );
        }
        match per_hour {
            Some(v) => println!("  RSS slope after {warm:.0} s warm-up: {v:+.2} MiB/hour"),
            None => println!("  too few samples after the warm-up for a slope"),
        }
    }
    if let (Some(limit), Some(v)) = (a.max_rss_slope, per_hour) {
        anyhow::ensure!(
            v <= limit,
            "RSS grows {v:.1} MiB/hour, above the {limit} limit"
        );
    }
    anyhow::ensure!(
        a.max_rss_slope.is_none() || per_hour.is_some(),
        "too few RSS samples for a slope (use a longer --soak or shorter --soak-interval)"
    );
    Ok(())
}

/// Per sampled frame: (frame index, boxes+scores+p_fake) from fakewatch.
#[cfg(feature = "gst")]
fn fakewatch_faces(
    p: &Perception,
    scorer: &Scorer,
    clip: &Path,
    n: usize,
) -> Result<Vec<(u64, Vec<[f32; 6]>)>> {
    let (_, frames) = fakewatch_sdk::video::sample_frames(&clip.to_string_lossy(), n)?;
    let mut out = Vec::new();
    for (k, f) in frames {
        let faces = p.analyze(&f)?;
        let inputs: Vec<&[f32]> = faces.iter().map(|x| x.scoring_input()).collect();
        let ps = scorer.score(&inputs)?;
        out.push((
            k,
            faces
                .iter()
                .zip(ps)
                .map(|(x, q)| {
                    let b = x.detection.bbox.to_array();
                    [b[0], b[1], b[2], b[3], x.detection.score, q]
                })
                .collect(),
        ));
    }
    Ok(out)
}

#[cfg(not(feature = "gst"))]
fn fakewatch_faces(
    _: &Perception,
    _: &Scorer,
    _: &Path,
    _: usize,
) -> Result<Vec<(u64, Vec<[f32; 6]>)>> {
    bail!("--reference needs GStreamer (feature `gst`)")
}

/// Largest box, detection-score and P(fake) differences between fakewatch
/// and the reference on the frames both sampled (frames with different face
/// counts are counted, not compared).
fn compare(ours: &[(u64, Vec<[f32; 6]>)], reference: &[Value]) -> Value {
    let (mut dbox, mut dscore, mut dp, mut frames, mut mismatched) = (0f32, 0f32, 0f32, 0, 0);
    for r in reference {
        let Some(k) = r["frame"].as_u64() else {
            continue;
        };
        let Some((_, faces)) = ours.iter().find(|(i, _)| *i == k) else {
            continue;
        };
        let theirs = r["faces"].as_array().cloned().unwrap_or_default();
        frames += 1;
        if theirs.len() != faces.len() {
            mismatched += 1;
            continue;
        }
        // Pair each face with the reference face whose box is nearest: the
        // order of faces with (almost) equal scores may differ.
        for a in faces {
            let dist = |b: &Value| {
                (0..4)
                    .map(|i| (a[i] - b["box"][i].as_f64().unwrap_or(f64::NAN) as f32).abs())
                    .fold(0f32, f32::max)
            };
            let Some(b) = theirs.iter().min_by(|x, y| dist(x).total_cmp(&dist(y))) else {
                continue;
            };
            dbox = dbox.max(dist(b));
            dscore = dscore.max((a[4] - b["score"].as_f64().unwrap_or(f64::NAN) as f32).abs());
            dp = dp.max((a[5] - b["p_fake"].as_f64().unwrap_or(f64::NAN) as f32).abs());
        }
    }
    json!({"frames_compared": frames, "frames_with_other_face_count": mismatched,
           "max_box_px": dbox, "max_score": dscore, "max_p_fake": dp,
           "identical_within_1px_1e-4": mismatched == 0 && frames > 0 && dbox <= 1.0 && dscore <= 1e-4})
}

/// Runs the reference on `clips`: its per-frame results and its per-video
/// summaries (`seconds`, `decode_seconds`), in clip order.
fn reference_run(
    a: &BenchArgs,
    bundle: &Path,
    clips: &[PathBuf],
    dir: &Path,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/reference/reference.py");
    let out_json = dir.join("reference.ndjson");
    let threads = a
        .threads
        .unwrap_or_else(fakewatch_sdk::parallel::available_threads);
    let out = std::process::Command::new(&a.python)
        .arg(&script)
        .arg("--bundle")
        .arg(bundle)
        .arg("--frames")
        .arg(a.scan_frames.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--json")
        .arg(&out_json)
        .args(clips)
        .output()
        .with_context(|| format!("starting {} {}", a.python, script.display()))?;
    if !out.status.success() {
        bail!(
            "reference pipeline failed (needs numpy and onnxruntime: see bench/README.md): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let videos = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("video").is_some())
        .collect();
    let frames = std::fs::read_to_string(&out_json)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    Ok((frames, videos))
}

/// Runs `fakewatch bench`.
pub fn run(a: BenchArgs, ctx: &AppContext) -> Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(fakewatch_sdk::parallel::available_threads);
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    anyhow::ensure!(a.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(
        a.fps > 0 && a.clip_frames > 0,
        "--fps and --clip-frames must be > 0"
    );
    let generate = !a.sizes.is_empty()
        || !a.faces.is_empty()
        || a.scan
        || a.live
        || a.reference
        || !a.streams.is_empty();
    anyhow::ensure!(
        a.streams.iter().all(|&n| n >= 1),
        "--streams counts must be at least 1"
    );
    anyhow::ensure!(
        !(generate && a.input.is_some()),
        "give an image or generated sizes/faces, not both"
    );
    let sizes = if a.sizes.is_empty() {
        vec!["720p".to_string()]
    } else {
        a.sizes.clone()
    };
    let sizes: Vec<(String, (u32, u32))> = sizes
        .into_iter()
        .map(|s| parse_size(&s).map(|wh| (s, wh)))
        .collect::<Result<_>>()?;
    let faces = if a.faces.is_empty() {
        vec![4]
    } else {
        a.faces.clone()
    };
    anyhow::ensure!(
        faces.iter().all(|n| (1..=30).contains(n)),
        "--faces must be in 1..=30"
    );
    let dir = crate::find_bundle(a.bundle.clone())?;
    let bundle = ctx.load_bundle(&dir)?;
    let policies: Vec<(&str, ShapePolicy)> = {
        let per_shape = (
            "per-shape",
            ShapePolicy::PerShape {
                capacity: PNET_PLAN_CACHE,
            },
        );
        let symbolic = ("symbolic", ShapePolicy::Symbolic);
        match a.pnet_plans {
            PnetPlans::PerShape => vec![per_shape],
            PnetPlans::Symbolic => vec![symbolic],
            PnetPlans::Both => vec![per_shape, symbolic],
        }
    };
    let work = a.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fakewatch-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work)?;
    if let Some(secs) = a.soak {
        let mut p = Perception::from_bundle(&bundle, ctx.backend())?;
        p.set_threads(threads);
        let r = soak(ctx, &a, &p, &dir, threads, secs, &work);
        if a.work_dir.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        return r;
    }
    // Only the stage figures need the scorer and the FLOP counts.
    let scorer = Scorer::from_bundle(&bundle, ctx.backend())
        .with_context(|| format!("bundle {}", dir.display()))?;
    let seq = SequenceScorer::from_bundle(&bundle, ctx.backend())?;
    let fl = flops(&bundle)?;
    if !a.json {
        println!(
            "{}, {threads} thread(s); peak f32 matmul {:.1} GFLOP/s per core \
             (floor = FLOPs / (peak x threads used))",
            ctx.backend().name(),
            fl.peak * 1e-9
        );
    }
    for (plan_name, policy) in policies {
        let mut p = Perception::from_bundle_with(&bundle, ctx.backend(), policy)?;
        p.set_threads(threads);
        let mut others = Vec::new();
        for name in &a.compare {
            let be = ctx.named_backend(name)?;
            let mut q = Perception::from_bundle_with(&bundle, &*be, policy)?;
            q.set_threads(threads);
            let sc = Scorer::from_bundle(&bundle, &*be)?;
            let sq = SequenceScorer::from_bundle(&bundle, &*be)?;
            others.push((be.name(), q, sc, sq));
        }
        let mut cases: Vec<(String, Frame, Option<image::RgbImage>)> = Vec::new();
        if generate {
            let patches = face_patches(&p)?;
            for (s, (w, h)) in &sizes {
                let (w, h) = (*w, *h);
                for &n in &faces {
                    let pad = w / 20;
                    let canvas = generated(&patches, w, h, n, pad);
                    cases.push((
                        format!("{s}-{n}f"),
                        window(&canvas, pad / 2, w)?,
                        Some(canvas),
                    ));
                }
            }
        } else {
            let frame = match &a.input {
                Some(path) => Frame::load(path)?,
                None => default_frame()?,
            };
            let name = a
                .input
                .as_ref()
                .map_or("t1-720p".to_string(), |p| p.display().to_string());
            cases.push((name, frame, None));
        }
        let mut clips = Vec::new();
        let mut per_case = Vec::new();
        for (name, frame, canvas) in &cases {
            let s = measure_stages(&p, (&scorer, seq.as_ref()), frame, a.runs, &fl)?;
            let mut obj = json!({
                "case": name, "backend": ctx.backend().name(), "pnet_plans": plan_name, "threads": threads,
                "width": frame.width(), "height": frame.height(), "faces": s.faces,
                "candidates": s.candidates, "runs": a.runs,
                "total_ms": s.total, "fps": 1e3 / s.total,
                "peak_flops_per_core": fl.peak,
                "stages": s.rows.iter().map(|(st, ms, gf)| {
                    // Faces are embedded one per thread: one face uses one core.
                    let cores = if *st == "backbone" { threads.min(s.faces.max(1)) } else { threads };
                    json!({
                        "stage": st, "ms": ms, "share": ms / s.total, "gflop": gf,
                        "floor_ms": gf * 1e9 / (fl.peak * cores as f64) * 1e3,
                    })
                }).collect::<Vec<_>>(),
            });
            for (name, q, sc, sq) in &others {
                let t = measure_stages(q, (sc, sq.as_ref()), frame, a.runs, &fl)?;
                obj["compare"][*name] = json!({
                    "faces": t.faces, "total_ms": t.total,
                    "stages": t.rows.iter().map(|(st, ms, _)| json!({"stage": st, "ms": ms}))
                        .collect::<Vec<_>>(),
                });
            }
            let clip_needed = a.scan || a.live || a.reference || !a.streams.is_empty();
            if let (Some(canvas), true) = (canvas, clip_needed) {
                let clip = work.join(format!("{name}.mp4"));
                write_clip(canvas, frame.width(), a.clip_frames, a.fps, &clip)?;
                if a.scan || a.reference {
                    let mut d = bundle.decision();
                    d.set_frames(a.scan_frames)?;
                    let det = fakewatch_sdk::DeepfakeDetector::builder(&bundle)
                        .threads(threads)
                        .decision(d)
                        .build(ctx.backend())?;
                    let input = clip.to_string_lossy().into_owned();
                    crate::scan::scan_one(&det, input.clone()); // warm-up
                    let mut secs = Vec::new();
                    let mut frames = 0;
                    for _ in 0..3 {
                        let t0 = Instant::now();
                        let r = crate::scan::scan_one(&det, input.clone());
                        secs.push(t0.elapsed());
                        if let Some(e) = r.error {
                            bail!("scan of {input}: {e}");
                        }
                        frames = r.frames;
                    }
                    let sec = median(secs) / 1e3;
                    obj["scan"] = json!({"frames": frames, "seconds_per_video": sec,
                                         "videos_per_minute": 60.0 / sec});
                }
                if a.live {
                    let summary = live_run(ctx, &clip, &dir, threads, &work)?;
                    obj["live"] = summary;
                }
                if !a.streams.is_empty() {
                    obj["streams"] =
                        streams_run(ctx, &clip, &dir, threads, &work, &a.streams, a.fps)?;
                }
                clips.push(clip);
            }
            per_case.push(obj);
        }
        if a.reference && !clips.is_empty() {
            let (frames, videos) = reference_run(&a, &dir, &clips, &work)?;
            for ((obj, clip), video) in per_case.iter_mut().zip(&clips).zip(videos) {
                let sec = video["seconds"].as_f64().unwrap_or(f64::NAN);
                let ours = fakewatch_faces(&p, &scorer, clip, a.scan_frames)?;
                let clip_s = clip.to_string_lossy();
                let theirs: Vec<Value> = frames
                    .iter()
                    .filter(|v| v["input"].as_str() == Some(&clip_s))
                    .cloned()
                    .collect();
                let ours_sec = obj["scan"]["seconds_per_video"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                obj["reference"] = json!({
                    "seconds_per_video": sec, "videos_per_minute": 60.0 / sec,
                    "decode_seconds_per_video": video["decode_seconds"],
                    "speedup": sec / ours_sec,
                    "agreement": compare(&ours, &theirs),
                });
            }
        }
        for obj in &per_case {
            if a.json {
                println!("{obj}");
            } else {
                print_case(obj);
            }
        }
    }
    if a.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if !a.json {
        if let Some(r) = peak_rss_mib() {
            println!("peak RSS of this process {r:.0} MiB");
        }
    }
    Ok(())
}

fn print_case(o: &Value) {
    println!(
        "\n{} ({}x{}), {} faces, PNet {}; candidates after PNet/RNet/ONet {}; median of {} runs",
        o["case"].as_str().unwrap_or(""),
        o["width"],
        o["height"],
        o["faces"],
        o["pnet_plans"].as_str().unwrap_or(""),
        o["candidates"],
        o["runs"]
    );
    println!(
        "  {:<16} {:>9} {:>7} {:>9} {:>10}",
        "stage", "ms", "share", "GFLOP", "floor ms"
    );
    for s in o["stages"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:>9.2} {:>6.1}% {:>9.3} {:>10.2}",
            s["stage"].as_str().unwrap_or(""),
            s["ms"].as_f64().unwrap_or(0.0),
            100.0 * s["share"].as_f64().unwrap_or(0.0),
            s["gflop"].as_f64().unwrap_or(0.0),
            s["floor_ms"].as_f64().unwrap_or(0.0),
        );
    }
    let total = o["total_ms"].as_f64().unwrap_or(0.0);
    println!(
        "  {:<16} {:>9.2}   (analysis of one frame: {:.2} frames/s)",
        "total",
        total,
        1e3 / total
    );
    for (name, c) in o["compare"].as_object().into_iter().flatten() {
        let stages: Vec<String> = c["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} {:.1}",
                    s["stage"].as_str().unwrap_or(""),
                    s["ms"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        let t = c["total_ms"].as_f64().unwrap_or(0.0);
        println!(
            "  {name}: {} faces, total {t:.2} ms ({:.2}x of {}): {}",
            c["faces"],
            total / t,
            o["backend"].as_str().unwrap_or(""),
            stages.join(", ")
        );
    }
    if let Some(s) = o.get("scan") {
        println!(
            "  scan: {} frames per video, {:.2} s per video, {:.1} videos/min",
            s["frames"],
            s["seconds_per_video"].as_f64().unwrap_or(0.0),
            s["videos_per_minute"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(l) = o.get("live") {
        println!(
            "  live: {:.1} processed fps of {:.1} input, {} of {} frames dropped, {} analyses, \
             first verdict {} ms, analysis {:.0} ms, peak RSS {} MiB",
            l["processed_fps"].as_f64().unwrap_or(0.0),
            l["input_fps"].as_f64().unwrap_or(0.0),
            l["dropped"],
            l["frames_in"],
            l["frames_analyzed"],
            l["first_verdict_latency_ms"],
            l["stage_ms"]["analysis_capture_to_result"]
                .as_f64()
                .unwrap_or(0.0),
            l["peak_rss_mib"]
        );
    }
    if let Some(rows) = o.get("streams").and_then(Value::as_array) {
        println!(
            "  streams | out fps/stream min (median) | dropped max | analysed fps/stream median | \
             first verdict after start median / max ms | peak RSS MiB | RSS per added stream | keeps up"
        );
        for r in rows {
            let g = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:>7} | {:>6.1} ({:.1}) | {:>5.1} % | {:>5.2} | {:>5.0} / {:>5.0} | {:>6.0} | {} | {}",
                r["streams"],
                g("output_fps_min"),
                g("output_fps_median"),
                g("dropped_share_max") * 100.0,
                g("analysed_fps_median"),
                g("first_verdict_ms_median"),
                g("first_verdict_ms_max"),
                g("peak_rss_mib"),
                r["rss_per_added_stream_mib"]
                    .as_f64()
                    .map_or("–".to_string(), |v| format!("{v:.0} MiB")),
                if r["keeps_up"] == true { "yes" } else { "no" }
            );
        }
    }
    if let Some(r) = o.get("reference") {
        println!(
            "  reference: {:.2} s per video (decode {:.2} s), {:.1} videos/min; fakewatch is {:.2}x; agreement {}",
            r["seconds_per_video"].as_f64().unwrap_or(0.0),
            r["decode_seconds_per_video"].as_f64().unwrap_or(0.0),
            r["videos_per_minute"].as_f64().unwrap_or(0.0),
            r["speedup"].as_f64().unwrap_or(0.0),
            r["agreement"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_too_little() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 0.5 * f64::from(i)))
            .collect();
        assert!((slope(&pts).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(slope(&pts[..1]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("720p").unwrap(), (1280, 720));
        assert_eq!(parse_size("640x360").unwrap(), (640, 360));
        assert!(parse_size("10x10").is_err());
        assert!(parse_size("big").is_err());
    }
}
