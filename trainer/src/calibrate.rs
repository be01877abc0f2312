//! Calibration of a bundle's aggregated score into P(fake): Platt scaling
//! fitted on the validation split, and the expected calibration error (ECE)
//! with the reliability bins behind it.

use anyhow::{ensure, Result};
use fakewatch_sdk::verdict::{logit, Calibration};
use serde::Serialize;

/// Bins of the expected calibration error and the reliability diagram.
pub const ECE_BINS: usize = 10;
/// Newton iterations of the Platt fit (it converges in well under 20).
const PLATT_ITERATIONS: usize = 100;
/// Step size below which the Platt fit has converged.
const PLATT_TOLERANCE: f64 = 1e-10;
/// Ridge on the Newton system: keeps it solvable when the scores separate
/// the classes perfectly.
const PLATT_RIDGE: f64 = 1e-9;

/// Platt scaling (Platt 1999, with his smoothed targets
/// `(n₊ + 1) / (n₊ + 2)` and `1 / (n₋ + 2)` against over-confidence on small
/// sets): `P(fake) = σ(a · logit(s) + b)` maximising the likelihood of
/// `labels` (true = fake) given the aggregated scores `scores`. Fails when
/// a class is missing, or when the scores rank fakes below reals (a ≤ 0:
/// no monotone calibration exists).
pub fn fit_platt(scores: &[f64], labels: &[bool]) -> Result<Calibration> {
    ensure!(
        scores.len() == labels.len(),
        "scores and labels differ in length"
    );
    let npos = labels.iter().filter(|&&y| y).count() as f64;
    let nneg = labels.len() as f64 - npos;
    ensure!(
        npos > 0.0 && nneg > 0.0,
        "calibration needs validation videos of both classes"
    );
    let hi = (npos + 1.0) / (npos + 2.0);
    let lo = 1.0 / (nneg + 2.0);
    let z: Vec<f64> = scores.iter().map(|&s| f64::from(logit(s as f32))).collect();
    let t: Vec<f64> = labels.iter().map(|&y| if y { hi } else { lo }).collect();
    // Start from the identity map, then Newton on the mean log loss.
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let loss = |a: f64, b: f64| -> f64 {
        z.iter()
            .zip(&t)
            .map(|(&z, &t)| {
                let f = a * z + b;
                // log(1 + e^f) - t·f, stable for large |f|.
                f.max(0.0) + (-f.abs()).exp().ln_1p() - t * f
            })
            .sum::<f64>()
    };
    let mut current = loss(a, b);
    for _ in 0..PLATT_ITERATIONS {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&z, &t) in z.iter().zip(&t) {
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let d = p - t;
            let w = p * (1.0 - p);
            ga += d * z;
            gb += d;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        haa += PLATT_RIDGE;
        hbb += PLATT_RIDGE;
        let det = haa * hbb - hab * hab;
        if det.abs() < f64::MIN_POSITIVE {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        // Backtracking: Newton steps can overshoot far from the optimum.
        let mut step = 1.0;
        let mut next = loss(a - da, b - db);
        while next > current && step > 1e-8 {
            step *= 0.5;
            next = loss(a - step * da, b - step * db);
        }
        if next > current {
            break;
        }
        a -= step * da;
        b -= step * db;
        current = next;
        if (step * da).abs() < PLATT_TOLERANCE && (step * db).abs() < PLATT_TOLERANCE {
            break;
        }
    }
    ensure!(
        a.is_finite() && b.is_finite() && a > 0.0,
        "Platt calibration failed (a {a}, b {b}): the validation scores do not rank fakes above reals"
    );
    let c = Calibration::Platt {
        a: a as f32,
        b: b as f32,
    };
    c.validate()?;
    Ok(c)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin's predicted-probability range.
    pub from: f64,
    /// Upper edge.
    pub to: f64,
    /// Samples in the bin.
    pub n: usize,
    /// Mean predicted P(fake) of those samples.
    pub predicted: f64,
    /// Share of them that are fake.
    pub observed: f64,
}

/// Equal-width bins over `[0, 1]` of `probs` (P(fake)) against `labels`;
/// empty bins are left out.
pub fn reliability(probs: &[f64], labels: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut acc = vec![(0usize, 0.0f64, 0usize); bins];
    for (&p, &y) in probs.iter().zip(labels) {
        let p = p.clamp(0.0, 1.0);
        let i = ((p * bins as f64) as usize).min(bins - 1);
        acc[i].0 += 1;
        acc[i].1 += p;
        acc[i].2 += usize::from(y);
    }
    acc.iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(i, &(n, sum, pos))| ReliabilityBin {
            from: i as f64 / bins as f64,
            to: (i + 1) as f64 / bins as f64,
            n,
            predicted: sum / n as f64,
            observed: pos as f64 / n as f64,
        })
        .collect()
}

