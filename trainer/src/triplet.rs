//! The metric-learning head: an MLP trained with the triplet loss
//! `max(‖f(a)−f(p)‖² − ‖f(a)−f(n)‖² + α, 0)` and online triplet mining inside
//! class-balanced batches (semi-hard as in the paper's code, plus hard and
//! random for comparison). Built on candle; seeded end to end.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::onnx::Dense;
use crate::rng::Rng;

/// How negatives are chosen for each anchor–positive pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mining {
    /// The closest negative farther than the positive; if none, the farthest
    /// negative (TensorFlow Addons' `TripletSemiHardLoss`, used by the paper's code).
    SemiHard,
    /// The closest negative.
    Hard,
    /// A uniformly random negative.
    Random,
}

/// Training parameters of the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TripletConfig {
    /// Output widths of the layers (ReLU between, L2 at the end).
    pub layers: Vec<usize>,
    /// Margin α.
    pub margin: f32,
    /// Batch size (half real, half fake).
    pub batch: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Negative mining.
    pub mining: Mining,
    /// Seed of initialisation and batch sampling.
    pub seed: u64,
}

impl Default for TripletConfig {
    fn default() -> Self {
        Self {
            layers: vec![256, 256, 128, 64],
            margin: 1.0,
            batch: 512,
            steps: 2000,
            lr: 1e-3,
            mining: Mining::SemiHard,
            seed: 42,
        }
    }
}

/// One mined triplet of batch indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    /// Anchor.
    pub a: usize,
    /// Positive (same class as the anchor).
    pub p: usize,
    /// Negative (other class).
    pub n: usize,
}

/// Mines one negative per anchor–positive pair from the squared distance
/// matrix `d` (`b × b`, row-major) of a batch with `labels`.
pub fn mine(d: &[f32], labels: &[bool], mining: Mining, rng: &mut Rng) -> Vec<Triplet> {
    let b = labels.len();
    let mut out = Vec::new();
    for a in 0..b {
        let negs: Vec<usize> = (0..b).filter(|&j| labels[j] != labels[a]).collect();
        if negs.is_empty() {
            continue;
        }
        for p in (0..b).filter(|&j| j != a && labels[j] == labels[a]) {
            let dap = d[a * b + p];
            let n = match mining {
                Mining::Random => negs[rng.below(negs.len())],
                Mining::Hard => *negs
                    .iter()
                    .min_by(|&&x, &&y| d[a * b + x].total_cmp(&d[a * b + y]))
                    .unwrap_or(&negs[0]),
                Mining::SemiHard => negs
                    .iter()
                    .copied()
                    .filter(|&x| d[a * b + x] > dap)
                    .min_by(|&x, &y| d[a * b + x].total_cmp(&d[a * b + y]))
                    .unwrap_or_else(|| {
                        *negs
                            .iter()
                            .max_by(|&&x, &&y| d[a * b + x].total_cmp(&d[a * b + y]))
                            .unwrap_or(&negs[0])
                    }),
            };
            out.push(Triplet { a, p, n });
        }
    }
    out
}

/// The head under training.
pub struct Head {
    weights: Vec<(Var, Var)>,
}

impl Head {
    /// Kaiming-uniform initialisation like `torch.nn.Linear`, from `rng`.
    pub fn new(input: usize, layers: &[usize], rng: &mut Rng) -> Result<Self> {
        ensure!(
            !layers.is_empty() && input > 0,
            "head needs an input width and at least one layer"
        );
        let mut weights = Vec::new();
        let mut i = input;
        for &o in layers {
            let bound = 1.0 / (i as f32).sqrt();
            let w: Vec<f32> = (0..o * i)
                .map(|_| (rng.uniform() * 2.0 - 1.0) * bound)
                .collect();
            let b: Vec<f32> = (0..o)
                .map(|_| (rng.uniform() * 2.0 - 1.0) * bound)
                .collect();
            weights.push((
                Var::from_tensor(&Tensor::from_vec(w, (o, i), &Device::Cpu)?)?,
                Var::from_tensor(&Tensor::from_vec(b, o, &Device::Cpu)?)?,
            ));
            i = o;
        }
        Ok(Self { weights })
    }

