//! Live sources and the capture thread.
//!
//! A source runs on its own thread and hands frames to a bounded
//! [`FrameQueue`] that keeps the newest frames: a slow pipeline drops frames,
//! it never stalls the camera or the network. File sources are paced at their
//! own frame rate like a live feed unless pacing is off (then the queue
//! blocks instead of dropping, so every frame is processed).

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fakewatch_sdk::{Frame, FrameRef, PixelFormat};
use serde_json::json;

use super::events::Events;
pub use super::frames::{FrameSource, Size};
use crate::inputs::is_image;

/// Frame rate assumed for sources that state none (image directories, stdin).
pub const DEFAULT_FPS: f64 = 10.0;
/// A live source that sends nothing for this long is treated as lost.
#[cfg(feature = "gst")]
pub const LIVE_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest wait between reconnection attempts of a live source.
pub const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(10));

/// Raw pixel layouts accepted on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// Packed RGB, 3 bytes per pixel.
    Rgb24,
    /// Packed YUYV 4:2:2, 2 bytes per pixel.
    Yuyv,
}

impl std::str::FromStr for RawFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rgb24" | "rgb" => Ok(Self::Rgb24),
            "yuyv" | "yuy2" => Ok(Self::Yuyv),
            o => bail!("unknown raw format {o:?} (rgb24 or yuyv)"),
        }
    }
}

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// Raw frames on standard input.
    Stdin {
        /// Frame size.
        size: Size,
        /// Pixel layout.
        format: RawFormat,
    },
    /// Still images of a directory (sorted by name), or a single image.
    Images(PathBuf),
    /// A V4L2 device (camera, HDMI capture card).
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
        /// Requested size.
        size: Option<Size>,
        /// Requested frame rate.
        fps: Option<u32>,
        /// Requested fourcc (`MJPG`, `YUYV`, `NV12`).
        fourcc: Option<String>,
    },
    /// `camera:N`: through `nokhwa` with that feature, else `/dev/videoN`.
    Camera {
        /// Camera index.
        index: u32,
        /// Requested size.
        size: Option<Size>,
    },
    /// A GStreamer URI (`file://`, `rtsp://`, `srt://`, `udp://`, …).
    Uri(String),
    /// A GStreamer pipeline ending in raw video.
    Pipeline(String),
}

