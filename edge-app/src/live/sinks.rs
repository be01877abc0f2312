//! Where overlaid frames go: video files, PNG directories, a Linux
//! framebuffer, any GStreamer sink, and the MJPEG preview (see `http`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fakewatch_sdk::Frame;

use super::frames::Size;

/// A parsed `--sink`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `file:PATH` — encoded video (`.mp4`, `.mkv`, `.avi`).
    File(PathBuf),
    /// `png-dir:DIR` — one PNG per frame.
    PngDir(PathBuf),
    /// `mjpeg:HOST:PORT` — HTTP MJPEG preview and status page.
    Mjpeg(SocketAddr),
    /// `fb:/dev/fb0[?size=WxH&bpp=32|16]` — a Linux framebuffer (or, with
    /// `size` and `bpp`, any file laid out like one).
    Framebuffer {
        /// Device or file.
        path: PathBuf,
        /// Geometry when not read from the device.
        geometry: Option<(Size, u32)>,
    },
    /// `gst:ELEMENTS` — a GStreamer sink pipeline, e.g. `gst:autovideosink`.
    Gst(String),
}

impl std::str::FromStr for SinkSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').with_context(|| {
            format!("sink {s:?}: expected KIND:TARGET (file:, png-dir:, mjpeg:, fb:, gst:)")
        })?;
        if rest.is_empty() {
            bail!("sink {s:?}: empty target");
        }
        Ok(match kind {
            "file" => Self::File(rest.into()),
            "png-dir" => Self::PngDir(rest.into()),
            "mjpeg" => {
                Self::Mjpeg(super::http::parse_addr(rest).with_context(|| {
                    format!("sink {s:?}: expected mjpeg:PORT or mjpeg:HOST:PORT")
                })?)
            }
            "fb" => {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                let (mut size, mut bpp) = (None, None);
                for kv in query.split('&').filter(|k| !k.is_empty()) {
                    match kv.split_once('=') {
                        Some(("size", v)) => size = Some(v.parse::<Size>()?),
                        Some(("bpp", v)) => bpp = Some(v.parse::<u32>()?),
                        _ => bail!("sink {s:?}: unknown option {kv:?} (size, bpp)"),
                    }
                }
                let geometry = match (size, bpp) {
                    (Some(s), Some(b)) if b == 16 || b == 32 => Some((s, b)),
                    (None, None) => None,
                    _ => bail!("sink {s:?}: give both size=WxH and bpp=16|32"),
                };
                Self::Framebuffer {
                    path: path.into(),
                    geometry,
                }
            }
            "gst" => Self::Gst(rest.into()),
            o => bail!("sink {s:?}: unknown kind {o:?} (file, png-dir, mjpeg, fb, gst)"),
        })
    }
}

/// A consumer of overlaid frames.
pub trait Sink: Send {
    /// Writes one frame shown at `pts` from the start.
    fn write(&mut self, frame: &Frame, pts: Duration) -> Result<()>;
    /// Finalises (closes files, writes trailers).
    fn finish(&mut self) -> Result<()>;
}

/// Opens a sink (the MJPEG sink is built by the HTTP server instead).
pub fn open(spec: &SinkSpec, fps: f64) -> Result<Box<dyn Sink>> {
    match spec {
        SinkSpec::PngDir(d) => Ok(Box::new(PngDir::new(d)?)),
        SinkSpec::Framebuffer { path, geometry } => {
            Ok(Box::new(Framebuffer::open(path, *geometry)?))
        }
        #[cfg(feature = "gst")]
        SinkSpec::File(p) => Ok(Box::new(gst_sink::GstSink::file(p, fps)?)),
        #[cfg(feature = "gst")]
        SinkSpec::Gst(p) => Ok(Box::new(gst_sink::GstSink::pipeline(p, fps)?)),
        SinkSpec::Mjpeg(_) => bail!("the MJPEG sink is served by the HTTP server"),
        #[allow(unreachable_patterns)]
        other => {
            let _ = fps;
            bail!("{other:?}: this build has no GStreamer (feature `gst`)")
        }
    }
}

/// One PNG per frame, `frame-000000.png`, ….
pub struct PngDir {
    dir: PathBuf,
    n: u64,
}