/// Expected calibration error: the sample-weighted mean gap between
/// predicted and observed P(fake) over [`reliability`] bins.
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    let total = probs.len().min(labels.len());
    if total == 0 {
        return 0.0;
    }
    reliability(probs, labels, bins)
        .iter()
        .map(|b| b.n as f64 * (b.predicted - b.observed).abs())
        .sum::<f64>()
        / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::verdict::sigmoid;

    /// Scores drawn from a known Platt map: the fit recovers it, and the
    /// calibrated scores have a small ECE where the raw ones did not.
    #[test]
    fn platt_recovers_a_known_map_and_lowers_ece() {
        let (a_true, b_true) = (0.5f64, -1.0f64);
        let mut seed = 7u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut s, mut y) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let raw = uniform().clamp(0.001, 0.999);
            let z = (raw / (1.0 - raw)).ln();
            let p = 1.0 / (1.0 + (-(a_true * z + b_true)).exp());
            s.push(raw);
            y.push(uniform() < p);
        }
        let Calibration::Platt { a, b } = fit_platt(&s, &y).unwrap();
        assert!((f64::from(a) - a_true).abs() < 0.05, "a {a}");
        assert!((f64::from(b) - b_true).abs() < 0.05, "b {b}");
        let cal: Vec<f64> = s
            .iter()
            .map(|&v| f64::from(sigmoid(a * logit(v as f32) + b)))
            .collect();
        let (before, after) = (ece(&s, &y, ECE_BINS), ece(&cal, &y, ECE_BINS));
        assert!(before > 0.1, "raw ECE {before}");
        assert!(after < 0.02, "calibrated ECE {after}");
    }

    #[test]
    fn platt_refuses_what_it_cannot_calibrate() {
        assert!(fit_platt(&[0.2, 0.3], &[true, true]).is_err());
        // Fakes score lower than reals: no increasing map fits.
        let s = [0.9, 0.8, 0.85, 0.1, 0.2, 0.15];
        let y = [false, false, false, true, true, true];
        assert!(fit_platt(&s, &y).is_err());
        // Perfectly separated scores still give a finite, increasing map.
        let Calibration::Platt { a, .. } =
            fit_platt(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).unwrap();
        assert!(a > 0.0 && a.is_finite());
    }

    #[test]
    fn reliability_bins_and_ece() {
        let p = [0.05, 0.05, 0.95, 0.95, 0.55];
        let y = [false, false, true, false, true];
        let bins = reliability(&p, &y, ECE_BINS);
        assert_eq!(bins.len(), 3);
        assert_eq!((bins[0].n, bins[0].observed), (2, 0.0));
        assert_eq!((bins[2].n, bins[2].observed), (2, 0.5));
        // |0.05-0| * 2 + |0.55-1| + |0.95-0.5| * 2, over 5.
        let want = (0.1 + 0.45 + 0.9) / 5.0;
        assert!((ece(&p, &y, ECE_BINS) - want).abs() < 1e-12);
        assert_eq!(ece(&[], &[], ECE_BINS), 0.0);
    }
}