    /// Forward pass: `[n, in]` → `[n, out]`, L2-normalised rows.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (k, (w, b)) in self.weights.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if k + 1 < self.weights.len() {
                h = h.relu()?;
            }
        }
        let norm = (h.sqr()?.sum_keepdim(1)? + f64::from(crate::onnx::L2_EPS))?.sqrt()?;
        Ok(h.broadcast_div(&norm)?)
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.weights
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// The layers as plain weights (for ONNX export).
    pub fn to_dense(&self) -> Result<Vec<Dense>> {
        self.weights
            .iter()
            .map(|(w, b)| {
                let (o, i) = w.as_tensor().dims2()?;
                Ok(Dense {
                    weight: w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                    bias: b.as_tensor().to_vec1::<f32>()?,
                    inputs: i,
                    outputs: o,
                })
            })
            .collect()
    }
}

/// Pairwise squared Euclidean distances of the rows of `e` (`[b, k]` → `[b, b]`).
pub fn pairwise_sq_dist(e: &Tensor) -> Result<Tensor> {
    let sq = e.sqr()?.sum_keepdim(1)?; // [b, 1]
    let dot = e.matmul(&e.t()?)?;
    Ok(sq.broadcast_add(&sq.t()?)?.sub(&(dot * 2.0)?)?.relu()?)
}

/// Mean triplet loss over `triplets` from the distance matrix `d` (`[b, b]`).
pub fn triplet_loss(d: &Tensor, triplets: &[Triplet], margin: f32) -> Result<Tensor> {
    ensure!(!triplets.is_empty(), "no triplets");
    let b = d.dim(0)?;
    let flat = d.flatten_all()?;
    let idx = |f: &dyn Fn(&Triplet) -> usize| -> Result<Tensor> {
        let v: Vec<u32> = triplets.iter().map(|t| f(t) as u32).collect();
        Ok(Tensor::from_vec(v, triplets.len(), d.device())?)
    };
    let ap = flat.index_select(&idx(&|t| t.a * b + t.p)?, 0)?;
    let an = flat.index_select(&idx(&|t| t.a * b + t.n)?, 0)?;
    Ok(((ap - an)? + f64::from(margin))?.relu()?.mean_all()?)
}

/// Draws a class-balanced batch of indices (half real, half fake).
pub fn balanced_batch(real: &[usize], fake: &[usize], size: usize, rng: &mut Rng) -> Vec<usize> {
    let half = size / 2;
    let mut out = Vec::with_capacity(size);
    for pool in [real, fake] {
        if pool.is_empty() {
            continue;
        }
        for _ in 0..half.min(pool.len()) {
            out.push(pool[rng.below(pool.len())]);
        }
    }
    out
}

