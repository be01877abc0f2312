//! Video decoding through GStreamer (`uridecodebin ! videoconvert ! videoflip
//! video-direction=auto ! appsink`), delivering stride-aware RGB [`Frame`]s
//! turned upright by the container's rotation tag. Any GStreamer URI works; plain
//! paths are turned into `file://` URIs.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::error::{Error, Result};
use crate::frame::{BufferPool, Frame, MAX_FRAME_SIDE};
pub use crate::sampling::{even_indices, Sampling, VideoInfo};

/// How long a decoder may go without producing a frame before it is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A video being decoded frame by frame.
pub struct VideoReader {
    uri: String,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    info: Option<VideoInfo>,
    first: Option<(u64, Frame)>,
    /// Decoded frames counted before conversion, and which of them are
    /// converted (files opened with [`Self::open`]); `None` for launch
    /// pipelines, whose frames are counted as they are pulled.
    gate: Option<Arc<Mutex<Gate>>>,
    pulled: u64,
    done: bool,
    stall: Duration,
    pool: Option<BufferPool>,
}

impl std::fmt::Debug for VideoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReader")
            .field("uri", &self.uri)
            .field("info", &self.info)
            .finish()
    }
}

/// Which decoded frames of a file go on to colour conversion. A buffer probe
/// in front of the converter numbers every decoded frame (presentation
/// order) and drops those a sampler does not want, so only the sampled frames
/// pay for the conversion to RGB (3.9 ms a frame at 1080p on this project's
/// 2-core x86: 1.2 s of a 300-frame clip).
#[derive(Debug, Default)]
struct Gate {
    /// Index of the next decoded frame.
    next: u64,
    /// Sorted indices to convert; `None`: every frame.
    wanted: Option<Vec<u64>>,
    /// Frames from this index on are always converted (the last decoded
    /// frame stands in for a final sample the stream ends before).
    tail_from: u64,
    /// Indices of the frames let through and not yet pulled, in order.
    passed: std::collections::VecDeque<u64>,
}

impl Gate {
    fn admit(&mut self) -> bool {
        let k = self.next;
        self.next += 1;
        let keep = k >= self.tail_from
            || self
                .wanted
                .as_ref()
                .is_none_or(|w| w.binary_search(&k).is_ok());
        if keep {
            self.passed.push_back(k);
        }
        keep
    }
}

/// Turns a path or URI into a GStreamer URI.
pub fn to_uri(input: &str) -> Result<String> {
    if input.contains("://") {
        return Ok(input.to_string());
    }
    let p = Path::new(input);
    let abs = std::fs::canonicalize(p).map_err(|source| Error::Io {
        path: p.into(),
        source,
    })?;
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| Error::Video {
            uri: input.into(),
            reason: e.to_string(),
        })
}

/// Initialises GStreamer and turns `input` into a URI.
fn init_uri(input: &str) -> Result<String> {
    gst::init().map_err(|e| Error::Video {
        uri: input.into(),
        reason: format!("GStreamer init: {e}"),
    })?;
    to_uri(input)
}

fn make(name: &str, uri: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(name).build().map_err(|_| Error::Video {
        uri: uri.into(),
        reason: format!("GStreamer element `{name}` is missing (install gstreamer1.0-plugins-base/-good/-libav)"),
    })
}

/// Frames the RGB sink holds before decoding waits. Callers copy each frame
/// out as soon as they pull it, so one is enough; every extra buffer held is
/// a frame of RGB (6.2 MB at 1080p).
pub const APPSINK_MAX_BUFFERS: u32 = 1;

/// Threads of libav's software decoders (`avdec_*`). libav's own choice uses
/// frame threading, which keeps one decoded picture per thread in flight: on
/// a 2-core x86 that held 41 MiB more at 1080p (`gst-launch-1.0` of a 1080p
/// H.264 clip to RGB: peak RSS 132 → 91 MiB) and adds a frame of latency per
/// thread. One thread decoded the same clip at 141 fps there. Jetson decodes
/// in hardware ([`HW_DECODER`]), where this does not apply.
pub const SOFTWARE_DECODER_THREADS: i32 = 1;

