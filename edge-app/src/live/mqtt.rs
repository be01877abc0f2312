//! MQTT output: QoS 1 publishing with an on-disk spool, so that events
//! raised while the broker is away are replayed when it returns.
//!
//! Every event is appended to `DIR/spool.ndjson` before it is published; the
//! byte offset up to which the broker has acknowledged everything lives in
//! `DIR/acked` (written by rename, so a crash leaves the old or the new
//! value). A restart replays what the last run could not deliver. Delivery is
//! at least once: after a reconnect the unacknowledged tail is published
//! again, and each event carries `run` + `seq` for de-duplication.
//!
//! When the disk refuses a write (full, read-only, gone), the spool goes on in
//! memory under the same byte bound (oldest dropped and counted when it is
//! reached) and rewrites the file from memory as soon as the disk takes it
//! again; the `acked` file is only ever written for a file that matches it.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

/// Default bound of the on-disk spool.
pub const DEFAULT_SPOOL_BYTES: u64 = 64 << 20;
/// Publishes in flight (unacknowledged) at once.
const WINDOW: usize = 32;
/// Wait between attempts to rewrite the spool after the disk refused a write.
const DISK_RETRY: Duration = Duration::from_secs(1);
/// First and largest wait between connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// `mqtt://host[:port]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host.
    pub host: String,
    /// Broker port (1883 by default).
    pub port: u16,
    /// Topic the events go to.
    pub topic: String,
}

impl std::str::FromStr for MqttTarget {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let rest = s
            .strip_prefix("mqtt://")
            .with_context(|| format!("{s:?}: expected mqtt://host[:port]/topic"))?;
        let (hostport, topic) = rest
            .split_once('/')
            .with_context(|| format!("{s:?}: no topic (mqtt://host[:port]/topic)"))?;
        if topic.is_empty() || topic.contains(['+', '#']) {
            bail!("{s:?}: topic must be non-empty and without wildcards");
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .with_context(|| format!("{s:?}: bad port {p:?}"))?,
            ),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            bail!("{s:?}: no host");
        }
        Ok(Self {
            host: host.into(),
            port,
            topic: topic.into(),
        })
    }
}

/// Counters of an [`MqttOutput`].
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Events acknowledged by the broker.
    pub acked: AtomicU64,
    /// Events published (including re-sends).
    pub published: AtomicU64,
    /// Events dropped because the spool was full.
    pub dropped: AtomicU64,
    /// Spool writes the disk refused (the events stayed in memory).
    pub disk_errors: AtomicU64,
}

