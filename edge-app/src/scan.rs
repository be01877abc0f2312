//! `fakewatch scan`: a verdict per image, video or directory entry
//! (`architecture.md` §5). A bad input yields an object with `error` set and
//! the scan goes on.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::AppContext;
use clap::Args;
use fakewatch_sdk::sampling::VideoInfo;
use fakewatch_sdk::verdict::{describe, Unknown, Verdict};
use fakewatch_sdk::{DeepfakeDetector, Frame, Label, Session};
use serde::Serialize;

use crate::inputs::{expand_inputs, is_image};

/// Arguments of `fakewatch scan`.
#[derive(Args)]
pub struct ScanArgs {
    /// Images, videos or directories (each directory's images and videos, sorted).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Model bundle directory (default: models/default).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Frames sampled evenly from each video (default: the bundle's).
    #[arg(long)]
    frames: Option<usize>,
    /// One JSON object per input.
    #[arg(long)]
    json: bool,
    /// Threads per frame (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Decision threshold on the reported score, P(fake) for a calibrated
    /// bundle (default: the bundle's; 0.5 when calibrated).
    #[arg(long)]
    threshold: Option<f32>,
}

/// One track of a scan result.
#[derive(Serialize)]
struct TrackOut {
    id: u32,
    score: f32,
    frames: usize,
}

/// The §5 result object.
#[derive(Serialize)]
pub(crate) struct ScanResult {
    pub(crate) input: String,
    kind: &'static str,
    pub(crate) frames: usize,
    /// Frames asked for (1 for an image): more than `frames` when the video
    /// is shorter or could not be sampled as asked.
    frames_requested: usize,
    faces: usize,
    score: Option<f32>,
    label: &'static str,
    tracks: Vec<TrackOut>,
    pub(crate) error: Option<String>,
    /// The label and why it is unknown, for the text output.
    #[serde(skip)]
    verdict: (Label, Option<Unknown>),
}

impl ScanResult {
    fn failed(input: String, kind: &'static str, requested: usize, e: &anyhow::Error) -> Self {
        let failed = Verdict::error();
        Self {
            input,
            kind,
            frames: 0,
            frames_requested: requested,
            faces: 0,
            score: None,
            label: failed.label.as_str(),
            tracks: Vec::new(),
            error: Some(format!("{e:#}")),
            verdict: (failed.label, failed.unknown),
        }
    }
}

/// Runs `fakewatch scan`.
pub fn run(a: ScanArgs, ctx: &AppContext) -> Result<()> {
    let dir = crate::find_bundle(a.bundle.clone())?;
    let bundle = ctx.load_bundle(&dir)?;
    let threads = a
        .threads
        .unwrap_or_else(fakewatch_sdk::parallel::available_threads);
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    let mut decision = bundle.decision();
    if let Some(t) = a.threshold {
        decision.set_threshold(t).context("--threshold")?;
    }
    if let Some(n) = a.frames {
        decision.set_frames(n).context("--frames")?;
    }
    let detector = DeepfakeDetector::builder(&bundle)
        .threads(threads)
        .decision(decision)
        .build(ctx.backend())
        .with_context(|| format!("bundle {}", dir.display()))?;
    crate::release_free_memory();
    let calibrated = decision.is_calibrated();
    let mut failures = 0usize;
    for input in expand_inputs(&a.inputs) {
        let r = match input {
            Ok(input) => scan_one(&detector, input),
            Err((input, e)) => ScanResult::failed(input, "image", 1, &e),
        };
        failures += usize::from(r.error.is_some());
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_human(&r, calibrated);
        }
    }
    if failures > 0 {
        log::warn!("{failures} input(s) could not be scanned");
        std::process::exit(2);
    }
    Ok(())
}

pub(crate) fn scan_one(detector: &Arc<DeepfakeDetector>, input: String) -> ScanResult {
    let image = is_image(&input);
    let kind = if image { "image" } else { "video" };
    let mut session = detector.session();
    let decision = detector.decision();
    let requested = if image { 1 } else { decision.frames };
    let res = if image {
        Frame::load(&input)
            .and_then(|f| session.process(&f).map(drop))
            .map_err(anyhow::Error::from)
    } else {
        scan_video(&input, requested, &mut session).map(|info| {
            let analysed = session.frames();
            if analysed < requested {
                let held = info
                    .frame_count()
                    .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
                log::warn!(
                    "{input}: {analysed} of the {requested} frames asked for were analysed (the video stream holds {held} frames)"
                );
            }
        })
    };
    if let Err(e) = res {
        return ScanResult::failed(input, kind, requested, &e);
    }
    let v = if image {
        session.verdict()
    } else {
        decision.video_verdict(session.verdict(), session.frames())
    };
    ScanResult {
        input,
        kind,
        frames: session.frames(),
        frames_requested: requested,
        faces: session.faces(),
        score: v.score,
        label: v.label.as_str(),
        tracks: v
            .tracks
            .iter()
            .map(|t| TrackOut {
                id: t.id,
                score: t.score,
                frames: t.frames,
            })
            .collect(),
        error: None,
        verdict: (v.label, v.unknown),
    }
}

fn print_human(r: &ScanResult, calibrated: bool) {
    let verdict = describe(r.verdict.0, r.score, r.verdict.1, calibrated);
    match &r.error {
        Some(e) => println!("{verdict:<24} {}  ({e})", r.input),
        None => println!(
            "{verdict:<24} {}  ({} frames, {} faces, {} tracks)",
            r.input,
            r.frames,
            r.faces,
            r.tracks.len()
        ),
    }
}

/// Decodes the sampled frames one at a time straight into the session.
#[cfg(feature = "gst")]
fn scan_video(input: &str, n: usize, session: &mut Session) -> Result<VideoInfo> {
    use fakewatch_sdk::sampling::Sampling;
    let info = fakewatch_sdk::video::for_each_sampled(input, Sampling::Even(n), |_, f| {
        session.process(&f).map(drop)
    })?;
    anyhow::ensure!(session.frames() > 0, "no video frame could be decoded");
    Ok(info)
}

/// Without GStreamer, Motion-JPEG AVI is read in pure Rust.
#[cfg(not(feature = "gst"))]
fn scan_video(input: &str, n: usize, session: &mut Session) -> Result<VideoInfo> {
    use fakewatch_sdk::sampling::Sampling;
    if !input.to_ascii_lowercase().ends_with(".avi") {
        anyhow::bail!(
            "{input}: this build has no GStreamer (feature `gst`); it reads Motion-JPEG .avi only"
        );
    }
    let avi = fakewatch_sdk::avi::MjpegAvi::open(input)?;
    let info = avi.for_each_sampled(Sampling::Even(n), |_, f| session.process(&f).map(drop))?;
    anyhow::ensure!(session.frames() > 0, "no video frame could be decoded");
    Ok(info)
}
