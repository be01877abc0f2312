//! `fakewatch run` settings: command-line flags, optionally read from a TOML
//! or JSON file (`--config`); flags given on the command line win. Unknown
//! keys in the file are errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// Arguments of `fakewatch run`.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunArgs {
    /// Settings file (TOML or JSON) with the same keys as the long flags
    /// (`source = "…"`, `sink = ["…"]`, `detect_every = 2`, …).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `v4l2:///dev/video0[?size=WxH&fps=N&format=MJPG|YUYV|NV12]`,
    /// `camera:N`, `file:///…` or a path, `rtsp://…`, `srt://…`, `udp://…`,
    /// `gst:PIPELINE`, `dir:DIR` (images), or `-` (raw frames on stdin).
    /// Repeatable: several sources are streams of one run sharing the
    /// models, each named `NAME=URI` (default `stream0`, `stream1`, …).
    #[arg(long)]
    #[serde(deserialize_with = "one_or_many")]
    pub source: Vec<String>,
    /// Output of overlaid frames, repeatable: `file:out.mp4`, `png-dir:DIR`,
    /// `mjpeg:HOST:PORT`, `fb:/dev/fb0`, `gst:autovideosink`. With several
    /// streams: `NAME=SINK` for one stream, or a sink with `{stream}` in it
    /// for each.
    #[arg(long)]
    pub sink: Vec<String>,
    /// Most streams one run takes (several `--source`s).
    #[arg(long)]
    pub max_streams: Option<usize>,
    /// Event output, repeatable: `-` (stdout), a file, `mqtt://host:port/topic`.
    #[arg(long)]
    pub events: Vec<String>,
    /// Model bundle directory (default: models/default).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Frame size of raw stdin frames, or of a V4L2 device (`WxH`).
    #[arg(long)]
    pub size: Option<String>,
    /// Pixel format of raw stdin frames: rgb24 or yuyv.
    #[arg(long)]
    pub format: Option<String>,
    /// Frame rate of sources that state none (image directories, stdin).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Process recordings as fast as possible instead of at their frame rate
    /// (then no frame is dropped).
    #[arg(long)]
    pub no_pace: bool,
    /// Start a recording again when it ends (soak tests, demos).
    #[arg(long = "loop")]
    #[serde(rename = "loop")]
    pub repeat: bool,
    /// Stop after this many source frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Run detection on at most every k-th frame (tracks carry the boxes in
    /// between); 1 = as often as the CPU allows.
    #[arg(long)]
    pub detect_every: Option<u32>,
    /// `NAME=K`: analyse stream NAME on every K-th frame (repeatable; the
    /// other streams follow --detect-every).
    #[arg(long, value_name = "NAME=K")]
    pub stream_detect_every: Vec<String>,
    /// Threads the analysis spreads each frame's detection and embedding
    /// over (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Scores kept per track for its verdict (sliding window).
    #[arg(long)]
    pub window: Option<usize>,
    /// Analyses of a track before its first verdict.
    #[arg(long)]
    pub verdict_after: Option<usize>,
    /// Override the bundle's decision threshold.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Frames buffered between capture and processing.
    #[arg(long)]
    pub queue: Option<usize>,
    /// Serve `/metrics`, `/healthz` and the status page on this address
    /// (also implied by an `mjpeg:` sink).
    #[arg(long)]
    pub http: Option<String>,
    /// Bearer token the HTTP server requires on every path but `/healthz`
    /// (also `FAKEWATCH_HTTP_TOKEN`; at least 8 characters).
    #[arg(long)]
    pub http_token: Option<String>,
    /// Seconds between `stats` events (0: none).
    #[arg(long)]
    pub stats_interval: Option<f64>,
    /// Directory of the MQTT spool.
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Bound of each MQTT spool, MiB.
    #[arg(long)]
    pub spool_max_mb: Option<u64>,
    /// Seconds to wait at the end for MQTT to deliver the spool.
    #[arg(long)]
    pub flush_timeout: Option<f64>,
    /// Most preview JPEGs per second.
    #[arg(long)]
    pub mjpeg_fps: Option<f64>,
}

/// A string or a list of strings (`source = "…"` or `source = ["…", "…"]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Defaults of the optional settings.
pub mod defaults {
    /// Frames buffered between capture and processing.
    pub const QUEUE: usize = 4;
    /// Analyse every frame the CPU allows.
    pub const DETECT_EVERY: u32 = 1;
    /// Scores per track window.
    pub const WINDOW: usize = 25;
    /// A track's first verdict after its first analysis.
    pub const VERDICT_AFTER: usize = 1;
    /// Seconds between stats events.
    pub const STATS_INTERVAL: f64 = 1.0;
    /// Seconds to wait for MQTT at the end.
    pub const FLUSH_TIMEOUT: f64 = 10.0;
    /// Preview frames per second.
    pub const MJPEG_FPS: f64 = 10.0;
    /// Most streams of one run.
    pub const MAX_STREAMS: usize = 8;
}

