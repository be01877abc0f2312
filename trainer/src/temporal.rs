//! `fakewatch-train temporal`: temporal fakes made from real clips, the
//! per-track sequences of the SDK ([`fakewatch_sdk::sequence`]) extracted
//! from them, and the GRU sequence model ([`crate::sequence`]) trained on
//! them and compared with the frame model on clips it never saw.
//!
//! Temporal fakes (issue 26): each real clip's largest face is self-blended
//! ([`crate::sbi`]) frame by frame in three ways — `flicker` (new blend
//! parameters every frame), `stable` (the same parameters throughout: the
//! case a frame model already sees) and `jump` (stable, then other
//! parameters from the middle on) and `mouth` (the mouth region only, new
//! parameters every frame: a lip-sync fake's trace) — beside the untouched
//! clip as the real. The blended face is embedded at the real detection, as
//! a swap in place. Clips are split into train and test by name (seeded), so
//! test windows come from clips (and people) the model never saw. The GRU
//! learns on the train clips; the fusion of its logit with the frame score
//! ([`fakewatch_sdk::sequence::Fusion`]) is fitted on validation logits:
//! out-of-fold, each train clip scored by a GRU trained without its fold
//! (`--folds`, by clip). With `--bundle-out` the GRU and the fusion go into a
//! bundle beside the frame bundle's files. Each clip's steps are cached
//! (`--cache`), keyed by the bundle, the clip and the settings.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use fakewatch_sdk::backend::Backend;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::geometry::Detection;
use fakewatch_sdk::perception::Face;
use fakewatch_sdk::sequence::{Fusion, SequenceSpec, TrackSequence, FEATURES, FEATURE_SET};
use fakewatch_sdk::{Decision, DeepfakeDetector, Frame};
use serde::Serialize;

use crate::c3d::{train_c3d, C3dConfig, C3dModel};
use crate::rng::Rng;
use crate::sbi::{self_blend, BlendRegion, SelfBlendConfig};
use crate::sequence::{train_gru, SequenceConfig, SequenceModel};

/// Arguments of `fakewatch-train temporal`.
#[derive(Debug, clap::Args)]
pub struct TemporalArgs {
    /// Directory of real clips (`*.mp4`); the temporal fakes are made from them.
    #[arg(long)]
    real_clips: PathBuf,
    /// A labelled clip folder to evaluate on, never trained on
    /// (`labels.csv` with `file,label` columns).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Bundle with a classifier (its detector, backbone and classifier make
    /// the per-frame features).
    #[arg(long, default_value = "models/default")]
    bundle: PathBuf,
    /// Steps per sequence window.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Frames read per clip (every `--every`-th from the start).
    #[arg(long, default_value_t = 48)]
    frames: usize,
    /// Distance between read frames.
    #[arg(long, default_value_t = 2)]
    every: usize,
    /// Share of the real clips held out for testing (split by clip name).
    #[arg(long, default_value_t = 0.3)]
    test_share: f64,
    /// Hold out the clips whose names start with this (a source, e.g.
    /// `liveportrait_`) instead of a seeded share: leave one source out.
    #[arg(long)]
    hold_out: Option<String>,
    /// Folds (by clip) of the train clips for the out-of-fold logits the
    /// fusion rule is fitted on.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Features the GRU must not read, by name (`frame_logit` leaves the
    /// frame model's evidence to the fusion rule: the GRU then sees motion
    /// and appearance change only).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Directory of cached per-clip steps.
    #[arg(long, default_value = "target/temporal-cache")]
    cache: PathBuf,
    /// Write a bundle here: the frame bundle's models (referenced by
    /// relative path, not copied), `sequence.onnx` and the fusion rule.
    #[arg(long)]
    bundle_out: Option<PathBuf>,
    /// The sequence model: the GRU over motion features or the C3D network
    /// over face crops.
    #[arg(long, value_enum, default_value_t = ModelKind::Gru)]
    model: ModelKind,
    /// Side of the C3D's face crops, in pixels.
    #[arg(long, default_value_t = 64)]
    crop_size: u32,
    /// Passes of the C3D training over its clips.
    #[arg(long, default_value_t = 12)]
    c3d_epochs: usize,
    /// AdamW learning rate of the C3D.
    #[arg(long, default_value_t = 3e-3)]
    c3d_lr: f64,
    /// Seed of the split, the blends and the sequence model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory: `results.json`, `sequence.onnx`.
    #[arg(long)]
    out: PathBuf,
}

/// Which sequence model `temporal` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// The paper's LSTM baseline as a GRU over motion features.
    Gru,
    /// The paper's C3D baseline over face crops.
    C3d,
}

/// How a clip's face is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Variant {
    Real,
    Flicker,
    Stable,
    Jump,
    Mouth,
}

const VARIANTS: [Variant; 5] = [
    Variant::Real,
    Variant::Flicker,
    Variant::Stable,
    Variant::Jump,
    Variant::Mouth,
];

/// Salt of the fold draw (the test draw is unsalted, as before).
const FOLD_SALT: u64 = 0x0005_eed0_f7a1;

/// Whether clip `name` is held out for testing, and its fold among the
/// train clips.
fn split_of(name: &str, seed: u64, test_share: f64, folds: usize) -> (bool, usize) {
    let test = (name_hash(name, seed) % 1000) as f64 / 1000.0 < test_share;
    (
        test,
        (name_hash(name, seed ^ FOLD_SALT) % folds.max(1) as u64) as usize,
    )
}

/// Every step of one clip under one variant.
#[derive(Debug, Clone)]
struct ClipSteps {
    clip: String,
    test: bool,
    fold: usize,
    variant: Variant,
    steps: Vec<[f32; FEATURES]>,
    /// Face crops, one per step (C3D only).
    crops: Option<Vec<Vec<u8>>>,
}

/// FNV-1a of a name: a split that does not depend on the listing order.
fn name_hash(s: &str, seed: u64) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The largest face of a frame's detections.
fn largest(dets: Vec<Detection>) -> Option<Detection> {
    dets.into_iter().max_by(|a, b| {
        (a.bbox.width() * a.bbox.height()).total_cmp(&(b.bbox.width() * b.bbox.height()))
    })
}

