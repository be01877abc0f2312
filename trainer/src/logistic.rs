//! Logistic regression trained by mini-batch SGD (the paper's SGD classifier),
//! seeded, with L2 regularisation and standardised inputs folded back into
//! the weights so the exported model takes raw features.

use anyhow::{ensure, Result};

use crate::rng::Rng;

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

/// Iterations of [`fit_lbfgs`] at most.
pub const LBFGS_MAX_ITER: usize = 500;
/// Curvature pairs kept by L-BFGS.
const LBFGS_MEMORY: usize = 10;
/// [`fit_lbfgs`] stops when the gradient's largest component is below this.
const LBFGS_TOL: f64 = 1e-6;

/// Logistic regression by full-batch L-BFGS: minimises the class-balanced
/// mean log-loss + `l2 / 2 · |w|²` on standardised inputs (bias not
/// penalised) to convergence, deterministically, then folds the
/// standardisation into the weights. Unlike [`fit`]'s SGD, the result is the
/// regularised optimum, so `l2` means what it says (`l2 = 1 / (C · n)` in
/// scikit-learn's terms) and a grid over it selects something real.
pub fn fit_lbfgs(x: &[Vec<f32>], y: &[bool], l2: f32, max_iter: usize) -> Result<Logistic> {
    ensure!(
        !x.is_empty() && x.len() == y.len(),
        "need as many labels as rows"
    );
    ensure!(l2.is_finite() && l2 >= 0.0, "l2 must be finite and >= 0");
    let d = x[0].len();
    ensure!(x.iter().all(|r| r.len() == d), "rows differ in width");
    let n = x.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| f64::from(r[j])).sum::<f64>() / n)
        .collect();
    let inv_std: Vec<f64> = (0..d)
        .map(|j| {
            let v = x
                .iter()
                .map(|r| (f64::from(r[j]) - mean[j]).powi(2))
                .sum::<f64>()
                / n;
            1.0 / v.sqrt().max(1e-6)
        })
        .collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            r.iter()
                .zip(mean.iter().zip(&inv_std))
                .map(|(v, (m, s))| (f64::from(*v) - m) * s)
                .collect()
        })
        .collect();
    let pos = y.iter().filter(|&&v| v).count().max(1) as f64;
    let neg = (n - pos).max(1.0);
    // Each class weighs half of the loss.
    let weight: Vec<f64> = y
        .iter()
        .map(|&v| if v { 0.5 / pos } else { 0.5 / neg })
        .collect();
    let l2 = f64::from(l2);
    // Parameters: w (d) then b.
    let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let (w, b) = theta.split_at(d);
        let mut loss = 0.0;
        for ((r, &t), &c) in z.iter().zip(y).zip(&weight) {
            let s: f64 = r.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b[0];
            // log(1 + e^-s) for fakes, log(1 + e^s) for reals, stably.
            let m = if t { -s } else { s };
            loss += c * (m.max(0.0) + (-m.abs()).exp().ln_1p());
            let p = 1.0 / (1.0 + (-s).exp());
            let g = c * (p - if t { 1.0 } else { 0.0 });
            grad[..d].iter_mut().zip(r).for_each(|(gw, v)| *gw += g * v);
            grad[d] += g;
        }
        loss += 0.5 * l2 * w.iter().map(|v| v * v).sum::<f64>();
        grad[..d].iter_mut().zip(w).for_each(|(g, v)| *g += l2 * v);
        loss
    };
    let mut theta = vec![0f64; d + 1];
    let mut grad = vec![0f64; d + 1];
    let mut f = objective(&theta, &mut grad);
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for _ in 0..max_iter {
        if grad.iter().fold(0f64, |m, g| m.max(g.abs())) < LBFGS_TOL {
            break;
        }
        // Two-loop recursion: dir = -H·grad.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, yv, _)) = hist.back() {
            let gamma = dot(s, yv) / dot(yv, yv).max(1e-300);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bcoef = rho * dot(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - bcoef) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&dir, &grad);
        let dir = if slope < 0.0 {
            dir
        } else {
            // Not a descent direction: restart from steepest descent.
            hist.clear();
            grad.iter().map(|g| -g).collect()
        };
        let slope = dot(&dir, &grad);
        // Backtracking (Armijo) line search.
        let mut step = if hist.is_empty() {
            1.0 / grad.iter().map(|g| g * g).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
        let mut new_grad = vec![0f64; d + 1];
        let mut accepted = None;
        for _ in 0..40 {
            let cand: Vec<f64> = theta.iter().zip(&dir).map(|(t, v)| t + step * v).collect();
            let fc = objective(&cand, &mut new_grad);
            if fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc)) = accepted else { break };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if hist.len() == LBFGS_MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, yv, 1.0 / sy));
        }
        let improvement = f - fc;
        theta = cand;
        grad = new_grad;
        f = fc;
        if improvement.abs() < 1e-12 * f.abs().max(1.0) {
            break;
        }
    }
    let w: Vec<f32> = (0..d).map(|j| (theta[j] * inv_std[j]) as f32).collect();
    let b = theta[d] - (0..d).map(|j| theta[j] * inv_std[j] * mean[j]).sum::<f64>();
    Ok(Logistic { w, b: b as f32 })
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

    #[test]
    fn lbfgs_reaches_the_regularised_optimum() {
        let mut rng = Rng::new(3);
        let x: Vec<Vec<f32>> = (0..400)
            .map(|_| {
                vec![
                    rng.uniform() * 10.0,
                    rng.uniform() - 0.5,
                    100.0 + rng.uniform(),
                ]
            })
            .collect();
        // Noisy labels: the optimum is interior, with a finite weight.
        let y: Vec<bool> = x
            .iter()
            .map(|r| r[0] + 3.0 * (rng.uniform() - 0.5) > 5.0)
            .collect();
        let m = fit_lbfgs(&x, &y, 1e-3, LBFGS_MAX_ITER).unwrap();
        let acc = x
            .iter()
            .zip(&y)
            .filter(|(r, &l)| (m.predict(r) >= 0.5) == l)
            .count() as f32
            / 400.0;
        assert!(acc > 0.8, "accuracy {acc}");
        assert!(m.w[0] > 0.0 && m.w[0].abs() > m.w[1].abs());
        // Deterministic: the same data gives the same weights.
        let again = fit_lbfgs(&x, &y, 1e-3, LBFGS_MAX_ITER).unwrap();
        assert_eq!(m, again);
        // Stronger L2 shrinks the weights.
        let strong = fit_lbfgs(&x, &y, 1.0, LBFGS_MAX_ITER).unwrap();
        assert!(strong.w[0].abs() < m.w[0].abs());
        assert!(fit_lbfgs(&[], &[], 1e-3, 10).is_err());
    }
}
