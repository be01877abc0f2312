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
use fakewatch_sdk::detector::Session;
use fakewatch_sdk::frame::BufferPool;
use fakewatch_sdk::verdict::{Scope, TrackVerdict, Unknown, Verdict};
use fakewatch_sdk::{BBox, DeepfakeDetector, Label};
use serde_json::json;

use config::defaults;
pub use config::RunArgs;
use events::{EventHub, EventTarget, SpoolConfig};
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
    session: Session,
    /// Stream time zero (hysteresis dwell is measured from it).
    origin: Instant,
    /// The last verdict, labels as held.
    last: Option<Verdict>,
    books: heapless::Vec<TrackBook, MAX_TRACKS>,
    latencies: Vec<f64>,
    first_latency: Option<f64>,
    tracks_seen: u64,
    stages: StageMeans,
    errors: u64,
}

impl Analyzer {
    fn analyze(&mut self, c: &Captured, state: &Mutex<LiveState>, events: &EventHub) {
        let step = match self.session.step(&c.frame) {
            Ok(s) => s,
            Err(e) => {
                self.errors += 1;
                events.emit(
                    "error",
                    json!({"stage": "analysis", "frame": c.index, "message": e.to_string()}),
                );
                return;
            }
        };
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
        let (verdict, changes) = self.session.stream_verdict(c.at - self.origin);
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

/// Runs a live source until it ends or the process is stopped.
pub fn run(args: RunArgs, ctx: &AppContext) -> Result<()> {
    let a = args.merged()?;
    let source = a
        .source
        .clone()
        .context("no source: pass --source URI (or `source` in --config)")?;
    let size = a.size.as_deref().map(str::parse).transpose()?;
    let format = a.format.as_deref().map(str::parse).transpose()?;
    let spec = SourceSpec::parse(&source, size, format)?;
    let sink_specs: Vec<SinkSpec> = a.sink.iter().map(|s| s.parse()).collect::<Result<_>>()?;
    let event_targets: Vec<EventTarget> =
        a.events.iter().map(|s| s.parse()).collect::<Result<_>>()?;
    let detect_every = a.detect_every.unwrap_or(defaults::DETECT_EVERY).max(1);
    let window = a.window.unwrap_or(defaults::WINDOW);
    if window == 0 {
        bail!("--window must be at least 1");
    }
    let pace = !a.no_pace;

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

    let mjpeg_addr = sink_specs.iter().find_map(|s| match s {
        SinkSpec::Mjpeg(a) => Some(*a),
        _ => None,
    });
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
    let server = http_addr
        .map(|addr| HttpServer::start(addr, token))
        .transpose()?;
    let http_state = server.as_ref().map(|s| s.state().clone());

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }

    let block = !pace && spec.is_file();
    let queue_capacity = a.queue.unwrap_or(defaults::QUEUE);
    let queue = FrameQueue::new(queue_capacity, block);
    let cstats = CaptureStats::default();
    // Frames in flight: the queue, the analysis slot and the frame being
    // analysed, the frame being overlaid, and the one being decoded.
    let pool = BufferPool::new(queue_capacity + 4);
    let capture_cfg = CaptureConfig {
        spec: spec.clone(),
        pace,
        repeat: a.repeat,
        fps: a.fps.filter(|f| *f > 0.0).unwrap_or(source::DEFAULT_FPS),
        max_frames: a.max_frames,
        pool: pool.clone(),
    };
    let state = Mutex::new(LiveState {
        calibrated: decision.is_calibrated(),
        ..LiveState::default()
    });
    let slot = Slot::default();
    let sync_analysis = block;
    let stats_interval = a.stats_interval.unwrap_or(defaults::STATS_INTERVAL);
    let mjpeg_period =
        Duration::from_secs_f64(1.0 / a.mjpeg_fps.unwrap_or(defaults::MJPEG_FPS).max(0.1));

    let mut analyzer = Analyzer {
        session: detector.live_session(),
        origin: Instant::now(),
        last: None,
        books: heapless::Vec::new(),
        latencies: Vec::new(),
        first_latency: None,
        tracks_seen: 0,
        stages: StageMeans::default(),
        errors: 0,
    };

    let started = Instant::now();
    let outcome = std::thread::scope(|scope| -> Result<Outcome> {
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let (c_cfg, c_queue, c_hub, c_stats, c_stop) = (&capture_cfg, &queue, &hub, &cstats, &stop);
        let cap = scope.spawn(move || {
            source::capture(c_cfg, c_queue, c_hub, c_stats, c_stop, |r| {
                let _ = open_tx.send(r);
            })
        });
        match open_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = cap.join();
                return Err(e.context(format!("opening source {source:?}")));
            }
            Err(_) => bail!("capture thread ended before opening the source"),
        }
        hub.emit(
            "start",
            json!({"source": source, "bundle": bundle.manifest().name, "threshold": decision.threshold,
                   "detect_every": detect_every, "pace": pace, "sinks": a.sink,
                   "http": server.as_ref().map(|s| format!("http://{}/", s.addr())),
                   "http_token": server.as_ref().map(|s| !s.is_open()), "version": env!("CARGO_PKG_VERSION")}),
        );
        let (mut sync_analyzer, worker) = if sync_analysis {
            (Some(&mut analyzer), None)
        } else {
            let (an, slot, state, hub, pool) = (&mut analyzer, &slot, &state, &hub, &pool);
            let handle = scope.spawn(move || {
                while let Some(c) = slot.take() {
                    an.analyze(&c, state, hub);
                    pool.give(c.frame.into_data());
                }
            });
            (None, Some(handle))
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
            if stop.load(Ordering::SeqCst) {
                stop_reason = "signal";
                break;
            }
            let c = match queue.pop(Duration::from_millis(100)) {
                Err(source::QueueClosed) => {
                    // A signal also stops the capture thread, which closes the
                    // queue: that may be seen here before the check above.
                    if stop.load(Ordering::SeqCst) {
                        stop_reason = "signal";
                    }
                    break;
                }
                Ok(None) => {
                    if let Some(h) = &http_state {
                        h.set_status(status(
                            &source, &state, &out, &queue, &cstats, &in_rate, &out_rate, &hub, true,
                        ));
                    }
                    continue;
                }
                Ok(Some(c)) => c,
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
                    let opened = sink_specs
                        .iter()
                        .filter(|s| !matches!(s, SinkSpec::Mjpeg(_)))
                        .map(|s| sinks::open(s, fps))
                        .collect::<Result<Vec<_>>>();
                    match opened {
                        Ok(v) => sinks.insert(v),
                        Err(e) => {
                            // Stop the other threads, or the scope never ends.
                            stop.store(true, Ordering::SeqCst);
                            queue.close();
                            slot.close();
                            return Err(e);
                        }
                    }
                }
            };
            if out.frames_processed % u64::from(detect_every) == 0 {
                match sync_analyzer.as_mut() {
                    Some(an) => an.analyze(&c, &state, &hub),
                    None => {
                        let copy = Captured {
                            frame: c.frame.clone_in(&pool),
                            index: c.index,
                            at: c.at,
                        };
                        if let Some(old) = slot.offer(copy) {
                            pool.give(old.frame.into_data());
                            out.analysis_skipped += 1;
                        }
                    }
                }
            }
            let mut frame = c.frame;
            let t_draw = Instant::now();
            let (marks, banner) = overlay_input(&state, c.at, &in_rate, &out_rate);
            draw_live(&mut frame, &marks, &banner);
            out.overlay_ms += t_draw.elapsed().as_secs_f64() * 1000.0;
            // Unpaced: frame n at n / fps (monotonic across --loop); live:
            // the capture clock.
            let pts = if sync_analysis {
                let fps = cstats.source_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0;
                Duration::from_secs_f64(out.frames_processed as f64 / fps.max(1.0))
            } else {
                c.at.saturating_duration_since(t0)
            };
            let t_sink = Instant::now();
            for s in sinks.iter_mut() {
                if let Err(e) = s.write(&frame, pts) {
                    out.sink_errors += 1;
                    if out.sink_errors == 1 {
                        hub.emit(
                            "error",
                            json!({"stage": "sink", "message": format!("{e:#}")}),
                        );
                    }
                }
            }
            if let Some(h) = &http_state {
                if h.wants_jpeg() && last_jpeg.is_none_or(|t| t.elapsed() >= mjpeg_period) {
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
                        &source, &state, &out, &queue, &cstats, &in_rate, &out_rate, &hub, false,
                    ));
                }
            }
            if stats_interval > 0.0 && last_stats.elapsed().as_secs_f64() >= stats_interval {
                last_stats = Instant::now();
                let s = status(
                    &source, &state, &out, &queue, &cstats, &in_rate, &out_rate, &hub, false,
                );
                hub.emit(
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
                hub.emit(
                    "error",
                    json!({"stage": "sink", "message": format!("{e:#}")}),
                );
            }
        }
        Ok(out)
    });
    let out = match outcome {
        Ok(o) => o,
        Err(e) => {
            hub.emit(
                "error",
                json!({"stage": "source", "message": format!("{e:#}")}),
            );
            emit_summary(
                &hub,
                &Outcome::default(),
                &analyzer,
                &queue,
                &cstats,
                started,
                "error",
            );
            hub.finish(Duration::from_secs_f64(
                a.flush_timeout.unwrap_or(defaults::FLUSH_TIMEOUT),
            ));
            return Err(e);
        }
    };
    let reason = out.stop_reason;
    hub.emit("stop", json!({"reason": reason}));
    emit_summary(&hub, &out, &analyzer, &queue, &cstats, started, reason);
    let left = hub.finish(Duration::from_secs_f64(
        a.flush_timeout.unwrap_or(defaults::FLUSH_TIMEOUT).max(0.0),
    ));
    if left > 0 {
        log::warn!("{left} event(s) wait in the MQTT spool for the next run");
    }
    drop(server);
    Ok(())
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

fn emit_summary(
    hub: &EventHub,
    out: &Outcome,
    an: &Analyzer,
    queue: &FrameQueue,
    cstats: &CaptureStats,
    started: Instant,
    reason: &str,
) {
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
    let verdict = an.last.clone().unwrap_or_else(|| an.session.verdict());
    let s = &an.stages;
    let mqtt = hub.mqtt_counts();
    hub.emit(
        "summary",
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
            "mqtt": mqtt,
            "duration_s": started.elapsed().as_secs_f64(),
            "peak_rss_mib": crate::bench::peak_rss_mib(),
            "reason": reason,
        }),
    );
}
