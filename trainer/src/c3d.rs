//! The paper's C3D baseline (issue 26): a small 3-D convolution network over
//! a track's newest face crops ([`fakewatch_sdk::sequence::face_crop`],
//! `[3, T, S, S]`), trained with candle (seeded, CPU) on binary
//! cross-entropy and exported to ONNX's 3-D `Conv`, which tract and
//! onnxruntime run like the other models.
//!
//! candle has no 3-D convolution. A `kt × kh × kw` kernel over `C` channels
//! is a 2-D convolution over `C · kt` channels: the `kt` frames an output
//! frame reads, stacked channel by channel (`c · kt + k`, the order of the
//! kernel's own `[O, C, kt, kh, kw]` layout), every output frame a batch
//! item. That is exact, one `conv2d` per layer, and differentiated by
//! candle; the exported graph uses the real 3-D op with the same weights.
//!
//! The network: a temporal-difference stem (each frame's pixels beside its
//! change from the frame before, ×[`DIFF_GAIN`]; the first frame's change
//! is 0), three convolutions (kernel 3, leaky ReLU; the first keeps time,
//! the next two halve time and space), a mean over time, a 2 × 2 average
//! over space and a linear logit of what is left (`channels × (S/16)²`: the
//! head keeps where on the face a change happens — a blend's changes sit
//! inside the face, a moving head's everywhere; a global mean, tried
//! first, cannot tell the two apart).
//! Pixels are scaled inside the graph, so its input is the crop bytes as
//! floats. Without the stem the network did not learn on the temporal fakes
//! (training loss stayed at ln 2 for 12 epochs): the change between frames
//! that tells a flickering blend from a real face is a small part of the
//! raw pixels, and the stem hands it to the first layer directly.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::Optimizer;

use crate::rng::Rng;

/// Pixel scaling inside the network: `v · PIXEL_SCALE + PIXEL_SHIFT` maps
/// 0–255 to −2…2 (`(v / 255 − 0.5) / 0.25`).
pub const PIXEL_SCALE: f32 = 1.0 / 63.75;
/// See [`PIXEL_SCALE`].
pub const PIXEL_SHIFT: f32 = -2.0;
/// Scale of the frame-to-frame change beside the pixels (changes are a few
/// grey levels, the pixels span 255).
pub const DIFF_GAIN: f32 = 4.0;
/// Channels after the stem: RGB and their change.
pub const STEM_CHANNELS: usize = 6;
/// Kernel size along time, height and width.
const KERNEL: usize = 3;

/// One 3-D convolution: weights `[out, in, 3, 3, 3]`, its strides (time,
/// height, width) and padding 1 on every side.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv3d {
    /// Input channels.
    pub inputs: usize,
    /// Output channels.
    pub outputs: usize,
    /// Strides along time, height and width.
    pub stride: [usize; 3],
    /// Weights, row-major `[out, in, kt, kh, kw]`.
    pub weight: Vec<f32>,
    /// Biases `[out]`.
    pub bias: Vec<f32>,
}

/// Settings of [`train_c3d`].
#[derive(Debug, Clone, PartialEq)]
pub struct C3dConfig {
    /// Channels of the three convolutions.
    pub channels: [usize; 3],
    /// Passes over the training clips.
    pub epochs: usize,
    /// Clips per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Mirror half the training clips left to right (per clip and epoch).
    pub flip: bool,
    /// Seed of the initial weights, the batch order and the flips.
    pub seed: u64,
}

impl Default for C3dConfig {
    fn default() -> Self {
        Self {
            channels: [8, 16, 32],
            epochs: 12,
            batch: 16,
            lr: 3e-3,
            weight_decay: 1e-4,
            flip: true,
            seed: 42,
        }
    }
}

/// A trained C3D scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct C3dModel {
    /// Frames per clip.
    pub steps: usize,
    /// Side of a crop.
    pub side: usize,
    /// The convolutions, input first.
    pub convs: Vec<Conv3d>,
    /// Logit weights `[channels of the last convolution × (side / 16)²]`,
    /// channel-major (the flattened `[C, S/16, S/16]` map).
    pub out_w: Vec<f32>,
    /// Logit bias.
    pub out_b: f32,
}

