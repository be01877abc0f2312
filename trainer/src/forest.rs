//! Random forest (CART, Gini impurity, bootstrap + √d features per split),
//! the paper's second classifier. Thresholds and comparisons are `f32` with
//! `x <= t` going left, exactly as ONNX `TreeEnsembleClassifier`'s
//! `BRANCH_LEQ`, so the exported model reproduces the trainer's scores.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Forest hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestConfig {
    /// Number of trees.
    pub trees: usize,
    /// Maximum depth (root = 0).
    pub max_depth: usize,
    /// Fewest training rows in a leaf.
    pub min_leaf: usize,
    /// Features tried per split (0 = √d).
    pub features_per_split: usize,
    /// Seed of the bootstrap and feature draws.
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        Self {
            trees: 100,
            max_depth: 12,
            min_leaf: 2,
            features_per_split: 0,
            seed: 42,
        }
    }
}

/// A node of a tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `x[feature] <= threshold` goes to `left`, else `right` (node indices).
    Split {
        /// Feature index.
        feature: usize,
        /// Threshold.
        threshold: f32,
        /// Node taken when `x[feature] <= threshold`.
        left: usize,
        /// Node taken otherwise.
        right: usize,
    },
    /// Fraction of fake training rows that reached the leaf.
    Leaf {
        /// P(fake).
        p_fake: f32,
    },
}

/// One tree; node 0 is the root, children have larger indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// Nodes in depth-first order.
    pub nodes: Vec<Node>,
}

/// A trained forest.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    /// Trees.
    pub trees: Vec<Tree>,
    /// Input width.
    pub dim: usize,
}

impl Tree {
    fn predict(&self, x: &[f32]) -> f32 {
        let mut i = 0;
        loop {
            match self.nodes[i] {
                Node::Leaf { p_fake } => return p_fake,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => i = if x[feature] <= threshold { left } else { right },
            }
        }
    }
}

impl Forest {
    /// Mean P(fake) over the trees.
    pub fn predict(&self, x: &[f32]) -> f32 {
        let s: f32 = self.trees.iter().map(|t| t.predict(x)).sum();
        s / self.trees.len() as f32
    }
}

struct Builder<'a> {
    x: &'a [Vec<f32>],
    y: &'a [bool],
    cfg: &'a ForestConfig,
    mtry: usize,
    rng: Rng,
    nodes: Vec<Node>,
}

fn gini(fake: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let p = fake as f64 / n as f64;
    2.0 * p * (1.0 - p) * n as f64
}

impl Builder<'_> {
    /// Builds the subtree of `rows` and returns its node index.
    fn grow(&mut self, rows: &mut [usize], depth: usize) -> usize {
        let n = rows.len();
        let fake = rows.iter().filter(|&&r| self.y[r]).count();
        let id = self.nodes.len();
        self.nodes.push(Node::Leaf {
            p_fake: fake as f32 / n.max(1) as f32,
        });
        if depth >= self.cfg.max_depth || fake == 0 || fake == n || n < 2 * self.cfg.min_leaf {
            return id;
        }
        let dim = self.x[0].len();
        let parent = gini(fake, n);
        // (gain, feature, threshold)
        let mut best: Option<(f64, usize, f32)> = None;
        let mut vals: Vec<(f32, bool)> = Vec::with_capacity(n);
        for _ in 0..self.mtry {
            let f = self.rng.below(dim);
            vals.clear();
            vals.extend(rows.iter().map(|&r| (self.x[r][f], self.y[r])));
            vals.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut left_fake = 0;
            for i in 0..n - 1 {
                left_fake += usize::from(vals[i].1);
                let nl = i + 1;
                if nl < self.cfg.min_leaf
                    || n - nl < self.cfg.min_leaf
                    || vals[i].0 == vals[i + 1].0
                {
                    continue;
                }
                let gain = parent - gini(left_fake, nl) - gini(fake - left_fake, n - nl);
                if best.is_none_or(|b| gain > b.0) {
                    let mut t = vals[i].0 + (vals[i + 1].0 - vals[i].0) / 2.0;
                    if t >= vals[i + 1].0 {
                        t = vals[i].0;
                    }
                    best = Some((gain, f, t));
                }
            }
        }
        let Some((gain, feature, threshold)) = best else {
            return id;
        };
        if gain <= 1e-12 {
            return id;
        }
        // Partition rows in place: left = x <= t.
        let mut k = 0;
        for i in 0..n {
            if self.x[rows[i]][feature] <= threshold {
                rows.swap(i, k);
                k += 1;
            }
        }
        let (l, r) = rows.split_at_mut(k);
        let left = self.grow(l, depth + 1);
        let right = self.grow(r, depth + 1);
        self.nodes[id] = Node::Split {
            feature,
            threshold,
            left,
            right,
        };
        id
    }
}

/// Trains a forest on rows `x` with labels `y` (true = fake).
pub fn fit(x: &[Vec<f32>], y: &[bool], cfg: &ForestConfig) -> Result<Forest> {
    ensure!(
        !x.is_empty() && x.len() == y.len(),
        "forest needs labelled rows"
    );
    ensure!(
        cfg.trees > 0 && cfg.min_leaf > 0,
        "forest needs trees > 0 and min_leaf > 0"
    );
    let dim = x[0].len();
    ensure!(
        dim > 0 && x.iter().all(|r| r.len() == dim),
        "rows differ in width"
    );
    let mtry = if cfg.features_per_split == 0 {
        ((dim as f64).sqrt().round() as usize).max(1)
    } else {
        cfg.features_per_split.min(dim)
    };
    let mut seeds = Rng::new(cfg.seed);
    let mut trees = Vec::with_capacity(cfg.trees);
    for _ in 0..cfg.trees {
        let mut rng = Rng::new(seeds.next_u64());
        let mut rows: Vec<usize> = (0..x.len()).map(|_| rng.below(x.len())).collect();
        let mut b = Builder {
            x,
            y,
            cfg,
            mtry,
            rng,
            nodes: Vec::new(),
        };
        b.grow(&mut rows, 0);
        trees.push(Tree { nodes: b.nodes });
    }
    Ok(Forest { trees, dim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_non_linear_problem() {
        // XOR of two coordinates: no linear model separates it.
        let mut rng = Rng::new(1);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..800 {
            let (a, b) = (rng.uniform() - 0.5, rng.uniform() - 0.5);
            x.push(vec![a, b, rng.uniform()]);
            y.push((a > 0.0) != (b > 0.0));
        }
        let cfg = ForestConfig {
            trees: 20,
            max_depth: 8,
            features_per_split: 3,
            ..Default::default()
        };
        let f = fit(&x[..600], &y[..600], &cfg).unwrap();
        let correct = (600..800)
            .filter(|&i| (f.predict(&x[i]) > 0.5) == y[i])
            .count();
        assert!(correct >= 180, "{correct}/200 correct");
        // Seeded: the same config gives the same forest.
        assert_eq!(f, fit(&x[..600], &y[..600], &cfg).unwrap());
    }

    #[test]
    fn pure_input_is_a_single_leaf() {
        let x = vec![vec![1.0], vec![2.0]];
        let f = fit(&x, &[true, true], &ForestConfig::default()).unwrap();
        assert!(f.trees.iter().all(|t| t.nodes.len() == 1));
        assert_eq!(f.predict(&[0.0]), 1.0);
        assert!(fit(&[], &[], &ForestConfig::default()).is_err());
    }
}
