//! Pseudo-identities for datasets that name no identities.
//!
//! A split by source video leaks people when a dataset reuses actors (DFDC
//! does: 63 % of test crops had a training crop of the same person under a
//! split by video). Where the layout has no identity column, `fit` can
//! cluster the groups (source videos) by face embedding — average linkage
//! on cosine distance, cut at `max_distance`, as the shared DFDC labels were
//! made — and split by cluster instead, so one person's videos all land in
//! one split. Clustering uses each group's real faces (a face swap shows
//! another face on the real video's person), or its fakes when it has none.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::dataset::{hashed_split, Sample, Split};

/// Largest number of groups clustered (the distance matrix is n² floats).
pub const MAX_GROUPS: usize = 20_000;

/// Settings of the pseudo-identity split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoIdentityConfig {
    /// Groups closer than this (cosine distance of their mean embeddings,
    /// average linkage) are one identity.
    #[serde(default = "default_max_distance")]
    pub max_distance: f32,
}

fn default_max_distance() -> f32 {
    0.5
}

impl Default for PseudoIdentityConfig {
    fn default() -> Self {
        Self {
            max_distance: default_max_distance(),
        }
    }
}

impl PseudoIdentityConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.max_distance.is_finite() && (0.0..=2.0).contains(&self.max_distance),
            "pseudo_identities.max_distance must lie within 0..=2 (cosine distance)"
        );
        Ok(())
    }
}

/// Average-linkage clusters of unit vectors cut at cosine distance
/// `max_distance`: the cluster index of each point (0..k, in order of first
/// appearance). Nearest-neighbour-chain algorithm, O(n²) time and memory.
pub fn cluster(points: &[Vec<f32>], max_distance: f32) -> Result<Vec<usize>> {
    let n = points.len();
    ensure!(
        n <= MAX_GROUPS,
        "{n} groups to cluster (at most {MAX_GROUPS})"
    );
    if n == 0 {
        return Ok(Vec::new());
    }
    let dim = points[0].len();
    ensure!(
        points
            .iter()
            .all(|p| p.len() == dim && p.iter().all(|v| v.is_finite())),
        "embeddings must all have {dim} finite components"
    );
    // Full distance matrix (row-major, symmetric).
    let mut d = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let dot: f32 = points[i].iter().zip(&points[j]).map(|(a, b)| a * b).sum();
            let v = 1.0 - dot;
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    let mut merges: Vec<(usize, usize, f32)> = Vec::with_capacity(n - 1);
    let mut chain: Vec<usize> = Vec::new();
    let mut remaining = n;
    while remaining > 1 {
        if chain.is_empty() {
            chain.push(active.iter().position(|&a| a).unwrap_or(0));
        }
        let a = chain[chain.len() - 1];
        let prev = chain.len().checked_sub(2).map(|k| chain[k]);
        // Nearest active neighbour of a, preferring the previous chain
        // element on ties (guarantees termination).
        let mut best = prev;
        let mut best_d = prev.map_or(f32::INFINITY, |p| d[a * n + p]);
        for (b, &is_active) in active.iter().enumerate() {
            if is_active && b != a && d[a * n + b] < best_d {
                best = Some(b);
                best_d = d[a * n + b];
            }
        }
        let Some(b) = best else { break };
        if Some(b) == prev {
            // Reciprocal nearest neighbours: merge b into a.
            chain.truncate(chain.len() - 2);
            merges.push((a, b, best_d));
            let (sa, sb) = (size[a] as f32, size[b] as f32);
            for k in 0..n {
                if active[k] && k != a && k != b {
                    let v = (sa * d[a * n + k] + sb * d[b * n + k]) / (sa + sb);
                    d[a * n + k] = v;
                    d[k * n + a] = v;
                }
            }
            size[a] += size[b];
            active[b] = false;
            remaining -= 1;
        } else {
            chain.push(b);
        }
    }
    // Average linkage is monotone: the merges at or below the cut, applied
    // in any order, give the flat clusters at the cut.
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &(a, b, h) in &merges {
        if h <= max_distance {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[rb] = ra;
        }
    }
    let mut label = vec![usize::MAX; n];
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    for i in 0..n {
        let r = root(&mut parent, i);
        if label[r] == usize::MAX {
            label[r] = next;
            next += 1;
        }
        out.push(label[r]);
    }
    Ok(out)
}

