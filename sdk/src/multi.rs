//! Several streams through one detector ([`MultiSession`]).
//!
//! A broadcast monitor or a video-call gateway watches many channels at
//! once. Each stream keeps its own [`Session`] (tracks, per-track windows,
//! verdict, hysteresis) while the models are loaded once, in the shared
//! [`DeepfakeDetector`]. Two ways in:
//!
//! - **Synchronous**: [`MultiSession::process`] runs one frame of one stream
//!   now (what the C ABI's `fw_push_frame_on` does). Calls for different
//!   streams may run on different threads at the same time; calls for one
//!   stream run one after another.
//! - **Scheduled**: capture threads [`MultiSession::offer`] their newest
//!   frame without waiting; analysis workers call
//!   [`MultiSession::analyze_next`], which takes the pending frame of the
//!   stream that has waited longest since it was last served (round robin
//!   over the streams with a fresh frame). A busy stream cannot starve a
//!   quiet one: each stream holds at most one pending frame, and a newer
//!   frame replaces it (counted as superseded), so memory is bounded by
//!   `max_streams` frames plus those being analysed.
//!
//! Streams are isolated: a bad frame is an error of that stream only (and
//! counted in its [`StreamStats`]); a panic inside one stream's analysis
//! is caught, reported as that stream's error and its session restarted.
//! The number of streams is capped at construction; adding one more is an
//! error that says so.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::detector::{DeepfakeDetector, Session, Step};
use crate::{Error, Frame, Result};

/// A stream of a [`MultiSession`]; never reused after removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Counters of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Frames given with [`MultiSession::offer`].
    pub offered: u64,
    /// Frames analysed (either way in), including those that failed.
    pub analyzed: u64,
    /// Offered frames replaced by a newer one before a worker took them.
    pub superseded: u64,
    /// Analyses that failed (bad frame, model error, caught panic).
    pub errors: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// What [`MultiSession::analyze_next`] did.
#[derive(Debug)]
pub struct Analysis {
    /// The stream served.
    pub stream: StreamId,
    /// Its name.
    pub name: String,
    /// The caller's number of the frame (given to [`MultiSession::offer`]).
    pub seq: u64,
    /// When the frame was captured (given to [`MultiSession::offer`]).
    pub captured_at: Instant,
    /// The frame analysed, handed back (its buffer can be reused).
    pub frame: Frame,
    /// The step, or why the frame could not be analysed.
    pub result: Result<Step>,
}

/// A frame waiting for a worker.
#[derive(Debug)]
struct Pending {
    frame: Frame,
    seq: u64,
    /// Capture time.
    at: Instant,
}

/// The pending frame of a stream and its place in the round robin.
#[derive(Debug)]
struct Inbox {
    pending: Option<Pending>,
    /// A worker is analysing this stream's frame now.
    busy: bool,
    /// Value of the service counter when last served (0: never).
    served: u64,
    stats: StreamStats,
}

#[derive(Debug)]
struct Slot {
    name: String,
    session: Mutex<Session>,
    inbox: Mutex<Inbox>,
}

/// Streams, in id order, and the id the next one gets.
#[derive(Debug, Default)]
struct Streams {
    slots: BTreeMap<StreamId, Arc<Slot>>,
    next_id: u32,
}

/// Several streams sharing one detector; see the [module docs](self).
#[derive(Debug)]
pub struct MultiSession {
    detector: Arc<DeepfakeDetector>,
    max_streams: usize,
    live: bool,
    streams: RwLock<Streams>,
    /// Service counter of the round robin.
    turn: Mutex<u64>,
}