/// A face of `frame` at `det`, scored: its P(fake) from the bundle.
fn scored(det: &DeepfakeDetector, frame: &Frame, d: &Detection) -> Result<(Face, f32)> {
    let face = det
        .perception()
        .faces_at(frame, vec![*d])?
        .pop()
        .context("no embedding")?;
    let p = det
        .score_faces(std::slice::from_ref(&face))?
        .first()
        .copied()
        .context("no score")?;
    Ok((face, p))
}

/// Faces per row of the strip that shows the generator.
const STRIP_FRAMES: usize = 8;
/// Side of a face in the strip.
const STRIP_TILE: u32 = 96;

/// What every clip is read with: the frame bundle and its detector, the
/// command's settings and the blend generator.
struct ClipReader<'a> {
    det: &'a DeepfakeDetector,
    bundle: &'a Bundle,
    a: &'a TemporalArgs,
    sbi: &'a SelfBlendConfig,
}

/// Reads `path` as `temporal` does (`--frames` frames, every `--every`-th)
/// and calls `visit` with each read frame's largest face under each of
/// `variants`: the frame as shown (self-blended, or untouched for `Real`),
/// the variant's index and the detection. A frame without a face, or a
/// blend that fails, is skipped for that variant, the same way for every
/// caller (so steps and crops of a clip line up).
fn for_each_face(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
    mut visit: impl FnMut(usize, u64, &Frame, &Detection) -> Result<()>,
) -> Result<()> {
    let name = path.to_string_lossy().into_owned();
    let mut reader = fakewatch_sdk::video::VideoReader::open(&name)?;
    let clip_seed = name_hash(&name, r.a.seed);
    let (mut index, mut read) = (0usize, 0usize);
    while read < r.a.frames {
        let Some(frame) = reader.next_frame()? else {
            break;
        };
        index += 1;
        if (index - 1) % r.a.every != 0 {
            continue;
        }
        read += 1;
        let Some(d) = largest(r.det.perception().detect(&frame)?) else {
            continue;
        };
        for (k, variant) in variants.iter().enumerate() {
            let per_frame = clip_seed ^ (read as u64).wrapping_mul(0x9E37);
            let blend_seed = match variant {
                Variant::Real => None,
                Variant::Flicker | Variant::Mouth => Some(per_frame),
                Variant::Stable => Some(clip_seed),
                Variant::Jump => Some(clip_seed ^ u64::from(read > r.a.frames / 2)),
            };
            let region = if *variant == Variant::Mouth {
                BlendRegion::Mouth
            } else {
                BlendRegion::Face
            };
            let cfg = SelfBlendConfig {
                region,
                ..r.sbi.clone()
            };
            let blended;
            let shown = match blend_seed {
                None => &frame,
                Some(s) => match self_blend(&frame, &d, &cfg, &mut Rng::new(s)) {
                    Ok(b) => {
                        blended = b.image;
                        &blended
                    }
                    Err(e) => {
                        log::debug!("{name}: {e}");
                        continue;
                    }
                },
            };
            visit(k, read as u64, shown, &d)?;
        }
    }
    Ok(())
}

/// The steps of `path` under `variants` (the untouched clip for `Real`);
/// with `strip`, the first [`STRIP_FRAMES`] faces of each variant too.
fn clip_steps(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
    mut strip: Option<&mut Vec<(Variant, Frame)>>,
) -> Result<Vec<(Variant, Vec<[f32; FEATURES]>)>> {
    let mut seqs: Vec<(Variant, TrackSequence, Vec<[f32; FEATURES]>)> = variants
        .iter()
        .map(|&v| (v, TrackSequence::default(), Vec::new()))
        .collect();
    for_each_face(r, path, variants, |k, read, shown, d| {
        let (variant, seq, rows) = &mut seqs[k];
        if let Some(st) = strip.as_deref_mut() {
            if st.iter().filter(|(v, _)| v == variant).count() < STRIP_FRAMES {
                if let Some(t) = fakewatch_sdk::draw::thumbnail(shown, &d.bbox, STRIP_TILE, 1.2) {
                    st.push((*variant, t));
                }
            }
        }
        let (face, p) = scored(r.det, shown, d)?;
        seq.push(read, face.detection.bbox, &face.embedding, p);
        if let Some(last) = seq.steps().last() {
            rows.push(last.features);
        }
        Ok(())
    })?;
    Ok(seqs.into_iter().map(|(v, _, rows)| (v, rows)).collect())
}

/// The face crops ([`fakewatch_sdk::sequence::face_crop`], `--crop-size`)
/// of `path` under `variants`, one per step of [`clip_steps`]; a face with
/// no crop (an empty box) gets a black one, so the two stay in line.
fn clip_crops(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
) -> Result<Vec<(Variant, Vec<Vec<u8>>)>> {
    let side = r.a.crop_size;
    let len = 3 * (side as usize).pow(2);
    let mut out: Vec<(Variant, Vec<Vec<u8>>)> = variants.iter().map(|&v| (v, Vec::new())).collect();
    for_each_face(r, path, variants, |k, _, shown, d| {
        let c = fakewatch_sdk::sequence::face_crop(shown, &d.bbox, side)
            .unwrap_or_else(|| vec![0; len]);
        out[k].1.push(c);
        Ok(())
    })?;
    Ok(out)
}

/// The cache file of one clip's `features` (a feature set and its
/// settings): the key covers the bundle's files, the clip (path, size,
/// modification time), the settings and the generator.
fn cache_file(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
    features: &str,
    ext: &str,
) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key_text = format!(
        "{:?}|{}|{}|{mtime}|{}|{}|{}|{variants:?}|{:?}|{}|{features}",
        r.bundle.manifest().files,
        path.display(),
        meta.len(),
        r.a.frames,
        r.a.every,
        r.a.seed,
        r.sbi,
        crate::sbi::GENERATOR_VERSION,
    );
    Ok(r.a
        .cache
        .join(format!("{:016x}.{ext}", name_hash(&key_text, 0))))
}