impl SourceSpec {
    /// Parses `--source` (with `--size`/`--format` for stdin).
    pub fn parse(s: &str, size: Option<Size>, format: Option<RawFormat>) -> Result<Self> {
        if s == "-" {
            let size = size.context("--source - needs --size WxH")?;
            return Ok(Self::Stdin {
                size,
                format: format.unwrap_or(RawFormat::Rgb24),
            });
        }
        if let Some(p) = s.strip_prefix("gst:") {
            return Ok(Self::Pipeline(p.into()));
        }
        if let Some(p) = s.strip_prefix("dir:") {
            return Ok(Self::Images(p.into()));
        }
        if let Some(n) = s.strip_prefix("camera:") {
            let n: u32 = n
                .parse()
                .with_context(|| format!("{s:?}: expected camera:N"))?;
            return Ok(Self::Camera { index: n, size });
        }
        if let Some(rest) = s
            .strip_prefix("v4l2://")
            .or_else(|| s.strip_prefix("v4l2:"))
        {
            let (dev, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (mut size, mut fps, mut fourcc) = (size, None, None);
            for kv in query.split('&').filter(|k| !k.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k {
                    "size" => size = Some(v.parse()?),
                    "fps" => fps = Some(v.parse().with_context(|| format!("fps {v:?}"))?),
                    "format" => fourcc = Some(v.to_ascii_uppercase()),
                    o => bail!("{s:?}: unknown option {o:?} (size, fps, format)"),
                }
            }
            if dev.is_empty() {
                bail!("{s:?}: no device (v4l2:///dev/video0)");
            }
            return Ok(Self::V4l2 {
                device: dev.into(),
                size,
                fps,
                fourcc,
            });
        }
        if s.contains("://") {
            return Ok(Self::Uri(s.into()));
        }
        let p = Path::new(s);
        if p.is_dir() || is_image(s) {
            return Ok(Self::Images(p.into()));
        }
        if !p.exists() {
            bail!("source {s:?}: no such file or directory");
        }
        #[cfg(feature = "gst")]
        let uri = fakewatch_sdk::video::to_uri(s)?;
        #[cfg(not(feature = "gst"))]
        let uri = format!("file://{}", std::fs::canonicalize(p)?.display());
        Ok(Self::Uri(uri))
    }

    /// Whether it is a recording (paced, ends) rather than a live feed.
    pub fn is_file(&self) -> bool {
        match self {
            Self::Images(_) => true,
            Self::Uri(u) => u.starts_with("file://"),
            _ => false,
        }
    }

    /// Whether a drop should be retried (network streams, devices).
    pub fn reconnects(&self) -> bool {
        matches!(self, Self::Uri(_) | Self::V4l2 { .. } | Self::Camera { .. }) && !self.is_file()
    }
}

/// One captured frame.
#[derive(Debug)]
pub struct Captured {
    /// The picture.
    pub frame: Frame,
    /// Number of the frame at the source (0, 1, …).
    pub index: u64,
    /// When it was captured.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Captured>,
    closed: bool,
}

/// A bounded queue that drops the oldest frame when full (or, in blocking
/// mode, makes the producer wait).
#[derive(Debug)]
pub struct FrameQueue {
    state: Mutex<QueueState>,
    cond: Condvar,
    capacity: usize,
    block: bool,
    /// Frames dropped because the consumer was behind.
    pub dropped: AtomicU64,
}

impl FrameQueue {
    /// A queue of `capacity` frames; `block` makes a full queue wait.
    pub fn new(capacity: usize, block: bool) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            cond: Condvar::new(),
            capacity: capacity.max(1),
            block,
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds a frame; returns `false` once the queue is closed.
    pub fn push(&self, c: Captured) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        while self.block && s.frames.len() >= self.capacity && !s.closed {
            s = match self.cond.wait(s) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        if s.closed {
            return false;
        }
        if s.frames.len() >= self.capacity {
            s.frames.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        s.frames.push_back(c);
        drop(s);
        self.cond.notify_all();
        true
    }

    /// The oldest queued frame; waits up to `timeout`. `Ok(None)` on timeout,
    /// `Err(QueueClosed)` once closed and empty.
    pub fn pop(&self, timeout: Duration) -> std::result::Result<Option<Captured>, QueueClosed> {
        let Ok(mut s) = self.state.lock() else {
            return Err(QueueClosed);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = s.frames.pop_front() {
                drop(s);
                self.cond.notify_all();
                return Ok(Some(c));
            }
            if s.closed {
                return Err(QueueClosed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            s = match self.cond.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(_) => return Err(QueueClosed),
            };
        }
    }

    /// Opens a closed queue again, empty (a source opened once more).
    pub fn reopen(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.frames.clear();
            s.closed = false;
        }
    }

    /// No more frames will come (or none are wanted).
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.cond.notify_all();
    }
}

/// [`FrameQueue::pop`] on a queue that is closed and empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClosed;

struct ImageSource {
    files: Vec<PathBuf>,
    next: usize,
}

impl ImageSource {
    fn open(path: &Path) -> Result<Self> {
        let files = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_str().is_some_and(is_image))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            bail!("{}: no .jpg/.jpeg/.png images", path.display());
        }
        Ok(Self { files, next: 0 })
    }
}

impl FrameSource for ImageSource {
    fn next(&mut self) -> Result<Option<Frame>> {
        while let Some(p) = self.files.get(self.next) {
            self.next += 1;
            match Frame::load(p) {
                Ok(f) => return Ok(Some(f)),
                Err(e) => log::warn!("skipping {}: {e}", p.display()),
            }
        }
        Ok(None)
    }
    fn fps(&self) -> Option<f64> {
        None
    }
}

