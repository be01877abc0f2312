//! Face extraction for training: runs the SDK's detector, aligner and
//! backbone on labelled images (or sampled video frames), in parallel, through
//! the on-disk [`EmbeddingCache`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Result;
use fakewatch_sdk::{Face, Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::{file_key, CachedFace, EmbeddingCache};

/// One input to extract.
#[derive(Debug, Clone)]
pub struct Job {
    /// Image file (a face crop or a frame).
    pub path: PathBuf,
}

/// Outcome of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The largest face of the input.
    Face(CachedFace),
    /// The detector found no face.
    NoFace,
    /// The input could not be read or decoded (the reason).
    Failed(String),
}

/// The subject of a crop or frame: its largest face.
pub fn largest(faces: &[Face]) -> Option<CachedFace> {
    faces
        .iter()
        .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
        .map(|f| CachedFace {
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
            Ok(k) => {
                match cache.get(&k) {
                    Some(Some(f)) => out[i] = Some(Outcome::Face(f.clone())),
                    Some(None) => out[i] = Some(Outcome::NoFace),
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
                let res = Frame::load(&jobs[i].path).and_then(|f| perception.analyze(&f));
                let o = match res {
                    Ok(faces) => largest(&faces).map_or(Outcome::NoFace, Outcome::Face),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                if tx.send((i, o)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (n, (i, o)) in rx.into_iter().enumerate() {
            if let (Some(k), Outcome::Face(_) | Outcome::NoFace) = (&keys[i], &o) {
                let face = match &o {
                    Outcome::Face(f) => Some(f.clone()),
                    _ => None,
                };
                cache.insert(k.clone(), face)?;
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