/// Strides of the three layers: time kept first, then halved with space.
const STRIDES: [[usize; 3]; 3] = [[1, 2, 2], [2, 2, 2], [2, 2, 2]];

/// `conv3d` of `x` `[B, C, T, H, W]` with `w` `[O, C, 3, 3, 3]` and `b`
/// `[O]`, padding 1, as one 2-D convolution (see the module docs).
fn conv3d(x: &Tensor, w: &Tensor, b: &Tensor, stride: [usize; 3]) -> Result<Tensor> {
    let (n, c, t, h, wd) = x.dims5()?;
    let (o, _, kt, _, _) = w.dims5()?;
    let pad = KERNEL / 2;
    let xp = x.pad_with_zeros(2, pad, pad)?;
    let t_out = (t + 2 * pad - kt) / stride[0] + 1;
    let slices = (0..kt)
        .map(|k| {
            let idx: Vec<u32> = (0..t_out).map(|i| (i * stride[0] + k) as u32).collect();
            let idx = Tensor::new(idx.as_slice(), x.device())?;
            Ok(xp.index_select(&idx, 2)?)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    // [N, C, kt, T', H, W] → [N, T', C, kt, H, W] → [N·T', C·kt, H, W].
    let stacked = Tensor::stack(&slices, 2)?
        .permute(vec![0, 3, 1, 2, 4, 5])?
        .contiguous()?
        .reshape((n * t_out, c * kt, h, wd))?;
    ensure!(stride[1] == stride[2], "unequal spatial strides");
    let w2 = w.reshape((o, c * kt, KERNEL, KERNEL))?;
    let y = stacked.conv2d(&w2, pad, stride[1], 1, 1)?;
    let (_, _, h2, w2d) = y.dims4()?;
    Ok(y.reshape((n, t_out, o, h2, w2d))?
        .permute(vec![0, 2, 1, 3, 4])?
        .broadcast_add(&b.reshape((1, o, 1, 1, 1))?)?)
}

/// Slope of the activation below 0 (ONNX `LeakyRelu`'s `alpha`): a unit
/// that goes negative for every clip still passes a gradient, so the small
/// network cannot die into a constant.
pub const LEAK: f32 = 0.01;

/// `max(x, LEAK · x)`.
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? - x.neg()?.relu()?.affine(f64::from(LEAK), 0.0)?)?)
}

/// `[N, 3, T, S, S]` → `[N, 6, T, S, S]`: the frames, then their change
/// from the frame before (0 for the first) × [`DIFF_GAIN`].
fn stem(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(2)?;
    let diff = (x.narrow(2, 1, t - 1)? - x.narrow(2, 0, t - 1)?)?
        .affine(f64::from(DIFF_GAIN), 0.0)?
        .pad_with_zeros(2, 1, 0)?;
    Ok(Tensor::cat(&[x, &diff], 1)?)
}

/// Spatial averaging before the logit (after the convolutions' ÷8).
pub const HEAD_POOL: usize = 2;

/// Side of a convolution's output (kernel 3, padding 1).
fn conv_side(n: usize, stride: usize) -> usize {
    (n + 2 - KERNEL) / stride + 1
}

/// Cells of the head's map for crops of `side`.
pub fn head_cells(side: usize) -> usize {
    let s = STRIDES.iter().fold(side, |n, st| conv_side(n, st[1])) / HEAD_POOL;
    s * s
}

/// The trainable tensors.
struct Params {
    convs: Vec<(Var, Var)>,
    out_w: Var,
    out_b: Var,
}

