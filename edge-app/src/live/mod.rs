//! `fakewatch run`: a live source through detection, tracking and scoring
//! to overlaid frames and verdict events.
//!
//! ```text
//! capture thread ──▶ FrameQueue (bounded, keeps newest) ──▶ main loop ─┬─▶ overlay ─▶ sinks / MJPEG
//!                                                                     └─▶ latest-frame slot ─▶ analysis thread
//!                                                                          (MTCNN → FaceNet → head → classifier → tracks)
//! ```
//! Every frame is overlaid with the newest analysis; analysis works on the
//! newest frame it can get (in real time) or on every k-th frame in order
//! (`--no-pace`, deterministic).

#[cfg(feature = "nokhwa")]
pub mod camera;
pub mod config;
pub mod events;
pub mod frames;
pub mod http;
pub mod mqtt;
pub mod sinks;
pub mod source;
#[cfg(feature = "v4l")]
pub mod v4l2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::AppContext;
use fakewatch_sdk::detector::{Session, Step};
use fakewatch_sdk::frame::BufferPool;
use fakewatch_sdk::verdict::{LabelChange, Scope, TrackVerdict, Unknown, Verdict};
use fakewatch_sdk::{BBox, DeepfakeDetector, Label, MultiSession, StreamId};
use serde_json::json;

use config::defaults;
pub use config::RunArgs;
use events::{EventHub, EventTarget, Events, SpoolConfig};
use http::{HttpServer, Status, TrackStatus};
use sinks::{Sink, SinkSpec};
use source::{CaptureConfig, CaptureStats, Captured, FrameQueue, SourceSpec};

use crate::overlay::{draw_live, Banner, FaceMark};

/// Most tracks drawn and reported per frame (the tracker's own bound).
pub const MAX_TRACKS: usize = 64;
/// How often the HTTP status is refreshed (not on every frame).
const STATUS_PERIOD: Duration = Duration::from_millis(100);
/// How far (seconds) a box is carried along its motion after its last
/// detection.
const MAX_EXTRAPOLATION: f32 = 0.5;

/// A track as the overlay shows it.
#[derive(Debug, Clone, Copy)]
struct TrackView {
    id: u32,
    bbox: BBox,
    /// Box velocity, pixels per second (from the last two detections).
    velocity: [f32; 4],
    seen: Instant,
    label: Label,
    score: Option<f32>,
    /// The frame model's and the sequence model's scores, when the bundle
    /// has a sequence model (`score` is then their fusion).
    frame_score: Option<f32>,
    sequence_score: Option<f32>,
    frames: usize,
}

/// Analysis results shared with the overlay (fixed capacity).
#[derive(Debug, Default)]
struct LiveState {
    tracks: heapless::Vec<TrackView, MAX_TRACKS>,
    label: Option<Label>,
    score: Option<f32>,
    unknown: Option<Unknown>,
    /// Scores are calibrated P(fake).
    calibrated: bool,
    analyzed: u64,
    last_latency: Duration,
}

/// Running means of stage times, ms.
#[derive(Debug, Default, Clone, Copy)]
struct StageMeans {
    n: u64,
    pyramid: f64,
    pnet: f64,
    rnet: f64,
    onet: f64,
    embed: f64,
    score: f64,
    analysis: f64,
}

impl StageMeans {
    fn add(&mut self, t: &fakewatch_sdk::detector::StepTimings, total: Duration) {
        self.n += 1;
        let k = 1.0 / self.n as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let d = &t.perception.detect;
        self.pyramid += (ms(d.pyramid) - self.pyramid) * k;
        self.pnet += (ms(d.pnet) - self.pnet) * k;
        self.rnet += (ms(d.rnet) - self.rnet) * k;
        self.onet += (ms(d.onet) - self.onet) * k;
        self.embed += (ms(t.perception.embed) - self.embed) * k;
        self.score += (ms(t.score) - self.score) * k;
        self.analysis += (ms(total) - self.analysis) * k;
    }
}

/// Per-track bookkeeping of the analysis side.
#[derive(Debug, Clone, Copy)]
struct TrackBook {
    id: u32,
    appeared: Instant,
    first_frame: u64,
    last_frame: u64,
}

/// Turns analyses into state updates and events.
struct Analyzer {
    /// The stream's own session (single-stream runs); `None` when the
    /// session lives in a [`MultiSession`].
    session: Option<Session>,
    /// Stream time zero (hysteresis dwell is measured from it).
    origin: Instant,
    /// The last verdict, labels as held.
    last: Option<Verdict>,
    books: heapless::Vec<TrackBook, MAX_TRACKS>,
    latencies: Vec<f64>,
    first_latency: Option<f64>,
    /// When the stream's first track verdict came.
    first_verdict_at: Option<Instant>,
    tracks_seen: u64,
    stages: StageMeans,
    errors: u64,
}

/// A step's verdict as the stream shows it: held labels and their changes.
type StreamVerdict = (Verdict, Vec<LabelChange>);

impl Analyzer {
    fn new(session: Option<Session>) -> Self {
        Self {
            session,
            origin: Instant::now(),
            last: None,
            books: heapless::Vec::new(),
            latencies: Vec::new(),
            first_latency: None,
            first_verdict_at: None,
            tracks_seen: 0,
            stages: StageMeans::default(),
            errors: 0,
        }
    }

    /// Analyses a frame with the stream's own session.
    fn analyze(&mut self, c: &Captured, state: &Mutex<LiveState>, events: &Events<'_>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let step = session.step(&c.frame);
        let verdict = step
            .is_ok()
            .then(|| session.stream_verdict(c.at.saturating_duration_since(self.origin)));
        self.record(c.index, c.at, step, verdict, state, events);
    }

    /// Analyses a frame of stream `id` of `multi` now.
    fn analyze_on(
        &mut self,
        multi: &MultiSession,
        id: StreamId,
        c: &Captured,
        state: &Mutex<LiveState>,
        events: &Events<'_>,
    ) {
        let step = multi.process(id, &c.frame);
        let verdict = self.verdict_on(multi, id, &step, c.at);
        self.record(c.index, c.at, step, verdict, state, events);
    }