/// A clip's steps under each variant and, when `--model c3d`, its crops;
/// a variant whose crops do not line up with its steps loses its crops
/// (and so its C3D windows), with a warning.
type StepsAndCrops = Vec<(Variant, Vec<[f32; FEATURES]>, Option<Vec<Vec<u8>>>)>;

/// [`cached_clip_steps`] and, for the C3D, [`cached_clip_crops`].
fn clip_steps_and_crops(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
    strip: Option<&mut Vec<(Variant, Frame)>>,
) -> Result<StepsAndCrops> {
    let steps = cached_clip_steps(r, path, variants, strip)?;
    let mut crops = match r.a.model {
        ModelKind::Gru => Vec::new(),
        ModelKind::C3d => cached_clip_crops(r, path, variants)?,
    };
    Ok(steps
        .into_iter()
        .map(|(v, s)| {
            let c = crops
                .iter()
                .position(|(cv, _)| *cv == v)
                .map(|k| crops.swap_remove(k).1);
            let c = match c {
                Some(c) if c.len() == s.len() => Some(c),
                Some(c) => {
                    log::warn!(
                        "{}: {v:?} has {} steps but {} crops; left out of the C3D",
                        path.display(),
                        s.len(),
                        c.len()
                    );
                    None
                }
                None => None,
            };
            (v, s, c)
        })
        .collect())
}

/// [`clip_crops`] through the cache (`.crops` files: per variant its index
/// byte, the crop count as `u32` little-endian, then the crops).
fn cached_clip_crops(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
) -> Result<Vec<(Variant, Vec<Vec<u8>>)>> {
    let features = format!(
        "{}|{}",
        fakewatch_sdk::sequence::CROP_FEATURE_SET,
        r.a.crop_size
    );
    let file = cache_file(r, path, variants, &features, "crops")?;
    let len = 3 * (r.a.crop_size as usize).pow(2);
    if let Ok(bytes) = std::fs::read(&file) {
        match decode_crops(&bytes, len) {
            Some(v) => return Ok(v),
            None => log::warn!("{}: unreadable cache entry; recomputing", file.display()),
        }
    }
    let v = clip_crops(r, path, variants)?;
    let mut bytes = Vec::new();
    for (variant, crops) in &v {
        let k = VARIANTS.iter().position(|x| x == variant).unwrap_or(0);
        bytes.push(k as u8);
        bytes.extend_from_slice(&(crops.len() as u32).to_le_bytes());
        for c in crops {
            bytes.extend_from_slice(c);
        }
    }
    std::fs::create_dir_all(&r.a.cache)
        .with_context(|| format!("creating {}", r.a.cache.display()))?;
    std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    Ok(v)
}

/// Reads a `.crops` cache entry of crops of `len` bytes; `None` when it is
/// cut short or names no variant.
fn decode_crops(mut bytes: &[u8], len: usize) -> Option<Vec<(Variant, Vec<Vec<u8>>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let variant = *VARIANTS.get(usize::from(*bytes.first()?))?;
        let n = u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
        let body = bytes.get(5..5 + n.checked_mul(len)?)?;
        out.push((variant, body.chunks(len).map(<[u8]>::to_vec).collect()));
        bytes = &bytes[5 + n * len..];
    }
    Some(out)
}

/// Steps of every variant of one clip.
type VariantSteps = Vec<(Variant, Vec<[f32; FEATURES]>)>;