impl Params {
    fn new(channels: [usize; 3], side: usize, rng: &mut Rng) -> Result<Self> {
        let mut init = |n: usize, dims: &[usize], fan_in: usize| -> Result<Var> {
            // He-uniform for the ReLU layers.
            let k = (6.0 / fan_in as f32).sqrt();
            let v: Vec<f32> = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * k).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, dims, &Device::Cpu)?)?)
        };
        let mut convs = Vec::new();
        let mut inputs = STEM_CHANNELS;
        for &o in &channels {
            let taps = KERNEL * KERNEL * KERNEL;
            let w = init(
                o * inputs * taps,
                &[o, inputs, KERNEL, KERNEL, KERNEL],
                inputs * taps,
            )?;
            let b = Var::from_tensor(&Tensor::zeros(o, DType::F32, &Device::Cpu)?)?;
            convs.push((w, b));
            inputs = o;
        }
        let cells = head_cells(side);
        let out_w = init(inputs * cells, &[inputs * cells], inputs * cells)?;
        let out_b = Var::from_tensor(&Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
        Ok(Self {
            convs,
            out_w,
            out_b,
        })
    }

    fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = self
            .convs
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect();
        v.extend([self.out_w.clone(), self.out_b.clone()]);
        v
    }

    /// Logits `[N]` of clips `x` `[N, 3, T, S, S]` (pixel values 0–255).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = stem(&x.affine(f64::from(PIXEL_SCALE), f64::from(PIXEL_SHIFT))?)?;
        for ((w, b), stride) in self.convs.iter().zip(STRIDES) {
            h = leaky_relu(&conv3d(&h, w.as_tensor(), b.as_tensor(), stride)?)?;
        }
        let pooled = h.mean(2)?.avg_pool2d(HEAD_POOL)?.flatten_from(1)?;
        Ok(pooled
            .matmul(&self.out_w.as_tensor().unsqueeze(1)?)?
            .squeeze(D::Minus1)?
            .broadcast_add(self.out_b.as_tensor())?)
    }

    fn model(&self, steps: usize, side: usize) -> Result<C3dModel> {
        let flat = |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1()?) };
        let mut convs = Vec::new();
        for ((w, b), stride) in self.convs.iter().zip(STRIDES) {
            let (o, i, _, _, _) = w.as_tensor().dims5()?;
            convs.push(Conv3d {
                inputs: i,
                outputs: o,
                stride,
                weight: flat(w)?,
                bias: flat(b)?,
            });
        }
        Ok(C3dModel {
            steps,
            side,
            convs,
            out_w: flat(&self.out_w)?,
            out_b: flat(&self.out_b)?[0],
        })
    }
}

