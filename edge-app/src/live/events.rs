//! Events of a live run: NDJSON lines to stdout or files, and MQTT.
//!
//! Every event is a JSON object with `event` (its kind), `run` (an id of this
//! run), `seq` (0, 1, 2, … within the run: `run` + `seq` identify an event
//! for de-duplication), `time_ms` (Unix time) and `t_ms` (since the start).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::mqtt::{MqttOutput, MqttTarget, DEFAULT_SPOOL_BYTES};

/// Where events go (`--events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTarget {
    /// `-`: standard output.
    Stdout,
    /// A file path (appended to).
    File(PathBuf),
    /// `mqtt://host:port/topic`.
    Mqtt(MqttTarget),
}

impl std::str::FromStr for EventTarget {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "-" | "stdout" => Self::Stdout,
            s if s.starts_with("mqtt://") => Self::Mqtt(s.parse()?),
            s if s.contains("://") => {
                anyhow::bail!("{s:?}: events go to `-`, a file path or mqtt://host:port/topic")
            }
            s => Self::File(PathBuf::from(s.strip_prefix("file:").unwrap_or(s))),
        })
    }
}

enum Writer {
    Stdout,
    File(BufWriter<File>),
}

struct Inner {
    seq: u64,
    writers: Vec<Writer>,
    failed: bool,
}

/// MQTT delivery counters of a run (the summary's `mqtt` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MqttCounts {
    /// Events the broker acknowledged.
    pub acked: u64,
    /// Publishes sent (re-sends included).
    pub published: u64,
    /// Oldest events dropped because the spool bound was reached.
    pub dropped: u64,
    /// Spool writes the disk refused (those events stayed in memory).
    pub disk_errors: u64,
}

/// Fans events out to every target; safe to share between threads.
pub struct EventHub {
    run: String,
    start: Instant,
    inner: Mutex<Inner>,
    mqtt: Vec<MqttOutput>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").field("run", &self.run).finish()
    }
}

/// Settings of the MQTT spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory of the spool (one subdirectory per target).
    pub dir: PathBuf,
    /// Bound of each spool on disk.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// `$FAKEWATCH_SPOOL`, or the user's cache directory.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("FAKEWATCH_SPOOL") {
            return d.into();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("fakewatch").join("spool")
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: Self::default_dir(),
            max_bytes: DEFAULT_SPOOL_BYTES,
        }
    }
}

impl EventHub {
    /// Opens every target.
    pub fn open(targets: &[EventTarget], spool: &SpoolConfig) -> Result<Self> {
        let mut writers = Vec::new();
        let mut mqtt = Vec::new();
        for t in targets {
            match t {
                EventTarget::Stdout => writers.push(Writer::Stdout),
                EventTarget::File(p) => {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .with_context(|| format!("opening event file {}", p.display()))?;
                    writers.push(Writer::File(BufWriter::new(f)));
                }
                EventTarget::Mqtt(m) => {
                    let name = format!("{}_{}_{}", m.host, m.port, m.topic)
                        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_");
                    mqtt.push(MqttOutput::start(
                        m.clone(),
                        &spool.dir.join(name),
                        spool.max_bytes,
                    )?);
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            run: format!("{:x}-{:x}", now.as_secs(), std::process::id()),
            start: Instant::now(),
            inner: Mutex::new(Inner {
                seq: 0,
                writers,
                failed: false,
            }),
            mqtt,
        })
    }

    /// Sends one event of kind `event` with `fields`.
    pub fn emit(&self, event: &str, fields: Value) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let mut obj = Map::new();
        obj.insert("event".into(), json!(event));
        obj.insert("run".into(), json!(self.run));
        obj.insert("seq".into(), json!(inner.seq));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        obj.insert("time_ms".into(), json!(now.as_millis() as u64));
        obj.insert(
            "t_ms".into(),
            json!(self.start.elapsed().as_secs_f64() * 1000.0),
        );
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        inner.seq += 1;
        let line = Value::Object(obj).to_string();
        let mut failed = false;
        for w in inner.writers.iter_mut() {
            let r = match w {
                Writer::Stdout => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").and_then(|_| out.flush())
                }
                Writer::File(f) => writeln!(f, "{line}").and_then(|_| f.flush()),
            };
            failed |= r.is_err();
        }
        if failed && !inner.failed {
            log::warn!("writing events failed (disk full or closed pipe?)");
        }
        inner.failed |= failed;
        drop(inner);
        for m in &self.mqtt {
            if let Err(e) = m.send(line.as_bytes()) {
                log::warn!("mqtt spool: {e:#}");
            }
        }
    }

    /// Events sent so far.
    pub fn count(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.seq)
    }

    /// MQTT counters summed over targets.
    pub fn mqtt_counts(&self) -> MqttCounts {
        use std::sync::atomic::Ordering::Relaxed;
        self.mqtt.iter().fold(MqttCounts::default(), |a, m| {
            let s = m.stats();
            MqttCounts {
                acked: a.acked + s.acked.load(Relaxed),
                published: a.published + s.published.load(Relaxed),
                dropped: a.dropped + s.dropped.load(Relaxed),
                disk_errors: a.disk_errors + s.disk_errors.load(Relaxed),
            }
        })
    }

    /// Flushes files and waits up to `timeout` for MQTT to deliver.
    pub fn finish(self, timeout: Duration) -> usize {
        if let Ok(mut inner) = self.inner.lock() {
            for w in inner.writers.iter_mut() {
                if let Writer::File(f) = w {
                    let _ = f.flush();
                }
            }
        }
        self.mqtt.into_iter().map(|m| m.finish(timeout)).sum()
    }
}

/// An [`EventHub`] as one stream sees it: in a multi-stream run every event
/// it emits carries the stream's name (`"stream"`); without a name the
/// events are exactly the hub's.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    hub: &'a EventHub,
    stream: Option<&'a str>,
}

impl<'a> Events<'a> {
    /// Events of stream `stream` (`None`: a single-stream run).
    pub fn new(hub: &'a EventHub, stream: Option<&'a str>) -> Self {
        Self { hub, stream }
    }

    /// Emits an event, adding the stream's name to an object's fields.
    pub fn emit(&self, event: &str, mut fields: Value) {
        if let (Some(name), Value::Object(m)) = (self.stream, &mut fields) {
            m.insert("stream".into(), json!(name));
        }
        self.hub.emit(event, fields);
    }

    /// The hub behind it.
    pub fn hub(&self) -> &'a EventHub {
        self.hub
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("-".parse::<EventTarget>().unwrap(), EventTarget::Stdout);
        assert_eq!(
            "file:/tmp/e.ndjson".parse::<EventTarget>().unwrap(),
            EventTarget::File("/tmp/e.ndjson".into())
        );
        assert!(matches!(
            "mqtt://h:1/t".parse::<EventTarget>().unwrap(),
            EventTarget::Mqtt(_)
        ));
        assert!("http://x/y".parse::<EventTarget>().is_err());
    }

    #[test]
    fn events_are_numbered_lines_with_common_fields() {
        let p = std::env::temp_dir().join(format!("fw-events-{}.ndjson", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let hub = EventHub::open(&[EventTarget::File(p.clone())], &SpoolConfig::default()).unwrap();
        hub.emit("start", json!({"source": "x"}));
        hub.emit("stop", json!({}));
        hub.finish(Duration::ZERO);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "start");
        assert_eq!(lines[0]["source"], "x");
        assert_eq!(lines[1]["seq"], 1);
        assert_eq!(lines[0]["run"], lines[1]["run"]);
    }
}
