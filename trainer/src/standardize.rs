//! Per-dimension standardisation of pooled multi-level features, learnt on
//! the training split and folded into the first layer the bundle ships, so
//! the SDK feeds raw pooled features and needs no extra stage.
//!
//! Pooled activations of different levels differ in scale by orders of
//! magnitude (faceres' `conv_pw_3` against `conv_pw_13`); without this the
//! head and the logistic classifier see mostly the loudest level.

use crate::onnx::Dense;

/// Smallest standard deviation divided by (a constant dimension is centred,
/// not blown up).
pub const MIN_STD: f32 = 1e-4;

/// `x' = (x − mean) · inv_std`, per dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Mean of each dimension over the training rows.
    pub mean: Vec<f32>,
    /// 1 / max(standard deviation, [`MIN_STD`]).
    pub inv_std: Vec<f32>,
}

impl Standardizer {
    /// Learns the mean and spread of `rows` (all of one width; at least one row).
    pub fn fit(rows: &[Vec<f32>]) -> Option<Self> {
        let d = rows.first()?.len();
        let n = rows.len() as f64;
        let mut mean = vec![0f64; d];
        for r in rows {
            mean.iter_mut()
                .zip(r)
                .for_each(|(m, v)| *m += f64::from(*v));
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; d];
        for r in rows {
            var.iter_mut()
                .zip(r.iter().zip(&mean))
                .for_each(|(s, (v, m))| *s += (f64::from(*v) - m).powi(2));
        }
        Some(Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std: var
                .iter()
                .map(|&s| 1.0 / ((s / n).sqrt() as f32).max(MIN_STD))
                .collect(),
        })
    }

    /// Standardises every row in place.
    pub fn apply(&self, rows: &mut [Vec<f32>]) {
        for r in rows {
            r.iter_mut()
                .zip(self.mean.iter().zip(&self.inv_std))
                .for_each(|(v, (m, s))| *v = (*v - m) * s);
        }
    }

    /// Rewrites `first` (which was trained on standardised inputs) to take
    /// raw inputs: `W' = W · diag(inv_std)`, `b' = b − W' · mean`.
    pub fn fold_into(&self, first: &mut Dense) {
        for o in 0..first.outputs {
            let w = &mut first.weight[o * first.inputs..(o + 1) * first.inputs];
            let mut shift = 0f64;
            for ((w, s), m) in w.iter_mut().zip(&self.inv_std).zip(&self.mean) {
                *w *= s;
                shift += f64::from(*w) * f64::from(*m);
            }
            first.bias[o] -= shift as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_rows_have_zero_mean_unit_spread() {
        let mut rows = vec![vec![1.0, 10.0, 5.0], vec![3.0, 30.0, 5.0]];
        let s = Standardizer::fit(&rows).unwrap();
        s.apply(&mut rows);
        assert_eq!(rows[0], vec![-1.0, -1.0, 0.0]);
        assert_eq!(rows[1], vec![1.0, 1.0, 0.0]);
    }

    #[test]
    fn folded_layer_on_raw_input_equals_layer_on_standardised_input() {
        let raw = vec![
            vec![0.5, 200.0, -3.0],
            vec![1.5, 100.0, 4.0],
            vec![0.1, 50.0, 0.0],
        ];
        let s = Standardizer::fit(&raw).unwrap();
        let layer = Dense {
            weight: vec![0.3, -0.2, 0.7, 1.1, 0.4, -0.9],
            bias: vec![0.05, -0.5],
            inputs: 3,
            outputs: 2,
        };
        let mut folded = layer.clone();
        s.fold_into(&mut folded);
        let mut std_rows = raw.clone();
        s.apply(&mut std_rows);
        for (r, z) in raw.iter().zip(&std_rows) {
            let a = folded.forward(r);
            let b = layer.forward(z);
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn empty_input_has_no_standardizer() {
        assert!(Standardizer::fit(&[]).is_none());
    }
}