/// What [`assign`] did, for the log and the bundle's training record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PseudoIdentityReport {
    /// Groups with at least one embedded face.
    pub groups: usize,
    /// Groups without any face (split by their own name, as before).
    pub groups_without_face: usize,
    /// Pseudo-identities found.
    pub identities: usize,
    /// Members of the largest pseudo-identity.
    pub largest: usize,
    /// The cut used.
    pub max_distance: f32,
    /// Where the dataset also names identities: how much the pseudo-identity
    /// split leaks them, next to a split by source group.
    pub leak: Option<IdentityLeak>,
}

/// How often a held-out sample's named identity also appears in training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdentityLeak {
    /// Validation and test samples measured.
    pub held_out: usize,
    /// Share of them whose named identity has a training sample under the
    /// pseudo-identity split.
    pub pseudo_split: f64,
    /// The same share under a split by source group (same seed and
    /// fractions): what the pseudo-identities are meant to fix.
    pub group_split: f64,
}

/// Share of held-out samples (validation and test under `split_of`) whose
/// `identity` also has a training sample; `None` without held-out samples.
fn leak_share(samples: &[Sample], split_of: impl Fn(&Sample) -> Split) -> Option<(usize, f64)> {
    let train: std::collections::HashSet<&str> = samples
        .iter()
        .filter(|s| split_of(s) == Split::Train)
        .map(|s| s.identity.as_str())
        .collect();
    let held: Vec<&Sample> = samples
        .iter()
        .filter(|s| split_of(s) != Split::Train)
        .collect();
    if held.is_empty() {
        return None;
    }
    let leaked = held
        .iter()
        .filter(|s| train.contains(s.identity.as_str()))
        .count();
    Some((held.len(), leaked as f64 / held.len() as f64))
}