/// Locks `m`, taking the data of a poisoned lock (every critical section
/// here leaves its data consistent; analysis panics are caught outside).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MultiSession {
    /// Streams of live sessions ([`DeepfakeDetector::live_session`]: a track
    /// that ends leaves the verdict), at most `max_streams` (≥ 1) at a time.
    pub fn new(detector: Arc<DeepfakeDetector>, max_streams: usize) -> Result<Self> {
        Self::with_kind(detector, max_streams, true)
    }

    /// As [`Self::new`], with file sessions ([`DeepfakeDetector::session`]:
    /// every track stays in the verdict).
    pub fn for_files(detector: Arc<DeepfakeDetector>, max_streams: usize) -> Result<Self> {
        Self::with_kind(detector, max_streams, false)
    }

    fn with_kind(detector: Arc<DeepfakeDetector>, max_streams: usize, live: bool) -> Result<Self> {
        if max_streams == 0 {
            return Err(Error::InvalidConfig(
                "max_streams must be at least 1".into(),
            ));
        }
        Ok(Self {
            detector,
            max_streams,
            live,
            streams: RwLock::new(Streams::default()),
            turn: Mutex::new(0),
        })
    }

    /// The shared detector.
    pub fn detector(&self) -> &Arc<DeepfakeDetector> {
        &self.detector
    }

    /// The most streams open at a time.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Streams> {
        self.streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Streams> {
        self.streams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, id: StreamId) -> Result<Arc<Slot>> {
        self.read()
            .slots
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Stream {
                stream: id.to_string(),
                reason: "no such stream (never added, or removed)".into(),
            })
    }

    /// Opens a stream named `name` (non-empty, unique among open streams).
    /// Fails with [`Error::InvalidConfig`] when `max_streams` are open.
    pub fn add_stream(&self, name: &str) -> Result<StreamId> {
        if name.is_empty() {
            return Err(Error::InvalidConfig("a stream needs a name".into()));
        }
        let mut s = self.write();
        if s.slots.len() >= self.max_streams {
            return Err(Error::InvalidConfig(format!(
                "stream {name:?}: {} streams are open, the most this session takes \
                 (max_streams {})",
                s.slots.len(),
                self.max_streams
            )));
        }
        if s.slots.values().any(|slot| slot.name == name) {
            return Err(Error::InvalidConfig(format!(
                "stream {name:?} is already open"
            )));
        }
        let id = StreamId(s.next_id);
        s.next_id = s.next_id.checked_add(1).ok_or_else(|| {
            Error::InvalidConfig("stream ids are exhausted (2^32 streams opened)".into())
        })?;
        let session = if self.live {
            self.detector.live_session()
        } else {
            self.detector.session()
        };
        s.slots.insert(
            id,
            Arc::new(Slot {
                name: name.to_string(),
                session: Mutex::new(session),
                inbox: Mutex::new(Inbox {
                    pending: None,
                    busy: false,
                    served: 0,
                    stats: StreamStats::default(),
                }),
            }),
        );
        Ok(id)
    }

    /// Closes a stream; its pending frame is dropped. An analysis running
    /// on it finishes, and its result is still returned to that worker.
    pub fn remove_stream(&self, id: StreamId) -> Result<()> {
        self.write()
            .slots
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Error::Stream {
                stream: id.to_string(),
                reason: "no such stream".into(),
            })
    }

    /// The open streams, in id order.
    pub fn streams(&self) -> Vec<(StreamId, String)> {
        self.read()
            .slots
            .iter()
            .map(|(id, s)| (*id, s.name.clone()))
            .collect()
    }

    /// The stream named `name`, if open.
    pub fn find(&self, name: &str) -> Option<StreamId> {
        self.read()
            .slots
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, _)| *id)
    }

    /// Analyses `frame` as the next frame of stream `id` now.
    pub fn process(&self, id: StreamId, frame: &Frame) -> Result<Step> {
        let slot = self.slot(id)?;
        let result = run(&slot, frame);
        record(&mut lock(&slot.inbox).stats, &result);
        result
    }

    /// Makes `frame` (the caller's frame number `seq`, captured at
    /// `captured_at`) the pending frame of stream `id`, without waiting.
    /// Returns the older pending frame it replaced, which no worker will
    /// analyse (its buffer can be reused).
    pub fn offer(
        &self,
        id: StreamId,
        frame: Frame,
        seq: u64,
        captured_at: Instant,
    ) -> Result<Option<Frame>> {
        let slot = self.slot(id)?;
        let mut inbox = lock(&slot.inbox);
        inbox.stats.offered += 1;
        let old = inbox.pending.replace(Pending {
            frame,
            seq,
            at: captured_at,
        });
        if old.is_some() {
            inbox.stats.superseded += 1;
        }
        Ok(old.map(|p| p.frame))
    }

    /// Drops the pending frame of stream `id`, if any, and returns it.
    pub fn take_pending(&self, id: StreamId) -> Result<Option<Frame>> {
        let slot = self.slot(id)?;
        let mut inbox = lock(&slot.inbox);
        Ok(inbox.pending.take().map(|p| p.frame))
    }

    /// Takes the pending frame of the stream that has waited longest since
    /// it was last served (ties: the lower id), analyses it and returns the
    /// result; `None` when no stream has a frame that no other worker is
    /// analysing. Workers may call this from several threads.
    pub fn analyze_next(&self) -> Option<Analysis> {
        let (id, slot, pending) = {
            let streams = self.read();
            let mut turn = lock(&self.turn);
            let mut best: Option<(u64, StreamId, &Arc<Slot>)> = None;
            for (id, slot) in &streams.slots {
                let inbox = lock(&slot.inbox);
                if inbox.pending.is_some()
                    && !inbox.busy
                    && best.as_ref().is_none_or(|b| inbox.served < b.0)
                {
                    best = Some((inbox.served, *id, slot));
                }
            }
            let (_, id, slot) = best?;
            let mut inbox = lock(&slot.inbox);
            let pending = inbox.pending.take()?;
            *turn += 1;
            inbox.served = *turn;
            inbox.busy = true;
            (id, Arc::clone(slot), pending)
        };
        let result = run(&slot, &pending.frame);
        {
            let mut inbox = lock(&slot.inbox);
            inbox.busy = false;
            record(&mut inbox.stats, &result);
        }
        Some(Analysis {
            stream: id,
            name: slot.name.clone(),
            seq: pending.seq,
            captured_at: pending.at,
            frame: pending.frame,
            result,
        })
    }

    /// Runs `f` on stream `id`'s session (verdicts, counters, reset).
    pub fn with_session<R>(&self, id: StreamId, f: impl FnOnce(&mut Session) -> R) -> Result<R> {
        let slot = self.slot(id)?;
        let mut session = lock(&slot.session);
        Ok(f(&mut session))
    }

    /// Counters of stream `id`.
    pub fn stats(&self, id: StreamId) -> Result<StreamStats> {
        Ok(lock(&self.slot(id)?.inbox).stats.clone())
    }
}

/// One frame through a stream's session; a panic becomes that stream's
/// error and restarts its session.
fn run(slot: &Slot, frame: &Frame) -> Result<Step> {
    let mut session = lock(&slot.session);
    match catch_unwind(AssertUnwindSafe(|| session.step(frame))) {
        Ok(r) => r,
        Err(panic) => {
            session.reset();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(Error::Stream {
                stream: slot.name.clone(),
                reason: format!(
                    "internal error (panic) while analysing, session restarted: {what}"
                ),
            })
        }
    }
}

fn record(stats: &mut StreamStats, result: &Result<Step>) {
    stats.analyzed += 1;
    if let Err(e) = result {
        stats.errors += 1;
        stats.last_error = Some(e.to_string());
    }
}