struct StdinSource {
    size: Size,
    format: RawFormat,
    buf: Vec<u8>,
}

impl StdinSource {
    fn new(size: Size, format: RawFormat) -> Result<Self> {
        let bpp = match format {
            RawFormat::Rgb24 => 3,
            RawFormat::Yuyv => 2,
        };
        if format == RawFormat::Yuyv && !size.width.is_multiple_of(2) {
            bail!("yuyv needs an even width");
        }
        let len = (size.width as usize)
            .checked_mul(size.height as usize)
            .and_then(|n| n.checked_mul(bpp))
            .filter(|&n| n <= 16384 * 16384 * 3)
            .context("frame size too large")?;
        Ok(Self {
            size,
            format,
            buf: vec![0; len],
        })
    }
}

impl FrameSource for StdinSource {
    fn next(&mut self) -> Result<Option<Frame>> {
        let mut filled = 0;
        let mut stdin = std::io::stdin().lock();
        while filled < self.buf.len() {
            match stdin.read(&mut self.buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => bail!(
                    "stdin ended inside a frame ({filled} of {} bytes)",
                    self.buf.len()
                ),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading stdin"),
            }
        }
        let (w, h) = (self.size.width, self.size.height);
        let frame = match self.format {
            RawFormat::Rgb24 => Frame::from_rgb(w, h, self.buf.clone())?,
            RawFormat::Yuyv => {
                FrameRef::new(&self.buf, w, h, w as usize * 2, PixelFormat::Yuyv)?.to_rgb()
            }
        };
        Ok(Some(frame))
    }
    fn fps(&self) -> Option<f64> {
        None
    }
}

#[cfg(feature = "gst")]
struct GstSource(fakewatch_sdk::video::VideoReader);

#[cfg(feature = "gst")]
impl FrameSource for GstSource {
    fn next(&mut self) -> Result<Option<Frame>> {
        Ok(self.0.next_frame()?)
    }
    fn fps(&self) -> Option<f64> {
        self.0.info().fps
    }
}

// Without GStreamer the pool only travels through the camera fallback.
#[cfg_attr(not(feature = "gst"), allow(clippy::only_used_in_recursion))]
fn open(
    spec: &SourceSpec,
    pool: &fakewatch_sdk::frame::BufferPool,
) -> Result<Box<dyn FrameSource>> {
    match spec {
        #[cfg(feature = "nokhwa")]
        SourceSpec::Camera { index, size } => Ok(Box::new(super::camera::NokhwaSource::open(
            *index, *size, None,
        )?)),
        #[cfg(not(feature = "nokhwa"))]
        SourceSpec::Camera { index, size } => open(
            &SourceSpec::V4l2 {
                device: format!("/dev/video{index}").into(),
                size: *size,
                fps: None,
                fourcc: None,
            },
            pool,
        ),
        SourceSpec::Stdin { size, format } => Ok(Box::new(StdinSource::new(*size, *format)?)),
        SourceSpec::Images(p) => Ok(Box::new(ImageSource::open(p)?)),
        #[cfg(feature = "v4l")]
        SourceSpec::V4l2 {
            device,
            size,
            fps,
            fourcc,
        } => Ok(Box::new(super::v4l2::V4lSource::open(
            device,
            *size,
            *fps,
            fourcc.as_deref(),
        )?)),
        #[cfg(all(not(feature = "v4l"), feature = "gst"))]
        SourceSpec::V4l2 {
            device, size, fps, ..
        } => {
            let mut caps = String::new();
            if let Some(s) = size {
                caps += &format!(",width={},height={}", s.width, s.height);
            }
            if let Some(f) = fps {
                caps += &format!(",framerate={f}/1");
            }
            let desc = if caps.is_empty() {
                format!("v4l2src device={} ! decodebin", device.display())
            } else {
                format!(
                    "v4l2src device={} ! video/x-raw{caps} ! decodebin",
                    device.display()
                )
            };
            let mut r = fakewatch_sdk::video::VideoReader::open_launch(&desc)?;
            r.set_buffer_pool(pool.clone());
            Ok(Box::new(GstSource(r)))
        }
        #[cfg(feature = "gst")]
        SourceSpec::Uri(u) => {
            let mut r = fakewatch_sdk::video::VideoReader::open(u)?;
            r.set_buffer_pool(pool.clone());
            if spec.reconnects() {
                r.set_stall_timeout(LIVE_STALL_TIMEOUT);
            }
            Ok(Box::new(GstSource(r)))
        }
        #[cfg(feature = "gst")]
        SourceSpec::Pipeline(p) => {
            let mut r = fakewatch_sdk::video::VideoReader::open_launch(p)?;
            r.set_buffer_pool(pool.clone());
            Ok(Box::new(GstSource(r)))
        }
        #[allow(unreachable_patterns)]
        other => bail!("{other:?}: this build has no GStreamer (feature `gst`)"),
    }
}