/// Trains a head on `x` (rows of equal width) with labels `y` (true = fake).
/// `on_step(step, loss)` is called after every step (progress reporting).
pub fn train(
    x: &[Vec<f32>],
    y: &[bool],
    cfg: &TripletConfig,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Head> {
    ensure!(
        !x.is_empty() && x.len() == y.len(),
        "need as many labels as rows"
    );
    let dim = x[0].len();
    ensure!(x.iter().all(|r| r.len() == dim), "rows differ in width");
    let real: Vec<usize> = (0..y.len()).filter(|&i| !y[i]).collect();
    let fake: Vec<usize> = (0..y.len()).filter(|&i| y[i]).collect();
    ensure!(
        !real.is_empty() && !fake.is_empty(),
        "both classes are needed"
    );
    let mut rng = Rng::new(cfg.seed);
    let head = Head::new(dim, &cfg.layers, &mut rng)?;
    let mut opt = AdamW::new(
        head.vars(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    for step in 0..cfg.steps {
        let idx = balanced_batch(&real, &fake, cfg.batch, &mut rng);
        let labels: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
        let data: Vec<f32> = idx.iter().flat_map(|&i| x[i].iter().copied()).collect();
        let xb = Tensor::from_vec(data, (idx.len(), dim), &Device::Cpu)?;
        let e = head.forward(&xb)?;
        let d = pairwise_sq_dist(&e)?;
        let dv = d.flatten_all()?.to_vec1::<f32>()?;
        let triplets = mine(&dv, &labels, cfg.mining, &mut rng);
        let loss = triplet_loss(&d, &triplets, cfg.margin)?;
        let lv = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        ensure!(lv.is_finite(), "loss became {lv} at step {step}");
        opt.backward_step(&loss)?;
        on_step(step, lv);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-d embeddings: reals at 0.0, 0.1; fakes at 0.15, 0.5, 2.0.
    fn hand_batch() -> (Vec<f32>, Vec<bool>) {
        let pos = [0.0f32, 0.1, 0.15, 0.5, 2.0];
        let labels = vec![false, false, true, true, true];
        let d: Vec<f32> = pos
            .iter()
            .flat_map(|a| pos.iter().map(move |b| (a - b) * (a - b)))
            .collect();
        (d, labels)
    }

    #[test]
    fn semi_hard_negatives_are_the_known_ones() {
        let (d, labels) = hand_batch();
        let t = mine(&d, &labels, Mining::SemiHard, &mut Rng::new(0));
        let find = |a, p| t.iter().find(|x| x.a == a && x.p == p).unwrap().n;
        // a=0 (0.0), p=1 (0.1): d(a,p)=0.01; negatives 0.0225, 0.25, 4 -> closest beyond 0.01 is 0.15 (idx 2).
        assert_eq!(find(0, 1), 2);
        // a=1 (0.1), p=0: d=0.01; negatives 0.0025 (inside), 0.16, 3.61 -> semi-hard is 0.5 (idx 3).
        assert_eq!(find(1, 0), 3);
        // a=4 (2.0), p=2 (0.15): d=3.4225; negatives 4.0 and 3.61 -> 3.61 (idx 1).
        assert_eq!(find(4, 2), 1);
        // a=2 (0.15), p=4 (2.0): d=3.4225; negatives 0.0225, 0.0025 both inside -> farthest (idx 0).
        assert_eq!(find(2, 4), 0);
        assert_eq!(t.len(), 2 + 6); // 2 real ordered pairs + 6 fake ordered pairs
        let hard = mine(&d, &labels, Mining::Hard, &mut Rng::new(0));
        assert_eq!(hard.iter().find(|x| x.a == 1 && x.p == 0).unwrap().n, 2);
        let random = mine(&d, &labels, Mining::Random, &mut Rng::new(0));
        assert!(random.iter().all(|x| labels[x.n] != labels[x.a]));
    }

    #[test]
    fn loss_value_and_gradient() {
        // Embedding rows (2-d): a=(0,0), p=(1,0), n=(0,2): d(a,p)=1, d(a,n)=4.
        let e = Var::from_tensor(
            &Tensor::from_vec(vec![0f32, 0., 1., 0., 0., 2.], (3, 2), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let d = pairwise_sq_dist(e.as_tensor()).unwrap();
        let t = [Triplet { a: 0, p: 1, n: 2 }];
        let l = triplet_loss(&d, &t, 4.0).unwrap(); // 1 - 4 + 4 = 1
        assert!((l.to_scalar::<f32>().unwrap() - 1.0).abs() < 1e-6);
        let g = l.backward().unwrap();
        let grad = g
            .get(e.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // ∂/∂a [‖a−p‖² − ‖a−n‖²] = 2(a−p) − 2(a−n) = 2(n−p) = (−2, 4)
        assert!(
            (grad[0] + 2.0).abs() < 1e-5 && (grad[1] - 4.0).abs() < 1e-5,
            "{grad:?}"
        );
        // p: −2(a−p) = (2, 0); n: 2(a−n) = (0, −4)
        assert!(
            (grad[2] - 2.0).abs() < 1e-5 && (grad[5] + 4.0).abs() < 1e-5,
            "{grad:?}"
        );
        // Beyond the margin the loss is zero.
        let l0 = triplet_loss(&d, &t, 2.0).unwrap();
        assert_eq!(l0.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn training_separates_two_overlapping_clouds() {
        // Two 16-d Gaussian-ish clouds whose means differ along one axis.
        let mut rng = Rng::new(3);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..400 {
            let fake = i % 2 == 1;
            let mut r: Vec<f32> = (0..16).map(|_| rng.uniform() - 0.5).collect();
            r[0] += if fake { 0.6 } else { -0.6 };
            x.push(r);
            y.push(fake);
        }
        let cfg = TripletConfig {
            layers: vec![16, 8],
            batch: 64,
            steps: 150,
            lr: 1e-2,
            ..Default::default()
        };
        let mut losses = Vec::new();
        let head = train(&x, &y, &cfg, |_, l| losses.push(l)).unwrap();
        let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
        let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        // Same seed, same head.
        let again = train(&x, &y, &cfg, |_, _| {}).unwrap();
        assert_eq!(head.to_dense().unwrap(), again.to_dense().unwrap());
    }
}
