//! Face extraction for training: runs the SDK's detector, aligner and
//! backbone on labelled images (or sampled video frames), in parallel, through
//! the on-disk [`EmbeddingCache`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Result;
use fakewatch_sdk::sampling::Sampling;
use fakewatch_sdk::{Face, Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::{file_key, CachedFace, EmbeddingCache};

/// One input to extract.
#[derive(Debug, Clone)]
pub struct Job {
    /// Image (a face crop or a frame) or video file.
    pub path: PathBuf,
    /// Frames to take when the file is a video (`None`: an image).
    pub sampling: Option<Sampling>,
}

/// Outcome of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The largest face of each frame that has one (empty: no face found).
    Faces(Vec<CachedFace>),
    /// The input could not be read or decoded (the reason).
    Failed(String),
}

/// Whether `path` is a still image by its extension.
pub fn is_image(path: &std::path::Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["jpg", "jpeg", "png"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

fn process(perception: &Perception, job: &Job) -> Outcome {
    let mut faces = Vec::new();
    let mut analyze = |k: u64, f: Frame| -> fakewatch_sdk::Result<()> {
        let found = perception.analyze(&f)?;
        faces.extend(largest(&found).map(|mut c| {
            c.frame = k;
            c
        }));
        Ok(())
    };
    let res = match job.sampling {
        None => Frame::load(&job.path).and_then(|f| analyze(0, f)),
        Some(s) => each_video_frame(&job.path, s, &mut analyze),
    };
    match res {
        Ok(()) => Outcome::Faces(faces),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Hands each sampled frame to `f` as it is decoded.
#[cfg(feature = "gst")]
fn each_video_frame(
    path: &std::path::Path,
    s: Sampling,
    f: &mut dyn FnMut(u64, Frame) -> fakewatch_sdk::Result<()>,
) -> fakewatch_sdk::Result<()> {
    fakewatch_sdk::video::for_each_sampled(&path.to_string_lossy(), s, f).map(drop)
}

#[cfg(not(feature = "gst"))]
fn each_video_frame(
    path: &std::path::Path,
    _s: Sampling,
    _f: &mut dyn FnMut(u64, Frame) -> fakewatch_sdk::Result<()>,
) -> fakewatch_sdk::Result<()> {
    Err(fakewatch_sdk::Error::Video {
        uri: path.display().to_string(),
        reason: "this build has no GStreamer (feature `gst`)".into(),
    })
}

/// The subject of a crop or frame: its largest face.
pub fn largest(faces: &[Face]) -> Option<CachedFace> {
    faces
        .iter()
        .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
        .map(|f| CachedFace {
            frame: 0,
            score: f.detection.score,
            bbox: f.detection.bbox.to_array(),
            embedding: f.embedding.0.clone(),
        })
}

/// Extracts every job, `threads` at a time, reusing and filling `cache`.
/// Results come back in job order.
pub fn run(
    perception: &Perception,
    jobs: &[Job],
    cache: &mut EmbeddingCache,
    threads: usize,
) -> Result<Vec<Outcome>> {
    let pb = ProgressBar::new(jobs.len() as u64);
    pb.set_style(ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} {per_sec} eta {eta}",
    )?);
    pb.set_message("hashing");
    let mut out: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut keys = Vec::with_capacity(jobs.len());
    let mut todo = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match file_key(&job.path) {
            Ok(sha) => {
                let k = match job.sampling {
                    None => sha,
                    Some(s) => format!("{sha}@{}", s.tag()),
                };
                match cache.get(&k) {
                    Some(f) => out[i] = Some(Outcome::Faces(f.clone())),
                    None => todo.push(i),
                }
                keys.push(Some(k));
            }
            Err(e) => {
                out[i] = Some(Outcome::Failed(e.to_string()));
                keys.push(None);
            }
        }
    }
    let cached = jobs.len() - todo.len();
    pb.set_position(cached as u64);
    pb.set_message(format!("extracting ({cached} cached)"));

    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, todo) = (&next, &todo);
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(n) else { break };
                let o = process(perception, &jobs[i]);
                if tx.send((i, o)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (n, (i, o)) in rx.into_iter().enumerate() {
            if let (Some(k), Outcome::Faces(f)) = (&keys[i], &o) {
                cache.insert(k.clone(), f.clone())?;
            }
            if n % 64 == 0 {
                cache.flush()?;
            }
            out[i] = Some(o);
            pb.inc(1);
        }
        Ok(())
    })?;
    cache.flush()?;
    pb.finish_and_clear();
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("not processed".into())))
        .collect())
}