    /// The stream verdict after `step` of stream `id` (none after a failure).
    fn verdict_on(
        &self,
        multi: &MultiSession,
        id: StreamId,
        step: &fakewatch_sdk::Result<Step>,
        at: Instant,
    ) -> Option<StreamVerdict> {
        let t = at.saturating_duration_since(self.origin);
        step.as_ref()
            .ok()
            .and_then(|_| multi.with_session(id, |s| s.stream_verdict(t)).ok())
    }

    /// The verdict so far (the summary's).
    fn verdict(&self, multi: Option<(&MultiSession, StreamId)>) -> Verdict {
        if let Some(v) = &self.last {
            return v.clone();
        }
        match (&self.session, multi) {
            (Some(s), _) => s.verdict(),
            (None, Some((m, id))) => m
                .with_session(id, |s| s.verdict())
                .unwrap_or_else(|_| Verdict::error()),
            (None, None) => Verdict::error(),
        }
    }

    /// Turns one analysis (frame `index`, captured `at`) into events and
    /// the overlay's state.
    fn record(
        &mut self,
        index: u64,
        at: Instant,
        step: fakewatch_sdk::Result<Step>,
        verdict: Option<StreamVerdict>,
        state: &Mutex<LiveState>,
        events: &Events<'_>,
    ) {
        let (step, (verdict, changes)) = match (step, verdict) {
            (Ok(s), Some(v)) => (s, v),
            (Err(e), _) => {
                self.errors += 1;
                events.emit(
                    "error",
                    json!({"stage": "analysis", "frame": index, "message": e.to_string()}),
                );
                return;
            }
            (Ok(_), None) => {
                self.errors += 1;
                events.emit(
                    "error",
                    json!({"stage": "analysis", "frame": index, "message": "the stream was closed"}),
                );
                return;
            }
        };
        let c = Stamp { index, at };
        let done = Instant::now();
        self.stages.add(&step.timings, done - c.at);
        for &id in &step.started {
            self.tracks_seen += 1;
            let bbox = step
                .faces
                .iter()
                .find(|f| f.track == Some(id))
                .map(|f| f.face.detection.bbox);
            if self
                .books
                .push(TrackBook {
                    id,
                    appeared: c.at,
                    first_frame: c.index,
                    last_frame: c.index,
                })
                .is_err()
            {
                log::warn!("more than {MAX_TRACKS} tracks; track {id} is not followed");
            }
            events.emit(
                "track_appeared",
                json!({"track": id, "frame": c.index, "box": bbox.map(|b| [b.x1, b.y1, b.x2, b.y2])}),
            );
        }
        for f in &step.faces {
            if let Some(b) = self.books.iter_mut().find(|b| Some(b.id) == f.track) {
                b.last_frame = c.index;
            }
        }
        // Labels: held under the bundle's hysteresis by the SDK's verdict
        // stream; this only reports the changes.
        let tv = |id: u32| -> Option<&TrackVerdict> { verdict.tracks.iter().find(|t| t.id == id) };
        for &id in &step.ended {
            let t = tv(id);
            let book = self.books.iter().position(|b| b.id == id);
            let (first, last) = book.map_or((c.index, c.index), |i| {
                (self.books[i].first_frame, self.books[i].last_frame)
            });
            events.emit(
                "track_lost",
                json!({"track": id, "frame": c.index, "first_frame": first, "last_frame": last,
                       "frames": t.map(|t| t.frames), "score": t.map(|t| t.score)}),
            );
            if let Some(i) = book {
                self.books.swap_remove(i);
            }
        }
        for ch in &changes {
            match ch.scope {
                Scope::Track(id) => {
                    let Some(book) = self.books.iter_mut().find(|b| b.id == id) else {
                        continue;
                    };
                    if ch.previous.is_none() {
                        let ms = (done - book.appeared).as_secs_f64() * 1000.0;
                        self.latencies.push(ms);
                        self.first_latency.get_or_insert(ms);
                        self.first_verdict_at.get_or_insert(done);
                    }
                    events.emit(
                        "verdict_changed",
                        json!({"scope": "track", "track": id, "label": ch.label.as_str(),
                               "previous": ch.previous.map(Label::as_str), "score": ch.score,
                               "frames": tv(id).map(|t| t.frames), "first_frame": book.first_frame,
                               "last_frame": book.last_frame}),
                    );
                }
                Scope::Stream => events.emit(
                    "verdict_changed",
                    json!({"scope": "stream", "label": ch.label.as_str(),
                           "previous": ch.previous.map(Label::as_str), "score": ch.score,
                           "unknown": ch.unknown.map(Unknown::as_str),
                           "frame": c.index,
                           "tracks": verdict.tracks.iter().filter(|t| t.label != Label::Unknown).count()}),
                ),
            }
        }
        // Hand the result to the overlay.
        let Ok(mut s) = state.lock() else { return };
        let old = std::mem::take(&mut s.tracks);
        for f in &step.faces {
            let Some(id) = f.track else { continue };
            let bbox = f.face.detection.bbox;
            let t = tv(id);
            let velocity = old
                .iter()
                .find(|o| o.id == id)
                .map(|o| {
                    let dt = c.at.saturating_duration_since(o.seen).as_secs_f32();
                    if dt <= 0.0 {
                        [0.0; 4]
                    } else {
                        [
                            (bbox.x1 - o.bbox.x1) / dt,
                            (bbox.y1 - o.bbox.y1) / dt,
                            (bbox.x2 - o.bbox.x2) / dt,
                            (bbox.y2 - o.bbox.y2) / dt,
                        ]
                    }
                })
                .unwrap_or([0.0; 4]);
            let _ = s.tracks.push(TrackView {
                id,
                bbox,
                velocity,
                seen: c.at,
                label: t.map_or(Label::Unknown, |t| t.label),
                score: t.map(|t| t.score),
                frame_score: t.and_then(|t| t.frame_score),
                sequence_score: t.and_then(|t| t.sequence_score),
                frames: t.map_or(0, |t| t.frames),
            });
        }
        s.label = Some(verdict.label);
        s.score = verdict.score;
        s.unknown = verdict.unknown;
        s.analyzed += 1;
        s.last_latency = done - c.at;
        drop(s);
        self.last = Some(verdict);
    }
}

/// Frame number and capture time of an analysed frame.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    index: u64,
    at: Instant,
}

/// The newest frame waiting for analysis (older ones are replaced).
#[derive(Default)]
struct Slot {
    frame: Mutex<(Option<Captured>, bool)>,
    cond: Condvar,
}

