//! Binary classification metrics of real (0) versus fake (1) scores:
//! ROC AUC (ties counted half), EER with its threshold, and accuracy,
//! precision, recall and F1 at a threshold.

use serde::Serialize;

/// Metrics of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Report {
    /// Samples evaluated.
    pub n: usize,
    /// Accuracy at the threshold.
    pub acc: f64,
    /// Precision of the fake class.
    pub precision: f64,
    /// Recall of the fake class.
    pub recall: f64,
    /// F1 of the fake class.
    pub f1: f64,
    /// Area under the ROC curve.
    pub auc: f64,
    /// Equal error rate.
    pub eer: f64,
    /// Score threshold at the EER.
    pub eer_threshold: f64,
    /// Threshold used for acc/precision/recall/F1.
    pub threshold: f64,
}

/// ROC AUC as the probability that a random fake outscores a random real
/// (Mann–Whitney U, ties counted half). `None` unless both classes are present.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (npos, nneg) =
        labels.iter().fold(
            (0usize, 0usize),
            |(p, n), &l| if l { (p + 1, n) } else { (p, n + 1) },
        );
    if npos == 0 || nneg == 0 || scores.len() != labels.len() {
        return None;
    }
    // Average ranks over tie groups.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (npos * (npos + 1)) as f64 / 2.0;
    Some(u / (npos * nneg) as f64)
}

/// ROC curve points `(false positive rate, true positive rate, threshold)`,
/// from the strictest threshold to the loosest (a sample is positive when
/// `score >= threshold`).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let npos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let nneg = labels.iter().filter(|&&l| !l).count().max(1) as f64;
    let mut out = vec![(0.0, 0.0, f64::INFINITY)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if labels[idx[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        out.push((fp / nneg, tp / npos, t));
    }
    out
}

/// Equal error rate and its threshold: the ROC point where the false
/// positive rate and the false negative rate are closest (their mean).
pub fn eer(scores: &[f64], labels: &[bool]) -> Option<(f64, f64)> {
    let roc = roc_curve(scores, labels);
    if roc.len() < 2 {
        return None;
    }
    roc.iter()
        .skip(1)
        .map(|&(fpr, tpr, t)| {
            let fnr = 1.0 - tpr;
            ((fpr - fnr).abs(), (fpr + fnr) / 2.0, t)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e, t)| (e, t))
}

/// All metrics; acc/precision/recall/F1 at `threshold` (fake when `score >= threshold`).
pub fn report(scores: &[f64], labels: &[bool], threshold: f64) -> Option<Report> {
    let auc = roc_auc(scores, labels)?;
    let (eer, eer_threshold) = eer(scores, labels)?;
    let (mut tp, mut fp, mut tn, mut fneg) = (0.0, 0.0, 0.0, 0.0);
    for (&s, &l) in scores.iter().zip(labels) {
        match (s >= threshold, l) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fneg > 0.0 {
        tp / (tp + fneg)
    } else {
        0.0
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Some(Report {
        n: scores.len(),
        acc: (tp + tn) / scores.len() as f64,
        precision,
        recall,
        f1,
        auc,
        eer,
        eer_threshold,
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_hand_computed() {
        // Perfect separation.
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        // Inverted.
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        // Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.9) loss, (0.4, 0.1) win, (0.4, 0.9) loss -> 2/4.
        assert_eq!(
            roc_auc(&[0.1, 0.9, 0.8, 0.4], &[false, false, true, true]),
            Some(0.5)
        );
        // 3 pos x 2 neg; pos 0.7 beats both, 0.5 ties one neg 0.5 (half) and beats 0.3, 0.2 loses both.
        let a = roc_auc(
            &[0.7, 0.5, 0.2, 0.5, 0.3],
            &[true, true, true, false, false],
        )
        .unwrap();
        assert!((a - 3.5 / 6.0).abs() < 1e-12);
        // All ties: 0.5.
        assert_eq!(roc_auc(&[0.3; 4], &[true, false, true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.3, 0.4], &[true, true]), None);
    }

    #[test]
    fn eer_hand_computed() {
        // Reals 0.1 0.2 0.3 0.6, fakes 0.4 0.7 0.8 0.9: at t = 0.7 FPR 0, FNR 1/4;
        // at t = 0.6 FPR 1/4, FNR 1/4 -> EER 0.25 at 0.6.
        let s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9];
        let l = [false, false, false, false, true, true, true, true];
        let (e, t) = eer(&s, &l).unwrap();
        assert!((e - 0.25).abs() < 1e-12);
        assert_eq!(t, 0.6);
        let r = report(&s, &l, 0.5).unwrap();
        // At 0.5: predicted fake {0.6, 0.7, 0.8, 0.9}: tp 3, fp 1, tn 3, fn 1.
        assert!((r.acc - 0.75).abs() < 1e-12);
        assert!((r.precision - 0.75).abs() < 1e-12 && (r.recall - 0.75).abs() < 1e-12);
        assert!((r.f1 - 0.75).abs() < 1e-12);
        assert!((r.auc - 15.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn roc_curve_ends_at_one_one() {
        let c = roc_curve(&[0.2, 0.9, 0.5], &[false, true, true]);
        assert_eq!(c.first().map(|p| (p.0, p.1)), Some((0.0, 0.0)));
        assert_eq!(c.last().map(|p| (p.0, p.1)), Some((1.0, 1.0)));
    }
}