/// Jetson's hardware decoder; preferred over software decoders when present.
pub const HW_DECODER: &str = "nvv4l2decoder";
/// Jetson's converter out of NVMM (device) memory, needed after [`HW_DECODER`].
pub const HW_CONVERTER: &str = "nvvidconv";

/// Whether this GStreamer installation has an element called `name`.
pub fn has_element(name: &str) -> bool {
    gst::init().is_ok() && gst::ElementFactory::find(name).is_some()
}

/// On Jetson, raises the hardware decoder above the software ones so that
/// `uridecodebin` picks it; returns whether it did.
fn prefer_hardware_decoder() -> bool {
    if !(has_element(HW_DECODER) && has_element(HW_CONVERTER)) {
        return false;
    }
    if let Some(f) = gst::ElementFactory::find(HW_DECODER) {
        f.set_rank(gst::Rank::PRIMARY + 10);
    }
    true
}

impl VideoReader {
    /// Opens a file path or URI and decodes until the first frame, so that
    /// [`Self::info`] is known. Fails with a clear error for a missing file,
    /// a missing GStreamer plugin, a stream without video, or corrupt data.
    /// On Jetson (`nvv4l2decoder` + `nvvidconv` present) decoding runs on
    /// the hardware decoder.
    pub fn open(input: &str) -> Result<Self> {
        let uri = init_uri(input)?;
        let err = |reason: String| Error::Video {
            uri: uri.clone(),
            reason,
        };
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("uridecodebin")
            .property("uri", &uri)
            .build()
            .map_err(|_| err("GStreamer element `uridecodebin` is missing (install gstreamer1.0-plugins-base)".into()))?;
        let mut chain = Vec::new();
        if prefer_hardware_decoder() {
            chain.push(make(HW_CONVERTER, &uri)?);
        }
        chain.push(make("videoconvert", &uri)?);
        // Phone videos are stored sideways with a rotation in the container;
        // `videoflip` turns them upright from the stream's orientation tag
        // (a pass-through when there is none).
        chain.push(
            gst::ElementFactory::make("videoflip")
                .property_from_str("video-direction", "auto")
                .build()
                .map_err(|_| err("GStreamer element `videoflip` is missing (install gstreamer1.0-plugins-good)".into()))?,
        );
        let sink = rgb_appsink();
        pipeline
            .add_many([&src])
            .and_then(|_| pipeline.add_many(&chain))
            .and_then(|_| pipeline.add(&sink))
            .map_err(|e| err(e.to_string()))?;
        let mut links: Vec<&gst::Element> = chain.iter().collect();
        links.push(sink.upcast_ref());
        gst::Element::link_many(links).map_err(|e| err(e.to_string()))?;
        let gate = Arc::new(Mutex::new(Gate {
            tail_from: u64::MAX,
            ..Gate::default()
        }));
        if let Some(pad) = chain[0].static_pad("sink") {
            let g = gate.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                // A poisoned lock (a panic elsewhere) passes every frame.
                let keep = g.lock().map_or(true, |mut g| g.admit());
                if keep {
                    gst::PadProbeReturn::Ok
                } else {
                    // The probe consumes the frame (dropped here) and the push
                    // succeeds: `Drop` made GStreamer 1.22 log a critical
                    // (`gst_mini_object_unref: assertion 'mini_object != NULL'`).
                    info.data = None;
                    info.flow_res = Ok(gst::FlowSuccess::Ok);
                    gst::PadProbeReturn::Handled
                }
            });
        }
        let first_weak = chain[0].downgrade();
        src.connect_pad_added(move |_, pad| {
            let Some(first) = first_weak.upgrade() else {
                return;
            };
            let is_video = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if let Some(sinkpad) = first.static_pad("sink") {
                if is_video && !sinkpad.is_linked() {
                    let _ = pad.link(&sinkpad);
                }
            }
        });
        Self::start(uri, pipeline, sink, Some(gate))
    }

    /// Opens a GStreamer pipeline description that ends in raw video (for
    /// example `v4l2src device=/dev/video0` or `videotestsrc num-buffers=30`);
    /// conversion to RGB and the sink are appended.
    pub fn open_launch(description: &str) -> Result<Self> {
        let err = |reason: String| Error::Video {
            uri: description.into(),
            reason,
        };
        gst::init().map_err(|e| err(format!("GStreamer init: {e}")))?;
        let full = format!("{description} ! videoconvert name=fakewatch_convert");
        let bin = gst::parse::launch(&full).map_err(|e| err(format!("bad pipeline: {e}")))?;
        let pipeline = bin
            .downcast::<gst::Pipeline>()
            .map_err(|_| err("not a pipeline".into()))?;
        let convert = pipeline
            .by_name("fakewatch_convert")
            .ok_or_else(|| err("pipeline lost its converter".into()))?;
        let sink = rgb_appsink();
        pipeline.add(&sink).map_err(|e| err(e.to_string()))?;
        convert.link(&sink).map_err(|e| err(e.to_string()))?;
        Self::start(description.into(), pipeline, sink, None)
    }

    fn start(
        uri: String,
        pipeline: gst::Pipeline,
        sink: gst_app::AppSink,
        gate: Option<Arc<Mutex<Gate>>>,
    ) -> Result<Self> {
        // Decoders are created inside decodebin once the stream is typed.
        pipeline.connect_deep_element_added(|_, _, element| {
            let is_libav = element
                .factory()
                .is_some_and(|f| f.name().starts_with("avdec_"));
            let takes_int = element
                .find_property("max-threads")
                .is_some_and(|p| p.value_type() == i32::static_type());
            if is_libav && takes_int {
                element.set_property("max-threads", SOFTWARE_DECODER_THREADS);
            }
        });
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            let msg = bus_error(&pipeline).unwrap_or_else(|| "cannot start decoding".into());
            Error::Video {
                uri: uri.clone(),
                reason: msg,
            }
        })?;
        let mut reader = Self {
            uri,
            pipeline,
            sink,
            info: None,
            first: None,
            gate,
            pulled: 0,
            done: false,
            stall: STALL_TIMEOUT,
            pool: None,
        };
        match reader.next_indexed()? {
            Some(f) => reader.first = Some(f),
            None => {
                return Err(Error::Video {
                    uri: reader.uri.clone(),
                    reason: "no video frames (no video stream?)".into(),
                })
            }
        }
        // The container's duration: its longest stream's, or whatever its
        // headers say (sampling relies on counted frames where it can,
        // `count_video_frames`).
        let duration = reader.pipeline.query_duration::<gst::ClockTime>();
        if let Some(info) = reader.info.as_mut() {
            info.duration = duration.map(|d| Duration::from_nanos(d.nseconds()));
        }
        Ok(reader)
    }

    /// How long [`Self::next_frame`] waits for a frame before failing with
    /// "decoder stalled" (default [`STALL_TIMEOUT`]; live sources want less).
    pub fn set_stall_timeout(&mut self, timeout: Duration) {
        self.stall = timeout;
    }

    /// Takes the bytes of the next frames from `pool` (callers hand the
    /// buffers of frames they are done with back to it).
    pub fn set_buffer_pool(&mut self, pool: BufferPool) {
        self.pool = Some(pool);
    }

    /// Stream properties (known once the first frame is decoded).
    pub fn info(&self) -> VideoInfo {
        self.info.unwrap_or_default()
    }

    /// The next frame, or `None` at the end of the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        Ok(self.next_indexed()?.map(|(_, f)| f))
    }

    /// The next frame with its index in the stream (0 for the first decoded
    /// frame), or `None` at the end. After [`Self::convert_only`] indices
    /// skip the frames it left out.
    pub fn next_indexed(&mut self) -> Result<Option<(u64, Frame)>> {
        if let Some(f) = self.first.take() {
            return Ok(Some(f));
        }
        let Some(frame) = self.pull()? else {
            return Ok(None);
        };
        let k = match &self.gate {
            Some(g) => g
                .lock()
                .ok()
                .and_then(|mut g| g.passed.pop_front())
                .unwrap_or(self.pulled),
            None => self.pulled,
        };
        self.pulled = k + 1;
        Ok(Some((k, frame)))
    }

    /// From now on, only the decoded frames at `wanted` (sorted indices) and
    /// those from `tail_from` on are converted and handed out; the others are
    /// dropped in front of the colour converter. Frames already past it
    /// still come out, with their indices. No effect on launch pipelines.
    pub fn convert_only(&mut self, wanted: &[u64], tail_from: u64) {
        if let Some(g) = &self.gate {
            if let Ok(mut g) = g.lock() {
                let mut w = wanted.to_vec();
                w.sort_unstable();
                g.wanted = Some(w);
                g.tail_from = tail_from;
            }
        }
    }

    fn pull(&mut self) -> Result<Option<Frame>> {
        if self.done {
            return Ok(None);
        }
        let start = Instant::now();
        loop {
            if let Some(e) = bus_error(&self.pipeline) {
                self.done = true;
                return Err(Error::Video {
                    uri: self.uri.clone(),
                    reason: e,
                });
            }
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                return self.sample_to_frame(&sample).map(Some);
            }
            if self.sink.is_eos() {
                self.done = true;
                return Ok(None);
            }
            if start.elapsed() > self.stall {
                self.done = true;
                return Err(Error::Video {
                    uri: self.uri.clone(),
                    reason: "decoder stalled".into(),
                });
            }
        }
    }

    fn sample_to_frame(&mut self, sample: &gst::Sample) -> Result<Frame> {
        let err = |reason: &str| Error::Video {
            uri: self.uri.clone(),
            reason: reason.into(),
        };
        let caps = sample.caps().ok_or_else(|| err("sample without caps"))?;
        let vinfo =
            gst_video::VideoInfo::from_caps(caps).map_err(|_| err("unreadable video caps"))?;
        let (w, h) = (vinfo.width(), vinfo.height());
        if w == 0 || h == 0 || w > MAX_FRAME_SIDE || h > MAX_FRAME_SIDE {
            return Err(err(&format!(
                "frame size {w}x{h} outside 1..={MAX_FRAME_SIDE}"
            )));
        }
        let stride = usize::try_from(vinfo.stride()[0]).map_err(|_| err("negative stride"))?;
        let fps = vinfo.fps();
        if self.info.is_none() {
            self.info = Some(VideoInfo {
                width: w,
                height: h,
                fps: (fps.numer() > 0 && fps.denom() > 0)
                    .then(|| f64::from(fps.numer()) / f64::from(fps.denom())),
                duration: None,
                frames: None,
            });
        }
        let buffer = sample
            .buffer()
            .ok_or_else(|| err("sample without buffer"))?;
        let map = buffer
            .map_readable()
            .map_err(|_| err("unreadable buffer"))?;
        let need = stride * (h as usize - 1) + w as usize * 3;
        let data = map
            .as_slice()
            .get(..(stride * h as usize).min(map.len()))
            .ok_or_else(|| err("short buffer"))?;
        if data.len() < need {
            return Err(err("short buffer"));
        }
        let mut owned = match &self.pool {
            Some(p) => p.copy_of(data),
            None => data.to_vec(),
        };
        owned.resize(stride * h as usize, 0);
        let mut frame = Frame::from_rgb_strided(w, h, stride, owned)?;
        frame.timestamp = buffer.pts().map(|t| Duration::from_nanos(t.nseconds()));
        Ok(frame)
    }
}

