//! On-disk embedding cache, so retraining never re-runs the backbone.
//!
//! Entries are keyed by the *perception key* of a bundle (sha256 over its
//! detector, aligner and backbone configuration and model hashes) and by the
//! sha256 of the input file plus a frame tag. One append-only NDJSON file per
//! perception key lives in the cache directory; a run that is interrupted
//! keeps everything it already wrote, and a rerun picks up where it stopped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fakewatch_sdk::bundle::Bundle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the perception path produced for one input (file or video frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedFace {
    /// Frame index in the input (0 for an image).
    #[serde(default)]
    pub frame: u64,
    /// Detector confidence of the chosen face.
    pub score: f32,
    /// Box `[x1, y1, x2, y2]` of the chosen face in input pixels.
    pub bbox: [f32; 4],
    /// Backbone embedding (L2-normalised).
    pub embedding: Vec<f32>,
    /// Pooled multi-level features, when the perception bundle's backbone
    /// has them (`backbone.features`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<f32>>,
}

impl CachedFace {
    /// What the head or classifier is trained on: the pooled features when
    /// there are any, else the embedding.
    pub fn scoring_input(&self) -> &[f32] {
        self.features.as_deref().unwrap_or(&self.embedding)
    }
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    /// Single-face form (images); `None` when no face was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    face: Option<CachedFace>,
    /// One face per sampled frame (videos, and every line written now);
    /// empty when no face was found — a result too, not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    faces: Option<Vec<CachedFace>>,
}

impl Line {
    fn into_faces(self) -> Vec<CachedFace> {
        match self.faces {
            Some(f) => f,
            None => self.face.into_iter().collect(),
        }
    }
}

/// The cache of one perception key.
pub struct EmbeddingCache {
    path: PathBuf,
    entries: HashMap<String, Vec<CachedFace>>,
    out: BufWriter<File>,
}

/// sha256 over everything that changes what the perception path outputs:
/// detector/aligner/backbone configuration and the model files' hashes.
pub fn perception_key(bundle: &Bundle) -> Result<String> {
    let m = bundle.manifest();
    let d = &m.detector;
    let mut h = Sha256::new();
    let spec = serde_json::json!({
        "detector": d, "aligner": m.aligner, "backbone": m.backbone,
    });
    h.update(serde_json::to_vec(&spec)?);
    let branches = m.backbone.branches.iter().map(|b| &b.file);
    for f in [&d.pnet, &d.rnet, &d.onet, &m.backbone.file]
        .into_iter()
        .chain(branches)
    {
        let sha = m
            .files
            .get(f)
            .with_context(|| format!("bundle lists no sha256 for {f}"))?;
        h.update(sha.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// [`perception_key`], made backend-specific for a quantized bundle: float
/// models agree across backends within 1e-5 and share one cache, but int8
/// kernels and tract's float emulation of QDQ may round differently.
pub fn perception_key_for(bundle: &Bundle, backend: &str) -> Result<String> {
    let key = perception_key(bundle)?;
    let quantized = bundle
        .manifest()
        .training
        .as_ref()
        .is_some_and(|t| t.get("quantization").is_some());
    Ok(if quantized && backend != "tract" {
        format!("{key}-{backend}")
    } else {
        key
    })
}

/// sha256 of a file's bytes, hex encoded.
pub fn file_key(path: &Path) -> Result<String> {
    Ok(fakewatch_sdk::bundle::sha256_file(path)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$FAKEWATCH_CACHE`, else
/// `$XDG_CACHE_HOME/fakewatch`, else `~/.cache/fakewatch`.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKEWATCH_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("fakewatch");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/fakewatch"))
        .unwrap_or_else(|| PathBuf::from(".fakewatch-cache"))
}

impl EmbeddingCache {
    /// Opens (creating if needed) the cache of `perception_key` under `dir`.
    /// Lines that do not parse (a torn last line after a crash) are skipped.
    pub fn open(dir: &Path, perception_key: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("embeddings-{perception_key}.ndjson"));
        let mut entries = HashMap::new();
        let mut torn = false;
        if let Ok(bytes) = std::fs::read(&path) {
            torn = bytes.last().is_some_and(|b| *b != b'\n');
        }
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    entries.insert(l.key.clone(), l.into_faces());
                }
            }
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut out = BufWriter::new(out);
        if torn {
            // End the torn line so the next entry starts on its own line.
            writeln!(out)?;
        }
        Ok(Self { path, entries, out })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of cached inputs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cached faces of `key`, if any (empty: no face found).
    pub fn get(&self, key: &str) -> Option<&Vec<CachedFace>> {
        self.entries.get(key)
    }

    /// Records a result and appends it to disk.
    pub fn insert(&mut self, key: String, faces: Vec<CachedFace>) -> Result<()> {
        let line = serde_json::to_string(&Line {
            key: key.clone(),
            face: None,
            faces: Some(faces.clone()),
        })?;
        writeln!(self.out, "{line}")?;
        self.entries.insert(key, faces);
        Ok(())
    }

    /// Flushes appended lines.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_torn_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("fw-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let face = CachedFace {
            frame: 0,
            score: 0.9,
            bbox: [1.0, 2.0, 3.0, 4.0],
            embedding: vec![0.6, 0.8],
            features: Some(vec![1.5, 0.0, 2.5]),
        };
        {
            let mut c = EmbeddingCache::open(&dir, "k").unwrap();
            c.insert("a".into(), vec![face.clone()]).unwrap();
            c.insert("b".into(), vec![]).unwrap();
            c.flush().unwrap();
        }
        // Lines of the earlier single-face form still read.
        let p = dir.join("embeddings-k.ndjson");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "{{\"key\":\"old\",\"face\":null}}").unwrap();
        drop(f);
        // A crash mid-line leaves a torn tail.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        write!(f, "{{\"key\":\"c\",\"fa").unwrap();
        drop(f);
        let mut c = EmbeddingCache::open(&dir, "k").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("old"), Some(&vec![]));
        c.insert("d".into(), vec![]).unwrap();
        c.flush().unwrap();
        drop(c);
        let c = EmbeddingCache::open(&dir, "k").unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c.get("a"), Some(&vec![face]));
        assert_eq!(c.get("b"), Some(&vec![]));
        assert_eq!(c.get("c"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
