//! `fakewatch scan`: a verdict per image, video or directory entry
//! (`architecture.md` §5). A bad input yields an object with `error` set and
//! the scan goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::AppContext;
use clap::Args;
use fakewatch_sdk::detector::Step;
use fakewatch_sdk::sampling::VideoInfo;
use fakewatch_sdk::verdict::{describe, Unknown, Verdict};
use fakewatch_sdk::{DeepfakeDetector, Frame, Label, Session};
use serde::Serialize;

use crate::explain::Timeline;
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
    /// Print where the time went (model load, decode, each detector stage,
    /// backbone, classifier) to stderr after the scan.
    #[arg(long)]
    profile: bool,
    /// Write a PNG per input to DIR: each track's P(fake) over the sampled
    /// frames against the threshold, and the three most suspicious faces
    /// with their times (a prompt for review, not proof).
    #[arg(long, value_name = "DIR")]
    explain: Option<PathBuf>,
}

/// Time per stage summed over a scan (`--profile`).
#[derive(Debug, Default)]
pub(crate) struct ScanProfile {
    load: Duration,
    inputs: usize,
    wall: Duration,
    frames: usize,
    faces: usize,
    stage1: Duration,
    rnet: Duration,
    onet: Duration,
    embed: Duration,
    score: Duration,
}

impl ScanProfile {
    fn add(&mut self, step: &Step) {
        let t = &step.timings;
        let d = &t.perception.detect;
        self.frames += 1;
        self.faces += step.faces.len();
        self.stage1 += d.stage1_wall;
        self.rnet += d.rnet;
        self.onet += d.onet;
        self.embed += t.perception.embed;
        self.score += t.score;
    }

    /// The table `--profile` prints: seconds, share of the whole run and
    /// milliseconds per analysed frame for each stage; "decode and other" is
    /// the scan's wall time less the analysis stages: the wait for decoded
    /// frames (GStreamer decodes on its own threads while a frame is
    /// analysed, so only the part not hidden shows), colour conversion,
    /// tracking and start of each input.
    fn table(&self) -> String {
        let analysis = self.stage1 + self.rnet + self.onet + self.embed + self.score;
        let other = self.wall.saturating_sub(analysis);
        let total = self.load + self.wall;
        let per_frame = |d: Duration| {
            if self.frames == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e3 / self.frames as f64
            }
        };
        let mut out = format!(
            "profile: {} input(s), {} frame(s), {} face(s), {:.2} s in all\n{:<28}{:>9}{:>8}{:>12}\n",
            self.inputs,
            self.frames,
            self.faces,
            total.as_secs_f64(),
            "stage",
            "s",
            "share",
            "ms/frame"
        );
        // Model load happens once, not per frame.
        let once = [("model load", self.load, false)];
        let per_frame_rows = [
            ("decode and other", other),
            ("pyramid + PNet (wall)", self.stage1),
            ("RNet crops + net", self.rnet),
            ("ONet crops + net", self.onet),
            ("alignment + backbone", self.embed),
            ("head + classifier", self.score),
        ]
        .map(|(name, d)| (name, d, true));
        for (name, d, each_frame) in once.into_iter().chain(per_frame_rows) {
            let share = if total.is_zero() {
                0.0
            } else {
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            };
            let ms = if each_frame {
                format!("{:.1}", per_frame(d))
            } else {
                String::from("-")
            };
            out += &format!(
                "{name:<28}{:>9.3}{:>7.1}%{ms:>12}\n",
                d.as_secs_f64(),
                share
            );
        }
        out
    }
}

