//! Face extraction for training: runs the SDK's detector, aligner and
//! backbone on labelled images (or sampled video frames), in parallel, through
//! the on-disk [`EmbeddingCache`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::Result;
use fakewatch_sdk::sampling::Sampling;
use fakewatch_sdk::{Face, Frame, Perception};
use indicatif::{ProgressBar, ProgressStyle};

use crate::augment::AugmentConfig;
use crate::cache::{file_key, CachedFace, EmbeddingCache};
use crate::rng::Rng;
use crate::sbi::{self, SelfBlendConfig};

/// One input to extract.
#[derive(Debug, Clone)]
pub struct Job {
    /// Image (a face crop or a frame) or video file.
    pub path: PathBuf,
    /// Frames to take when the file is a video (`None`: an image).
    pub sampling: Option<Sampling>,
    /// What to do to each image or frame before analysis (`None`: nothing).
    pub transform: Option<Transform>,
}

impl Job {
    /// A file as it is.
    pub fn plain(path: PathBuf, sampling: Option<Sampling>) -> Self {
        Self {
            path,
            sampling,
            transform: None,
        }
    }
}

/// A change made to an image or frame before it is analysed: how the
/// trainer makes self-blended fakes and re-compressed test copies without
/// writing images to disk.
#[derive(Debug, Clone)]
pub enum Transform {
    /// A self-blended pseudo-fake of the largest face ([`sbi::self_blend`]);
    /// the seed (mixed with the frame index) picks the blend.
    SelfBlend {
        /// Seed of this job's blends.
        seed: u64,
        /// Generator settings.
        config: Arc<SelfBlendConfig>,
    },
    /// Training augmentations ([`AugmentConfig::apply`]); the seed (mixed
    /// with the frame index) picks them.
    Augment {
        /// Seed of this job's augmentations.
        seed: u64,
        /// Which augmentations, how likely.
        config: Arc<AugmentConfig>,
    },
    /// JPEG re-compression at this quality (1–100).
    Jpeg(u8),
}

/// A short digest of a configuration, for cache keys.
fn digest<T: serde::Serialize>(config: &T) -> String {
    let json = serde_json::to_string(config).unwrap_or_default();
    let h = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        json.as_bytes(),
    ));
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The generator of one frame's random choices.
fn frame_rng(seed: u64, index: u64) -> Rng {
    Rng::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Transform {
    /// The suffix of the job's cache key: everything that changes the pixels.
    pub fn tag(&self) -> String {
        match self {
            Self::SelfBlend { seed, config } => {
                format!(
                    "sbi{}-{}-{seed}",
                    sbi::GENERATOR_VERSION,
                    digest(config.as_ref())
                )
            }
            Self::Augment { seed, config } => format!("aug-{}-{seed}", digest(config.as_ref())),
            Self::Jpeg(q) => format!("jpeg{q}"),
        }
    }

    /// The transformed frame, or `None` when there is nothing to blend (no
    /// face found).
    fn apply(&self, perception: &Perception, frame: Frame, index: u64) -> Result<Option<Frame>> {
        match self {
            Self::Jpeg(q) => Ok(Some(frame.jpeg_roundtrip(*q)?)),
            Self::Augment { seed, config } => {
                let img = config.apply(&frame, &mut frame_rng(*seed, index))?;
                Ok(Some(img.to_frame()?))
            }
            Self::SelfBlend { seed, config } => {
                let dets = perception.detect(&frame)?;
                let Some(det) = dets
                    .iter()
                    .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
                else {
                    return Ok(None);
                };
                let mut rng = frame_rng(*seed, index);
                Ok(Some(sbi::self_blend(&frame, det, config, &mut rng)?.image))
            }
        }
    }
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
        let f = match &job.transform {
            None => f,
            Some(t) => match t
                .apply(perception, f, k)
                .map_err(|e| fakewatch_sdk::Error::InvalidFrame(format!("{e:#}")))?
            {
                Some(f) => f,
                None => return Ok(()),
            },
        };
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
            features: f.features.clone(),
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
                let mut k = match job.sampling {
                    None => sha,
                    Some(s) => format!("{sha}@{}", s.tag()),
                };
                if let Some(t) = &job.transform {
                    k = format!("{k}+{}", t.tag());
                }
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