fn rgb_appsink() -> gst_app::AppSink {
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgb)
        .build();
    gst_app::AppSink::builder()
        .caps(&caps)
        .sync(false)
        .max_buffers(APPSINK_MAX_BUFFERS)
        .build()
}

impl Drop for VideoReader {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(e.error().to_string());
        }
    }
    None
}

/// Decodes `input` and returns up to `n` frames sampled evenly over its length
/// (the first `n` when the length is unknown), with their frame indices.
pub fn sample_frames(input: &str, n: usize) -> Result<(VideoInfo, Vec<(u64, Frame)>)> {
    sample_frames_by(input, Sampling::Even(n))
}

/// Decodes `input` and returns the frames `sampling` selects, with their indices.
pub fn sample_frames_by(input: &str, sampling: Sampling) -> Result<(VideoInfo, Vec<(u64, Frame)>)> {
    let mut out = Vec::new();
    let info = for_each_sampled(input, sampling, |k, f| {
        out.push((k, f));
        Ok(())
    })?;
    Ok((info, out))
}

/// Decodes `input` and hands each frame `sampling` selects to `f` as soon as
/// it is decoded (one frame in memory at a time); the first error from `f`
/// stops decoding and is returned.
pub fn for_each_sampled(
    input: &str,
    sampling: Sampling,
    mut f: impl FnMut(u64, Frame) -> Result<()>,
) -> Result<VideoInfo> {
    let mut r = VideoReader::open(input)?;
    // Frames between the sampled ones are decoded and dropped: their
    // buffers serve the next ones.
    let pool = BufferPool::new(2);
    r.set_buffer_pool(pool.clone());
    let mut info = r.info();
    if !matches!(sampling, Sampling::First(_)) {
        // Spread the samples over the frames the video stream holds, counted
        // without decoding; timing metadata only where counting cannot be done.
        info.frames = count_video_frames(input);
    }
    let wanted = sampling.indices(&info);
    if let (Some(n), false) = (info.frames, wanted.is_empty()) {
        // Only the sampled frames (and the last TAIL_FRAMES, which stand in
        // for a final sample the decoder never reaches) are converted to RGB.
        r.convert_only(&wanted, n.saturating_sub(TAIL_FRAMES));
    }
    // A second thread pulls (and drops) the frames between samples while `f`
    // works on the last sample, so decoding overlaps analysis instead of
    // waiting for it. One sample waits at most.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Frame)>>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = pull_sampled(&mut r, &wanted, &pool, &tx) {
                let _ = tx.send(Err(e));
            }
        });
        // On an error from `f`, `rx` is dropped with this closure's frame
        // and the puller stops at its next send.
        for item in rx {
            let (k, frame) = item?;
            f(k, frame)?;
        }
        Ok(info)
    })
}

