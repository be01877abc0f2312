//! The paper's sequence baseline (issue 26): a one-layer GRU over a track's
//! per-frame features, trained with candle (seeded, CPU) on binary
//! cross-entropy and exported to ONNX's `GRU` op (`onnx::gru_model`)
//! with the feature standardisation in front, so tract and onnxruntime run
//! it like the other heads.
//!
//! A frame model sees each frame on its own; the GRU sees how a track's
//! features change from frame to frame — the flicker at a blend boundary, a
//! face region that jitters, a mouth that moves out of step — which no
//! single frame shows.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use crate::rng::Rng;

/// Weights of a one-layer GRU sequence scorer in ONNX's layout: gates in
/// the order update (z), reset (r), candidate (h), each a block of `hidden`
/// rows; `linear_before_reset` (the reset gate scales the biased recurrent
/// product, as in PyTorch); the last hidden state goes through a linear
/// logit.
#[derive(Debug, Clone, PartialEq)]
pub struct GruWeights {
    /// Features per time step.
    pub inputs: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Input weights `[3·hidden, inputs]`, row-major.
    pub w: Vec<f32>,
    /// Recurrent weights `[3·hidden, hidden]`.
    pub r: Vec<f32>,
    /// Input biases `[3·hidden]`.
    pub wb: Vec<f32>,
    /// Recurrent biases `[3·hidden]`.
    pub rb: Vec<f32>,
    /// Logit weights `[hidden]`.
    pub out_w: Vec<f32>,
    /// Logit bias.
    pub out_b: f32,
}

impl GruWeights {
    /// The logit of one sequence (`steps` rows of `inputs` features), in
    /// plain Rust: the reference the ONNX graph is checked against.
    pub fn logit(&self, seq: &[f32]) -> f32 {
        let (i, h) = (self.inputs, self.hidden);
        let mut state = vec![0f32; h];
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        for x in seq.chunks(i) {
            let gate = |g: usize, k: usize| -> (f32, f32) {
                let row = g * h + k;
                let xw: f32 =
                    (0..i).map(|j| x[j] * self.w[row * i + j]).sum::<f32>() + self.wb[row];
                let hr: f32 =
                    (0..h).map(|j| state[j] * self.r[row * h + j]).sum::<f32>() + self.rb[row];
                (xw, hr)
            };
            let next: Vec<f32> = (0..h)
                .map(|k| {
                    let (xz, hz) = gate(0, k);
                    let (xr, hr) = gate(1, k);
                    let (xh, hh) = gate(2, k);
                    let z = sig(xz + hz);
                    let r = sig(xr + hr);
                    let cand = (xh + r * hh).tanh();
                    (1.0 - z) * cand + z * state[k]
                })
                .collect();
            state = next;
        }
        state
            .iter()
            .zip(&self.out_w)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            + self.out_b
    }
}

/// Settings of [`train_gru`].
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Passes over the training sequences.
    pub epochs: usize,
    /// Sequences per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
    /// Features the model must not read (indices): standardised to 0, so
    /// the exported model keeps its input shape and ignores them.
    pub ignore: Vec<usize>,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            hidden: 16,
            epochs: 40,
            batch: 32,
            lr: 1e-2,
            weight_decay: 1e-4,
            seed: 42,
            ignore: Vec::new(),
        }
    }
}

/// A trained sequence scorer: the GRU on standardised features, and the
/// standardisation (per feature, shared by every step).
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceModel {
    /// The GRU and its logit.
    pub gru: GruWeights,
    /// Per-feature mean of the training steps.
    pub mean: Vec<f32>,
    /// Per-feature 1 / standard deviation.
    pub inv_std: Vec<f32>,
    /// Steps per sequence it was trained on.
    pub steps: usize,
}

impl SequenceModel {
    /// The logit of one sequence of raw features (`steps × features`).
    pub fn logit(&self, seq: &[f32]) -> f32 {
        let f = self.mean.len();
        let z: Vec<f32> = seq
            .iter()
            .enumerate()
            .map(|(k, v)| (v - self.mean[k % f]) * self.inv_std[k % f])
            .collect();
        self.gru.logit(&z)
    }