impl Slot {
    /// Offers a frame; returns the one waiting that it replaced (skipped,
    /// never analysed).
    fn offer(&self, c: Captured) -> Option<Captured> {
        let Ok(mut g) = self.frame.lock() else {
            return None;
        };
        let skipped = g.0.replace(c);
        drop(g);
        self.cond.notify_one();
        skipped
    }
    fn take(&self) -> Option<Captured> {
        let mut g = self.frame.lock().ok()?;
        loop {
            if let Some(c) = g.0.take() {
                return Some(c);
            }
            if g.1 {
                return None;
            }
            g = self.cond.wait(g).ok()?;
        }
    }
    fn close(&self) {
        if let Ok(mut g) = self.frame.lock() {
            g.1 = true;
        }
        self.cond.notify_all();
    }
}

/// Frames per second over a sliding second.
#[derive(Debug, Default)]
struct Rate {
    times: std::collections::VecDeque<Instant>,
}

impl Rate {
    fn tick(&mut self, now: Instant) {
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.times.pop_front();
        }
    }
    fn fps(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) if self.times.len() > 1 && b > a => {
                (self.times.len() - 1) as f64 / b.duration_since(*a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

/// Shared analysis workers of a multi-stream run: each takes the pending
/// frame of the stream that has waited longest ([`MultiSession::analyze_next`])
/// and uses every analysis thread for it, so one is enough on small devices.
const ANALYSIS_WORKERS: usize = 1;
/// Longest a shared worker sleeps before looking for work again.
const WORKER_POLL: Duration = Duration::from_millis(50);
/// First and longest wait before reopening a stream's source that could not
/// be opened (multi-stream runs; reconnecting sources only).
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// One stream of a run: its name, source and sinks.
#[derive(Debug, Clone)]
struct StreamPlan {
    /// `None` in a single-stream run (events carry no stream name).
    name: Option<String>,
    source: String,
    spec: SourceSpec,
    /// The sinks as given (for the start event).
    sink_args: Vec<String>,
    sinks: Vec<SinkSpec>,
    /// Analyse every k-th frame (`None`: the run's --detect-every).
    detect_every: Option<u32>,
}

/// Splits `NAME=VALUE` where NAME is a stream name (letters, digits, `-`,
/// `_`, `.`); anything else (a URI, a path, a pipeline) has no name.
fn split_name(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((n, v))
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            (Some(n), v)
        }
        _ => (None, arg),
    }
}

/// The streams of a run from its sources and sinks: one source keeps
/// today's single-stream run (every sink its own); several become named
/// streams, each with the sinks named for it and those with `{stream}`.
fn plan_streams(a: &RunArgs) -> Result<(Vec<StreamPlan>, Option<std::net::SocketAddr>)> {
    if a.source.is_empty() {
        bail!("no source: pass --source URI (or `source` in --config)");
    }
    let size = a.size.as_deref().map(str::parse).transpose()?;
    let format = a.format.as_deref().map(str::parse).transpose()?;
    if a.source.len() == 1 {
        if !a.stream_detect_every.is_empty() {
            bail!("--stream-detect-every is for runs of several streams; use --detect-every");
        }
        let source = a.source[0].clone();
        let sinks: Vec<SinkSpec> = a.sink.iter().map(|s| s.parse()).collect::<Result<_>>()?;
        let mjpeg = sinks.iter().find_map(|s| match s {
            SinkSpec::Mjpeg(a) => Some(*a),
            _ => None,
        });
        return Ok((
            vec![StreamPlan {
                name: None,
                spec: SourceSpec::parse(&source, size, format)?,
                source,
                sink_args: a.sink.clone(),
                sinks,
                detect_every: None,
            }],
            mjpeg,
        ));
    }
    let max = a.max_streams.unwrap_or(defaults::MAX_STREAMS);
    if a.source.len() > max {
        bail!(
            "{} sources but --max-streams is {max}: raise it, or run another fakewatch",
            a.source.len()
        );
    }
    let mut plans: Vec<StreamPlan> = Vec::new();
    let mut mjpeg = None;
    for (i, arg) in a.source.iter().enumerate() {
        let (name, source) = split_name(arg);
        let name = name.map_or_else(|| format!("stream{i}"), str::to_string);
        if plans.iter().any(|p| p.name.as_deref() == Some(&name)) {
            bail!("two sources are named {name:?}");
        }
        plans.push(StreamPlan {
            spec: SourceSpec::parse(source, size, format)
                .with_context(|| format!("stream {name}"))?,
            name: Some(name),
            source: source.to_string(),
            sink_args: Vec::new(),
            sinks: Vec::new(),
            detect_every: None,
        });
    }
    for arg in &a.stream_detect_every {
        let (Some(n), k) = split_name(arg) else {
            bail!("--stream-detect-every {arg}: expected NAME=K");
        };
        let k: u32 =
            k.parse().ok().filter(|&k| k >= 1).with_context(|| {
                format!("--stream-detect-every {arg}: K must be an integer >= 1")
            })?;
        let p = plans
            .iter_mut()
            .find(|p| p.name.as_deref() == Some(n))
            .with_context(|| format!("--stream-detect-every {arg}: no stream is named {n:?}"))?;
        p.detect_every = Some(k);
    }
    for arg in &a.sink {
        let (name, sink) = split_name(arg);
        if name.is_none() && !sink.contains("{stream}") {
            if let Ok(SinkSpec::Mjpeg(addr)) = sink.parse::<SinkSpec>() {
                // The run's one server (every stream's page and preview).
                mjpeg = Some(addr);
                continue;
            }
        }
        let targets: Vec<usize> = match name {
            Some(n) => vec![plans
                .iter()
                .position(|p| p.name.as_deref() == Some(n))
                .with_context(|| format!("--sink {arg}: no stream is named {n:?}"))?],
            None if sink.contains("{stream}") => (0..plans.len()).collect(),
            None => bail!(
                "--sink {arg}: with several streams, name the stream (NAME={arg}) or put \
                 {{stream}} in it"
            ),
        };
        for i in targets {
            let p = &mut plans[i];
            let own = sink.replace("{stream}", p.name.as_deref().unwrap_or_default());
            let spec: SinkSpec = own.parse()?;
            if matches!(spec, SinkSpec::Mjpeg(_)) {
                bail!(
                    "--sink {arg}: one server shows every stream: give mjpeg:HOST:PORT \
                     without a stream name (or --http)"
                );
            }
            p.sinks.push(spec);
            p.sink_args.push(own);
        }
    }
    Ok((plans, mjpeg))
}