/// Settings of the capture thread.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// What to read.
    pub spec: SourceSpec,
    /// Pace recordings at their frame rate.
    pub pace: bool,
    /// Start a recording again at its end.
    pub repeat: bool,
    /// Frame rate for sources that state none.
    pub fps: f64,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Where decoded frames take their bytes from (GStreamer sources).
    pub pool: fakewatch_sdk::frame::BufferPool,
}

/// What the capture thread measured.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames read from the source.
    pub frames_in: AtomicU64,
    /// The source's frame rate ×1000 (0: unknown).
    pub source_fps_milli: AtomicU64,
    /// Times the source was lost.
    pub lost: AtomicU64,
}

/// Reads `cfg.spec` into `queue` until it ends, fails for good, or `stop`.
/// The first open failure is returned (nothing was captured); later
/// failures of live sources are retried with backoff and reported as
/// `source_lost` / `source_restored` events.
pub fn capture(
    cfg: &CaptureConfig,
    queue: &FrameQueue,
    events: &Events<'_>,
    stats: &CaptureStats,
    stop: &AtomicBool,
    opened: impl FnOnce(Result<()>),
) {
    let mut source = match open(&cfg.spec, &cfg.pool) {
        Ok(s) => {
            opened(Ok(()));
            s
        }
        Err(e) => {
            opened(Err(e));
            queue.close();
            return;
        }
    };
    let mut index = 0u64;
    let mut backoff = RECONNECT_BACKOFF.0;
    'outer: loop {
        let fps = source.fps().filter(|f| *f > 0.0).unwrap_or(cfg.fps);
        stats
            .source_fps_milli
            .store((fps * 1000.0) as u64, Ordering::Relaxed);
        let period = Duration::from_secs_f64(1.0 / fps);
        let start = Instant::now();
        let mut k = 0u32;
        let failure: Option<String> = loop {
            if stop.load(Ordering::SeqCst) || cfg.max_frames.is_some_and(|m| index >= m) {
                break 'outer;
            }
            match source.next() {
                Ok(Some(mut frame)) => {
                    if cfg.pace && cfg.spec.is_file() {
                        let due = start + period * k;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    frame.timestamp = Some(period * k);
                    k = k.saturating_add(1);
                    stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    let ok = queue.push(Captured {
                        frame,
                        index,
                        at: Instant::now(),
                    });
                    index += 1;
                    backoff = RECONNECT_BACKOFF.0;
                    if !ok {
                        break 'outer;
                    }
                }
                Ok(None) if cfg.repeat && cfg.spec.is_file() => break None,
                Ok(None) if cfg.spec.reconnects() => break Some("end of stream".into()),
                Ok(None) => break 'outer,
                Err(e) if cfg.spec.reconnects() => break Some(format!("{e:#}")),
                Err(e) => {
                    events.emit(
                        "error",
                        json!({"stage": "source", "message": format!("{e:#}")}),
                    );
                    break 'outer;
                }
            }
        };
        // Reopen: a repeat of a recording, or a reconnection.
        if let Some(reason) = &failure {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            events.emit(
                "source_lost",
                json!({"reason": reason, "retry_in_ms": backoff.as_millis() as u64}),
            );
            log::warn!("source lost ({reason}); reconnecting");
        }
        loop {
            if failure.is_some() {
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        break 'outer;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            match open(&cfg.spec, &cfg.pool) {
                Ok(s) => {
                    source = s;
                    if failure.is_some() {
                        events.emit("source_restored", json!({"frame": index}));
                        log::info!("source restored");
                    }
                    break;
                }
                Err(e) if failure.is_some() => {
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                    log::warn!("source still down ({e:#}); next try in {backoff:?}");
                }
                Err(e) => {
                    events.emit(
                        "error",
                        json!({"stage": "source", "message": format!("{e:#}")}),
                    );
                    break 'outer;
                }
            }
        }
    }
    queue.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cap(i: u64) -> Captured {
        Captured {
            frame: Frame::filled(2, 2, [0, 0, 0]).unwrap(),
            index: i,
            at: Instant::now(),
        }
    }

    #[test]
    fn a_full_queue_keeps_the_newest_and_counts_drops() {
        let q = FrameQueue::new(2, false);
        for i in 0..5 {
            assert!(q.push(cap(i)));
        }
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(q.pop(Duration::ZERO).unwrap().unwrap().index, 3);
        assert_eq!(q.pop(Duration::ZERO).unwrap().unwrap().index, 4);
        assert!(q.pop(Duration::ZERO).unwrap().is_none());
        q.close();
        assert!(q.pop(Duration::ZERO).is_err());
        assert!(!q.push(cap(9)));
    }

    #[test]
    fn a_blocking_queue_loses_nothing() {
        let q = Arc::new(FrameQueue::new(1, true));
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            for i in 0..20 {
                q2.push(cap(i));
            }
            q2.close();
        });
        let mut got = vec![];
        while let Ok(c) = q.pop(Duration::from_secs(5)) {
            if let Some(c) = c {
                got.push(c.index);
            }
        }
        t.join().unwrap();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(q.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sources_parse() {
        let s = SourceSpec::parse(
            "v4l2:///dev/video2?size=1280x720&fps=30&format=mjpg",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            s,
            SourceSpec::V4l2 {
                device: "/dev/video2".into(),
                size: Some(Size {
                    width: 1280,
                    height: 720
                }),
                fps: Some(30),
                fourcc: Some("MJPG".into())
            }
        );
        assert!(!s.is_file() && s.reconnects());
        assert!(SourceSpec::parse("v4l2:///dev/video0?bogus=1", None, None).is_err());
        assert!(SourceSpec::parse("-", None, None).is_err());
        let stdin = SourceSpec::parse("-", Some("4x2".parse().unwrap()), Some(RawFormat::Yuyv));
        assert!(matches!(stdin, Ok(SourceSpec::Stdin { .. })));
        let rtsp = SourceSpec::parse("rtsp://cam/stream", None, None).unwrap();
        assert!(rtsp.reconnects() && !rtsp.is_file());
        assert!(SourceSpec::parse("file:///x.mp4", None, None)
            .unwrap()
            .is_file());
        assert!(SourceSpec::parse("/no/such/clip.mp4", None, None).is_err());
        assert!(matches!(
            SourceSpec::parse("gst:videotestsrc", None, None),
            Ok(SourceSpec::Pipeline(_))
        ));
        assert_eq!(
            SourceSpec::parse("camera:1", None, None).unwrap(),
            SourceSpec::Camera {
                index: 1,
                size: None
            }
        );
        assert!(SourceSpec::parse("camera:x", None, None).is_err());
        assert!("0x5".parse::<Size>().is_err());
        assert!("rgba".parse::<RawFormat>().is_err());
    }
}