/// [`clip_steps`] through the cache: the key covers the bundle's files, the
/// clip (path, size, modification time), the settings and the generator.
fn cached_clip_steps(
    r: &ClipReader,
    path: &Path,
    variants: &[Variant],
    strip: Option<&mut Vec<(Variant, Frame)>>,
) -> Result<VariantSteps> {
    let file = cache_file(
        r,
        path,
        variants,
        fakewatch_sdk::sequence::FEATURE_SET,
        "json",
    )?;
    // A strip is drawn from decoded frames: it bypasses the cache.
    if strip.is_none() {
        if let Ok(bytes) = std::fs::read(&file) {
            match serde_json::from_slice::<VariantSteps>(&bytes) {
                Ok(v) => return Ok(v),
                Err(e) => log::warn!(
                    "{}: unreadable cache entry ({e}); recomputing",
                    file.display()
                ),
            }
        }
    }
    let v = clip_steps(r, path, variants, strip)?;
    std::fs::create_dir_all(&r.a.cache)
        .with_context(|| format!("creating {}", r.a.cache.display()))?;
    std::fs::write(&file, serde_json::to_vec(&v)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(v)
}

/// One row per variant (real, flicker, stable, jump) of its first faces,
/// labelled, for a person to see what the generator does over time.
fn write_strip(tiles: &[(Variant, Frame)], clip: &str, path: &Path) -> Result<()> {
    use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
    use embedded_graphics::prelude::Point;
    use embedded_graphics::text::Alignment;
    let label_w = 90u32;
    let (w, h) = (
        label_w + STRIP_FRAMES as u32 * (STRIP_TILE + 4),
        40 + VARIANTS.len() as u32 * (STRIP_TILE + 8),
    );
    let mut f = Frame::filled(w, h, [255, 255, 255])?;
    fakewatch_sdk::plot::text(
        &mut f,
        &format!("{clip}: one face per read frame, left to right"),
        Point::new(w as i32 / 2, 22),
        Alignment::Center,
    );
    for (row, v) in VARIANTS.iter().enumerate() {
        let top = 36 + row as u32 * (STRIP_TILE + 8);
        fakewatch_sdk::plot::small_text(
            &mut f,
            &format!("{v:?}").to_lowercase(),
            Point::new(8, (top + STRIP_TILE / 2) as i32),
            Rgb888::BLACK,
        );
        for (col, (_, t)) in tiles.iter().filter(|(tv, _)| tv == v).enumerate() {
            fakewatch_sdk::draw::blit(&mut f, t, label_w + col as u32 * (STRIP_TILE + 4), top);
        }
    }
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// The first steps of the windows of `steps` over `len` steps (stride
/// half a window).
fn window_starts(len: usize, steps: usize) -> impl Iterator<Item = usize> {
    let stride = (steps / 2).max(1);
    (0..).step_by(stride).take_while(move |s| s + steps <= len)
}

/// Windows of `steps` rows ([`window_starts`]), flattened.
fn windows(rows: &[[f32; FEATURES]], steps: usize) -> Vec<Vec<f32>> {
    window_starts(rows.len(), steps)
        .map(|s| rows[s..s + steps].iter().flatten().copied().collect())
        .collect()
}

/// Windows of `steps` crops (the starts of [`windows`]), each laid out as
/// one clip `[3, steps, side, side]`.
fn crop_windows(crops: &[Vec<u8>], steps: usize) -> Vec<Vec<u8>> {
    window_starts(crops.len(), steps)
        .map(|start| {
            let plane = crops[start].len() / 3;
            let mut clip = vec![0u8; 3 * steps * plane];
            for (t, c) in crops[start..start + steps].iter().enumerate() {
                for ch in 0..3 {
                    clip[(ch * steps + t) * plane..(ch * steps + t + 1) * plane]
                        .copy_from_slice(&c[ch * plane..(ch + 1) * plane]);
                }
            }
            clip
        })
        .collect()
}

/// One window of a clip: the fold of its clip, its variant, its motion
/// features and, for the C3D, its clip of crops.
struct Window {
    fold: usize,
    variant: Variant,
    feats: Vec<f32>,
    crops: Option<Vec<u8>>,
}

impl Window {
    fn fake(&self) -> bool {
        self.variant != Variant::Real
    }
}

/// The windows of one clip's steps and crops (crops only when given).
fn clip_windows(
    fold: usize,
    variant: Variant,
    steps: &[[f32; FEATURES]],
    crops: Option<&[Vec<u8>]>,
    n: usize,
) -> Vec<Window> {
    let feats = windows(steps, n);
    let mut crops = crops.map(|c| crop_windows(c, n).into_iter());
    feats
        .into_iter()
        .map(|f| Window {
            fold,
            variant,
            feats: f,
            crops: crops.as_mut().and_then(Iterator::next),
        })
        .collect()
}

/// A trained sequence model of either kind.
pub enum Trained {
    /// The GRU over motion features.
    Gru(SequenceModel),
    /// The C3D network over face crops.
    C3d(C3dModel),
}

impl Trained {
    /// The logits of windows (batched for the C3D).
    fn logits(&self, ws: &[&Window]) -> Result<Vec<f32>> {
        match self {
            Trained::Gru(m) => Ok(ws.iter().map(|w| m.logit(&w.feats)).collect()),
            Trained::C3d(m) => {
                let clips = ws
                    .iter()
                    .map(|w| w.crops.as_deref().context("a window without crops"))
                    .collect::<Result<Vec<&[u8]>>>()?;
                m.logits(&clips)
            }
        }
    }

    fn to_onnx(&self) -> Result<tract_onnx::pb::ModelProto> {
        match self {
            Trained::Gru(m) => m.to_onnx(),
            Trained::C3d(m) => m.to_onnx(),
        }
    }

    fn steps(&self) -> usize {
        match self {
            Trained::Gru(m) => m.steps,
            Trained::C3d(m) => m.steps,
        }
    }
}

/// The frame model's raw score of a window: the mean of its frames' P(fake)
/// (what the SDK's track window averages).
fn frame_raw(window: &[f32]) -> f32 {
    let n = window.len() / FEATURES;
    window
        .chunks(FEATURES)
        .map(|r| fakewatch_sdk::verdict::sigmoid(r[0]))
        .sum::<f32>()
        / n.max(1) as f32
}

/// A window's three scores: the frame model's reported score (calibrated
/// as the bundle says), the sequence model's logit, and the fused P(fake).
#[derive(Debug, Clone, Copy)]
struct Scores {
    frame: f32,
    sequence: f32,
    fused: f32,
}

/// Everything that scores a window.
struct Scorers<'a> {
    decision: &'a Decision,
    model: &'a Trained,
    fusion: Fusion,
}

impl Scorers<'_> {
    fn score(&self, ws: &[&Window]) -> Result<Vec<Scores>> {
        let z = self.model.logits(ws)?;
        Ok(ws
            .iter()
            .zip(z)
            .map(|(w, z)| {
                let frame = self.decision.probability(frame_raw(&w.feats));
                Scores {
                    frame,
                    sequence: z,
                    fused: self.fusion.apply(frame, z),
                }
            })
            .collect())
    }
}

/// The fusion rule: a logistic regression of the label on the frame
/// score's logit and the GRU logit, fitted on validation (out-of-fold)
/// `(frame score, GRU logit, fake)` triples (L-BFGS, balanced classes).
fn fit_fusion(rows: &[(f32, f32, bool)]) -> Result<Fusion> {
    let x: Vec<Vec<f32>> = rows
        .iter()
        .map(|&(p, z, _)| vec![fakewatch_sdk::verdict::logit(p), z])
        .collect();
    let y: Vec<bool> = rows.iter().map(|r| r.2).collect();
    let m = crate::logistic::fit_lbfgs(&x, &y, FUSION_L2, 500)?;
    let f = Fusion {
        frame: m.w[0],
        sequence: m.w[1],
        bias: m.b,
    };
    f.validate()?;
    Ok(f)
}

/// L2 strength of the fusion fit (two standardised inputs).
const FUSION_L2: f32 = 1e-2;

/// One row of the results.
#[derive(Debug, Serialize)]
struct Row {
    set: String,
    items: usize,
    frame_auc: Option<f64>,
    sequence_auc: Option<f64>,
    fused_auc: Option<f64>,
}