/// Frames at the end of a counted video that are always converted, so that
/// the last decoded one can stand in for a final sample the stream ends
/// before (an edit list may hide a frame or two).
pub const TAIL_FRAMES: u64 = 2;

/// Longest a counting pass ([`count_video_frames`]) may take before the
/// sampler falls back to the stream's timing.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the frames of the first video stream of a local file without
/// decoding them (`filesrc ! parsebin`, one per video packet), so that
/// sampling does not depend on the container's durations, frame rates, edit
/// lists or other streams. `None` for a URI that is not a local file, or
/// when the count could not be taken (no parser for the stream, an error, or
/// over [`COUNT_TIMEOUT`]); the reason is logged at debug level. Reads the
/// whole file once: its cost grows with the file's size, not its pixels.
pub fn count_video_frames(input: &str) -> Option<u64> {
    match try_count_video_frames(input) {
        Ok(n) => n,
        Err(e) => {
            log::debug!("{input}: frames not counted ({e}); sampling by the stream's timing");
            None
        }
    }
}

fn try_count_video_frames(input: &str) -> Result<Option<u64>> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let uri = init_uri(input)?;
    let Ok((path, _)) = gst::glib::filename_from_uri(&uri) else {
        return Ok(None);
    };
    let err = |reason: String| Error::Video {
        uri: uri.clone(),
        reason,
    };
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_string_lossy().as_ref())
        .build()
        .map_err(|_| err("GStreamer element `filesrc` is missing".into()))?;
    let parse = make("parsebin", &uri)?;
    pipeline
        .add_many([&src, &parse])
        .map_err(|e| err(e.to_string()))?;
    src.link(&parse).map_err(|e| err(e.to_string()))?;
    let count = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let pipeline_weak = pipeline.downgrade();
    let (count_in, counting_in) = (count.clone(), counting.clone());
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        // Every stream goes to a sink (a demuxer stops when one of its
        // streams is not linked); the first video one is counted.
        // Not prerolling (`async` false): one demuxer thread feeds every
        // sink, and a sink that waits for preroll would stall the others.
        let Ok(sink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
        else {
            return;
        };
        if pipeline.add(&sink).is_err() {
            return;
        }
        let _ = sink.sync_state_with_parent();
        let Some(sinkpad) = sink.static_pad("sink") else {
            return;
        };
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| {
                c.structure(0)
                    .map(|s| s.name().starts_with("video/") || s.name().starts_with("image/"))
            })
            .unwrap_or(false);
        if is_video && !counting_in.swap(true, Ordering::SeqCst) {
            let n = count_in.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    if !b.flags().contains(gst::BufferFlags::HEADER) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        let _ = pad.link(&sinkpad);
    });
    let stop = |p: &gst::Pipeline| {
        let _ = p.set_state(gst::State::Null);
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        let reason = bus_error(&pipeline).unwrap_or_else(|| "cannot start parsing".into());
        stop(&pipeline);
        return Err(err(reason));
    }
    let bus = pipeline
        .bus()
        .ok_or_else(|| err("pipeline without a bus".into()))?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(COUNT_TIMEOUT.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    stop(&pipeline);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) if counting.load(Ordering::SeqCst) => {
            Ok(Some(count.load(Ordering::SeqCst)).filter(|&n| n > 0))
        }
        Some(gst::MessageView::Eos(_)) => Err(err("no video stream found by parsebin".into())),
        Some(gst::MessageView::Error(e)) => Err(err(e.error().to_string())),
        _ => Err(err(format!("counting took over {COUNT_TIMEOUT:?}"))),
    }
}

