//! Dataset layouts: the generic `labels.csv` (as `../shared/data/dfdc-faces`
//! uses: a header naming at least `file` and `label`; optional `group`,
//! `identity`, `source_video` and `split`), `real/` + `fake/` folders,
//! FaceForensics++, Celeb-DF and DFDC. Splits are disjoint by source video /
//! identity, never per frame.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One labelled face crop or video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Path relative to the dataset directory.
    pub file: String,
    /// `real` or `fake`.
    pub label: String,
    /// Source video group (a fake and its real original share one).
    pub group: String,
    /// Identity of the person.
    pub identity: String,
    /// `train`, `val` or `test`.
    pub split: String,
}

/// Reads `dir/labels.csv`. Simple CSV: no quoted commas (the layout has none).
pub fn read_labels(dir: &Path) -> Result<Vec<Row>> {
    let path = dir.join("labels.csv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_labels(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses the text of a labels.csv.
pub fn parse_labels(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty labels file")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(fi), Some(li)) = (col("file"), col("label")) else {
        bail!("header must name `file` and `label` columns, got {header:?}");
    };
    let (gi, ii, si, vi) = (
        col("group"),
        col("identity"),
        col("split"),
        col("source_video"),
    );
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != header.len() {
            bail!(
                "line {}: {} fields, header has {}",
                n + 2,
                f.len(),
                header.len()
            );
        }
        let get = |i: Option<usize>| i.map(|i| f[i].to_string()).unwrap_or_default();
        let label = f[li].to_string();
        if label != "real" && label != "fake" {
            bail!("line {}: label {label:?} is neither real nor fake", n + 2);
        }
        let group = gi
            .or(vi)
            .map(|i| f[i].to_string())
            .unwrap_or_else(|| f[fi].to_string());
        rows.push(Row {
            file: f[fi].to_string(),
            label,
            group,
            identity: get(ii),
            split: get(si),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shared_layout() {
        let t = "file,label,source_video,group,identity,split\nfaces/a.jpg,real,a.mp4,a,id1,train\nfaces/b.jpg,fake,b.mp4,a,id1,test\n";
        let rows = parse_labels(t).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].group, "a");
        assert_eq!(rows[1].split, "test");
        assert_eq!(rows[1].label, "fake");
    }

    #[test]
    fn rejects_bad_rows() {
        assert!(parse_labels("").is_err());
        assert!(parse_labels("file,split\na,train\n").is_err());
        assert!(parse_labels("file,label\na.jpg,maybe\n").is_err());
        assert!(parse_labels("file,label\na.jpg\n").is_err());
    }
}

/// Which part of the data a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Fit the head and classifier.
    Train,
    /// Choose the decision threshold.
    Val,
    /// Report metrics.
    Test,
}

impl Split {
    /// Parses `train`, `val`/`valid`/`validation` or `test`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Self::Train),
            "val" | "valid" | "validation" => Some(Self::Val),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

/// A labelled input of the trainer: a face crop, an image or a video.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// True for a fake.
    pub fake: bool,
    /// The unit of video-level metrics (the source file of a crop or frame).
    pub video: String,
    /// Unit that must not straddle splits (the original a fake was made from).
    pub group: String,
    /// Identity of the person, when the layout knows it.
    pub identity: String,
    /// Split.
    pub split: Split,
}

/// The dataset layouts the trainer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `labels.csv` with `file,label[,source_video,group,identity,split]`.
    LabelsCsv,
    /// `real/` and `fake/` folders of images or videos.
    Folders,
    /// FaceForensics++ download layout (`original_sequences/youtube/<c>/videos`,
    /// `manipulated_sequences/<method>/<c>/videos`, optional `splits/*.json`).
    FaceForensics,
    /// Celeb-DF v1/v2 (`Celeb-real`, `YouTube-real`, `Celeb-synthesis`,
    /// `List_of_testing_videos.txt`).
    CelebDf,
    /// DFDC folders with `metadata.json`.
    Dfdc,
}