impl Row {
    fn of(set: String, scores: &[(Scores, bool)]) -> Self {
        let labels: Vec<bool> = scores.iter().map(|(_, l)| *l).collect();
        let auc = |f: &dyn Fn(&Scores) -> f32| {
            let v: Vec<f64> = scores.iter().map(|(s, _)| f64::from(f(s))).collect();
            crate::metrics::roc_auc(&v, &labels)
        };
        Self {
            set,
            items: scores.len(),
            frame_auc: auc(&|s| s.frame),
            sequence_auc: auc(&|s| s.sequence),
            fused_auc: auc(&|s| s.fused),
        }
    }
}

/// A bundle to write: a frame bundle plus a sequence model and its fusion.
pub struct SequenceBundle<'a> {
    /// The frame bundle (its models are referenced, not copied).
    pub base: &'a Bundle,
    /// The trained sequence model.
    pub model: &'a Trained,
    /// The fusion rule.
    pub fusion: Fusion,
    /// Source frames between two steps of the training windows.
    pub frame_step: usize,
    /// Provenance (command, data, seed) for the manifest's `training`.
    pub training: serde_json::Value,
    /// Measured results for the manifest's `metrics`.
    pub metrics: serde_json::Value,
}

impl SequenceBundle<'_> {
    /// Writes the bundle to `out`: the frame bundle's manifest with its
    /// files referenced from `out`, `sequence.onnx` and the `sequence`
    /// section; then loads it through the SDK and checks that its sequence
    /// model gives the trainer's logit on a probe window.
    pub fn write(&self, out: &Path, backend: &dyn Backend) -> Result<()> {
        let base = self.base;
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut m = base.manifest().clone();
        m.map_paths(|f| {
            crate::fit::relative(&base.resolve(f)?, out)
                .map_err(|e| fakewatch_sdk::Error::InvalidConfig(format!("{f}: {e:#}")))
        })?;
        let seq_file = "sequence.onnx";
        crate::onnx::save(&self.model.to_onnx()?, &out.join(seq_file))?;
        m.files.insert(
            seq_file.into(),
            fakewatch_sdk::bundle::sha256_file(&out.join(seq_file))?,
        );
        m.name = format!("{}-temporal", m.name);
        m.created = crate::fit::rfc3339_now();
        let (features, crop_size) = match self.model {
            Trained::Gru(_) => (FEATURE_SET, None),
            Trained::C3d(c) => (
                fakewatch_sdk::sequence::CROP_FEATURE_SET,
                Some(u32::try_from(c.side)?),
            ),
        };
        m.sequence = Some(SequenceSpec {
            file: seq_file.into(),
            features: features.into(),
            steps: self.model.steps(),
            frame_step: Some(self.frame_step),
            crop_size,
            fusion: self.fusion,
        });
        m.training = Some(serde_json::json!({
            "frame_bundle": base.manifest().name,
            "sequence": self.training,
            "frame_training": base.manifest().training,
        }));
        m.metrics = Some(self.metrics.clone());
        std::fs::write(
            out.join(fakewatch_sdk::bundle::BUNDLE_FILE),
            serde_json::to_vec_pretty(&m)?,
        )?;
        // Read back through the SDK: hashes, the section, and the model.
        let loaded = Bundle::load(out)?;
        let q = fakewatch_sdk::sequence::SequenceScorer::from_bundle(&loaded, backend)?
            .context("the written bundle has no sequence model")?;
        let steps = self.model.steps();
        let mut seq = TrackSequence::default();
        let mut probe = Vec::with_capacity(steps * FEATURES);
        let mut crops = Vec::new();
        for k in 0..steps {
            let mut f = [0f32; FEATURES];
            for (j, v) in f.iter_mut().enumerate() {
                *v = ((k * FEATURES + j) as f32 * 0.37).sin();
            }
            seq.push_features(k as u64, f);
            probe.extend_from_slice(&f);
            if let Trained::C3d(c) = self.model {
                let crop: Vec<u8> = (0..3 * c.side * c.side)
                    .map(|i| (((i + 7 * k) as f32 * 0.61).sin() * 127.0 + 128.0) as u8)
                    .collect();
                seq.push_crop(&crop, c.side, steps)?;
                crops.push(crop);
            }
        }
        let got = q.logit(&seq)?.context("probe window too short")?;
        let window = Window {
            fold: 0,
            variant: Variant::Real,
            feats: probe,
            crops: crop_windows(&crops, steps).pop(),
        };
        let want = self.model.logits(&[&window])?[0];
        ensure!(
            (got - want).abs() <= SDK_TOLERANCE * want.abs().max(1.0),
            "the bundle's sequence model gives {got}, the trainer's {want}"
        );
        log::info!(
            "bundle written to {} (probe logit through the SDK {got:.5}, trainer {want:.5})",
            out.display()
        );
        Ok(())
    }
}

/// How far the SDK's run of the written sequence model may be from the
/// trainer's own forward pass (relative, or absolute below 1).
const SDK_TOLERANCE: f32 = 1e-4;