/// The decoding side of [`for_each_sampled`]: sends the frames at `wanted`
/// (sorted) until the stream or the receiver ends.
fn pull_sampled(
    r: &mut VideoReader,
    wanted: &[u64],
    pool: &BufferPool,
    tx: &std::sync::mpsc::SyncSender<Result<(u64, Frame)>>,
) -> Result<()> {
    let mut given = 0usize;
    let mut last_given: Option<u64> = None;
    let mut it = wanted.iter().peekable();
    let mut last: Option<(u64, Frame)> = None;
    while it.peek().is_some() {
        let Some((k, frame)) = r.next_indexed()? else {
            break;
        };
        // A wanted index the stream went past never comes.
        while it.next_if(|&&w| w < k).is_some() {}
        if it.next_if(|&&w| w == k).is_some() {
            if let Some((_, old)) = last.take() {
                pool.give(old.into_data());
            }
            if tx.send(Ok((k, frame))).is_err() {
                return Ok(());
            }
            given += 1;
            last_given = Some(k);
        } else if let Some((_, old)) = last.replace((k, frame)) {
            pool.give(old.into_data());
        }
    }
    // The stream can end a frame or two before the count (an edit list that
    // hides frames): the last decoded frame stands in for a missed final index.
    if given < wanted.len() {
        if let Some((k, frame)) = last {
            if last_given.is_none_or(|i| i < k) {
                let _ = tx.send(Ok((k, frame)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_an_error() {
        assert!(VideoReader::open("/nonexistent/clip.mp4").is_err());
    }

    #[test]
    fn launch_pipeline_delivers_rgb_frames_then_ends() {
        let mut r = VideoReader::open_launch(
            "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=48,framerate=10/1",
        )
        .unwrap();
        assert_eq!((r.info().width, r.info().height), (64, 48));
        assert_eq!(r.info().fps, Some(10.0));
        let mut n = 0;
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!((f.width(), f.height()), (64, 48));
            n += 1;
        }
        assert_eq!(n, 3);
        assert!(VideoReader::open_launch("no_such_element_xyz").is_err());
    }

    /// A 24-frame Motion-JPEG AVI of a moving ball, written by GStreamer.
    fn ball_clip(dir: &Path) -> String {
        let path = dir.join("ball.avi");
        gst::init().unwrap();
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=24 pattern=ball ! video/x-raw,width=64,height=48,framerate=24/1 \
             ! jpegenc ! avimux ! filesink location={}",
            path.display()
        ))
        .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap();
        assert!(matches!(msg.view(), gst::MessageView::Eos(_)));
        p.set_state(gst::State::Null).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// A test clip in a fresh folder `tag`, and every frame of it decoded in order.
    fn ball_clip_decoded(tag: &str) -> (std::path::PathBuf, String, Vec<Frame>) {
        let dir = std::env::temp_dir().join(format!("fw-video-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clip = ball_clip(&dir);
        let mut r = VideoReader::open(&clip).unwrap();
        let mut all = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            all.push(f);
        }
        (dir, clip, all)
    }

    #[test]
    fn sampled_frames_match_a_plain_decode_and_errors_stop_the_decoder() {
        let (dir, clip, all) = ball_clip_decoded("sampled");
        assert_eq!(all.len(), 24);
        assert_ne!(all[0], all[12], "the ball moves");
        let (_, sampled) = sample_frames(&clip, 5).unwrap();
        assert_eq!(sampled.len(), 5);
        for w in sampled.windows(2) {
            assert!(w[0].0 < w[1].0, "indices increase");
        }
        for (k, f) in &sampled {
            assert_eq!(f, &all[*k as usize], "frame {k} is the decoder's frame {k}");
        }
        // An error from the callback is returned, and nothing is called after it.
        let mut calls = 0;
        let res = for_each_sampled(&clip, Sampling::Even(5), |_, _| {
            calls += 1;
            if calls == 2 {
                Err(Error::config("stop here"))
            } else {
                Ok(())
            }
        });
        assert!(matches!(res, Err(Error::InvalidConfig(_))));
        assert_eq!(calls, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_wanted_frames_are_converted_with_their_indices() {
        let (dir, clip, all) = ball_clip_decoded("gate");
        let mut r = VideoReader::open(&clip).unwrap();
        r.convert_only(&[9, 5, 17], 22);
        let mut got = Vec::new();
        while let Some((k, f)) = r.next_indexed().unwrap() {
            assert_eq!(f, all[k as usize], "frame {k} is the decoder's frame {k}");
            got.push(k);
        }
        // Frames already past the converter when the filter was set (the
        // first, the sink's buffer, one in conversion) still come out, in order.
        let early: Vec<u64> = got.iter().copied().filter(|&k| k < 5).collect();
        assert!(early.len() <= 4, "{got:?}");
        assert_eq!(
            early,
            (0..early.len() as u64).collect::<Vec<_>>(),
            "{got:?}"
        );
        let late: Vec<u64> = got.iter().copied().filter(|&k| k >= 5).collect();
        assert_eq!(late, [5, 9, 17, 22, 23], "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