/// Settings and services every stream of a run shares.
struct Common<'a> {
    detect_every: u32,
    pace: bool,
    repeat: bool,
    fps: f64,
    max_frames: Option<u64>,
    queue_capacity: usize,
    stats_interval: f64,
    mjpeg_period: Duration,
    calibrated: bool,
    bundle_name: &'a str,
    threshold: f32,
    hub: &'a EventHub,
    http: Option<&'a HttpServer>,
    stop: &'a AtomicBool,
}

/// What one stream owns while it runs.
struct StreamRes {
    queue: FrameQueue,
    cstats: CaptureStats,
    pool: BufferPool,
    capture_cfg: CaptureConfig,
    state: Mutex<LiveState>,
    slot: Slot,
    /// Unpaced file: every k-th frame analysed in order, in the main loop.
    sync: bool,
}

impl StreamRes {
    fn new(plan: &StreamPlan, c: &Common<'_>) -> Self {
        let sync = !c.pace && plan.spec.is_file();
        // Frames in flight: the queue, the analysis slot and the frame being
        // analysed, the frame being overlaid, and the one being decoded.
        let pool = BufferPool::new(c.queue_capacity + 4);
        Self {
            queue: FrameQueue::new(c.queue_capacity, sync),
            cstats: CaptureStats::default(),
            capture_cfg: CaptureConfig {
                spec: plan.spec.clone(),
                pace: c.pace,
                repeat: c.repeat,
                fps: c.fps,
                max_frames: c.max_frames,
                pool: pool.clone(),
            },
            pool,
            state: Mutex::new(LiveState {
                calibrated: c.calibrated,
                ..LiveState::default()
            }),
            slot: Slot::default(),
            sync,
        }
    }
}

/// Where a stream's frames go for analysis.
enum Handoff<'a> {
    /// The stream's own analyzer: in the main loop for unpaced files, else
    /// on an analysis thread of its own taking the newest frame.
    Own(&'a mut Analyzer),
    /// A stream of a multi-stream run: unpaced files are analysed in the
    /// main loop through the shared detector; live streams offer their
    /// newest frame to the run's shared workers.
    Shared {
        multi: &'a MultiSession,
        id: StreamId,
        analyzer: &'a Mutex<Analyzer>,
        work: &'a WorkSignal,
    },
}

/// Wakes the shared analysis workers when a frame is offered.
#[derive(Default)]
struct WorkSignal {
    offered: Mutex<u64>,
    cond: Condvar,
}

impl WorkSignal {
    fn bump(&self) {
        if let Ok(mut n) = self.offered.lock() {
            *n += 1;
        }
        self.cond.notify_all();
    }
    /// Waits until something is offered after `seen` (or `WORKER_POLL`);
    /// returns the new count.
    fn wait(&self, seen: u64) -> u64 {
        let Ok(g) = self.offered.lock() else {
            return seen;
        };
        match self.cond.wait_timeout_while(g, WORKER_POLL, |n| *n == seen) {
            Ok((g, _)) => *g,
            Err(_) => seen,
        }
    }
}

/// Why a stream's loop ended early.
enum LoopError {
    /// The source could not be opened (nothing was captured).
    Open(anyhow::Error),
    /// Anything else (a sink that cannot open).
    Fatal(anyhow::Error),
}

impl LoopError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            Self::Open(e) | Self::Fatal(e) => e,
        }
    }
}

