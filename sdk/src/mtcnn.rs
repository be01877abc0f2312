//! MTCNN face detection (Zhang et al. 2016), following facenet-pytorch 2.6.0's
//! `detect_face` step by step so that detections match that reference:
//! image pyramid → PNet → per-scale NMS 0.5 → global NMS 0.7 → box regression
//! and squaring → RNet → NMS 0.7 → regression and squaring → ONet → landmarks
//! → regression → NMS 0.7 with the "min" overlap rule.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, InferenceModel, ShapePolicy, Tensor};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::geometry::{BBox, Detection, Landmarks, Point};
use crate::resample::{resize_area_chw, Normalize, Rect};

/// PNet's receptive field (pixels at its input scale).
pub const PNET_CELL: f32 = 12.0;
/// PNet's output stride.
pub const PNET_STRIDE: f32 = 2.0;
/// RNet's input side.
pub const RNET_SIZE: usize = 24;
/// ONet's input side.
pub const ONET_SIZE: usize = 48;
/// Default stage thresholds (PNet, RNet, ONet).
pub const DEFAULT_THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.9];
/// Default pyramid factor.
pub const DEFAULT_FACTOR: f32 = 0.709;
/// Default smallest face side in pixels.
pub const DEFAULT_MIN_FACE: f32 = 40.0;
/// IoU above which PNet candidates of one scale are merged.
pub const NMS_PNET_SCALE: f32 = 0.5;
/// IoU above which candidates are merged across scales and after RNet.
pub const NMS_STAGE: f32 = 0.7;
/// Overlap (intersection over the smaller box) above which ONet results are merged.
pub const NMS_FINAL_MIN: f32 = 0.7;

/// Detector parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtcnnConfig {
    /// Smallest face side to look for, in pixels of the input frame.
    pub min_face: f32,
    /// Pyramid scale step, in `(0, 1)`.
    pub factor: f32,
    /// Acceptance thresholds of PNet, RNet and ONet.
    pub thresholds: [f32; 3],
    /// Most crops sent to R/ONet in one batch.
    pub max_batch: usize,
    /// Most PNet candidates kept after the global NMS (the highest scoring).
    pub max_candidates: usize,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            min_face: DEFAULT_MIN_FACE,
            factor: DEFAULT_FACTOR,
            thresholds: DEFAULT_THRESHOLDS,
            max_batch: 256,
            max_candidates: 2000,
        }
    }
}

impl MtcnnConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        if !(self.min_face.is_finite() && self.min_face >= PNET_CELL) {
            return Err(Error::config(format!(
                "min_face {} must be >= {PNET_CELL}",
                self.min_face
            )));
        }
        if !(self.factor > 0.1 && self.factor < 0.95) {
            return Err(Error::config(format!(
                "factor {} must be in (0.1, 0.95)",
                self.factor
            )));
        }
        if self.thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::config(format!(
                "thresholds {:?} must be in [0, 1]",
                self.thresholds
            )));
        }
        if self.max_batch == 0 || self.max_candidates == 0 {
            return Err(Error::config("max_batch and max_candidates must be > 0"));
        }
        Ok(())
    }

    /// The pyramid scales for a `width × height` frame (largest first).
    pub fn scales(&self, width: u32, height: u32) -> Vec<f32> {
        let m = PNET_CELL / self.min_face;
        let mut minl = width.min(height) as f32 * m;
        let mut s = m;
        let mut out = Vec::new();
        while minl >= PNET_CELL {
            out.push(s);
            s *= self.factor;
            minl *= self.factor;
        }
        out
    }
}

/// Time spent in each stage of one [`Mtcnn::detect_timed`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectTimings {
    /// Building the image pyramid (resampling + normalising).
    pub pyramid: Duration,
    /// Running PNet over the pyramid.
    pub pnet: Duration,
    /// Cropping for and running RNet.
    pub rnet: Duration,
    /// Cropping for and running ONet.
    pub onet: Duration,
    /// Candidates after PNet + NMS, RNet and ONet.
    pub candidates: [usize; 3],
    /// Wall time of stage 1 (pyramid + PNet + NMS); with several threads
    /// `pyramid` and `pnet` add up the workers' time and exceed it.
    pub stage1_wall: Duration,
    /// Threads the detector used.
    pub threads: usize,
}

