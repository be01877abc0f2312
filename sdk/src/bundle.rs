//! Model bundles: a directory with `bundle.json` naming every model file, its
//! parameters and each file's sha256 (format 1, `docs/architecture.md` §4).
//! Every listed file is hashed at load; a mismatch refuses the bundle.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::align::AlignerConfig;
use crate::embed::BackboneConfig;
use crate::error::{Error, Result};
use crate::mtcnn::{MtcnnConfig, DEFAULT_FACTOR};
use crate::sequence::SequenceSpec;
use crate::verdict::{Decision, DecisionSpec};

/// The only bundle format this SDK reads.
pub const BUNDLE_FORMAT: u32 = 1;
/// Name of the manifest inside a bundle directory.
pub const BUNDLE_FILE: &str = "bundle.json";
/// Largest accepted `bundle.json`.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest model file a bundle may list (bytes).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// The detector section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// PNet ONNX file.
    pub pnet: String,
    /// RNet ONNX file.
    pub rnet: String,
    /// ONet ONNX file.
    pub onet: String,
    /// Stage thresholds.
    pub thresholds: [f32; 3],
    /// Smallest face side in pixels.
    pub min_face: f32,
    /// Pyramid factor.
    #[serde(default = "default_factor")]
    pub factor: f32,
}

fn default_factor() -> f32 {
    DEFAULT_FACTOR
}

impl DetectorSpec {
    /// The detector configuration this section describes.
    pub fn config(&self) -> MtcnnConfig {
        MtcnnConfig {
            min_face: self.min_face,
            factor: self.factor,
            thresholds: self.thresholds,
            ..Default::default()
        }
    }
}

/// The triplet head section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// ONNX file.
    pub file: String,
    /// Output dimension.
    pub dim: usize,
}

/// The classifier section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// ONNX file.
    pub file: String,
    /// `logistic` or `random_forest`.
    pub kind: String,
}

/// The parsed `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: u32,
    /// Bundle name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Face detector.
    pub detector: DetectorSpec,
    /// Face aligner.
    pub aligner: AlignerConfig,
    /// Embedding backbone.
    pub backbone: BackboneConfig,
    /// Metric-learning head (absent in a perception-only bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    /// Real/fake classifier (absent in a perception-only bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierSpec>,
    /// Decision rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionSpec>,
    /// Per-track sequence model and its fusion with the frame score
    /// (absent: frame scores alone, [`crate::sequence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceSpec>,
    /// Measured metrics of the bundle on its test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Training configuration and provenance, kept for reproducibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
    /// sha256 (hex) of every file, keyed by its path relative to the bundle.
    pub files: BTreeMap<String, String>,
}