    /// The ONNX model: input `sequence` `[1, steps, features]` of raw
    /// features, output `logit` `[1, 1]`.
    pub fn to_onnx(&self) -> Result<tract_onnx::pb::ModelProto> {
        let mut m = crate::onnx::gru_model(&self.gru, Some(self.steps))?;
        crate::onnx::prepend_standardization(&mut m, &self.mean, &self.inv_std)?;
        Ok(m)
    }
}

/// The trainable tensors of the GRU.
struct Params {
    w: Var,
    r: Var,
    wb: Var,
    rb: Var,
    out_w: Var,
    out_b: Var,
}

impl Params {
    fn new(inputs: usize, hidden: usize, rng: &mut Rng) -> Result<Self> {
        // PyTorch's GRU initialisation: uniform in ±1/√hidden.
        let k = 1.0 / (hidden as f32).sqrt();
        let mut init = |n: usize, dims: &[usize]| -> Result<Var> {
            let v: Vec<f32> = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * k).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, dims, &Device::Cpu)?)?)
        };
        let h3 = 3 * hidden;
        Ok(Self {
            w: init(h3 * inputs, &[h3, inputs])?,
            r: init(h3 * hidden, &[h3, hidden])?,
            wb: init(h3, &[h3])?,
            rb: init(h3, &[h3])?,
            out_w: init(hidden, &[hidden])?,
            out_b: init(1, &[1])?,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![
            self.w.clone(),
            self.r.clone(),
            self.wb.clone(),
            self.rb.clone(),
            self.out_w.clone(),
            self.out_b.clone(),
        ]
    }

    /// Logits `[N]` of `x` `[N, T, F]` (standardised).
    fn forward(&self, x: &Tensor, hidden: usize) -> Result<Tensor> {
        let (n, t, _) = x.dims3()?;
        let mut h = Tensor::zeros((n, hidden), DType::F32, &Device::Cpu)?;
        let (w_t, r_t) = (self.w.as_tensor().t()?, self.r.as_tensor().t()?);
        for step in 0..t {
            let xt = x.narrow(1, step, 1)?.squeeze(1)?;
            let xw = xt.matmul(&w_t)?.broadcast_add(self.wb.as_tensor())?;
            let hr = h.matmul(&r_t)?.broadcast_add(self.rb.as_tensor())?;
            let gate = |a: &Tensor, g: usize| a.narrow(1, g * hidden, hidden);
            let z = candle_nn::ops::sigmoid(&(gate(&xw, 0)? + gate(&hr, 0)?)?)?;
            let r = candle_nn::ops::sigmoid(&(gate(&xw, 1)? + gate(&hr, 1)?)?)?;
            let cand = (gate(&xw, 2)? + r.mul(&gate(&hr, 2)?)?)?.tanh()?;
            // h' = (1 − z)·cand + z·h = cand + z·(h − cand)
            h = (&cand + z.mul(&(h - &cand)?)?)?;
        }
        Ok(h.matmul(&self.out_w.as_tensor().unsqueeze(1)?)?
            .squeeze(D::Minus1)?
            .broadcast_add(self.out_b.as_tensor())?)
    }

    fn weights(&self, inputs: usize, hidden: usize) -> Result<GruWeights> {
        let flat = |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1()?) };
        Ok(GruWeights {
            inputs,
            hidden,
            w: flat(&self.w)?,
            r: flat(&self.r)?,
            wb: flat(&self.wb)?,
            rb: flat(&self.rb)?,
            out_w: flat(&self.out_w)?,
            out_b: flat(&self.out_b)?[0],
        })
    }
}

/// AdamW over `vars` with candle's defaults but the learning rate and
/// weight decay (the sequence models' optimiser).
pub(crate) fn adamw(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay,
            ..ParamsAdamW::default()
        },
    )?)
}

/// Binary cross-entropy on logits with balanced class weights (each class
/// carries half the loss over the whole training set), shared by the
/// sequence models' training loops.
pub(crate) struct BalancedBce {
    fake: f32,
    real: f32,
}