#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    file: File,
    /// Byte offset of the first entry of `pending` in the file.
    base: u64,
    /// Unacknowledged entries in order: (end offset, payload).
    pending: VecDeque<(u64, Vec<u8>)>,
    end: u64,
    max_bytes: u64,
    closed: bool,
    /// Entries dropped from the front because the spool was full.
    front_dropped: u64,
    /// Whether the file (and `acked`) hold exactly `pending`; false after the
    /// disk refused a write, until a rewrite succeeds.
    on_disk: bool,
    /// No rewrite is tried before this (after a failed one).
    retry_at: Option<Instant>,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        let path = dir.join("spool.ndjson");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let acked = std::fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let len = file.metadata()?.len();
        let base = acked.min(len);
        file.seek(SeekFrom::Start(base))?;
        let mut pending = VecDeque::new();
        let mut offset = base;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            // A torn last line (crash mid-write) is dropped.
            if line.last() == Some(&b'\n') && line.len() > 1 {
                pending.push_back((offset, line[..line.len() - 1].to_vec()));
            }
        }
        if !pending.is_empty() {
            log::info!(
                "mqtt: {} undelivered event(s) from an earlier run will be replayed",
                pending.len()
            );
        }
        let mut s = Self {
            dir: dir.into(),
            file,
            base,
            pending,
            end: offset,
            max_bytes,
            closed: false,
            front_dropped: 0,
            on_disk: true,
            retry_at: None,
        };
        if let Err(e) = s.compact() {
            s.on_disk = false;
            log::warn!("mqtt: cannot rewrite the spool ({e:#}); events kept in memory until the disk takes them");
        }
        Ok(s)
    }

    fn pending_bytes(&self) -> u64 {
        self.end - self.base
    }

    /// Rewrites the file with only the pending entries. The new file is
    /// written and synced first, then `acked` is reset to 0, then the file is
    /// renamed into place: a crash in between replays acknowledged events
    /// (duplicates, which `run` + `seq` identify) but never skips one.
    fn compact(&mut self) -> Result<()> {
        let tmp = self.dir.join("spool.ndjson.tmp");
        {
            let mut f = File::create(&tmp)?;
            for (_, p) in &self.pending {
                f.write_all(p)?;
                f.write_all(b"\n")?;
            }
            f.sync_all()?;
        }
        write_by_rename(&self.dir, "acked", b"0")?;
        std::fs::rename(&tmp, self.dir.join("spool.ndjson"))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.dir.join("spool.ndjson"))?;
        let mut off = 0;
        for e in self.pending.iter_mut() {
            off += e.1.len() as u64 + 1;
            e.0 = off;
        }
        self.base = 0;
        self.end = off;
        self.on_disk = true;
        Ok(())
    }

    /// [`Self::compact`], turning a failure into in-memory operation.
    fn try_compact(&mut self, stats: &MqttStats) {
        let was = self.on_disk;
        if !was && self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.compact() {
            Ok(()) if !was => log::info!(
                "mqtt: spool back on disk ({} event(s) written)",
                self.pending.len()
            ),
            Ok(()) => {}
            Err(e) => self.disk_failed(&e, stats),
        }
    }

    fn disk_failed(&mut self, e: &anyhow::Error, stats: &MqttStats) {
        stats.disk_errors.fetch_add(1, Ordering::Relaxed);
        if self.on_disk {
            log::warn!(
                "mqtt: spool write failed ({e:#}); events kept in memory (at most {} bytes) until the disk takes them again",
                self.max_bytes
            );
        }
        self.on_disk = false;
        self.retry_at = Some(Instant::now() + DISK_RETRY);
    }

    fn write_acked(&self) -> Result<()> {
        write_by_rename(&self.dir, "acked", self.base.to_string().as_bytes())
    }

    /// Spools one event. Never fails: when the disk refuses it, the event is
    /// kept in memory (see the module docs).
    fn push(&mut self, payload: Vec<u8>, stats: &MqttStats) {
        let need = payload.len() as u64 + 1;
        if self.pending_bytes() + need > self.max_bytes {
            // Full of undelivered events: drop the oldest down to 3/4 of
            // the bound, so that the rewrite below happens rarely.
            let target = self.max_bytes - self.max_bytes / 4;
            let mut dropped = 0u64;
            while self.pending_bytes() + need > target {
                let Some((end, _)) = self.pending.pop_front() else {
                    break;
                };
                self.base = end;
                dropped += 1;
            }
            if self.pending.is_empty() {
                self.base = self.end;
            }
            self.front_dropped += dropped;
            stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            log::warn!("mqtt: spool full; dropped the {dropped} oldest undelivered event(s)");
        }
        if !self.on_disk || self.end + need > self.max_bytes {
            self.try_compact(stats);
        }
        if self.on_disk {
            let res = self
                .file
                .write_all(&payload)
                .and_then(|_| self.file.write_all(b"\n"));
            if let Err(e) = res {
                // A partial line may be left: the next rewrite replaces it.
                self.disk_failed(&e.into(), stats);
            }
        }
        self.end += need;
        self.pending.push_back((self.end, payload));
    }

    /// The first `n` pending entries were acknowledged. Never fails: a disk
    /// error leaves the spool in memory (a stale `acked` only causes
    /// re-sends after a restart).
    fn ack(&mut self, n: usize, stats: &MqttStats) {
        for _ in 0..n {
            if let Some((end, _)) = self.pending.pop_front() {
                self.base = end;
            }
        }
        if self.pending.is_empty() {
            self.base = self.end;
        }
        if !self.on_disk || self.base > self.max_bytes / 2 {
            self.try_compact(stats);
        } else if let Err(e) = self.write_acked() {
            self.disk_failed(&e, stats);
        }
    }
}

/// Writes `dir/name` through `dir/name.tmp` and a rename.
fn write_by_rename(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

struct Shared {
    spool: Mutex<Spool>,
    wake: Condvar,
    stats: MqttStats,
}

/// The MQTT publisher: a spool plus a thread that keeps a connection.
pub struct MqttOutput {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    target: MqttTarget,
}

impl std::fmt::Debug for MqttOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOutput")
            .field("target", &self.target)
            .finish()
    }
}