/// One track of a scan result.
#[derive(Serialize)]
struct TrackOut {
    id: u32,
    score: f32,
    frames: usize,
    /// The frame score alone, when `score` is fused with a sequence score.
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_score: Option<f32>,
    /// The bundle's sequence model's score of the track, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_score: Option<f32>,
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
    let loading = Instant::now();
    let detector = DeepfakeDetector::builder(&bundle)
        .threads(threads)
        .decision(decision)
        .build(ctx.backend())
        .with_context(|| format!("bundle {}", dir.display()))?;
    let mut profile = a.profile.then(|| ScanProfile {
        load: loading.elapsed(),
        ..ScanProfile::default()
    });
    crate::release_free_memory();
    let calibrated = decision.is_calibrated();
    if let Some(dir) = &a.explain {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut failures = 0usize;
    for (k, input) in expand_inputs(&a.inputs).into_iter().enumerate() {
        let started = Instant::now();
        let mut timeline = a.explain.as_ref().map(|_| Timeline::new());
        let r = match input {
            Ok(input) => scan_one_with(&detector, input, profile.as_mut(), timeline.as_mut()),
            Err((input, e)) => ScanResult::failed(input, "image", 1, &e),
        };
        if let (Some(dir), Some(tl), None) = (&a.explain, &timeline, &r.error) {
            let title = crate::explain::title(&r.input, r.verdict.0, r.score, calibrated);
            let img = tl.render(&title, decision.threshold, calibrated)?;
            let path = crate::explain::path_for(dir, k, &r.input);
            crate::explain::save(&img, &path)?;
            log::info!("{}: explanation in {}", r.input, path.display());
        }
        if let Some(p) = profile.as_mut() {
            p.inputs += 1;
            p.wall += started.elapsed();
        }
        failures += usize::from(r.error.is_some());
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_human(&r, calibrated);
        }
    }
    if let Some(p) = &profile {
        eprint!("{}", p.table());
    }
    if failures > 0 {
        log::warn!("{failures} input(s) could not be scanned");
        std::process::exit(2);
    }
    Ok(())
}

pub(crate) fn scan_one(detector: &Arc<DeepfakeDetector>, input: String) -> ScanResult {
    scan_one_with(detector, input, None, None)
}

/// [`scan_one`], adding each analysed frame's stage times to `profile` and
/// its scored faces to `timeline`.
fn scan_one_with(
    detector: &Arc<DeepfakeDetector>,
    input: String,
    mut profile: Option<&mut ScanProfile>,
    mut timeline: Option<&mut Timeline>,
) -> ScanResult {
    let mut analyse = |session: &mut Session, index: u64, f: &Frame| -> fakewatch_sdk::Result<()> {
        let step = session.step(f)?;
        if let Some(p) = profile.as_deref_mut() {
            p.add(&step);
        }
        if let Some(t) = timeline.as_deref_mut() {
            t.add(index, f, &step, &session.verdict());
        }
        Ok(())
    };
    let image = is_image(&input);
    let kind = if image { "image" } else { "video" };
    let mut session = detector.session();
    let decision = detector.decision();
    let requested = if image { 1 } else { decision.frames };
    let res = if image {
        Frame::load(&input)
            .and_then(|f| analyse(&mut session, 0, &f))
            .map_err(anyhow::Error::from)
    } else {
        scan_video(&input, requested, &mut session, &mut analyse).map(|info| {
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
                frame_score: t.frame_score,
                sequence_score: t.sequence_score,
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
fn scan_video(
    input: &str,
    n: usize,
    session: &mut Session,
    analyse: &mut impl FnMut(&mut Session, u64, &Frame) -> fakewatch_sdk::Result<()>,
) -> Result<VideoInfo> {
    let sampling = session.detector().file_sampling(n);
    let info =
        fakewatch_sdk::video::for_each_sampled(input, sampling, |i, f| analyse(session, i, &f))?;
    anyhow::ensure!(session.frames() > 0, "no video frame could be decoded");
    Ok(info)
}

/// Without GStreamer, Motion-JPEG AVI is read in pure Rust.
#[cfg(not(feature = "gst"))]
fn scan_video(
    input: &str,
    n: usize,
    session: &mut Session,
    analyse: &mut impl FnMut(&mut Session, u64, &Frame) -> fakewatch_sdk::Result<()>,
) -> Result<VideoInfo> {
    if !input.to_ascii_lowercase().ends_with(".avi") {
        anyhow::bail!(
            "{input}: this build has no GStreamer (feature `gst`); it reads Motion-JPEG .avi only"
        );
    }
    let avi = fakewatch_sdk::avi::MjpegAvi::open(input)?;
    let sampling = session.detector().file_sampling(n);
    let info = avi.for_each_sampled(sampling, |i, f| analyse(session, i, &f))?;
    anyhow::ensure!(session.frames() > 0, "no video frame could be decoded");
    Ok(info)
}