impl BundleManifest {
    /// Rewrites every model path the manifest holds (the sections' files
    /// and the keys of `files`) through `f`: a bundle written elsewhere
    /// that references the same models.
    pub fn map_paths(&mut self, mut f: impl FnMut(&str) -> Result<String>) -> Result<()> {
        let d = &mut self.detector;
        for p in [
            &mut d.pnet,
            &mut d.rnet,
            &mut d.onet,
            &mut self.backbone.file,
        ] {
            *p = f(p)?;
        }
        for b in &mut self.backbone.branches {
            b.file = f(&b.file)?;
        }
        if let Some(h) = &mut self.head {
            h.file = f(&h.file)?;
        }
        if let Some(c) = &mut self.classifier {
            c.file = f(&c.file)?;
        }
        if let Some(q) = &mut self.sequence {
            q.file = f(&q.file)?;
        }
        self.files = std::mem::take(&mut self.files)
            .into_iter()
            .map(|(k, v)| Ok((f(&k)?, v)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Every model file the manifest references.
    pub fn referenced_files(&self) -> Vec<&str> {
        let mut v = vec![
            self.detector.pnet.as_str(),
            self.detector.rnet.as_str(),
            self.detector.onet.as_str(),
            self.backbone.file.as_str(),
        ];
        v.extend(self.backbone.branches.iter().map(|b| b.file.as_str()));
        if let Some(h) = &self.head {
            v.push(&h.file);
        }
        if let Some(c) = &self.classifier {
            v.push(&c.file);
        }
        if let Some(q) = &self.sequence {
            v.push(&q.file);
        }
        v
    }
}

/// A loaded and verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: BundleManifest,
}

/// Checks `dir/bundle.sig` against `bytes` (the manifest as read) and `key`.
fn verify_signature(dir: &Path, bytes: &[u8], key: &PublicKey) -> Result<()> {
    let path = dir.join(SIGNATURE_FILE);
    let bad = |reason: String| Error::Bundle {
        path: path.clone(),
        reason,
    };
    let text = match std::fs::metadata(&path) {
        Ok(m) if m.len() > 1024 => return Err(bad("signature file is too large".into())),
        Ok(_) => std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?,
        Err(_) => return Err(bad(
            "the bundle is not signed and a public key is configured: unsigned bundles are refused"
                .into(),
        )),
    };
    let sig =
        hex_bytes::<64>(text.trim()).ok_or_else(|| bad("a signature is 128 hex digits".into()))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.0)
        .map_err(|_| bad("the configured public key is not a valid ed25519 key".into()))?;
    vk.verify_strict(bytes, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| {
            bad(format!(
                "bundle.json is not signed by the configured key {key} (changed, or signed by another key)"
            ))
        })
}

/// sha256 of a file, hex encoded.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The file beside `bundle.json` that holds its ed25519 signature (128 hex digits).
pub const SIGNATURE_FILE: &str = "bundle.sig";

/// An ed25519 public key bundles must be signed with (32 bytes; 64 hex digits
/// as text). `bundle.json` lists every file's sha256, so its signature covers
/// the models too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl std::str::FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bytes = hex_bytes::<32>(s.trim())
            .ok_or_else(|| Error::config("a public key is 64 hex digits"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::config("not a valid ed25519 public key"))?;
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// `N` bytes from exactly `2N` hex digits.
fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Signs `dir/bundle.json` with the ed25519 secret key `secret` (32 bytes),
/// writing `dir/bundle.sig`; returns the public key devices must be given.
pub fn sign(dir: impl AsRef<Path>, secret: &[u8; 32]) -> Result<PublicKey> {
    use ed25519_dalek::Signer;
    let dir = dir.as_ref();
    let path = dir.join(BUNDLE_FILE);
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let sig = key.sign(&bytes).to_bytes();
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    let out = dir.join(SIGNATURE_FILE);
    std::fs::write(&out, hex + "\n").map_err(|source| Error::Io { path: out, source })?;
    Ok(PublicKey(key.verifying_key().to_bytes()))
}

/// The public key of an ed25519 secret key.
pub fn public_key(secret: &[u8; 32]) -> PublicKey {
    PublicKey(
        ed25519_dalek::SigningKey::from_bytes(secret)
            .verifying_key()
            .to_bytes(),
    )
}

impl Bundle {
    /// Reads `dir/bundle.json`, validates it, and checks every file's sha256.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir.as_ref(), None)
    }

    /// As [`Self::load`], and refuses the bundle unless `bundle.sig` is a
    /// valid ed25519 signature of `bundle.json`'s bytes by `key` (checked
    /// before anything in it is parsed or any model file is read).
    pub fn load_signed(dir: impl AsRef<Path>, key: &PublicKey) -> Result<Self> {
        Self::load_with(dir.as_ref(), Some(key))
    }

    /// [`Self::load_signed`] when `key` is given, else [`Self::load`].
    pub fn load_with(dir: &Path, key: Option<&PublicKey>) -> Result<Self> {
        let dir = dir.to_path_buf();
        let path = dir.join(BUNDLE_FILE);
        let bad = |reason: String| Error::Bundle {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(bad("is not a regular file".into()));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{} bytes exceeds the {MAX_MANIFEST_BYTES} byte limit",
                meta.len()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(key) = key {
            verify_signature(&dir, &bytes, key)?;
        }
        let manifest: BundleManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let bundle = Self { dir, manifest };
        bundle.validate()?;
        Ok(bundle)
    }

    fn validate(&self) -> Result<()> {
        // (The signature, if any, was checked on the bytes this came from.)
        let m = &self.manifest;
        let bad = |reason: String| Error::Bundle {
            path: self.dir.join(BUNDLE_FILE),
            reason,
        };
        if m.format != BUNDLE_FORMAT {
            return Err(bad(format!(
                "format {} is not supported (expected {BUNDLE_FORMAT})",
                m.format
            )));
        }
        m.detector
            .config()
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        for f in m.referenced_files() {
            if !m.files.contains_key(f) {
                return Err(bad(format!("{f} has no sha256 in `files`")));
            }
        }
        if let Some(d) = &m.decision {
            d.validate().map_err(|e| bad(format!("decision: {e}")))?;
        }
        if let Some(q) = &m.sequence {
            if m.classifier.is_none() {
                return Err(bad("a sequence model needs the frame classifier".into()));
            }
            q.validate().map_err(|e| bad(format!("sequence: {e}")))?;
        }
        for (name, want) in &m.files {
            let p = self.resolve(name)?;
            // Only regular files of bounded size are hashed: a manifest naming
            // `../../dev/zero` or a FIFO must not hang the loader.
            let meta = std::fs::metadata(&p).map_err(|source| Error::Io {
                path: p.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(bad(format!("{name} is not a regular file")));
            }
            if meta.len() > MAX_MODEL_BYTES {
                return Err(bad(format!(
                    "{name}: {} bytes exceeds the {MAX_MODEL_BYTES} byte limit",
                    meta.len()
                )));
            }
            let got = sha256_file(&p)?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(bad(format!(
                    "{name}: sha256 {got} does not match the manifest's {want}"
                )));
            }
        }
        Ok(())
    }

    /// The path of a file named in the manifest (relative paths only).
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        let p = Path::new(name);
        let ok = !name.is_empty()
            && p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
        if !ok {
            return Err(Error::Bundle {
                path: self.dir.join(BUNDLE_FILE),
                reason: format!("file path {name:?} must be relative"),
            });
        }
        Ok(self.dir.join(p))
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    /// The bundle's decision rule (defaults where it states none).
    pub fn decision(&self) -> Decision {
        let mut d = Decision::from_spec(self.manifest.decision.as_ref());
        d.fusion = self.manifest.sequence.as_ref().map(|q| q.fusion);
        d
    }
}