/// Runs `fakewatch-train temporal`.
pub fn run(a: TemporalArgs, backend: &dyn Backend) -> Result<()> {
    ensure!(
        a.steps >= 2
            && a.steps <= fakewatch_sdk::sequence::CAPACITY
            && a.frames >= a.steps
            && a.every >= 1,
        "bad sizes"
    );
    // Checked before the long extraction.
    let ignore = a
        .ignore
        .iter()
        .map(|n| {
            fakewatch_sdk::sequence::FEATURE_NAMES
                .iter()
                .position(|f| f == n)
                .with_context(|| {
                    format!(
                        "--ignore {n}: not a feature of {FEATURE_SET} ({})",
                        fakewatch_sdk::sequence::FEATURE_NAMES.join(", ")
                    )
                })
        })
        .collect::<Result<Vec<usize>>>()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bundle = Bundle::load(&a.bundle)?;
    ensure!(
        bundle.manifest().classifier.is_some(),
        "{}: the bundle needs a classifier",
        a.bundle.display()
    );
    ensure!(
        bundle.manifest().sequence.is_none(),
        "{}: the frame bundle already has a sequence model",
        a.bundle.display()
    );
    let det = DeepfakeDetector::from_bundle(&bundle, backend)?;
    let decision = bundle.decision();
    let sbi = SelfBlendConfig::default();
    let reader = ClipReader {
        det: &det,
        bundle: &bundle,
        a: &a,
        sbi: &sbi,
    };
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&a.real_clips)
        .with_context(|| format!("reading {}", a.real_clips.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    clips.sort();
    ensure!(clips.len() >= 4, "need at least 4 real clips");
    let started = std::time::Instant::now();
    let mut all: Vec<ClipSteps> = Vec::new();
    let mut strip_done = false;
    let bar = indicatif::ProgressBar::new(clips.len() as u64);
    for clip in &clips {
        let name = clip
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let (mut test, fold) = split_of(&name, a.seed, a.test_share, a.folds);
        if let Some(prefix) = &a.hold_out {
            test = name.starts_with(prefix.as_str());
        }
        // The first held-out clip is shown, for a person to check the fakes.
        let show = test && !strip_done;
        let mut strip = Vec::new();
        let strip_arg = show.then_some(&mut strip);
        match clip_steps_and_crops(&reader, clip, &VARIANTS, strip_arg) {
            Ok(v) => {
                for (variant, steps, crops) in v {
                    all.push(ClipSteps {
                        clip: name.clone(),
                        test,
                        fold,
                        variant,
                        steps,
                        crops,
                    });
                }
            }
            Err(e) => log::warn!("{name}: {e:#}"),
        }
        if show && !strip.is_empty() {
            let path = a.out.join("strip.png");
            write_strip(&strip, &name, &path)?;
            log::info!(
                "{name}: the temporal fakes next to the real clip in {}",
                path.display()
            );
            strip_done = true;
        }
        bar.inc(1);
        log::info!(
            "{name} ({}, {:.0} s)",
            if test { "test" } else { "train" },
            started.elapsed().as_secs_f64()
        );
    }
    bar.finish_and_clear();
    ensure!(
        all.iter().any(|c| c.test) && all.iter().any(|c| !c.test),
        "the split left no test clip or no train clip (--hold-out, --test-share)"
    );
    // A C3D sees only windows with crops (every column scores the same ones).
    let windows_of = |test: bool| -> Vec<Window> {
        all.iter()
            .filter(|c| c.test == test)
            .flat_map(|c| clip_windows(c.fold, c.variant, &c.steps, c.crops.as_deref(), a.steps))
            .filter(|w| a.model == ModelKind::Gru || w.crops.is_some())
            .collect()
    };
    let (train, test) = (windows_of(false), windows_of(true));
    let cfg = SequenceConfig {
        seed: a.seed,
        ignore,
        ..SequenceConfig::default()
    };
    let c3d_cfg = C3dConfig {
        epochs: a.c3d_epochs,
        lr: a.c3d_lr,
        seed: a.seed,
        ..C3dConfig::default()
    };
    let fit = |ws: &[&Window]| -> Result<Trained> {
        let y: Vec<bool> = ws.iter().map(|w| w.fake()).collect();
        match a.model {
            ModelKind::Gru => {
                let x: Vec<Vec<f32>> = ws.iter().map(|w| w.feats.clone()).collect();
                Ok(Trained::Gru(train_gru(&x, &y, a.steps, FEATURES, &cfg)?))
            }
            ModelKind::C3d => {
                let x = ws
                    .iter()
                    .map(|w| w.crops.as_deref().context("a window without crops"))
                    .collect::<Result<Vec<&[u8]>>>()?;
                let t = std::time::Instant::now();
                let m = train_c3d(&x, &y, a.steps, a.crop_size as usize, &c3d_cfg)?;
                log::info!(
                    "C3D trained on {} clips in {:.0} s",
                    x.len(),
                    t.elapsed().as_secs_f64()
                );
                Ok(Trained::C3d(m))
            }
        }
    };
    // Out-of-fold logits: each train clip scored by a model that did not see it.
    let mut oof: Vec<(f32, f32, bool)> = Vec::new();
    for f in 0..a.folds.max(1) {
        let (inside, outside): (Vec<&Window>, Vec<&Window>) =
            train.iter().partition(|w| w.fold != f);
        if outside.is_empty() {
            continue;
        }
        let m = match fit(&inside) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("fold {f}: {e:#}");
                continue;
            }
        };
        for (w, z) in outside.iter().zip(m.logits(&outside)?) {
            oof.push((decision.probability(frame_raw(&w.feats)), z, w.fake()));
        }
    }
    let model = fit(&train.iter().collect::<Vec<_>>())?;
    crate::onnx::save(&model.to_onnx()?, &a.out.join("sequence.onnx"))?;
    let fusion = fit_fusion(&oof)?;
    let oof_auc = |f: &dyn Fn(&(f32, f32, bool)) -> f32| {
        let v: Vec<f64> = oof.iter().map(|o| f64::from(f(o))).collect();
        let l: Vec<bool> = oof.iter().map(|o| o.2).collect();
        crate::metrics::roc_auc(&v, &l)
    };
    let (oof_frame, oof_sequence, oof_fused) = (
        oof_auc(&|o| o.0),
        oof_auc(&|o| o.1),
        oof_auc(&|o| fusion.apply(o.0, o.1)),
    );
    log::info!(
        "fusion fitted on {} out-of-fold windows ({} folds): {fusion:?}; out-of-fold AUC frame {oof_frame:?}, {:?} {oof_sequence:?}, fused {oof_fused:?}",
        oof.len(),
        a.folds,
        a.model
    );
    let scorers = Scorers {
        decision: &decision,
        model: &model,
        fusion,
    };
    // Held-out clips: real against each kind of temporal fake, and all.
    let mut rows = Vec::new();
    for fake in [
        None,
        Some(Variant::Flicker),
        Some(Variant::Stable),
        Some(Variant::Jump),
        Some(Variant::Mouth),
    ] {
        let ws: Vec<&Window> = test
            .iter()
            .filter(|w| !w.fake() || fake.is_none() || Some(w.variant) == fake)
            .collect();
        let items: Vec<(Scores, bool)> = scorers
            .score(&ws)?
            .into_iter()
            .zip(ws.iter().map(|w| w.fake()))
            .collect();
        rows.push(Row::of(
            format!(
                "held-out clips, real vs {}",
                fake.map_or("all temporal fakes".into(), |v| format!("{v:?}")
                    .to_lowercase())
            ),
            &items,
        ));
    }
    // A labelled folder: one score per clip (mean over its windows).
    if let Some(dir) = &a.eval {
        let text = std::fs::read_to_string(dir.join("labels.csv"))
            .with_context(|| format!("reading {}/labels.csv", dir.display()))?;
        let mut items = Vec::new();
        for line in text.lines().skip(1) {
            let mut cols = line.split(',');
            let (Some(file), Some(label)) = (cols.next(), cols.next()) else {
                continue;
            };
            let path = dir.join(file);
            let (steps, crops) = match clip_steps_and_crops(&reader, &path, &[Variant::Real], None)
            {
                Ok(mut v) => v.pop().map(|(_, s, c)| (s, c)).unwrap_or_default(),
                Err(e) => {
                    log::warn!("{file}: {e:#}");
                    continue;
                }
            };
            let ws: Vec<Window> = clip_windows(0, Variant::Real, &steps, crops.as_deref(), a.steps)
                .into_iter()
                .filter(|w| a.model == ModelKind::Gru || w.crops.is_some())
                .collect();
            if ws.is_empty() {
                log::info!("{file}: fewer than {} steps with a face", a.steps);
                continue;
            }
            let n = ws.len() as f32;
            let sc = scorers.score(&ws.iter().collect::<Vec<_>>())?;
            let mean = |f: &dyn Fn(&Scores) -> f32| sc.iter().map(f).sum::<f32>() / n;
            items.push((
                Scores {
                    frame: mean(&|s| s.frame),
                    sequence: mean(&|s| s.sequence),
                    fused: mean(&|s| s.fused),
                },
                label == "fake",
            ));
        }
        rows.push(Row::of(
            format!("{} (one score per clip)", dir.display()),
            &items,
        ));
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    for r in &rows {
        println!(
            "{:<60} {:>5} items  frame-only AUC {}  {:?} AUC {}  fused AUC {}",
            r.set,
            r.items,
            fmt(r.frame_auc),
            a.model,
            fmt(r.sequence_auc),
            fmt(r.fused_auc)
        );
    }
    let split: Vec<_> = all
        .iter()
        .filter(|c| c.variant == Variant::Real)
        .map(|c| serde_json::json!({"clip": c.clip, "test": c.test, "fold": c.fold, "steps": c.steps.len()}))
        .collect();
    let results = serde_json::json!({
        "rows": rows, "clips": split, "train_windows": train.len(),
        "fusion": fusion, "fusion_windows": oof.len(), "folds": a.folds,
        "model": format!("{:?}", a.model).to_lowercase(),
        "out_of_fold_auc": {"frame": oof_frame, "sequence": oof_sequence, "fused": oof_fused},
        "steps": a.steps, "frames": a.frames, "every": a.every, "seed": a.seed,
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    if let Some(out) = &a.bundle_out {
        SequenceBundle {
            base: &bundle,
            model: &model,
            fusion,
            frame_step: a.every,
            training: serde_json::json!({
                "command": "fakewatch-train temporal",
                "real_clips": a.real_clips, "frames": a.frames, "every": a.every,
                "steps": a.steps, "test_share": a.test_share, "hold_out": a.hold_out, "folds": a.folds, "ignore": a.ignore,
                "seed": a.seed, "model": format!("{:?}", a.model).to_lowercase(),
                "gru": (a.model == ModelKind::Gru).then(|| format!("{cfg:?}")),
                "c3d": (a.model == ModelKind::C3d).then(|| format!("{c3d_cfg:?} crop_size {}", a.crop_size)),
            }),
            metrics: results,
        }
        .write(out, backend)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_and_scores() {
        let rows: Vec<[f32; FEATURES]> = (0..10).map(|k| [k as f32; FEATURES]).collect();
        let w = windows(&rows, 4);
        assert_eq!(w.len(), 4, "starts 0, 2, 4, 6");
        assert_eq!(w[1][0], 2.0);
        let want = (0..4)
            .map(|k| 1.0 / (1.0 + (-(k as f32)).exp()))
            .sum::<f32>()
            / 4.0;
        assert!((frame_raw(&w[0]) - want).abs() < 1e-6);
        assert!(windows(&rows[..3], 4).is_empty());
        assert_ne!(name_hash("a.mp4", 1), name_hash("b.mp4", 1));
        assert_eq!(name_hash("a.mp4", 1), name_hash("a.mp4", 1));
    }

    /// A small GRU with fixed weights (no training needed to test the path).
    fn fixed_model(steps: usize) -> SequenceModel {
        use crate::sequence::GruWeights;
        let (i, h) = (FEATURES, 4);
        let w = |n: usize, s: f32| (0..n).map(|k| ((k as f32 + 1.0) * s).sin() * 0.5).collect();
        SequenceModel {
            gru: GruWeights {
                inputs: i,
                hidden: h,
                w: w(3 * h * i, 0.7),
                r: w(3 * h * h, 1.3),
                wb: w(3 * h, 0.3),
                rb: w(3 * h, 0.9),
                out_w: w(h, 2.1),
                out_b: 0.2,
            },
            mean: vec![0.0; i],
            inv_std: vec![1.0; i],
            steps,
        }
    }

    /// A C3D network with small seeded weights.
    fn fixed_c3d(steps: usize, side: usize) -> C3dModel {
        let mut rng = Rng::new(11);
        let mut convs = Vec::new();
        let mut inputs = crate::c3d::STEM_CHANNELS;
        for (o, stride) in [(4, [1, 2, 2]), (4, [2, 2, 2]), (4, [2, 2, 2])] {
            convs.push(crate::c3d::Conv3d {
                inputs,
                outputs: o,
                stride,
                weight: (0..o * inputs * 27).map(|_| rng.uniform() - 0.5).collect(),
                bias: (0..o).map(|_| rng.uniform() - 0.5).collect(),
            });
            inputs = o;
        }
        C3dModel {
            steps,
            side,
            convs,
            out_w: (0..4 * crate::c3d::head_cells(side))
                .map(|_| rng.uniform() - 0.5)
                .collect(),
            out_b: -0.2,
        }
    }

    #[test]
    fn a_written_sequence_bundle_fuses_per_track_in_the_sdk() {
        written_bundle_fuses_per_track(Trained::Gru(fixed_model(3)), "gru");
    }

    #[test]
    fn a_written_c3d_bundle_fuses_per_track_in_the_sdk() {
        written_bundle_fuses_per_track(Trained::C3d(fixed_c3d(3, 32)), "c3d");
    }

    /// Writes a bundle of `model` over `models/default`, runs it beside the
    /// plain bundle on the test photo and checks each track's fused score
    /// against the rule applied to the plain score and the model's own
    /// logit of the track's ring.
    fn written_bundle_fuses_per_track(model: Trained, tag: &str) {
        use fakewatch_sdk::backend::TractBackend;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let base = Bundle::load(root.join("models/default")).unwrap();
        let frame = Frame::load(root.join("tests/fixtures/t1.jpg")).unwrap();
        let dir = std::env::temp_dir().join(format!("fw-seqbundle-{tag}-{}", std::process::id()));
        let fusion = Fusion {
            frame: 1.0,
            sequence: 2.0,
            bias: -0.5,
        };
        SequenceBundle {
            base: &base,
            model: &model,
            fusion,
            frame_step: 2,
            training: serde_json::json!({"test": true}),
            metrics: serde_json::json!({}),
        }
        .write(&dir, &TractBackend)
        .unwrap();
        let written = Bundle::load(&dir).unwrap();
        assert!(written.manifest().files.contains_key("sequence.onnx"));
        let plain = DeepfakeDetector::from_bundle(&base, &TractBackend).unwrap();
        let seq = DeepfakeDetector::from_bundle(&written, &TractBackend).unwrap();
        assert_eq!(
            seq.file_sampling(25),
            fakewatch_sdk::sampling::Sampling::Runs {
                n: 25,
                run: 3,
                stride: 2
            }
        );
        assert_eq!(
            plain.file_sampling(25),
            fakewatch_sdk::sampling::Sampling::Even(25)
        );
        let (mut a, mut b) = (plain.session(), seq.session());
        for k in 0..3 {
            a.process(&frame).unwrap();
            b.process(&frame).unwrap();
            let (va, vb) = (a.verdict(), b.verdict());
            assert_eq!(va.tracks.len(), vb.tracks.len());
            assert!(va.tracks.len() >= 2, "the test photo has several faces");
            for (ta, tb) in va.tracks.iter().zip(&vb.tracks) {
                if k < 2 {
                    // Fewer steps than the window: the frame score alone.
                    assert_eq!(ta, tb);
                    continue;
                }
                let track = b.sequence(tb.id).unwrap();
                let z = match &model {
                    Trained::Gru(m) => m.logit(&track.window(3).unwrap()),
                    Trained::C3d(m) => {
                        let clip: Vec<u8> = track
                            .crops()
                            .unwrap()
                            .window(3)
                            .unwrap()
                            .iter()
                            .map(|&v| v as u8)
                            .collect();
                        m.logits(&[&clip]).unwrap()[0]
                    }
                };
                assert_eq!(tb.frame_score, Some(ta.score));
                let sq = tb.sequence_score.unwrap();
                assert!((sq - fakewatch_sdk::verdict::sigmoid(z)).abs() < 1e-4);
                let want = fusion.apply(ta.score, z);
                assert!((tb.score - want).abs() < 1e-4, "{} vs {want}", tb.score);
            }
            if k == 2 {
                let best = vb.tracks.iter().map(|t| t.score).fold(0f32, f32::max);
                assert_eq!(vb.score, Some(best), "the worst fused track decides");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fusion_weighs_the_input_that_separates() {
        // The sequence logit separates the classes, the frame score is noise.
        let rows: Vec<(f32, f32, bool)> = (0..400)
            .map(|k| {
                let fake = k % 2 == 1;
                let noise = ((k as f32) * 0.77).sin() * 0.5;
                let p = 0.5 + 0.3 * ((k as f32) * 1.91).sin();
                (p, if fake { 1.0 } else { -1.0 } + noise, fake)
            })
            .collect();
        let f = fit_fusion(&rows).unwrap();
        assert!(f.sequence > 1.0, "{f:?}");
        assert!(f.frame.abs() < 0.3 * f.sequence, "{f:?}");
        assert!(fit_fusion(&[]).is_err());
    }

    #[test]
    fn splits_and_relative_paths() {
        let names: Vec<String> = (0..200).map(|k| format!("clip{k}.mp4")).collect();
        let splits: Vec<(bool, usize)> = names.iter().map(|n| split_of(n, 42, 0.3, 5)).collect();
        let tests = splits.iter().filter(|s| s.0).count();
        assert!((40..80).contains(&tests), "{tests}");
        for f in 0..5 {
            let n = splits.iter().filter(|s| !s.0 && s.1 == f).count();
            assert!((15..45).contains(&n), "fold {f}: {n}");
        }
        // The test draw does not depend on the folds.
        for n in &names {
            assert_eq!(split_of(n, 42, 0.3, 5).0, split_of(n, 42, 0.3, 3).0);
        }
        let dir = std::env::temp_dir().join(format!("fw-relpath-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models/default")).unwrap();
        std::fs::create_dir_all(dir.join("models/default-temporal")).unwrap();
        std::fs::write(dir.join("models/default/classifier.onnx"), b"x").unwrap();
        std::fs::write(dir.join("models/faceres.onnx"), b"x").unwrap();
        let out = dir.join("models/default-temporal");
        assert_eq!(
            crate::fit::relative(&dir.join("models/default/classifier.onnx"), &out).unwrap(),
            "../default/classifier.onnx"
        );
        assert_eq!(
            crate::fit::relative(&dir.join("models/default/../faceres.onnx"), &out).unwrap(),
            "../faceres.onnx"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
