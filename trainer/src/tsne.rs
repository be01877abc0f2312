//! Exact t-SNE (van der Maaten & Hinton, 2008) for the embedding plots: a few
//! hundred to a couple of thousand points, O(n²) per iteration, seeded.

use crate::rng::Rng;

/// t-SNE settings.
#[derive(Debug, Clone, Copy)]
pub struct TsneConfig {
    /// Effective number of neighbours.
    pub perplexity: f64,
    /// Gradient-descent iterations.
    pub iterations: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Seed of the initial layout.
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 500,
            learning_rate: 200.0,
            seed: 42,
        }
    }
}

const EXAGGERATION: f64 = 12.0;
const EXAGGERATION_ITERS: usize = 100;

/// Row-wise affinities with the bandwidth found by bisection for `perplexity`.
fn affinities(x: &[Vec<f32>], perplexity: f64) -> Vec<f64> {
    let n = x.len();
    let mut d2 = vec![0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d: f64 = x[i]
                .iter()
                .zip(&x[j])
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            d2[i * n + j] = d;
            d2[j * n + i] = d;
        }
    }
    let target = perplexity.ln();
    let mut p = vec![0f64; n * n];
    for i in 0..n {
        let (mut lo, mut hi, mut beta) = (0.0f64, f64::INFINITY, 1.0f64);
        for _ in 0..64 {
            let row = &d2[i * n..(i + 1) * n];
            let mut sum = 0.0;
            let mut h = 0.0;
            for (j, &d) in row.iter().enumerate() {
                if j != i {
                    let v = (-beta * d).exp();
                    sum += v;
                    h += beta * d * v;
                }
            }
            let sum = sum.max(1e-300);
            let entropy = sum.ln() + h / sum;
            for (j, &d) in row.iter().enumerate() {
                p[i * n + j] = if j == i { 0.0 } else { (-beta * d).exp() / sum };
            }
            if (entropy - target).abs() < 1e-5 {
                break;
            }
            if entropy > target {
                lo = beta;
                beta = if hi.is_finite() {
                    (beta + hi) / 2.0
                } else {
                    beta * 2.0
                };
            } else {
                hi = beta;
                beta = (beta + lo) / 2.0;
            }
        }
    }
    // Symmetrise.
    let mut s = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f64)).max(1e-12);
        }
    }
    s
}

/// 2-D layout of `x`.
pub fn embed(x: &[Vec<f32>], cfg: &TsneConfig) -> Vec<[f64; 2]> {
    let n = x.len();
    if n < 2 {
        return vec![[0.0, 0.0]; n];
    }
    let perplexity = cfg.perplexity.min((n as f64 - 1.0) / 3.0).max(1.0);
    let p = affinities(x, perplexity);
    let mut rng = Rng::new(cfg.seed);
    let mut y: Vec<[f64; 2]> = (0..n)
        .map(|_| {
            [
                f64::from(rng.uniform() - 0.5) * 1e-2,
                f64::from(rng.uniform() - 0.5) * 1e-2,
            ]
        })
        .collect();
    let mut vel = vec![[0f64; 2]; n];
    let mut gains = vec![[1f64; 2]; n];
    let mut q = vec![0f64; n * n];
    for it in 0..cfg.iterations {
        let ex = if it < EXAGGERATION_ITERS {
            EXAGGERATION
        } else {
            1.0
        };
        let momentum = if it < 250 { 0.5 } else { 0.8 };
        let mut qsum = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                let dx = y[i][0] - y[j][0];
                let dy = y[i][1] - y[j][1];
                let v = 1.0 / (1.0 + dx * dx + dy * dy);
                q[i * n + j] = v;
                q[j * n + i] = v;
                qsum += 2.0 * v;
            }
        }
        for i in 0..n {
            let mut g = [0f64; 2];
            for j in 0..n {
                if i == j {
                    continue;
                }
                let w = q[i * n + j];
                let f = (ex * p[i * n + j] - w / qsum) * w;
                g[0] += 4.0 * f * (y[i][0] - y[j][0]);
                g[1] += 4.0 * f * (y[i][1] - y[j][1]);
            }
            for k in 0..2 {
                gains[i][k] = if (g[k] > 0.0) != (vel[i][k] > 0.0) {
                    gains[i][k] + 0.2
                } else {
                    (gains[i][k] * 0.8).max(0.01)
                };
                vel[i][k] = momentum * vel[i][k] - cfg.learning_rate * gains[i][k] * g[k];
            }
        }
        for i in 0..n {
            y[i][0] += vel[i][0];
            y[i][1] += vel[i][1];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_clusters_stay_separated() {
        let mut rng = Rng::new(5);
        let mut x = Vec::new();
        for c in 0..2 {
            for _ in 0..40 {
                let mut v: Vec<f32> = (0..10).map(|_| rng.uniform() * 0.1).collect();
                v[0] += c as f32 * 5.0;
                x.push(v);
            }
        }
        let y = embed(
            &x,
            &TsneConfig {
                iterations: 300,
                ..Default::default()
            },
        );
        let centroid = |r: std::ops::Range<usize>| {
            let n = r.len() as f64;
            let s = r.fold([0.0, 0.0], |a, i| [a[0] + y[i][0], a[1] + y[i][1]]);
            [s[0] / n, s[1] / n]
        };
        let (a, b) = (centroid(0..40), centroid(40..80));
        let between = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let spread = (0..40)
            .map(|i| ((y[i][0] - a[0]).powi(2) + (y[i][1] - a[1]).powi(2)).sqrt())
            .sum::<f64>()
            / 40.0;
        assert!(between > 3.0 * spread, "between {between}, spread {spread}");
    }
}