#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// The three-stage MTCNN detector.
pub struct Mtcnn {
    pnet: Arc<dyn InferenceModel>,
    rnet: Arc<dyn InferenceModel>,
    onet: Arc<dyn InferenceModel>,
    config: MtcnnConfig,
    threads: usize,
}

impl std::fmt::Debug for Mtcnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mtcnn")
            .field("config", &self.config)
            .field("threads", &self.threads)
            .finish()
    }
}

impl Mtcnn {
    /// Loads the three networks with `backend`. PNet gets a plan per pyramid
    /// level (`pnet_policy`); R/ONet a batch-1 plan (what tract runs fastest;
    /// backends with a larger preferred batch ignore the policy). The detector
    /// runs on the calling thread until [`Self::set_threads`] says otherwise.
    pub fn load(
        backend: &dyn Backend,
        pnet: &Path,
        rnet: &Path,
        onet: &Path,
        pnet_policy: ShapePolicy,
        config: MtcnnConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            pnet: backend.load(pnet, pnet_policy)?,
            rnet: backend.load(rnet, ShapePolicy::FixedBatch(1))?,
            onet: backend.load(onet, ShapePolicy::FixedBatch(1))?,
            config,
            threads: 1,
        })
    }

    /// Spreads each frame's pyramid levels and crops over `threads` threads
    /// (1 = the calling thread only; clamped to 1..=[`crate::parallel::MAX_THREADS`]).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.clamp(1, crate::parallel::MAX_THREADS);
    }

    /// Threads used per frame.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The detector's parameters.
    pub fn config(&self) -> &MtcnnConfig {
        &self.config
    }

    /// Replaces the parameters (validated first).
    pub fn set_config(&mut self, config: MtcnnConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Detects faces, highest ONet score first.
    pub fn detect(&self, frame: &Frame) -> Result<Vec<Detection>> {
        Ok(self.detect_timed(frame)?.0)
    }

    /// Detects faces and reports the time spent per stage.
    pub fn detect_timed(&self, frame: &Frame) -> Result<(Vec<Detection>, DetectTimings)> {
        let mut t = DetectTimings::default();
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        let cfg = &self.config;

        // Stage 1: PNet over the pyramid, levels spread over the threads
        // (cost ~ pixels), candidates concatenated in level order.
        let t_stage1 = Instant::now();
        t.threads = self.threads;
        let levels: Vec<(f32, usize, usize)> = cfg
            .scales(frame.width(), frame.height())
            .into_iter()
            .map(|scale| {
                (
                    scale,
                    (w * scale + 1.0) as usize,
                    (h * scale + 1.0) as usize,
                )
            })
            .collect();
        let per_level = crate::parallel::map(
            &levels,
            self.threads,
            |&(_, ws, hs)| (ws * hs) as f64,
            |&(scale, ws, hs)| {
                let t0 = Instant::now();
                let mut buf = vec![0f32; 3 * hs * ws];
                if !resize_area_chw(frame, Rect::full(frame), ws, hs, Normalize::MTCNN, &mut buf) {
                    return Ok((Vec::new(), t0.elapsed(), Duration::ZERO));
                }
                let input = Tensor::new(vec![1, 3, hs, ws], buf)?;
                let pyramid = t0.elapsed();
                let t1 = Instant::now();
                let out = self.pnet.run(&input)?;
                let pnet = t1.elapsed();
                let mut level = pnet_candidates(&out, scale, cfg.thresholds[0], self.pnet.name())?;
                nms(&mut level, NMS_PNET_SCALE, Overlap::Union);
                Ok((level, pyramid, pnet))
            },
        )?;
        let mut cands: Vec<Cand> = Vec::new();
        for (level, pyramid, pnet) in per_level {
            t.pyramid += pyramid;
            t.pnet += pnet;
            cands.extend(level);
        }
        t.stage1_wall = t_stage1.elapsed();
        nms(&mut cands, NMS_STAGE, Overlap::Union);
        cands.truncate(cfg.max_candidates);
        for c in &mut cands {
            let (bw, bh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [
                c.b[0] + c.reg[0] * bw,
                c.b[1] + c.reg[1] * bh,
                c.b[2] + c.reg[2] * bw,
                c.b[3] + c.reg[3] * bh,
            ];
            square(c);
        }
        t.candidates[0] = cands.len();

        // Stage 2: RNet on 24x24 crops.
        let t2 = Instant::now();
        if !cands.is_empty() {
            let (kept, out) = self.run_crops(&self.rnet, frame, &cands, RNET_SIZE)?;
            let mut next = Vec::new();
            for (k, &ci) in kept.iter().enumerate() {
                let (reg, prob) = (out[0].item(k), out[1].item(k));
                let score = prob.get(1).copied().unwrap_or(0.0);
                if score > cfg.thresholds[1] && reg.len() == 4 {
                    next.push(Cand {
                        b: cands[ci].b,
                        score,
                        reg: [reg[0], reg[1], reg[2], reg[3]],
                    });
                }
            }
            nms(&mut next, NMS_STAGE, Overlap::Union);
            for c in &mut next {
                bbreg(c);
                square(c);
            }
            cands = next;
        }
        t.rnet = t2.elapsed();
        t.candidates[1] = cands.len();

        // Stage 3: ONet on 48x48 crops, landmarks, final NMS.
        let t3 = Instant::now();
        let mut dets: Vec<(Cand, Landmarks)> = Vec::new();
        if !cands.is_empty() {
            let (kept, out) = self.run_crops(&self.onet, frame, &cands, ONET_SIZE)?;
            if out.len() != 3 {
                return Err(Error::model(
                    self.onet.name(),
                    "expected outputs reg, landmarks, prob",
                ));
            }
            for (k, &ci) in kept.iter().enumerate() {
                let (reg, lm, prob) = (out[0].item(k), out[1].item(k), out[2].item(k));
                let score = prob.get(1).copied().unwrap_or(0.0);
                if score <= cfg.thresholds[2] || reg.len() != 4 || lm.len() != 10 {
                    continue;
                }
                let b = cands[ci].b;
                let (bw, bh) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                let mut pts = [Point::default(); 5];
                for (i, p) in pts.iter_mut().enumerate() {
                    *p = Point {
                        x: bw * lm[i] + b[0] - 1.0,
                        y: bh * lm[5 + i] + b[1] - 1.0,
                    };
                }
                let mut c = Cand {
                    b,
                    score,
                    reg: [reg[0], reg[1], reg[2], reg[3]],
                };
                bbreg(&mut c);
                dets.push((c, Landmarks(pts)));
            }
            let boxes: Vec<Cand> = dets.iter().map(|d| d.0).collect();
            let keep = nms_indices(&boxes, NMS_FINAL_MIN, Overlap::Min);
            dets = keep.iter().map(|&i| dets[i]).collect();
        }
        t.onet = t3.elapsed();
        t.candidates[2] = dets.len();
        let out = dets
            .into_iter()
            .map(|(c, landmarks)| Detection {
                bbox: BBox::new(c.b[0], c.b[1], c.b[2], c.b[3]),
                score: c.score,
                landmarks,
            })
            .collect();
        Ok((out, t))
    }

    /// Crops every candidate (clamped to the frame as facenet-pytorch's `pad`
    /// does), resizes to `size`, runs `net` in chunks of its preferred batch
    /// spread over the threads. Returns the indices of the candidates that
    /// had a non-empty crop and the concatenated outputs.
    fn run_crops(
        &self,
        net: &Arc<dyn InferenceModel>,
        frame: &Frame,
        cands: &[Cand],
        size: usize,
    ) -> Result<(Vec<usize>, Vec<Tensor>)> {
        let batch = self.config.max_batch.min(net.preferred_batch()).max(1);
        let chunks: Vec<std::ops::Range<usize>> = (0..cands.len())
            .step_by(batch)
            .map(|s| s..(s + batch).min(cands.len()))
            .collect();
        let parts = crate::parallel::map(
            &chunks,
            self.threads,
            |r| r.len() as f64,
            |r| self.run_crop_chunk(net, frame, cands, r.clone(), size),
        )?;
        let mut kept = Vec::with_capacity(cands.len());
        let mut outputs: Vec<Tensor> = Vec::new();
        for (k, res) in parts {
            if res.is_empty() {
                continue;
            }
            if outputs.is_empty() {
                outputs = res;
            } else {
                if res.len() != outputs.len() {
                    return Err(Error::model(
                        net.name(),
                        "output count changed between batches",
                    ));
                }
                for (acc, r) in outputs.iter_mut().zip(res) {
                    acc.data.extend_from_slice(&r.data);
                    if let Some(b) = acc.shape.first_mut() {
                        *b += k.len();
                    }
                }
            }
            kept.extend(k);
        }
        for o in &outputs {
            if o.batch() != kept.len() {
                return Err(Error::model(
                    net.name(),
                    format!("batch {} != {} crops", o.batch(), kept.len()),
                ));
            }
        }
        Ok((kept, outputs))
    }

    /// One chunk of [`Self::run_crops`]: the kept candidate indices and the
    /// net's outputs for them (empty when no crop was usable).
    fn run_crop_chunk(
        &self,
        net: &Arc<dyn InferenceModel>,
        frame: &Frame,
        cands: &[Cand],
        range: std::ops::Range<usize>,
        size: usize,
    ) -> Result<(Vec<usize>, Vec<Tensor>)> {
        let item = 3 * size * size;
        let mut kept = Vec::with_capacity(range.len());
        let mut data: Vec<f32> = Vec::with_capacity(range.len() * item);
        for i in range {
            if let Some(r) = crop_rect(&cands[i], frame.width(), frame.height()) {
                let start = data.len();
                data.resize(start + item, 0.0);
                if resize_area_chw(frame, r, size, size, Normalize::MTCNN, &mut data[start..]) {
                    kept.push(i);
                } else {
                    data.truncate(start);
                }
            }
        }
        if kept.is_empty() {
            return Ok((kept, Vec::new()));
        }
        let res = net.run(&Tensor::new(vec![kept.len(), 3, size, size], data)?)?;
        for o in &res {
            if o.batch() != kept.len() {
                return Err(Error::model(
                    net.name(),
                    format!("batch {} != {} crops", o.batch(), kept.len()),
                ));
            }
        }
        Ok((kept, res))
    }
}

fn pnet_candidates(out: &[Tensor], scale: f32, threshold: f32, name: &str) -> Result<Vec<Cand>> {
    let (reg, prob) = match out {
        [reg, prob] if reg.shape.len() == 4 && prob.shape.len() == 4 => (reg, prob),
        _ => {
            return Err(Error::model(
                name,
                "expected outputs reg [1,4,h,w] and prob [1,2,h,w]",
            ))
        }
    };
    let (oh, ow) = (prob.shape[2], prob.shape[3]);
    if prob.shape[1] != 2 || reg.shape[1] != 4 || reg.shape[2] != oh || reg.shape[3] != ow {
        return Err(Error::model(
            name,
            format!("unexpected output shapes {:?} {:?}", reg.shape, prob.shape),
        ));
    }
    let plane = oh * ow;
    let face = &prob.data[plane..2 * plane];
    let mut out = Vec::new();
    for (i, &p) in face.iter().enumerate() {
        if p >= threshold {
            let (y, x) = ((i / ow) as f32, (i % ow) as f32);
            let q1 = |v: f32| ((PNET_STRIDE * v + 1.0) / scale).floor();
            let q2 = |v: f32| ((PNET_STRIDE * v + PNET_CELL) / scale).floor();
            out.push(Cand {
                b: [q1(x), q1(y), q2(x), q2(y)],
                score: p,
                reg: [
                    reg.data[i],
                    reg.data[plane + i],
                    reg.data[2 * plane + i],
                    reg.data[3 * plane + i],
                ],
            });
        }
    }
    Ok(out)
}

/// facenet-pytorch's `pad`: truncate, clamp to `1..=w` / `1..=h`, crop
/// `[x-1, ex) × [y-1, ey)`.
fn crop_rect(c: &Cand, w: u32, h: u32) -> Option<Rect> {
    let t = |v: f32| {
        if v.is_finite() {
            v.trunc().clamp(-1e9, 1e9) as i64
        } else {
            0
        }
    };
    let x = t(c.b[0]).max(1);
    let y = t(c.b[1]).max(1);
    let ex = t(c.b[2]).min(i64::from(w));
    let ey = t(c.b[3]).min(i64::from(h));
    if ex > x - 1 && ey > y - 1 && x - 1 < i64::from(w) && y - 1 < i64::from(h) {
        Some(Rect {
            x0: (x - 1) as u32,
            y0: (y - 1) as u32,
            x1: ex as u32,
            y1: ey as u32,
        })
    } else {
        None
    }
}

fn square(c: &mut Cand) {
    let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
    let l = w.max(h);
    let x1 = c.b[0] + w * 0.5 - l * 0.5;
    let y1 = c.b[1] + h * 0.5 - l * 0.5;
    c.b = [x1, y1, x1 + l, y1 + l];
}

fn bbreg(c: &mut Cand) {
    let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
    c.b = [
        c.b[0] + c.reg[0] * w,
        c.b[1] + c.reg[1] * h,
        c.b[2] + c.reg[2] * w,
        c.b[3] + c.reg[3] * h,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    /// torchvision IoU: continuous areas.
    Union,
    /// facenet-pytorch numpy "Min": inclusive areas, intersection over the smaller.
    Min,
}

fn overlap(a: &[f32; 4], b: &[f32; 4], kind: Overlap) -> f32 {
    match kind {
        Overlap::Union => {
            let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = iw * ih;
            let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
            let u = area(a) + area(b) - inter;
            if u > 0.0 {
                inter / u
            } else {
                0.0
            }
        }
        Overlap::Min => {
            let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
            let m = area(a).min(area(b));
            if m > 0.0 {
                iw * ih / m
            } else {
                0.0
            }
        }
    }
}

/// Greedy NMS: indices kept, highest score first.
fn nms_indices(c: &[Cand], threshold: f32, kind: Overlap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let mut suppressed = vec![false; c.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !suppressed[j] && overlap(&c[i].b, &c[j].b, kind) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

fn nms(c: &mut Vec<Cand>, threshold: f32, kind: Overlap) {
    let keep = nms_indices(c, threshold, kind);
    *c = keep.iter().map(|&i| c[i]).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(b: [f32; 4], score: f32) -> Cand {
        Cand {
            b,
            score,
            reg: [0.0; 4],
        }
    }

    #[test]
    fn scales_follow_facenet_pytorch() {
        let cfg = MtcnnConfig {
            min_face: 20.0,
            ..Default::default()
        };
        let s = cfg.scales(100, 100);
        // m = 0.6, minl = 60 -> 60, 42.5, 30.2, 21.4, 15.2, (10.8 stops)
        assert_eq!(s.len(), 5);
        assert!((s[0] - 0.6).abs() < 1e-6);
        assert!((s[1] - 0.6 * 0.709).abs() < 1e-6);
        assert!(cfg.scales(11, 11).is_empty());
    }

    #[test]
    fn nms_keeps_best_and_disjoint() {
        let mut c = vec![
            cand([0.0, 0.0, 10.0, 10.0], 0.8),
            cand([1.0, 1.0, 11.0, 11.0], 0.9),
            cand([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        nms(&mut c, 0.5, Overlap::Union);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].score, 0.9);
        assert_eq!(c[1].score, 0.7);
    }

    #[test]
    fn min_overlap_suppresses_nested_boxes() {
        // A small box inside a big one: IoU is low, Min-overlap is 1.
        let mut c = vec![
            cand([0.0, 0.0, 99.0, 99.0], 0.99),
            cand([10.0, 10.0, 29.0, 29.0], 0.95),
        ];
        let mut u = c.clone();
        nms(&mut u, 0.7, Overlap::Union);
        assert_eq!(u.len(), 2);
        nms(&mut c, 0.7, Overlap::Min);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn crop_rect_clamps_like_pad() {
        let c = cand([-5.7, 3.2, 20.9, 500.0], 1.0);
        assert_eq!(
            crop_rect(&c, 100, 50),
            Some(Rect {
                x0: 0,
                y0: 2,
                x1: 20,
                y1: 50
            })
        );
        let outside = cand([200.0, 0.0, 300.0, 10.0], 1.0);
        assert_eq!(crop_rect(&outside, 100, 50), None);
        let nan = cand([f32::NAN, 0.0, 10.0, 10.0], 1.0);
        assert!(crop_rect(&nan, 100, 50).is_some());
    }

    #[test]
    fn square_and_regression() {
        let mut c = cand([0.0, 0.0, 10.0, 20.0], 1.0);
        square(&mut c);
        assert_eq!(c.b, [-5.0, 0.0, 15.0, 20.0]);
        c.reg = [0.1, 0.0, -0.1, 0.0];
        bbreg(&mut c);
        assert!((c.b[0] - (-5.0 + 2.1)).abs() < 1e-5 && (c.b[2] - (15.0 - 2.1)).abs() < 1e-5);
    }

    #[test]
    fn config_validation() {
        assert!(MtcnnConfig::default().validate().is_ok());
        assert!(MtcnnConfig {
            min_face: 5.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MtcnnConfig {
            factor: 1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MtcnnConfig {
            thresholds: [0.6, 1.5, 0.9],
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MtcnnConfig {
            min_face: f32::NAN,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