impl C3dModel {
    fn params(&self) -> Result<Params> {
        let var = |v: &[f32], dims: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(&Tensor::from_slice(
                v,
                dims,
                &Device::Cpu,
            )?)?)
        };
        let convs = self
            .convs
            .iter()
            .map(|c| {
                Ok((
                    var(&c.weight, &[c.outputs, c.inputs, KERNEL, KERNEL, KERNEL])?,
                    var(&c.bias, &[c.outputs])?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Params {
            convs,
            out_w: var(&self.out_w, &[self.out_w.len()])?,
            out_b: var(&[self.out_b], &[1])?,
        })
    }

    /// The logits of clips of crop bytes (`[3, steps, side, side]` each, as
    /// [`fakewatch_sdk::sequence::CropRing::window`] lays them out).
    pub fn logits(&self, clips: &[&[u8]]) -> Result<Vec<f32>> {
        let p = self.params()?;
        let mut out = Vec::with_capacity(clips.len());
        for chunk in clips.chunks(EVAL_BATCH) {
            let x = batch(chunk, self.steps, self.side, &[])?;
            out.extend(p.forward(&x)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The ONNX model: input `crops` `[1, 3, steps, side, side]` (pixel
    /// values 0–255), output `logit` `[1, 1]`.
    pub fn to_onnx(&self) -> Result<tract_onnx::pb::ModelProto> {
        crate::onnx::c3d_model(self)
    }
}

/// Clips scored per forward pass outside training.
const EVAL_BATCH: usize = 32;

/// A batch `[N, 3, T, S, S]` of clips; those whose index is in `flip` are
/// mirrored left to right.
fn batch(clips: &[&[u8]], steps: usize, side: usize, flip: &[bool]) -> Result<Tensor> {
    let len = 3 * steps * side * side;
    let mut data = Vec::with_capacity(clips.len() * len);
    for (i, c) in clips.iter().enumerate() {
        ensure!(c.len() == len, "a clip of {} bytes, not {len}", c.len());
        if flip.get(i).copied().unwrap_or(false) {
            for row in c.chunks(side) {
                data.extend(row.iter().rev().map(|&v| f32::from(v)));
            }
        } else {
            data.extend(c.iter().map(|&v| f32::from(v)));
        }
    }
    Ok(Tensor::from_vec(
        data,
        (clips.len(), 3, steps, side, side),
        &Device::Cpu,
    )?)
}

/// Trains the C3D network on clips of crop bytes (`[3, steps, side, side]`)
/// with labels (true = fake), classes weighted to balance.
pub fn train_c3d(
    clips: &[&[u8]],
    labels: &[bool],
    steps: usize,
    side: usize,
    cfg: &C3dConfig,
) -> Result<C3dModel> {
    ensure!(
        !clips.is_empty() && clips.len() == labels.len(),
        "need as many labels as clips"
    );
    ensure!(
        steps > 1 && side > 0,
        "empty shapes (and a clip needs 2 frames)"
    );
    ensure!(
        labels.iter().any(|&l| l) && labels.iter().any(|&l| !l),
        "both classes are needed"
    );
    ensure!(
        cfg.batch > 0 && cfg.epochs > 0 && cfg.channels.iter().all(|&c| c > 0),
        "batch, epochs and channels must be > 0"
    );
    let bce = crate::sequence::BalancedBce::new(labels);
    let mut rng = Rng::new(cfg.seed);
    ensure!(
        head_cells(side) > 0,
        "crops of {side} px are too small for the network"
    );
    let params = Params::new(cfg.channels, side, &mut rng)?;
    let mut opt = crate::sequence::adamw(params.vars(), cfg.lr, cfg.weight_decay)?;
    let mut order: Vec<usize> = (0..clips.len()).collect();
    let bar = indicatif::ProgressBar::new((cfg.epochs * clips.len()) as u64);
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut total = 0f32;
        for chunk in order.chunks(cfg.batch) {
            let cs: Vec<&[u8]> = chunk.iter().map(|&i| clips[i]).collect();
            let flip: Vec<bool> = chunk
                .iter()
                .map(|_| cfg.flip && rng.uniform() < 0.5)
                .collect();
            let x = batch(&cs, steps, side, &flip)?;
            let z = params.forward(&x)?;
            let loss = bce.loss(&z, labels, chunk)?;
            total += loss.to_scalar::<f32>()? * chunk.len() as f32;
            opt.backward_step(&loss)?;
            bar.inc(chunk.len() as u64);
        }
        let mean = total / clips.len() as f32;
        ensure!(mean.is_finite(), "C3D training diverged (epoch {epoch})");
        log::info!("C3D epoch {epoch}: loss {mean:.4}");
    }
    bar.finish_and_clear();
    params
        .model(steps, side)
        .context("reading the trained weights")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::backend::{Backend, ShapePolicy, Tensor as BTensor, TractBackend};

    /// A direct 3-D convolution (padding 1), the reference for the unfolded one.
    fn direct(x: &[f32], dims: [usize; 4], c: &Conv3d) -> (Vec<f32>, [usize; 4]) {
        let [ci, t, h, w] = dims;
        let out = |n: usize, s: usize| (n + 2 - KERNEL) / s + 1;
        let (to, ho, wo) = (
            out(t, c.stride[0]),
            out(h, c.stride[1]),
            out(w, c.stride[2]),
        );
        let mut y = vec![0f32; c.outputs * to * ho * wo];
        for o in 0..c.outputs {
            for (ot, oh, ow) in
                (0..to).flat_map(|a| (0..ho).flat_map(move |b| (0..wo).map(move |d| (a, b, d))))
            {
                let mut acc = c.bias[o];
                for i in 0..ci {
                    for kt in 0..3 {
                        for kh in 0..3 {
                            for kw in 0..3 {
                                let it = (ot * c.stride[0] + kt) as isize - 1;
                                let ih = (oh * c.stride[1] + kh) as isize - 1;
                                let iw = (ow * c.stride[2] + kw) as isize - 1;
                                if it < 0
                                    || ih < 0
                                    || iw < 0
                                    || it >= t as isize
                                    || ih >= h as isize
                                    || iw >= w as isize
                                {
                                    continue;
                                }
                                let xv =
                                    x[((i * t + it as usize) * h + ih as usize) * w + iw as usize];
                                let wv = c.weight[(((o * ci + i) * 3 + kt) * 3 + kh) * 3 + kw];
                                acc += xv * wv;
                            }
                        }
                    }
                }
                y[((o * to + ot) * ho + oh) * wo + ow] = acc;
            }
        }
        (y, [c.outputs, to, ho, wo])
    }

    #[test]
    fn the_unfolded_convolution_is_a_3d_convolution() {
        let mut rng = Rng::new(3);
        let (ci, t, h, w) = (2, 5, 6, 6);
        let x: Vec<f32> = (0..ci * t * h * w).map(|_| rng.uniform() - 0.5).collect();
        for stride in [[1, 2, 2], [2, 2, 2], [1, 1, 1]] {
            let c = Conv3d {
                inputs: ci,
                outputs: 3,
                stride,
                weight: (0..3 * ci * 27).map(|_| rng.uniform() - 0.5).collect(),
                bias: vec![0.1, -0.2, 0.3],
            };
            let (want, dims) = direct(&x, [ci, t, h, w], &c);
            let xt = Tensor::from_slice(&x, (1, ci, t, h, w), &Device::Cpu).unwrap();
            let wt = Tensor::from_slice(&c.weight, (3, ci, 3, 3, 3), &Device::Cpu).unwrap();
            let bt = Tensor::from_slice(&c.bias, 3, &Device::Cpu).unwrap();
            let got = conv3d(&xt, &wt, &bt, stride).unwrap();
            assert_eq!(got.dims(), &[1, dims[0], dims[1], dims[2], dims[3]]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{stride:?}: {g} vs {w}");
            }
        }
    }

    /// Clips of a grey face square whose brightness is steady (real) or
    /// flickers from frame to frame (fake); each frame's mean brightness is
    /// drawn from the same range, so no single frame tells them apart.
    fn flicker_clips(n: usize, steps: usize, side: usize, seed: u64) -> (Vec<Vec<u8>>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let mut clips = Vec::new();
        let mut labels = Vec::new();
        for k in 0..n {
            let fake = k % 2 == 1;
            let base = 90.0 + 80.0 * rng.uniform();
            let mut c = vec![0u8; 3 * steps * side * side];
            for t in 0..steps {
                let v = if fake {
                    90.0 + 80.0 * rng.uniform()
                } else {
                    base + 2.0 * (rng.uniform() - 0.5)
                };
                for ch in 0..3 {
                    let plane = &mut c[(ch * steps + t) * side * side..][..side * side];
                    for (i, p) in plane.iter_mut().enumerate() {
                        let (y, x) = (i / side, i % side);
                        let inside = (side / 4..3 * side / 4).contains(&y)
                            && (side / 4..3 * side / 4).contains(&x);
                        *p = if inside { v as u8 } else { 40 };
                    }
                }
            }
            clips.push(c);
            labels.push(fake);
        }
        (clips, labels)
    }

    #[test]
    fn flicker_is_learnt_and_the_onnx_graph_gives_the_same_logits() {
        let (steps, side) = (8, 16);
        let (train, ytrain) = flicker_clips(48, steps, side, 1);
        let (test, ytest) = flicker_clips(24, steps, side, 2);
        let cfg = C3dConfig {
            channels: [4, 8, 8],
            epochs: 30,
            batch: 8,
            lr: 1e-2,
            ..C3dConfig::default()
        };
        let refs: Vec<&[u8]> = train.iter().map(Vec::as_slice).collect();
        let m = train_c3d(&refs, &ytrain, steps, side, &cfg).unwrap();
        let trefs: Vec<&[u8]> = test.iter().map(Vec::as_slice).collect();
        let z = m.logits(&trefs).unwrap();
        let auc =
            crate::metrics::roc_auc(&z.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), &ytest)
                .unwrap();
        assert!(auc > 0.9, "C3D AUC on flicker {auc}");
        // The exported graph (a real 3-D Conv) through tract.
        let path = std::env::temp_dir().join(format!("fw-c3d-{}.onnx", std::process::id()));
        crate::onnx::save(&m.to_onnx().unwrap(), &path).unwrap();
        let model = TractBackend
            .load(&path, ShapePolicy::FixedBatch(1))
            .unwrap();
        for (c, want) in trefs.iter().zip(&z).take(4) {
            let x = BTensor::new(
                vec![1, 3, steps, side, side],
                c.iter().map(|&v| f32::from(v)).collect(),
            )
            .unwrap();
            let got = model.run(&x).unwrap()[0].data[0];
            assert!(
                (got - want).abs() < 1e-3 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        let _ = std::fs::remove_file(&path);
        assert!(train_c3d(&refs[..2], &[true, true], steps, side, &cfg).is_err());
    }
}