impl MqttOutput {
    /// Opens the spool in `spool_dir` and starts publishing to `target`.
    pub fn start(target: MqttTarget, spool_dir: &Path, max_bytes: u64) -> Result<Self> {
        let spool = Spool::open(spool_dir, max_bytes)?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            wake: Condvar::new(),
            stats: MqttStats::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop, target) = (shared.clone(), stop.clone(), target.clone());
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || publisher(&target, &shared, &stop))?
        };
        Ok(Self {
            shared,
            stop,
            thread: Some(thread),
            target,
        })
    }

    /// Spools one event for publishing.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        let mut s = self
            .shared
            .spool
            .lock()
            .map_err(|_| anyhow::anyhow!("mqtt spool poisoned"))?;
        s.push(payload.to_vec(), &self.shared.stats);
        drop(s);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> &MqttStats {
        &self.shared.stats
    }

    /// Waits up to `timeout` for the broker to acknowledge every spooled
    /// event, then stops; what is left stays in the spool for the next run.
    /// Returns the number of events left undelivered.
    pub fn finish(mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        if let Ok(mut s) = self.shared.spool.lock() {
            s.closed = true;
            while !s.pending.is_empty() && Instant::now() < deadline {
                let wait = deadline.saturating_duration_since(Instant::now());
                match self
                    .shared
                    .wake
                    .wait_timeout(s, wait.min(Duration::from_millis(100)))
                {
                    Ok((g, _)) => s = g,
                    Err(_) => return usize::MAX,
                }
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let left = self.shared.spool.lock().map_or(0, |s| s.pending.len());
        if left > 0 {
            log::warn!(
                "mqtt: {left} event(s) not acknowledged by {}:{}; kept in the spool for the next run",
                self.target.host,
                self.target.port
            );
        }
        left
    }
}

impl Drop for MqttOutput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn publisher(target: &MqttTarget, shared: &Shared, stop: &AtomicBool) {
    let mut backoff = BACKOFF.0;
    let client_id = format!("fakewatch-{}-{}", std::process::id(), rand_suffix());
    while !stop.load(Ordering::SeqCst) {
        match session(target, shared, stop, &client_id) {
            Ok(()) => return,
            Err(e) => {
                log::warn!(
                    "mqtt: {}:{}: {e:#}; retrying in {} ms",
                    target.host,
                    target.port,
                    backoff.as_millis()
                );
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// One connection: publishes the pending tail, returns `Ok` when stopped,
/// `Err` when the connection broke.
fn session(target: &MqttTarget, shared: &Shared, stop: &AtomicBool, id: &str) -> Result<()> {
    let mut opts = MqttOptions::new(id, target.host.clone(), target.port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, WINDOW * 2);
    let mut connected = false;
    // Publishes sent in this session, in order, waiting for their pkid.
    let mut awaiting_pkid: VecDeque<usize> = VecDeque::new();
    let mut by_pkid: HashMap<u16, usize> = HashMap::new();
    // Acknowledged indices (relative to the pending front) not yet contiguous.
    let mut acked_idx: std::collections::BTreeSet<usize> = Default::default();
    // Index of the next pending entry to publish, relative to the front.
    let mut next = 0usize;
    // How many front entries were acknowledged and removed in this session.
    let mut removed = 0usize;
    let dropped_at_start = shared
        .spool
        .lock()
        .map_err(|_| anyhow::anyhow!("spool poisoned"))?
        .front_dropped;
    let resync = |s: &Spool| -> Result<()> {
        if s.front_dropped != dropped_at_start {
            bail!("spool overflowed while publishing; resending from the oldest kept event");
        }
        Ok(())
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            let _ = client.disconnect();
            return Ok(());
        }
        if connected {
            let s = shared
                .spool
                .lock()
                .map_err(|_| anyhow::anyhow!("spool poisoned"))?;
            resync(&s)?;
            while next - removed < s.pending.len() && awaiting_pkid.len() + by_pkid.len() < WINDOW {
                let payload = s.pending[next - removed].1.clone();
                client
                    .try_publish(target.topic.clone(), QoS::AtLeastOnce, false, payload)
                    .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
                awaiting_pkid.push_back(next);
                next += 1;
                shared.stats.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                log::info!("mqtt: connected to {}:{}", target.host, target.port);
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(i) = awaiting_pkid.pop_front() {
                    by_pkid.insert(pkid, i);
                }
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(i) = by_pkid.remove(&ack.pkid) {
                    acked_idx.insert(i);
                    let mut n = 0;
                    while acked_idx.remove(&(removed + n)) {
                        n += 1;
                    }
                    if n > 0 {
                        let mut s = shared
                            .spool
                            .lock()
                            .map_err(|_| anyhow::anyhow!("spool poisoned"))?;
                        resync(&s)?;
                        s.ack(n, &shared.stats);
                        removed += n;
                        shared.stats.acked.fetch_add(n as u64, Ordering::Relaxed);
                        drop(s);
                        shared.wake.notify_all();
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{e}"),
            Err(rumqttc::RecvTimeoutError::Timeout) => {
                // Idle: sleep on the spool until there is something to send.
                let s = shared
                    .spool
                    .lock()
                    .map_err(|_| anyhow::anyhow!("spool poisoned"))?;
                if connected && next - removed >= s.pending.len() && by_pkid.is_empty() {
                    if s.closed && s.pending.is_empty() {
                        drop(s);
                        shared.wake.notify_all();
                    } else {
                        let _ = shared.wake.wait_timeout(s, Duration::from_millis(200));
                    }
                }
            }
            Err(rumqttc::RecvTimeoutError::Disconnected) => bail!("connection closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fw-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn targets_parse() {
        let t: MqttTarget = "mqtt://127.0.0.1:1884/fw/events".parse().unwrap();
        assert_eq!(t.port, 1884);
        assert_eq!(t.topic, "fw/events");
        assert_eq!("mqtt://broker/x".parse::<MqttTarget>().unwrap().port, 1883);
        for bad in [
            "tcp://a/x",
            "mqtt://a",
            "mqtt://a/",
            "mqtt://a:zz/x",
            "mqtt://a/#",
        ] {
            assert!(bad.parse::<MqttTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn spool_survives_reopen_and_acks_persist() {
        let d = scratch("reopen");
        let stats = MqttStats::default();
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        for i in 0..5 {
            s.push(format!("{{\"seq\":{i}}}").into_bytes(), &stats);
        }
        s.ack(2, &stats);
        drop(s);
        // A torn line from a crash is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("spool.ndjson"))
            .unwrap();
        f.write_all(b"{\"seq\":").unwrap();
        let s = Spool::open(&d, 1 << 20).unwrap();
        let left: Vec<_> = s
            .pending
            .iter()
            .map(|(_, p)| String::from_utf8_lossy(p).to_string())
            .collect();
        assert_eq!(left, ["{\"seq\":2}", "{\"seq\":3}", "{\"seq\":4}"]);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts() {
        let d = scratch("full");
        let stats = MqttStats::default();
        let mut s = Spool::open(&d, 40).unwrap();
        for i in 0..10 {
            s.push(format!("event-{i:03}").into_bytes(), &stats);
        }
        assert!(s.pending_bytes() <= 40);
        assert_eq!(s.pending.back().unwrap().1, b"event-009");
        assert_eq!(
            stats.dropped.load(Ordering::Relaxed) as usize + s.pending.len(),
            10
        );
        assert!(std::fs::metadata(d.join("spool.ndjson")).unwrap().len() <= 40);
    }

    #[test]
    fn a_disk_that_refuses_writes_loses_only_the_counted_oldest() {
        let d = scratch("diskfull");
        let stats = MqttStats::default();
        let mut s = Spool::open(&d, 400).unwrap();
        s.push(b"before".to_vec(), &stats);
        // The disk fills: appends fail with ENOSPC (`/dev/full`) and so do
        // rewrites (the directory becomes a path through a device file).
        s.file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let real_dir = std::mem::replace(&mut s.dir, PathBuf::from("/dev/full/spool"));
        for i in 0..40 {
            s.push(format!("event-{i:03}").into_bytes(), &stats);
        }
        assert!(!s.on_disk);
        assert!(stats.disk_errors.load(Ordering::Relaxed) >= 1);
        assert!(s.pending_bytes() <= 400);
        let dropped = stats.dropped.load(Ordering::Relaxed) as usize;
        assert!(dropped > 0, "the bound was reached");
        assert_eq!(dropped + s.pending.len(), 41, "every event kept or counted");
        assert_eq!(s.pending.back().unwrap().1, b"event-039");
        // Acknowledgements go on while the disk is full.
        s.ack(3, &stats);
        assert_eq!(stats.dropped.load(Ordering::Relaxed) as usize, dropped);
        // The disk is back: the next event (after the retry wait) rewrites
        // the file from memory, and a restart finds exactly what is pending.
        s.dir = real_dir;
        s.retry_at = None;
        s.push(b"after".to_vec(), &stats);
        assert!(s.on_disk);
        let want: Vec<Vec<u8>> = s.pending.iter().map(|(_, p)| p.clone()).collect();
        drop(s);
        let s = Spool::open(&d, 400).unwrap();
        let got: Vec<Vec<u8>> = s.pending.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(got, want);
        assert_eq!(got.last().unwrap(), b"after");
    }
}