impl BalancedBce {
    /// The class weights of `labels` (true = fake).
    pub(crate) fn new(labels: &[bool]) -> Self {
        let fakes = labels.iter().filter(|&&l| l).count() as f32;
        let n = labels.len() as f32;
        let reals = n - fakes;
        Self {
            fake: n / (2.0 * fakes),
            real: n / (2.0 * reals),
        }
    }

    /// The mean weighted loss of logits `z` `[B]` for the items `batch` of
    /// `labels`: `max(z, 0) − z·y + log(1 + e^(−|z|))`, weighted.
    pub(crate) fn loss(&self, z: &Tensor, labels: &[bool], batch: &[usize]) -> Result<Tensor> {
        let y: Vec<f32> = batch
            .iter()
            .map(|&i| f32::from(u8::from(labels[i])))
            .collect();
        let wts: Vec<f32> = batch
            .iter()
            .map(|&i| if labels[i] { self.fake } else { self.real })
            .collect();
        let y = Tensor::from_vec(y, batch.len(), z.device())?;
        let wts = Tensor::from_vec(wts, batch.len(), z.device())?;
        let per = ((z.relu()? - z.mul(&y)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        Ok(per.mul(&wts)?.mean_all()?)
    }
}

/// Per-feature mean and 1 / standard deviation over every step of `seqs`.
fn standardisation(seqs: &[Vec<f32>], features: usize) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; features];
    let mut sq = vec![0f64; features];
    let mut n = 0f64;
    for s in seqs {
        for row in s.chunks(features) {
            for (k, &v) in row.iter().enumerate() {
                sum[k] += f64::from(v);
                sq[k] += f64::from(v) * f64::from(v);
            }
            n += 1.0;
        }
    }
    let n = n.max(1.0);
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let inv_std = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| {
            let var = (q / n - (s / n) * (s / n)).max(0.0);
            (1.0 / var.sqrt().max(1e-6)) as f32
        })
        .collect();
    (mean, inv_std)
}