/// How a dataset is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Layout of `path`.
    pub layout: Layout,
    /// Dataset root.
    pub path: PathBuf,
    /// Extra real-only `labels.csv` datasets added to the training split
    /// (rows of other splits are ignored).
    #[serde(default)]
    pub extra_real: Vec<PathBuf>,
    /// FaceForensics++ compression (`c23`, `c40`, `raw`).
    #[serde(default = "default_compression")]
    pub compression: String,
    /// FaceForensics++ manipulation methods (empty: every folder found).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Fractions of groups sent to validation and test when the layout
    /// states no split (by a seeded hash of the group, never per frame).
    #[serde(default = "default_fractions")]
    pub val_test_fraction: [f64; 2],
}

fn default_compression() -> String {
    "c23".into()
}

fn default_fractions() -> [f64; 2] {
    [0.1, 0.1]
}

/// Split of a group when the layout states none: a seeded hash, so every
/// frame and every fake of one original lands in the same split.
///
/// FNV-1a, then the SplitMix64 finaliser: FNV alone barely moves its top
/// bits for keys that differ in their last characters, so `pseudo-0` …
/// `pseudo-569` or `id0000` … `id0569` all fell in one split.
pub fn hashed_split(group: &str, fractions: [f64; 2], seed: u64) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in group.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    if u < fractions[1] {
        Split::Test
    } else if u < fractions[0] + fractions[1] {
        Split::Val
    } else {
        Split::Train
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Media files directly inside `dir`, sorted.
fn media_files(dir: &Path) -> Result<Vec<PathBuf>> {
    const EXT: &[&str] = &["jpg", "jpeg", "png", "mp4", "avi", "mov", "mkv", "webm"];
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXT.iter().any(|x| e.eq_ignore_ascii_case(x)))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads the samples of a dataset; `seed` drives hashed splits.
pub fn load(spec: &DatasetSpec, seed: u64) -> Result<Vec<Sample>> {
    let root = &spec.path;
    let fr = spec.val_test_fraction;
    ensure!(
        fr.iter().all(|f| (0.0..1.0).contains(f)) && fr[0] + fr[1] < 1.0,
        "val_test_fraction must be two fractions summing below 1"
    );
    let mut out = match spec.layout {
        Layout::LabelsCsv => labels_samples(root, fr, seed, false)?,
        Layout::Folders => {
            let mut v = Vec::new();
            for (name, fake) in [("real", false), ("fake", true)] {
                for p in media_files(&root.join(name))? {
                    let g = stem(&p);
                    v.push(Sample {
                        split: hashed_split(&g, fr, seed),
                        video: g.clone(),
                        group: g,
                        identity: String::new(),
                        path: p,
                        fake,
                    });
                }
            }
            v
        }
        Layout::FaceForensics => face_forensics(spec, seed)?,
        Layout::CelebDf => celeb_df(root, fr, seed)?,
        Layout::Dfdc => dfdc(root, fr, seed)?,
    };
    for extra in &spec.extra_real {
        let rows = labels_samples(extra, fr, seed, true)?;
        out.extend(
            rows.into_iter()
                .filter(|s| !s.fake && s.split == Split::Train),
        );
    }
    ensure!(!out.is_empty(), "{} has no samples", root.display());
    Ok(out)
}

fn labels_samples(root: &Path, fr: [f64; 2], seed: u64, extra: bool) -> Result<Vec<Sample>> {
    let rows = read_labels(root)?;
    rows.into_iter()
        .map(|r| {
            let split = if r.split.is_empty() {
                let key = if r.identity.is_empty() {
                    &r.group
                } else {
                    &r.identity
                };
                hashed_split(key, fr, seed)
            } else {
                Split::parse(&r.split)
                    .with_context(|| format!("{}: unknown split {:?}", r.file, r.split))?
            };
            Ok(Sample {
                path: root.join(&r.file),
                fake: r.label == "fake",
                video: if extra {
                    format!("extra:{}", r.file)
                } else {
                    r.file.clone()
                },
                group: r.group,
                identity: r.identity,
                split,
            })
        })
        .collect()
}

/// FF++ official split files hold pairs `[["071", "054"], ...]`.
fn ff_splits(root: &Path) -> Result<Option<std::collections::HashMap<String, Split>>> {
    let dir = root.join("splits");
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut m = std::collections::HashMap::new();
    for (name, split) in [
        ("train", Split::Train),
        ("val", Split::Val),
        ("test", Split::Test),
    ] {
        let p = dir.join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let pairs: Vec<Vec<String>> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        for id in pairs.into_iter().flatten() {
            m.insert(id, split);
        }
    }
    Ok(Some(m))
}

fn face_forensics(spec: &DatasetSpec, seed: u64) -> Result<Vec<Sample>> {
    let root = &spec.path;
    let c = &spec.compression;
    let splits = ff_splits(root)?;
    let split_of = |id: &str| match &splits {
        Some(m) => m.get(id).copied(),
        None => Some(hashed_split(id, spec.val_test_fraction, seed)),
    };
    let mut v = Vec::new();
    for p in media_files(
        &root
            .join("original_sequences/youtube")
            .join(c)
            .join("videos"),
    )? {
        let id = stem(&p);
        if let Some(split) = split_of(&id) {
            v.push(Sample {
                video: format!("original/{id}"),
                group: id.clone(),
                identity: id,
                split,
                path: p,
                fake: false,
            });
        }
    }
    let manip = root.join("manipulated_sequences");
    let methods: Vec<String> = if spec.methods.is_empty() {
        let mut m: Vec<String> = std::fs::read_dir(&manip)
            .with_context(|| format!("listing {}", manip.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        m.sort();
        m
    } else {
        spec.methods.clone()
    };
    for method in methods {
        for p in media_files(&manip.join(&method).join(c).join("videos"))? {
            // `<target>_<source>`: the target's video with the source's face.
            let s = stem(&p);
            let target = s.split('_').next().unwrap_or(&s).to_string();
            if let Some(split) = split_of(&target) {
                v.push(Sample {
                    video: format!("{method}/{s}"),
                    group: target.clone(),
                    identity: target,
                    split,
                    path: p,
                    fake: true,
                });
            }
        }
    }
    Ok(v)
}

fn celeb_df(root: &Path, fr: [f64; 2], seed: u64) -> Result<Vec<Sample>> {
    let list = root.join("List_of_testing_videos.txt");
    let text =
        std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let test: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    let mut v = Vec::new();
    for (dir, fake) in [
        ("Celeb-real", false),
        ("YouTube-real", false),
        ("Celeb-synthesis", true),
    ] {
        let d = root.join(dir);
        if !d.is_dir() {
            continue;
        }
        for p in media_files(&d)? {
            let s = stem(&p);
            let rel = format!(
                "{dir}/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            // id0_0000 (real), id0_id16_0000 (fake: id0's video, id16's face), 00170 (YouTube).
            let parts: Vec<&str> = s.split('_').collect();
            let identity = if dir == "YouTube-real" {
                format!("yt{s}")
            } else {
                parts[0].to_string()
            };
            let group = match (fake, parts.as_slice()) {
                (true, [t, _, n]) => format!("{t}_{n}"),
                _ => s.clone(),
            };
            let split = if test.contains(&rel) {
                Split::Test
            } else {
                // Validation by identity among the non-test videos.
                match hashed_split(&identity, [fr[0] / (1.0 - fr[1]).max(1e-9), 0.0], seed) {
                    Split::Val => Split::Val,
                    _ => Split::Train,
                }
            };
            v.push(Sample {
                path: p,
                fake,
                video: rel,
                group,
                identity,
                split,
            });
        }
    }
    ensure!(!v.is_empty(), "{}: no Celeb-DF folders", root.display());
    Ok(v)
}

#[derive(Deserialize)]
struct DfdcEntry {
    label: String,
    #[serde(default)]
    original: Option<String>,
}

fn dfdc(root: &Path, fr: [f64; 2], seed: u64) -> Result<Vec<Sample>> {
    // The root itself or its sub-folders hold metadata.json.
    let mut dirs = vec![root.to_path_buf()];
    if !root.join("metadata.json").is_file() {
        dirs = std::fs::read_dir(root)
            .with_context(|| format!("listing {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("metadata.json").is_file())
            .collect();
        dirs.sort();
    }
    let mut v = Vec::new();
    for d in dirs {
        let p = d.join("metadata.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let meta: std::collections::BTreeMap<String, DfdcEntry> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        for (file, e) in meta {
            let fake = match e.label.to_ascii_uppercase().as_str() {
                "FAKE" => true,
                "REAL" => false,
                other => bail!("{}: {file}: label {other:?}", p.display()),
            };
            let group = e.original.filter(|_| fake).unwrap_or_else(|| file.clone());
            let path = d.join(&file);
            if !path.is_file() {
                log::warn!("{}: listed in metadata.json but missing", path.display());
                continue;
            }
            v.push(Sample {
                split: hashed_split(&group, fr, seed),
                video: file,
                identity: String::new(),
                group,
                path,
                fake,
            });
        }
    }
    Ok(v)
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn hashed_split_spreads_keys_that_differ_at_the_end() {
        // Numbered keys, as pseudo-identities and identity columns are named.
        for prefix in ["pseudo-", "id0", "group-"] {
            let mut counts = [0usize; 3];
            for i in 0..1000 {
                let key = format!("{prefix}{i}");
                counts[match hashed_split(&key, [0.1, 0.2], 42) {
                    Split::Train => 0,
                    Split::Val => 1,
                    Split::Test => 2,
                }] += 1;
            }
            // Expected 700 / 100 / 200; binomial sd ≤ 15.
            assert!((640..=760).contains(&counts[0]), "{prefix}: {counts:?}");
            assert!((55..=145).contains(&counts[1]), "{prefix}: {counts:?}");
            assert!((140..=260).contains(&counts[2]), "{prefix}: {counts:?}");
        }
        // Deterministic per key and seed; the seed moves keys.
        assert_eq!(
            hashed_split("abc", [0.5, 0.0], 1),
            hashed_split("abc", [0.5, 0.0], 1)
        );
        let moved = (0..100)
            .filter(|i| {
                let k = format!("k{i}");
                hashed_split(&k, [0.5, 0.0], 1) != hashed_split(&k, [0.5, 0.0], 2)
            })
            .count();
        assert!((25..=75).contains(&moved), "{moved}");
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fw-ds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn spec(layout: Layout, path: &Path) -> DatasetSpec {
        DatasetSpec {
            layout,
            path: path.into(),
            extra_real: vec![],
            compression: "c23".into(),
            methods: vec![],
            val_test_fraction: [0.2, 0.3],
        }
    }

    /// Every group lives in exactly one split.
    fn groups_disjoint(s: &[Sample]) {
        let mut m = std::collections::HashMap::new();
        for x in s {
            assert_eq!(
                *m.entry(x.group.clone()).or_insert(x.split),
                x.split,
                "{}",
                x.group
            );
        }
    }

    #[test]
    fn face_forensics_uses_official_pairs() {
        let r = tmp("ff");
        for f in ["000", "001", "002", "003"] {
            touch(
                &r,
                &format!("original_sequences/youtube/c23/videos/{f}.mp4"),
            );
        }
        for f in ["000_001", "001_000", "002_003"] {
            touch(
                &r,
                &format!("manipulated_sequences/Deepfakes/c23/videos/{f}.mp4"),
            );
            touch(
                &r,
                &format!("manipulated_sequences/Face2Face/c23/videos/{f}.mp4"),
            );
        }
        touch(&r, "manipulated_sequences/Deepfakes/c40/videos/000_001.mp4");
        std::fs::create_dir_all(r.join("splits")).unwrap();
        std::fs::write(r.join("splits/train.json"), r#"[["000","001"]]"#).unwrap();
        std::fs::write(r.join("splits/val.json"), "[]").unwrap();
        std::fs::write(r.join("splits/test.json"), r#"[["002","003"]]"#).unwrap();
        let s = load(&spec(Layout::FaceForensics, &r), 1).unwrap();
        assert_eq!(s.len(), 4 + 6);
        assert_eq!(s.iter().filter(|x| x.fake).count(), 6);
        let f = s.iter().find(|x| x.video == "Face2Face/002_003").unwrap();
        assert_eq!((f.split, f.group.as_str()), (Split::Test, "002"));
        assert!(s
            .iter()
            .filter(|x| x.split == Split::Train)
            .all(|x| ["000", "001"].contains(&x.group.as_str())));
        let mut only = spec(Layout::FaceForensics, &r);
        only.methods = vec!["Deepfakes".into()];
        assert_eq!(load(&only, 1).unwrap().len(), 4 + 3);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn celeb_df_test_list_and_identity_groups() {
        let r = tmp("celeb");
        touch(&r, "Celeb-real/id0_0000.mp4");
        touch(&r, "Celeb-real/id1_0003.mp4");
        touch(&r, "YouTube-real/00170.mp4");
        touch(&r, "Celeb-synthesis/id0_id1_0000.mp4");
        touch(&r, "Celeb-synthesis/id1_id0_0003.mp4");
        std::fs::write(
            r.join("List_of_testing_videos.txt"),
            "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id1_id0_0003.mp4\n",
        )
        .unwrap();
        let s = load(&spec(Layout::CelebDf, &r), 1).unwrap();
        assert_eq!(s.len(), 5);
        let fake = s
            .iter()
            .find(|x| x.video == "Celeb-synthesis/id0_id1_0000.mp4")
            .unwrap();
        assert!(fake.fake);
        assert_eq!(fake.group, "id0_0000");
        assert_eq!(fake.identity, "id0");
        assert_ne!(fake.split, Split::Test);
        let t: Vec<_> = s
            .iter()
            .filter(|x| x.split == Split::Test)
            .map(|x| x.video.as_str())
            .collect();
        assert_eq!(
            t,
            vec!["YouTube-real/00170.mp4", "Celeb-synthesis/id1_id0_0003.mp4"]
        );
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn dfdc_metadata_keeps_fakes_with_their_original() {
        let r = tmp("dfdc");
        let mut meta = serde_json::Map::new();
        for i in 0..40 {
            let real = format!("r{i}.mp4");
            touch(&r, &format!("part0/{real}"));
            meta.insert(
                real.clone(),
                serde_json::json!({"label": "REAL", "split": "train"}),
            );
            for k in 0..2 {
                let f = format!("f{i}_{k}.mp4");
                touch(&r, &format!("part0/{f}"));
                meta.insert(f, serde_json::json!({"label": "FAKE", "original": real}));
            }
        }
        std::fs::write(
            r.join("part0/metadata.json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let s = load(&spec(Layout::Dfdc, &r), 7).unwrap();
        assert_eq!(s.len(), 120);
        groups_disjoint(&s);
        for split in [Split::Train, Split::Val, Split::Test] {
            assert!(s.iter().any(|x| x.split == split), "{split:?} empty");
        }
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn folders_and_labels_csv() {
        let r = tmp("folders");
        for i in 0..10 {
            touch(&r, &format!("real/r{i}.jpg"));
            touch(&r, &format!("fake/f{i}.mp4"));
        }
        touch(&r, "fake/notes.txt");
        let s = load(&spec(Layout::Folders, &r), 1).unwrap();
        assert_eq!(s.len(), 20);
        std::fs::write(
            r.join("labels.csv"),
            "file,label,group,identity,split\nreal/r0.jpg,real,g0,id0,train\nfake/f0.mp4,fake,g0,id0,test\n",
        )
        .unwrap();
        let s = load(&spec(Layout::LabelsCsv, &r), 1).unwrap();
        assert_eq!(s[1].split, Split::Test);
        assert!(s[1].fake);
        let mut bad = spec(Layout::LabelsCsv, &r);
        bad.val_test_fraction = [0.6, 0.5];
        assert!(load(&bad, 1).is_err());
        std::fs::remove_dir_all(&r).unwrap();
    }
}