impl RunArgs {
    /// Reads the `--config` file (if any) under the command-line flags.
    pub fn merged(self) -> Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = load(&path)?;
        macro_rules! pick {
            ($($f:ident),*) => { $( let $f = self.$f.or(file.$f); )* };
        }
        pick!(
            max_streams,
            bundle,
            size,
            format,
            fps,
            max_frames,
            detect_every,
            threads,
            window,
            verdict_after,
            threshold,
            queue,
            http,
            http_token,
            stats_interval,
            spool_dir,
            spool_max_mb,
            flush_timeout,
            mjpeg_fps
        );
        Ok(Self {
            config: Some(path),
            source: if self.source.is_empty() {
                file.source
            } else {
                self.source
            },
            max_streams,
            sink: if self.sink.is_empty() {
                file.sink
            } else {
                self.sink
            },
            events: if self.events.is_empty() {
                file.events
            } else {
                self.events
            },
            stream_detect_every: if self.stream_detect_every.is_empty() {
                file.stream_detect_every
            } else {
                self.stream_detect_every
            },
            bundle,
            size,
            format,
            fps,
            no_pace: self.no_pace || file.no_pace,
            repeat: self.repeat || file.repeat,
            max_frames,
            detect_every,
            threads,
            window,
            verdict_after,
            threshold,
            queue,
            http,
            http_token,
            stats_interval,
            spool_dir,
            spool_max_mb,
            flush_timeout,
            mjpeg_fps,
        })
    }
}

/// Parses a settings file by extension (`.toml`, else JSON).
pub fn load(path: &Path) -> Result<RunArgs> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    parse(&text, is_toml).with_context(|| format!("{}", path.display()))
}

/// Parses settings text: TOML when `is_toml`, else JSON (also the fuzz
/// target `config`).
pub fn parse(text: &str, is_toml: bool) -> Result<RunArgs> {
    if is_toml {
        Ok(toml::from_str(text)?)
    } else {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fw-cfg-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn file_settings_sit_under_flags() {
        let p = write(
            "a.toml",
            "source = \"clip.mp4\"\nsink = [\"png-dir:out\"]\ndetect_every = 3\nloop = true\n",
        );
        let cli = RunArgs {
            config: Some(p),
            detect_every: Some(5),
            ..RunArgs::default()
        };
        let m = cli.merged().unwrap();
        assert_eq!(m.source, ["clip.mp4"]);
        assert_eq!(m.sink, ["png-dir:out"]);
        assert_eq!(m.detect_every, Some(5));
        assert!(m.repeat);
    }

    #[test]
    fn several_sources_in_a_file() {
        let p = write(
            "m.toml",
            "source = [\"cam1=a.mp4\", \"cam2=b.mp4\"]\nmax_streams = 3\n",
        );
        let m = RunArgs {
            config: Some(p),
            ..RunArgs::default()
        }
        .merged()
        .unwrap();
        assert_eq!(m.source, ["cam1=a.mp4", "cam2=b.mp4"]);
        assert_eq!(m.max_streams, Some(3));
        // Command-line sources replace the file's.
        let p = write("n.json", "{\"source\": \"x.mp4\"}");
        let m = RunArgs {
            config: Some(p),
            source: vec!["y.mp4".into()],
            ..RunArgs::default()
        }
        .merged()
        .unwrap();
        assert_eq!(m.source, ["y.mp4"]);
    }

    #[test]
    fn the_shipped_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/appliance.toml");
        let c = load(&p).unwrap();
        assert_eq!(c.sink, ["mjpeg:0.0.0.0:8080"]);
        assert_eq!(c.detect_every, Some(2));
    }

    #[test]
    fn the_shipped_multi_stream_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/streams.toml");
        let c = load(&p).unwrap();
        assert_eq!(c.source.len(), 4);
        assert_eq!(c.max_streams, Some(4));
        assert_eq!(c.stream_detect_every, ["lobby=6"]);
        assert_eq!(c.sink, ["file:/var/lib/fakewatch/rec/{stream}.mp4"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let p = write("b.toml", "source = \"x\"\ndetect_evrey = 3\n");
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("detect_evrey"), "{e}");
        let p = write("c.json", "{\"sourze\": \"x\"}");
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("sourze"), "{e}");
        assert!(load(Path::new("/nonexistent.toml")).is_err());
    }
}