/// Gives every sample the pseudo-identity of its group and re-splits the
/// groups by it. `embedding(i)` is sample `i`'s mean face embedding (`None`
/// without a face). Splits are a seeded hash of the pseudo-identity with the
/// dataset's validation/test fractions.
pub fn assign(
    samples: &mut [Sample],
    embedding: impl Fn(usize) -> Option<Vec<f32>>,
    cfg: &PseudoIdentityConfig,
    fractions: [f64; 2],
    seed: u64,
) -> Result<PseudoIdentityReport> {
    cfg.validate()?;
    // Per group: sum of real embeddings, sum of fake ones.
    let mut groups: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut sums: Vec<[Option<Vec<f32>>; 2]> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let g = *index.entry(s.group.clone()).or_insert_with(|| {
            groups.push(s.group.clone());
            sums.push([None, None]);
            groups.len() - 1
        });
        if let Some(e) = embedding(i) {
            let slot = &mut sums[g][usize::from(s.fake)];
            match slot {
                Some(acc) if acc.len() == e.len() => {
                    acc.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
                }
                Some(_) => anyhow::bail!("embeddings of different lengths"),
                None => *slot = Some(e),
            }
        }
    }
    let mut with_face = Vec::new();
    let mut points = Vec::new();
    for (g, [real, fake]) in sums.into_iter().enumerate() {
        if let Some(mut v) = real.or(fake) {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 && norm.is_finite() {
                v.iter_mut().for_each(|x| *x /= norm);
                with_face.push(g);
                points.push(v);
            }
        }
    }
    let labels = cluster(&points, cfg.max_distance)?;
    let mut identity_of: Vec<Option<usize>> = vec![None; groups.len()];
    for (&g, &l) in with_face.iter().zip(&labels) {
        identity_of[g] = Some(l);
    }
    let identities = labels.iter().max().map_or(0, |m| m + 1);
    let mut members = vec![0usize; identities];
    labels.iter().for_each(|&l| members[l] += 1);
    let pseudo_key = |s: &Sample| match identity_of[index[&s.group]] {
        Some(l) => format!("pseudo-{l}"),
        None => format!("group-{}", s.group),
    };
    let named = samples.iter().all(|s| !s.identity.is_empty());
    let leak = if named {
        let pseudo = leak_share(samples, |s| hashed_split(&pseudo_key(s), fractions, seed));
        let group = leak_share(samples, |s| hashed_split(&s.group, fractions, seed));
        pseudo
            .zip(group)
            .map(|((held_out, p), (_, g))| IdentityLeak {
                held_out,
                pseudo_split: p,
                group_split: g,
            })
    } else {
        None
    };
    for s in samples.iter_mut() {
        let key = pseudo_key(s);
        s.split = hashed_split(&key, fractions, seed);
        s.identity = key;
    }
    Ok(PseudoIdentityReport {
        groups: with_face.len(),
        groups_without_face: groups.len() - with_face.len(),
        identities,
        largest: members.iter().copied().max().unwrap_or(0),
        max_distance: cfg.max_distance,
        leak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn average_linkage_cuts_at_the_distance() {
        // Two tight pairs far apart, and one point on its own.
        let pts = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[1.0, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.0, 1.0, 0.1]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        assert_eq!(cluster(&pts, 0.1).unwrap(), vec![0, 0, 1, 1, 2]);
        // Everything within cosine distance 1.5 after averaging.
        assert_eq!(cluster(&pts, 1.5).unwrap(), vec![0; 5]);
        // Nothing merges at 0.
        assert_eq!(cluster(&pts, 0.0).unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(cluster(&[], 0.5).unwrap().is_empty());
        assert!(cluster(&[vec![f32::NAN, 0.0]], 0.5).is_err());
    }

    #[test]
    fn average_not_single_linkage() {
        // A chain a-b-c with neighbours 0.3 apart in angle terms: single
        // linkage would join all three at a cut that average linkage keeps
        // apart for the ends.
        let ang = |t: f32| vec![t.cos(), t.sin()];
        let pts = vec![ang(0.0), ang(0.9), ang(1.8)];
        // cos distance of neighbours: 1 - cos(0.9) = 0.378; ends: 1 - cos(1.8) = 1.227.
        // Average of a to {b, c} = (0.378 + 1.227) / 2 = 0.80.
        let labels = cluster(&pts, 0.5).unwrap();
        assert_eq!(labels.iter().max(), Some(&1), "{labels:?}");
        assert_eq!(cluster(&pts, 0.85).unwrap(), vec![0, 0, 0]);
    }

    fn sample(group: &str, fake: bool) -> Sample {
        Sample {
            path: format!("{group}-{fake}.jpg").into(),
            fake,
            video: format!("{group}-{fake}"),
            group: group.into(),
            identity: String::new(),
            split: Split::Train,
        }
    }

    #[test]
    fn groups_of_one_person_share_a_split() {
        // Six groups of two people (plus a fake each, whose swapped face
        // points elsewhere) and one group without a face.
        let mut samples = Vec::new();
        let mut emb = Vec::new();
        for g in 0..6 {
            let person = if g % 2 == 0 {
                [1.0, 0.05 * g as f32, 0.0]
            } else {
                [0.0, 1.0, 0.05 * g as f32]
            };
            samples.push(sample(&format!("g{g}"), false));
            emb.push(Some(unit(&person)));
            samples.push(sample(&format!("g{g}"), true));
            emb.push(Some(unit(&[0.0, 0.0, 1.0])));
        }
        samples.push(sample("noface", false));
        emb.push(None);
        let report = assign(
            &mut samples,
            |i| emb[i].clone(),
            &PseudoIdentityConfig::default(),
            [0.3, 0.3],
            7,
        )
        .unwrap();
        assert_eq!(report.identities, 2, "{report:?}");
        assert_eq!(report.groups, 6);
        assert_eq!(report.groups_without_face, 1);
        assert_eq!(report.largest, 3);
        for s in &samples[..12] {
            let twin = &samples[if s.group[1..].parse::<usize>().unwrap() % 2 == 0 {
                0
            } else {
                2
            }];
            assert_eq!(s.identity, twin.identity);
            assert_eq!(s.split, twin.split);
        }
        assert_eq!(samples[12].identity, "group-noface");
        assert_eq!(report.leak, None, "the dataset names no identities");
        let bad = PseudoIdentityConfig { max_distance: -1.0 };
        assert!(assign(&mut samples, |_| None, &bad, [0.1, 0.1], 1).is_err());
    }

    #[test]
    fn leak_is_measured_against_named_identities() {
        // 8 people with 10 source videos each, named in the dataset.
        let mut samples = Vec::new();
        let mut emb = Vec::new();
        for person in 0..8 {
            for v in 0..10 {
                let mut s = sample(&format!("p{person}v{v}"), false);
                s.identity = format!("id{person}");
                samples.push(s);
                let mut e = vec![0.0; 8];
                e[person] = 1.0;
                e[(person + 1) % 8] = 0.01 * v as f32;
                emb.push(Some(unit(&e)));
            }
        }
        let report = assign(
            &mut samples,
            |i| emb[i].clone(),
            &PseudoIdentityConfig::default(),
            [0.25, 0.25],
            3,
        )
        .unwrap();
        assert_eq!(report.identities, 8);
        let leak = report.leak.expect("identities are named");
        assert!(leak.held_out > 0 && leak.held_out < 80, "{leak:?}");
        assert_eq!(leak.pseudo_split, 0.0, "one person's videos share a split");
        // Split by video, nearly every held-out person also trains.
        assert!(leak.group_split > 0.5, "{leak:?}");
    }
}