/// Trains the GRU on sequences of `steps × features` raw features (row-major,
/// oldest step first) with labels (true = fake), classes weighted to balance.
pub fn train_gru(
    seqs: &[Vec<f32>],
    labels: &[bool],
    steps: usize,
    features: usize,
    cfg: &SequenceConfig,
) -> Result<SequenceModel> {
    ensure!(
        !seqs.is_empty() && seqs.len() == labels.len(),
        "need as many labels as sequences"
    );
    ensure!(steps > 0 && features > 0 && cfg.hidden > 0, "empty shapes");
    ensure!(
        seqs.iter().all(|s| s.len() == steps * features),
        "every sequence needs {steps} steps of {features} features"
    );
    ensure!(
        labels.iter().any(|&l| l) && labels.iter().any(|&l| !l),
        "both classes are needed"
    );
    ensure!(
        cfg.batch > 0 && cfg.epochs > 0,
        "batch and epochs must be > 0"
    );
    ensure!(
        cfg.ignore.iter().all(|&j| j < features),
        "an ignored feature index is out of range"
    );
    let (mut mean, mut inv_std) = standardisation(seqs, features);
    for &j in &cfg.ignore {
        mean[j] = 0.0;
        inv_std[j] = 0.0;
    }
    let standardised: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(k, v)| (v - mean[k % features]) * inv_std[k % features])
                .collect()
        })
        .collect();
    let bce = BalancedBce::new(labels);
    let mut rng = Rng::new(cfg.seed);
    let params = Params::new(features, cfg.hidden, &mut rng)?;
    let mut opt = adamw(params.vars(), cfg.lr, cfg.weight_decay)?;
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(cfg.batch) {
            let data: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| standardised[i].iter().copied())
                .collect();
            let x = Tensor::from_vec(data, (chunk.len(), steps, features), &Device::Cpu)?;
            let z = params.forward(&x, cfg.hidden)?;
            let loss = bce.loss(&z, labels, chunk)?;
            opt.backward_step(&loss)?;
        }
    }
    Ok(SequenceModel {
        gru: params.weights(features, cfg.hidden)?,
        mean,
        inv_std,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::backend::{Backend, ShapePolicy, Tensor as BTensor, TractBackend};

    /// Standard normal by Box–Muller.
    fn normal(rng: &mut Rng) -> f32 {
        let u = rng.uniform().max(1e-7);
        let v = rng.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    /// Sequences whose every frame is N(0, 1) in each feature, in both
    /// classes: real ones drift smoothly (AR(1), ρ = 0.9), fake ones flicker
    /// (ρ = −0.6). Only the change between frames tells them apart.
    fn flicker_set(
        n: usize,
        steps: usize,
        features: usize,
        seed: u64,
    ) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let mut seqs = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for k in 0..n {
            let fake = k % 2 == 1;
            let rho: f32 = if fake { -0.6 } else { 0.9 };
            let keep = (1.0 - rho * rho).sqrt();
            let mut x: Vec<f32> = (0..features).map(|_| normal(&mut rng)).collect();
            let mut s = Vec::with_capacity(steps * features);
            for _ in 0..steps {
                s.extend_from_slice(&x);
                for v in x.iter_mut() {
                    *v = rho * *v + keep * normal(&mut rng);
                }
            }
            seqs.push(s);
            labels.push(fake);
        }
        (seqs, labels)
    }

    #[test]
    fn flicker_is_seen_by_the_sequence_model_and_not_by_a_frame_model() {
        let (steps, features) = (12, 3);
        let (train, ytrain) = flicker_set(400, steps, features, 1);
        let (test, ytest) = flicker_set(200, steps, features, 2);
        let cfg = SequenceConfig {
            epochs: 30,
            ..SequenceConfig::default()
        };
        let m = train_gru(&train, &ytrain, steps, features, &cfg).unwrap();
        let scores: Vec<f64> = test.iter().map(|s| f64::from(m.logit(s))).collect();
        let seq_auc = crate::metrics::roc_auc(&scores, &ytest).unwrap();
        // The frame model: logistic regression on single frames, a video
        // scored by the mean of its frames' P(fake).
        let rows: Vec<Vec<f32>> = train
            .iter()
            .flat_map(|s| s.chunks(features).map(<[f32]>::to_vec))
            .collect();
        let row_labels: Vec<bool> = ytrain
            .iter()
            .flat_map(|&l| std::iter::repeat_n(l, steps))
            .collect();
        let frame = crate::logistic::fit_lbfgs(&rows, &row_labels, 1e-3, 200).unwrap();
        let frame_scores: Vec<f64> = test
            .iter()
            .map(|s| {
                s.chunks(features)
                    .map(|r| f64::from(frame.predict(r)))
                    .sum::<f64>()
                    / steps as f64
            })
            .collect();
        let frame_auc = crate::metrics::roc_auc(&frame_scores, &ytest).unwrap();
        eprintln!("flicker: sequence AUC {seq_auc:.3}, frame AUC {frame_auc:.3}");
        assert!(seq_auc > 0.95, "sequence model AUC {seq_auc}");
        assert!(
            (frame_auc - 0.5).abs() < 0.12,
            "frame model AUC {frame_auc}"
        );

        // The exported graph (standardisation + ONNX GRU + logit) gives the
        // trainer's logits in tract, at the trained length.
        let path = std::env::temp_dir().join(format!("fw-gru-{}.onnx", std::process::id()));
        crate::onnx::save(&m.to_onnx().unwrap(), &path).unwrap();
        let loaded = TractBackend
            .load(&path, ShapePolicy::FixedBatch(1))
            .unwrap();
        for (k, s) in test[..8].iter().enumerate() {
            let out = loaded
                .run(&BTensor::new(vec![1, steps, features], s.clone()).unwrap())
                .unwrap();
            let (want, got) = (m.logit(s), out[0].data[0]);
            assert!((want - got).abs() < 1e-4, "sequence {k}: {got} vs {want}");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_training_sets_are_errors() {
        let cfg = SequenceConfig::default();
        assert!(train_gru(&[], &[], 4, 2, &cfg).is_err());
        assert!(
            train_gru(&[vec![0.0; 8]], &[true], 4, 2, &cfg).is_err(),
            "one class"
        );
        assert!(
            train_gru(&[vec![0.0; 8], vec![0.0; 7]], &[true, false], 4, 2, &cfg).is_err(),
            "ragged"
        );
    }
}
