//! Logistic regression trained by mini-batch SGD (the paper's SGD classifier),
//! seeded, with L2 regularisation and standardised inputs folded back into
//! the weights so the exported model takes raw features.

use anyhow::{ensure, Result};

use crate::triplet::Rng;

/// SGD passes over the training set used by `fakewatch-train head`.
pub const EPOCHS: usize = 20;
/// Initial SGD learning rate (decays as `lr / (1 + 0.1 · epoch)`).
pub const LEARNING_RATE: f32 = 0.1;
/// L2 regularisation strength.
pub const L2: f32 = 1e-4;

/// A trained logistic model `p = σ(w·x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// Weights on raw features.
    pub w: Vec<f32>,
    /// Bias.
    pub b: f32,
}

impl Logistic {
    /// P(fake) of one row.
    pub fn predict(&self, x: &[f32]) -> f32 {
        let z: f32 = self.w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + self.b;
        1.0 / (1.0 + (-z).exp())
    }
}

/// Fits on rows `x` with labels `y` (true = fake): `epochs` passes of SGD with
/// batch 32, learning rate `lr`, L2 strength `l2`, classes weighted to balance.
pub fn fit(
    x: &[Vec<f32>],
    y: &[bool],
    epochs: usize,
    lr: f32,
    l2: f32,
    seed: u64,
) -> Result<Logistic> {
    ensure!(
        !x.is_empty() && x.len() == y.len(),
        "need as many labels as rows"
    );
    let d = x[0].len();
    let n = x.len() as f32;
    let mean: Vec<f32> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..d)
        .map(|j| {
            (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f32>() / n)
                .sqrt()
                .max(1e-6)
        })
        .collect();
    let pos = y.iter().filter(|&&v| v).count().max(1) as f32;
    let neg = (y.len() as f32 - pos).max(1.0);
    let (wp, wn) = (n / (2.0 * pos), n / (2.0 * neg));
    let mut w = vec![0f32; d];
    let mut b = 0f32;
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..x.len()).collect();
    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let rate = lr / (1.0 + epoch as f32 * 0.1);
        for chunk in order.chunks(32) {
            let mut gw = vec![0f32; d];
            let mut gb = 0f32;
            for &i in chunk {
                let z: f32 = (0..d)
                    .map(|j| w[j] * (x[i][j] - mean[j]) / std[j])
                    .sum::<f32>()
                    + b;
                let p = 1.0 / (1.0 + (-z).exp());
                let t = if y[i] { 1.0 } else { 0.0 };
                let g = (p - t) * if y[i] { wp } else { wn };
                for j in 0..d {
                    gw[j] += g * (x[i][j] - mean[j]) / std[j];
                }
                gb += g;
            }
            let m = chunk.len() as f32;
            for j in 0..d {
                w[j] -= rate * (gw[j] / m + l2 * w[j]);
            }
            b -= rate * gb / m;
        }
    }
    // Fold standardisation into the weights.
    let wr: Vec<f32> = (0..d).map(|j| w[j] / std[j]).collect();
    let br = b - (0..d).map(|j| w[j] * mean[j] / std[j]).sum::<f32>();
    Ok(Logistic { w: wr, b: br })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_a_linear_problem() {
        let mut rng = Rng::new(1);
        let x: Vec<Vec<f32>> = (0..300)
            .map(|_| vec![rng.uniform() * 10.0, rng.uniform()])
            .collect();
        let y: Vec<bool> = x.iter().map(|r| r[0] > 5.0).collect();
        let m = fit(&x, &y, 30, 0.5, 1e-4, 0).unwrap();
        let acc = x
            .iter()
            .zip(&y)
            .filter(|(r, &l)| (m.predict(r) >= 0.5) == l)
            .count() as f32
            / 300.0;
        assert!(acc > 0.95, "accuracy {acc}");
        assert!(fit(&[], &[], 1, 0.1, 0.0, 0).is_err());
    }
}