impl PngDir {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.into(),
            n: 0,
        })
    }
}

impl Sink for PngDir {
    fn write(&mut self, frame: &Frame, _pts: Duration) -> Result<()> {
        let p = self.dir.join(format!("frame-{:06}.png", self.n));
        self.n += 1;
        frame
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A Linux framebuffer: the frame is scaled to fit and centred.
pub struct Framebuffer {
    file: File,
    width: u32,
    height: u32,
    bpp: u32,
    line: usize,
    buf: Vec<u8>,
}

#[repr(C)]
#[derive(Default)]
struct FbBitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

#[repr(C)]
#[derive(Default)]
struct FbVarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: FbBitfield,
    green: FbBitfield,
    blue: FbBitfield,
    transp: FbBitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

const FBIOGET_VSCREENINFO: libc::c_ulong = 0x4600;

impl Framebuffer {
    fn open(path: &Path, geometry: Option<(Size, u32)>) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening framebuffer {}", path.display()))?;
        let (width, height, bpp) = match geometry {
            Some((s, b)) => (s.width, s.height, b),
            None => {
                use std::os::fd::AsRawFd;
                let mut v = FbVarScreeninfo::default();
                // SAFETY: FBIOGET_VSCREENINFO fills a `fb_var_screeninfo`,
                // which `FbVarScreeninfo` mirrors field for field.
                let r = unsafe {
                    libc::ioctl(
                        file.as_raw_fd(),
                        FBIOGET_VSCREENINFO as _,
                        &mut v as *mut FbVarScreeninfo,
                    )
                };
                if r != 0 {
                    bail!(
                        "{}: not a framebuffer ({}); for a plain file give ?size=WxH&bpp=32",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                (v.xres, v.yres, v.bits_per_pixel)
            }
        };
        if bpp != 16 && bpp != 32 {
            bail!(
                "{}: {bpp} bits per pixel (16 or 32 supported)",
                path.display()
            );
        }
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            bail!("{}: framebuffer size {width}x{height}", path.display());
        }
        let line = width as usize * (bpp as usize / 8);
        Ok(Self {
            file,
            width,
            height,
            bpp,
            line,
            buf: vec![0; line * height as usize],
        })
    }
}

impl Sink for Framebuffer {
    fn write(&mut self, frame: &Frame, _pts: Duration) -> Result<()> {
        let (fw, fh) = (frame.width() as f64, frame.height() as f64);
        let scale = (self.width as f64 / fw).min(self.height as f64 / fh);
        let (dw, dh) = ((fw * scale) as u32, (fh * scale) as u32);
        let (ox, oy) = ((self.width - dw) / 2, (self.height - dh) / 2);
        self.buf.fill(0);
        let bytes = self.bpp as usize / 8;
        for y in 0..dh {
            let sy = ((y as f64 + 0.5) / scale) as u32;
            let Some(row) = frame.row(sy.min(frame.height() - 1)) else {
                continue;
            };
            let out = (oy + y) as usize * self.line;
            for x in 0..dw {
                let sx = (((x as f64 + 0.5) / scale) as u32).min(frame.width() - 1) as usize;
                let (r, g, b) = (row[sx * 3], row[sx * 3 + 1], row[sx * 3 + 2]);
                let o = out + (ox + x) as usize * bytes;
                if bytes == 4 {
                    self.buf[o..o + 4].copy_from_slice(&[b, g, r, 255]);
                } else {
                    let v =
                        (u16::from(r >> 3) << 11) | (u16::from(g >> 2) << 5) | u16::from(b >> 3);
                    self.buf[o..o + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&self.buf)?;
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(self.file.flush()?)
    }
}

#[cfg(feature = "gst")]
mod gst_sink {
    use super::*;
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    /// Encoders tried for `.mp4`/`.mkv`, best first.
    const ENCODERS: &[(&str, &str)] = &[
        ("nvv4l2h264enc", "nvvidconv ! nvv4l2h264enc ! h264parse"),
        ("x264enc", "x264enc tune=zerolatency speed-preset=ultrafast"),
        // Motion JPEG: always present (plugins-good), larger files. (libav's
        // avenc_mpeg4 is not used: with mp4mux it writes every pts as 0.)
        ("jpegenc", "jpegenc quality=90"),
    ];

    /// Frames pushed into a GStreamer pipeline through `appsrc`.
    pub struct GstSink {
        pipeline: gst::Pipeline,
        src: gst_app::AppSrc,
        size: Option<(u32, u32)>,
        fps: f64,
        name: String,
        row: Vec<u8>,
    }

    fn has(name: &str) -> bool {
        gst::ElementFactory::find(name).is_some()
    }

    impl GstSink {
        /// Encodes into a video file chosen by extension.
        pub fn file(path: &Path, fps: f64) -> Result<Self> {
            gst::init()?;
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let loc = path.to_str().context("sink path is not UTF-8")?;
            let loc = loc.replace('"', "\\\"");
            let chain = match ext.as_str() {
                "avi" => "jpegenc quality=90 ! avimux".to_string(),
                "mp4" | "mov" | "mkv" => {
                    let enc = ENCODERS
                        .iter()
                        .find(|(e, _)| has(e))
                        .map(|(_, c)| *c)
                        .context("no video encoder (install gstreamer1.0-plugins-ugly or -good)")?;
                    let mux = if ext == "mkv" {
                        "matroskamux"
                    } else {
                        "mp4mux"
                    };
                    format!("{enc} ! {mux}")
                }
                o => bail!(
                    "{}: unknown video extension {o:?} (mp4, mov, mkv, avi)",
                    path.display()
                ),
            };
            Self::pipeline(&format!("{chain} ! filesink location=\"{loc}\""), fps)
        }

        /// Feeds `videoconvert ! ELEMENTS`.
        pub fn pipeline(elements: &str, fps: f64) -> Result<Self> {
            gst::init()?;
            let desc = format!("appsrc name=fakewatch_src format=time ! videoconvert ! {elements}");
            let pipeline = gst::parse::launch(&desc)
                .with_context(|| format!("sink pipeline {elements:?}"))?
                .downcast::<gst::Pipeline>()
                .map_err(|_| anyhow::anyhow!("sink is not a pipeline"))?;
            let src = pipeline
                .by_name("fakewatch_src")
                .context("appsrc missing")?
                .downcast::<gst_app::AppSrc>()
                .map_err(|_| anyhow::anyhow!("not an appsrc"))?;
            Ok(Self {
                pipeline,
                src,
                size: None,
                fps,
                name: elements.into(),
                row: Vec::new(),
            })
        }

        fn check_bus(&self) -> Result<()> {
            if let Some(bus) = self.pipeline.bus() {
                while let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
                    if let gst::MessageView::Error(e) = m.view() {
                        bail!("sink {:?}: {}", self.name, e.error());
                    }
                }
            }
            Ok(())
        }
    }

    impl Sink for GstSink {
        fn write(&mut self, frame: &Frame, pts: Duration) -> Result<()> {
            let (w, h) = (frame.width(), frame.height());
            match self.size {
                None => {
                    let fps = gst::Fraction::approximate_f64(self.fps.max(1.0))
                        .unwrap_or(gst::Fraction::new(25, 1));
                    let caps = gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .field("width", w as i32)
                        .field("height", h as i32)
                        .field("framerate", fps)
                        .build();
                    self.src.set_caps(Some(&caps));
                    self.pipeline
                        .set_state(gst::State::Playing)
                        .map_err(|_| anyhow::anyhow!("sink {:?} does not start", self.name))?;
                    self.size = Some((w, h));
                }
                Some(s) if s != (w, h) => {
                    bail!("frame size changed from {}x{} to {w}x{h}", s.0, s.1)
                }
                Some(_) => {}
            }
            self.check_bus()?;
            // GStreamer's RGB rows are padded to 4 bytes.
            let stride = (w as usize * 3).div_ceil(4) * 4;
            let mut data = Vec::with_capacity(stride * h as usize);
            for y in 0..h {
                let row = frame.row(y).context("short frame")?;
                self.row.clear();
                self.row.extend_from_slice(&row[..w as usize * 3]);
                self.row.resize(stride, 0);
                data.extend_from_slice(&self.row);
            }
            let mut buf = gst::Buffer::from_mut_slice(data);
            {
                let b = buf.make_mut();
                b.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
                b.set_duration(gst::ClockTime::from_nseconds(
                    (1e9 / self.fps.max(1.0)) as u64,
                ));
            }
            self.src
                .push_buffer(buf)
                .map_err(|e| anyhow::anyhow!("sink {:?}: {e:?}", self.name))?;
            Ok(())
        }

        fn finish(&mut self) -> Result<()> {
            if self.size.is_none() {
                let _ = self.pipeline.set_state(gst::State::Null);
                return Ok(());
            }
            let _ = self.src.end_of_stream();
            let bus = self.pipeline.bus().context("no bus")?;
            let res = match bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            ) {
                Some(m) => match m.view() {
                    gst::MessageView::Error(e) => {
                        Err(anyhow::anyhow!("sink {:?}: {}", self.name, e.error()))
                    }
                    _ => Ok(()),
                },
                None => Err(anyhow::anyhow!(
                    "sink {:?}: no end of stream in 30 s",
                    self.name
                )),
            };
            let _ = self.pipeline.set_state(gst::State::Null);
            res
        }
    }

    impl Drop for GstSink {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse() {
        assert_eq!(
            "file:out.mp4".parse::<SinkSpec>().unwrap(),
            SinkSpec::File("out.mp4".into())
        );
        assert!(matches!(
            "mjpeg:127.0.0.1:8080".parse::<SinkSpec>().unwrap(),
            SinkSpec::Mjpeg(_)
        ));
        // A bare port serves on loopback only.
        assert_eq!(
            "mjpeg:8080".parse::<SinkSpec>().unwrap(),
            SinkSpec::Mjpeg("127.0.0.1:8080".parse().unwrap())
        );
        assert!("mjpeg:somehost".parse::<SinkSpec>().is_err());
        assert!("fb:/dev/fb0?size=10x10".parse::<SinkSpec>().is_err());
        assert!("bogus:x".parse::<SinkSpec>().is_err());
        assert!("file:".parse::<SinkSpec>().is_err());
    }

    #[cfg(feature = "gst")]
    #[test]
    fn video_files_keep_frames_and_timestamps() {
        for ext in ["mp4", "avi"] {
            let p = std::env::temp_dir().join(format!("fw-sink-{}.{ext}", std::process::id()));
            let mut s = open(&SinkSpec::File(p.clone()), 10.0).unwrap();
            for i in 0..10u8 {
                let f = Frame::filled(66, 48, [i * 20, 100, 200]).unwrap();
                s.write(&f, Duration::from_millis(u64::from(i) * 100))
                    .unwrap();
            }
            s.finish().unwrap();
            let mut r = fakewatch_sdk::video::VideoReader::open(p.to_str().unwrap()).unwrap();
            let mut ts = vec![];
            while let Some(f) = r.next_frame().unwrap() {
                assert_eq!((f.width(), f.height()), (66, 48));
                ts.push(f.timestamp.unwrap().as_millis());
            }
            assert_eq!(ts, (0..10).map(|i| i * 100).collect::<Vec<_>>(), "{ext}");
            let _ = std::fs::remove_file(&p);
        }
    }

    #[test]
    fn framebuffer_file_gets_scaled_bgra_pixels() {
        let p = std::env::temp_dir().join(format!("fw-fb-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 8 * 4 * 4]).unwrap();
        let spec: SinkSpec = format!("fb:{}?size=8x4&bpp=32", p.display())
            .parse()
            .unwrap();
        let mut s = open(&spec, 10.0).unwrap();
        // A 4x2 red frame fills the 8x4 screen exactly (scale 2).
        let f = Frame::filled(4, 2, [255, 0, 0]).unwrap();
        s.write(&f, Duration::ZERO).unwrap();
        s.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 8 * 4 * 4);
        assert!(bytes.chunks(4).all(|px| px == [0, 0, 255, 255]));
        let _ = std::fs::remove_file(&p);
        assert!("fb:/nonexistent/fb9"
            .parse::<SinkSpec>()
            .is_ok_and(|s| open(&s, 1.0).is_err()));
    }
}