/// Runs live sources until they end or the process is stopped: one source
/// as a single stream, several as streams sharing one detector.
pub fn run(args: RunArgs, ctx: &AppContext) -> Result<()> {
    let a = args.merged()?;
    let (plans, mjpeg_addr) = plan_streams(&a)?;
    let event_targets: Vec<EventTarget> =
        a.events.iter().map(|s| s.parse()).collect::<Result<_>>()?;
    let detect_every = a.detect_every.unwrap_or(defaults::DETECT_EVERY).max(1);
    let window = a.window.unwrap_or(defaults::WINDOW);
    if window == 0 {
        bail!("--window must be at least 1");
    }

    let bundle_dir = crate::find_bundle(a.bundle.clone())?;
    let bundle = ctx.load_bundle(&bundle_dir)?;
    if bundle.manifest().classifier.is_none() {
        bail!(
            "bundle {} has no classifier: `run` needs a trained bundle (models/default)",
            bundle_dir.display()
        );
    }
    let threads = a
        .threads
        .unwrap_or_else(fakewatch_sdk::parallel::available_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let mut decision = bundle.decision();
    if let Some(t) = a.threshold {
        decision.set_threshold(t).context("--threshold")?;
    }
    decision.window = window;
    decision.min_frames = a.verdict_after.unwrap_or(defaults::VERDICT_AFTER).max(1);
    let detector = DeepfakeDetector::builder(&bundle)
        .threads(threads)
        .decision(decision)
        .build(ctx.backend())?;
    crate::release_free_memory();

    let spool = SpoolConfig {
        dir: a.spool_dir.clone().unwrap_or_else(SpoolConfig::default_dir),
        max_bytes: a
            .spool_max_mb
            .map_or(mqtt::DEFAULT_SPOOL_BYTES, |m| m.max(1) << 20),
    };
    let hub = EventHub::open(&event_targets, &spool)?;

    let http_addr = match (&a.http, mjpeg_addr) {
        (Some(h), Some(m)) if http::parse_addr(h).ok() != Some(m) => {
            bail!("--http {h} and the mjpeg sink {m} must be the same address")
        }
        (Some(h), _) => Some(http::parse_addr(h).with_context(|| format!("--http {h:?}"))?),
        (None, m) => m,
    };
    let token = a
        .http_token
        .clone()
        .or_else(|| std::env::var("FAKEWATCH_HTTP_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let names: Vec<String> = plans.iter().filter_map(|p| p.name.clone()).collect();
    let server = http_addr
        .map(|addr| HttpServer::start_streams(addr, token, &names))
        .transpose()?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    let common = Common {
        detect_every,
        pace: !a.no_pace,
        repeat: a.repeat,
        fps: a.fps.filter(|f| *f > 0.0).unwrap_or(source::DEFAULT_FPS),
        max_frames: a.max_frames,
        queue_capacity: a.queue.unwrap_or(defaults::QUEUE),
        stats_interval: a.stats_interval.unwrap_or(defaults::STATS_INTERVAL),
        mjpeg_period: Duration::from_secs_f64(
            1.0 / a.mjpeg_fps.unwrap_or(defaults::MJPEG_FPS).max(0.1),
        ),
        calibrated: decision.is_calibrated(),
        bundle_name: &bundle.manifest().name,
        threshold: decision.threshold,
        hub: &hub,
        http: server.as_ref(),
        stop: &stop,
    };
    let flush =
        Duration::from_secs_f64(a.flush_timeout.unwrap_or(defaults::FLUSH_TIMEOUT).max(0.0));
    let started = Instant::now();

    if plans.len() > 1 {
        let max = a.max_streams.unwrap_or(defaults::MAX_STREAMS);
        let result = run_streams(&plans, &common, &detector, max, started);
        let left = hub.finish(flush);
        if left > 0 {
            log::warn!("{left} event(s) wait in the MQTT spool for the next run");
        }
        drop(server);
        return result;
    }

    let plan = &plans[0];
    let res = StreamRes::new(plan, &common);
    let mut analyzer = Analyzer::new(Some(detector.live_session()));
    let ev = Events::new(&hub, None);
    let outcome = stream_loop(plan, &res, &common, Handoff::Own(&mut analyzer));
    let out = match outcome {
        Ok(o) => o,
        Err(e) => {
            let e = e.into_inner();
            hub.emit(
                "error",
                json!({"stage": "source", "message": format!("{e:#}")}),
            );
            let mut v = summary(&Outcome::default(), &analyzer, None, &res, started, "error");
            v["mqtt"] = json!(hub.mqtt_counts());
            ev.emit("summary", v);
            hub.finish(flush);
            return Err(e);
        }
    };
    let reason = out.stop_reason;
    hub.emit("stop", json!({"reason": reason}));
    let mut v = summary(&out, &analyzer, None, &res, started, reason);
    v["mqtt"] = json!(hub.mqtt_counts());
    ev.emit("summary", v);
    let left = hub.finish(flush);
    if left > 0 {
        log::warn!("{left} event(s) wait in the MQTT spool for the next run");
    }
    drop(server);
    Ok(())
}

/// A multi-stream run: one [`MultiSession`] over the shared detector, one
/// capture thread and main loop per stream, and shared analysis workers.
/// A stream that fails is reported with its name (and its source reopened
/// where it reconnects); the others go on.
fn run_streams(
    plans: &[StreamPlan],
    common: &Common<'_>,
    detector: &Arc<DeepfakeDetector>,
    max_streams: usize,
    started: Instant,
) -> Result<()> {
    let multi = MultiSession::new(Arc::clone(detector), max_streams)?;
    let mut ids = Vec::with_capacity(plans.len());
    for p in plans {
        ids.push(multi.add_stream(p.name.as_deref().unwrap_or_default())?);
    }
    let analyzers: Vec<Mutex<Analyzer>> = plans
        .iter()
        .map(|_| Mutex::new(Analyzer::new(None)))
        .collect();
    let resources: Vec<StreamRes> = plans.iter().map(|p| StreamRes::new(p, common)).collect();
    let work = WorkSignal::default();
    let active = std::sync::atomic::AtomicUsize::new(plans.len());
    let outcomes: Vec<(Outcome, &'static str)> = std::thread::scope(|scope| {
        let shared = resources.iter().any(|r| !r.sync);
        for _ in 0..if shared { ANALYSIS_WORKERS } else { 0 } {
            let (multi, analyzers, resources, work, active, plans, hub) = (
                &multi, &analyzers, &resources, &work, &active, plans, common.hub,
            );
            scope.spawn(move || {
                let mut seen = 0;
                loop {
                    match multi.analyze_next() {
                        Some(job) => {
                            // Streams were added in order: id k is stream k.
                            let k = job.stream.0 as usize;
                            let (Some(an), Some(res), Some(plan)) =
                                (analyzers.get(k), resources.get(k), plans.get(k))
                            else {
                                continue;
                            };
                            let ev = Events::new(hub, plan.name.as_deref());
                            if let Ok(mut an) = an.lock() {
                                let v =
                                    an.verdict_on(multi, job.stream, &job.result, job.captured_at);
                                an.record(job.seq, job.captured_at, job.result, v, &res.state, &ev);
                            }
                            res.pool.give(job.frame.into_data());
                        }
                        None if active.load(Ordering::SeqCst) == 0 => break,
                        None => seen = work.wait(seen),
                    }
                }
            });
        }
        let handles: Vec<_> = plans
            .iter()
            .zip(&resources)
            .zip(analyzers.iter().zip(&ids))
            .map(|((plan, res), (analyzer, &id))| {
                let (multi, work, active) = (&multi, &work, &active);
                scope.spawn(move || {
                    let ev = Events::new(common.hub, plan.name.as_deref());
                    let mut backoff = REOPEN_BACKOFF.0;
                    let out = loop {
                        let handoff = Handoff::Shared {
                            multi,
                            id,
                            analyzer,
                            work,
                        };
                        // A failed open closed the queue: this is a new try.
                        res.queue.reopen();
                        match stream_loop(plan, res, common, handoff) {
                            Ok(o) => {
                                let why = o.stop_reason;
                                break (o, why);
                            }
                            Err(LoopError::Open(e))
                                if plan.spec.reconnects()
                                    && !common.stop.load(Ordering::SeqCst) =>
                            {
                                ev.emit(
                                    "error",
                                    json!({"stage": "source", "message": format!("{e:#}")}),
                                );
                                res.cstats.lost.fetch_add(1, Ordering::Relaxed);
                                ev.emit(
                                    "source_lost",
                                    json!({"reason": "could not open",
                                        "retry_in_ms": backoff.as_millis() as u64}),
                                );
                                let until = Instant::now() + backoff;
                                while Instant::now() < until && !common.stop.load(Ordering::SeqCst)
                                {
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                backoff = (backoff * 2).min(REOPEN_BACKOFF.1);
                            }
                            Err(e) => {
                                let e = e.into_inner();
                                ev.emit(
                                    "error",
                                    json!({"stage": "source", "message": format!("{e:#}")}),
                                );
                                break (Outcome::default(), "error");
                            }
                        }
                    };
                    // What waits for a worker of this stream will not be needed.
                    if let Ok(Some(f)) = multi.take_pending(id) {
                        res.pool.give(f.into_data());
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                    work.bump();
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((Outcome::default(), "error")))
            .collect()
    });
    let reason = if common.stop.load(Ordering::SeqCst) {
        "signal"
    } else {
        "end"
    };
    common.hub.emit("stop", json!({"reason": reason}));
    let mut streams = serde_json::Map::new();
    for (i, plan) in plans.iter().enumerate() {
        let (out, why) = &outcomes[i];
        let Ok(an) = analyzers[i].lock() else {
            continue;
        };
        let v = summary(
            out,
            &an,
            Some((&multi, ids[i])),
            &resources[i],
            started,
            why,
        );
        streams.insert(plan.name.clone().unwrap_or_default(), v);
    }
    common.hub.emit(
        "summary",
        json!({"streams": streams, "duration_s": started.elapsed().as_secs_f64(),
               "peak_rss_mib": crate::bench::peak_rss_mib(), "reason": reason,
               "mqtt": common.hub.mqtt_counts()}),
    );
    Ok(())
}

/// One stream from capture to overlay and sinks, until its source ends or
/// the run stops.
fn stream_loop(
    plan: &StreamPlan,
    res: &StreamRes,
    c: &Common<'_>,
    handoff: Handoff<'_>,
) -> Result<Outcome, LoopError> {
    let ev = Events::new(c.hub, plan.name.as_deref());
    let detect_every = plan.detect_every.unwrap_or(c.detect_every);
    let http_state = c
        .http
        .and_then(|s| s.view(plan.name.as_deref().unwrap_or_default()));
    let (queue, cstats, pool, state, slot) =
        (&res.queue, &res.cstats, &res.pool, &res.state, &res.slot);
    let source = &plan.source;
    std::thread::scope(|scope| -> Result<Outcome, LoopError> {
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let (c_cfg, c_ev, c_stop) = (&res.capture_cfg, &ev, c.stop);
        let cap = scope.spawn(move || {
            source::capture(c_cfg, queue, c_ev, cstats, c_stop, |r| {
                let _ = open_tx.send(r);
            })
        });
        match open_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = cap.join();
                return Err(LoopError::Open(
                    e.context(format!("opening source {source:?}")),
                ));
            }
            Err(_) => {
                return Err(LoopError::Open(anyhow::anyhow!(
                    "capture thread ended before opening the source"
                )))
            }
        }
        ev.emit(
            "start",
            json!({"source": source, "bundle": c.bundle_name, "threshold": c.threshold,
                   "detect_every": detect_every, "pace": c.pace, "sinks": plan.sink_args,
                   "http": c.http.map(|s| format!("http://{}/", s.addr())),
                   "http_token": c.http.map(|s| !s.is_open()), "version": env!("CARGO_PKG_VERSION")}),
        );
        let (mut own, worker) = match handoff {
            Handoff::Own(an) if !res.sync => {
                let handle = scope.spawn(move || {
                    while let Some(cap) = slot.take() {
                        an.analyze(&cap, state, &ev);
                        pool.give(cap.frame.into_data());
                    }
                });
                (Dispatch::Thread, Some(handle))
            }
            Handoff::Own(an) => (Dispatch::Inline(an), None),
            Handoff::Shared {
                multi,
                id,
                analyzer,
                ..
            } if res.sync => (
                Dispatch::SharedInline {
                    multi,
                    id,
                    analyzer,
                },
                None,
            ),
            Handoff::Shared {
                multi, id, work, ..
            } => (Dispatch::Shared { multi, id, work }, None),
        };
        let mut out = Outcome::default();
        let mut sinks: Option<Vec<Box<dyn Sink>>> = None;
        let mut in_rate = Rate::default();
        let mut out_rate = Rate::default();
        let mut last_stats = Instant::now();
        let mut last_status: Option<Instant> = None;
        let mut last_jpeg: Option<Instant> = None;
        let mut first_frame: Option<Instant> = None;
        let mut last_in = 0u64;
        let mut stop_reason = "end";
        loop {
            if c.stop.load(Ordering::SeqCst) {
                stop_reason = "signal";
                break;
            }
            let cap = match queue.pop(Duration::from_millis(100)) {
                Err(source::QueueClosed) => {
                    // A signal also stops the capture thread, which closes the
                    // queue: that may be seen here before the check above.
                    if c.stop.load(Ordering::SeqCst) {
                        stop_reason = "signal";
                    }
                    break;
                }
                Ok(None) => {
                    if let Some(h) = &http_state {
                        h.set_status(status(
                            source, state, &out, queue, cstats, &in_rate, &out_rate, c.hub, true,
                        ));
                    }
                    continue;
                }
                Ok(Some(cap)) => cap,
            };
            let now = Instant::now();
            let fin = cstats.frames_in.load(Ordering::Relaxed);
            for _ in last_in..fin {
                in_rate.tick(now);
            }
            last_in = fin;
            let t0 = *first_frame.get_or_insert(now);
            // Sinks open at the first frame, when the source's rate is known.
            let sinks = match &mut sinks {
                Some(s) => s,
                None => {
                    let fps = cstats.source_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0;
                    let fps = if fps > 0.0 { fps } else { 25.0 };
                    let opened = plan
                        .sinks
                        .iter()
                        .filter(|s| !matches!(s, SinkSpec::Mjpeg(_)))
                        .map(|s| sinks::open(s, fps))
                        .collect::<Result<Vec<_>>>();
                    match opened {
                        Ok(v) => sinks.insert(v),
                        Err(e) => {
                            // Stop this stream's threads, or the scope never ends.
                            queue.close();
                            slot.close();
                            return Err(LoopError::Fatal(e));
                        }
                    }
                }
            };
            if out.frames_processed % u64::from(detect_every) == 0 {
                match &mut own {
                    Dispatch::Inline(an) => an.analyze(&cap, state, &ev),
                    Dispatch::SharedInline {
                        multi,
                        id,
                        analyzer,
                    } => {
                        if let Ok(mut an) = analyzer.lock() {
                            an.analyze_on(multi, *id, &cap, state, &ev);
                        }
                    }
                    Dispatch::Thread => {
                        let copy = Captured {
                            frame: cap.frame.clone_in(pool),
                            index: cap.index,
                            at: cap.at,
                        };
                        if let Some(old) = slot.offer(copy) {
                            pool.give(old.frame.into_data());
                            out.analysis_skipped += 1;
                        }
                    }
                    Dispatch::Shared { multi, id, work } => {
                        match multi.offer(*id, cap.frame.clone_in(pool), cap.index, cap.at) {
                            Ok(Some(old)) => {
                                pool.give(old.into_data());
                                out.analysis_skipped += 1;
                            }
                            Ok(None) => {}
                            Err(e) => log::warn!("offer: {e}"),
                        }
                        work.bump();
                    }
                }
            }
            let mut frame = cap.frame;
            let t_draw = Instant::now();
            let (marks, banner) = overlay_input(state, cap.at, &in_rate, &out_rate);
            draw_live(&mut frame, &marks, &banner);
            out.overlay_ms += t_draw.elapsed().as_secs_f64() * 1000.0;
            // Unpaced: frame n at n / fps (monotonic across --loop); live:
            // the capture clock.
            let pts = if res.sync {
                let fps = cstats.source_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0;
                Duration::from_secs_f64(out.frames_processed as f64 / fps.max(1.0))
            } else {
                cap.at.saturating_duration_since(t0)
            };
            let t_sink = Instant::now();
            for s in sinks.iter_mut() {
                if let Err(e) = s.write(&frame, pts) {
                    out.sink_errors += 1;
                    if out.sink_errors == 1 {
                        ev.emit(
                            "error",
                            json!({"stage": "sink", "message": format!("{e:#}")}),
                        );
                    }
                }
            }
            if let Some(h) = &http_state {
                if h.wants_jpeg() && last_jpeg.is_none_or(|t| t.elapsed() >= c.mjpeg_period) {
                    last_jpeg = Some(Instant::now());
                    match frame.to_jpeg(80) {
                        Ok(j) => h.set_jpeg(j),
                        Err(e) => log::warn!("preview: {e}"),
                    }
                }
            }
            out.sink_ms += t_sink.elapsed().as_secs_f64() * 1000.0;
            pool.give(frame.into_data());
            out.frames_processed += 1;
            out_rate.tick(Instant::now());
            out.last_frame = Some(Instant::now());
            if let Some(h) = &http_state {
                if last_status.is_none_or(|t| t.elapsed() >= STATUS_PERIOD) {
                    last_status = Some(Instant::now());
                    h.set_status(status(
                        source, state, &out, queue, cstats, &in_rate, &out_rate, c.hub, false,
                    ));
                }
            }
            if c.stats_interval > 0.0 && last_stats.elapsed().as_secs_f64() >= c.stats_interval {
                last_stats = Instant::now();
                let s = status(
                    source, state, &out, queue, cstats, &in_rate, &out_rate, c.hub, false,
                );
                ev.emit(
                    "stats",
                    json!({"frames_in": s.frames_in, "frames_processed": s.frames_processed,
                           "frames_analyzed": s.frames_analyzed, "dropped": s.dropped,
                           "input_fps": s.input_fps, "processed_fps": s.processed_fps,
                           "analysis_latency_ms": s.analysis_latency_ms, "tracks": s.tracks.len(),
                           "label": s.label, "score": s.score,
                           "rss_mib": crate::bench::rss_mib()}),
                );
            }
        }
        out.first_frame = first_frame;
        out.stop_reason = stop_reason;
        queue.close();
        slot.close();
        if let Some(w) = worker {
            let _ = w.join();
        }
        let _ = cap.join();
        for s in sinks.iter_mut().flatten() {
            if let Err(e) = s.finish() {
                out.sink_errors += 1;
                ev.emit(
                    "error",
                    json!({"stage": "sink", "message": format!("{e:#}")}),
                );
            }
        }
        Ok(out)
    })
}

/// How the main loop hands a frame to analysis (see [`Handoff`]).
enum Dispatch<'a> {
    Inline(&'a mut Analyzer),
    Thread,
    SharedInline {
        multi: &'a MultiSession,
        id: StreamId,
        analyzer: &'a Mutex<Analyzer>,
    },
    Shared {
        multi: &'a MultiSession,
        id: StreamId,
        work: &'a WorkSignal,
    },
}

/// What the main loop measured.
#[derive(Debug, Default)]
struct Outcome {
    frames_processed: u64,
    analysis_skipped: u64,
    overlay_ms: f64,
    sink_ms: f64,
    sink_errors: u64,
    first_frame: Option<Instant>,
    last_frame: Option<Instant>,
    stop_reason: &'static str,
}

fn overlay_input(
    state: &Mutex<LiveState>,
    at: Instant,
    in_rate: &Rate,
    out_rate: &Rate,
) -> (heapless::Vec<FaceMark, MAX_TRACKS>, Banner) {
    let mut marks = heapless::Vec::new();
    let Ok(s) = state.lock() else {
        return (
            marks,
            Banner {
                label: Label::Unknown,
                score: None,
                unknown: None,
                calibrated: false,
                figures: String::new(),
                pending: false,
            },
        );
    };
    for t in &s.tracks {
        let dt = at
            .saturating_duration_since(t.seen)
            .as_secs_f32()
            .min(MAX_EXTRAPOLATION);
        let v = t.velocity;
        let bbox = BBox {
            x1: t.bbox.x1 + v[0] * dt,
            y1: t.bbox.y1 + v[1] * dt,
            x2: t.bbox.x2 + v[2] * dt,
            y2: t.bbox.y2 + v[3] * dt,
        };
        let _ = marks.push(FaceMark {
            bbox,
            track: Some(t.id),
            label: t.label,
            score: t.score,
        });
    }
    let banner = Banner {
        label: s.label.unwrap_or(Label::Unknown),
        score: s.score,
        unknown: s.unknown,
        calibrated: s.calibrated,
        figures: format!(
            "in {:.1} fps  out {:.1} fps  analysis {:.0} ms  tracks {}",
            in_rate.fps(),
            out_rate.fps(),
            s.last_latency.as_secs_f64() * 1000.0,
            s.tracks.len()
        ),
        pending: s.analyzed == 0,
    };
    (marks, banner)
}

#[allow(clippy::too_many_arguments)]
fn status(
    source: &str,
    state: &Mutex<LiveState>,
    out: &Outcome,
    queue: &FrameQueue,
    cstats: &CaptureStats,
    in_rate: &Rate,
    out_rate: &Rate,
    hub: &EventHub,
    idle: bool,
) -> Status {
    let (tracks, label, unknown, score, analyzed, latency) = match state.lock() {
        Ok(s) => (
            s.tracks
                .iter()
                .map(|t| TrackStatus {
                    id: t.id,
                    label: t.label.as_str(),
                    score: t.score,
                    frame_score: t.frame_score,
                    sequence_score: t.sequence_score,
                    frames: t.frames,
                })
                .collect(),
            s.label.unwrap_or(Label::Unknown).as_str(),
            s.unknown.map(Unknown::as_str),
            s.score,
            s.analyzed,
            s.last_latency,
        ),
        Err(_) => (Vec::new(), "unknown", None, None, 0, Duration::ZERO),
    };
    let stale = out
        .last_frame
        .is_none_or(|t| t.elapsed() > Duration::from_secs(2));
    Status {
        source: source.into(),
        label,
        unknown,
        score,
        tracks,
        frames_in: cstats.frames_in.load(Ordering::Relaxed),
        frames_processed: out.frames_processed,
        frames_analyzed: analyzed,
        dropped: queue.dropped.load(Ordering::Relaxed),
        input_fps: if idle && stale { 0.0 } else { in_rate.fps() },
        processed_fps: if idle && stale { 0.0 } else { out_rate.fps() },
        analysis_latency_ms: latency.as_secs_f64() * 1000.0,
        events: hub.count(),
        source_lost: idle && stale && cstats.lost.load(Ordering::Relaxed) > 0,
    }
}

/// The summary of one stream (the `summary` event of a single-stream run,
/// one entry of `streams` in a multi-stream run's).
fn summary(
    out: &Outcome,
    an: &Analyzer,
    multi: Option<(&MultiSession, StreamId)>,
    res: &StreamRes,
    started: Instant,
    reason: &str,
) -> serde_json::Value {
    let (queue, cstats) = (&res.queue, &res.cstats);
    let secs = match (out.first_frame, out.last_frame) {
        (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let frames_in = cstats.frames_in.load(Ordering::Relaxed);
    let n = out.frames_processed.max(1) as f64;
    let fps = |frames: u64| {
        if secs > 0.0 && frames > 1 {
            (frames - 1) as f64 / secs
        } else {
            0.0
        }
    };
    let verdict = an.verdict(multi);
    let s = &an.stages;
    json!({
        "frames_in": frames_in,
        "frames_processed": out.frames_processed,
        "frames_analyzed": s.n,
        "dropped": queue.dropped.load(Ordering::Relaxed),
        "analysis_skipped": out.analysis_skipped,
        "processed_fps": fps(out.frames_processed),
        "input_fps": fps(frames_in),
        "analyzed_fps": if secs > 0.0 { s.n as f64 / secs } else { 0.0 },
        "first_verdict_latency_ms": an.first_latency,
        // From the stream's first frame: includes waiting for a worker.
        "first_verdict_after_start_ms": match (out.first_frame, an.first_verdict_at) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64() * 1000.0),
            _ => None,
        },
        "first_verdict_latency_ms_median": median(&an.latencies),
        "tracks_seen": an.tracks_seen,
        "label": verdict.label.as_str(),
        "score": verdict.score,
        "stage_ms": {
            "pyramid": s.pyramid, "pnet": s.pnet, "rnet": s.rnet, "onet": s.onet,
            "embed": s.embed, "score": s.score,
            "analysis_capture_to_result": s.analysis,
            "overlay": out.overlay_ms / n, "sinks": out.sink_ms / n,
        },
        "errors": an.errors + out.sink_errors,
        "source_lost": cstats.lost.load(Ordering::Relaxed),
        "duration_s": started.elapsed().as_secs_f64(),
        "peak_rss_mib": crate::bench::peak_rss_mib(),
        "reason": reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sources: &[&str], sinks: &[&str]) -> RunArgs {
        RunArgs {
            source: sources.iter().map(|s| s.to_string()).collect(),
            sink: sinks.iter().map(|s| s.to_string()).collect(),
            ..RunArgs::default()
        }
    }

    #[test]
    fn stream_names_sinks_and_the_shared_server_are_planned() {
        assert_eq!(split_name("cam1=rtsp://h/x"), (Some("cam1"), "rtsp://h/x"));
        // A pipeline or URI with '=' in it has no name.
        assert_eq!(
            split_name("gst:videotestsrc ! video/x-raw,width=640"),
            (None, "gst:videotestsrc ! video/x-raw,width=640")
        );
        assert_eq!(split_name("file:///a=b.mp4"), (None, "file:///a=b.mp4"));
        let (plans, server) = plan_streams(&args(
            &["cam1=rtsp://h/1", "rtsp://h/2"],
            &[
                "file:/tmp/{stream}.mp4",
                "cam1=png-dir:/tmp/p",
                "mjpeg:127.0.0.1:8080",
            ],
        ))
        .unwrap();
        assert_eq!(server, Some("127.0.0.1:8080".parse().unwrap()));
        let names: Vec<_> = plans.iter().map(|p| p.name.clone().unwrap()).collect();
        assert_eq!(names, ["cam1", "stream1"]);
        assert_eq!(plans[0].sink_args, ["file:/tmp/cam1.mp4", "png-dir:/tmp/p"]);
        assert_eq!(plans[1].sink_args, ["file:/tmp/stream1.mp4"]);
        // One source: today's run, sinks as given, no name.
        let (one, server) = plan_streams(&args(&["rtsp://h/1"], &["mjpeg:8080"])).unwrap();
        assert_eq!((one.len(), one[0].name.clone()), (1, None));
        assert_eq!(server, Some("127.0.0.1:8080".parse().unwrap()));
        let shipped = config::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/streams.toml"
        )))
        .unwrap();
        let (plans, _) = plan_streams(&shipped).unwrap();
        assert_eq!(plans.len(), 4);
        assert_eq!(plans[1].detect_every, Some(6));
        assert!(plan_streams(&args(&[], &[])).is_err());
    }
}
