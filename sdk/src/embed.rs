//! Backbone embeddings of aligned faces.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::align::Aligner;
use crate::backend::{Backend, InferenceModel, ShapePolicy, Tensor};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::geometry::Detection;
use crate::pooling::{Branch, FeatureSpec, ModelEdit};
use crate::resample::Normalize;

/// The backbone's input and output description (the bundle's `backbone` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// ONNX file, relative to the bundle directory.
    pub file: String,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Mean subtracted from every channel (or per channel, R, G, B).
    pub mean: MeanSpec,
    /// Factor applied after subtracting the mean.
    pub scale: f32,
    /// Output dimension.
    pub dim: usize,
    /// Feed channels as B, G, R.
    #[serde(default)]
    pub bgr: bool,
    /// Per-dimension offset subtracted from raw features before L2 normalisation
    /// (for backbones whose features are not centred, such as post-ReLU ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<Vec<f32>>,
    /// Multi-level features pooled from intermediate tensors in the same
    /// pass; when present they, not the embedding, are what the head and
    /// classifier score (the embedding still drives tracking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSpec>,
    /// Other backbones run on the same aligned crop in the same pass, their
    /// graphs merged into this one at load (see [`crate::pooling`]); their
    /// tensors can be pooled into `features` under their prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<BranchSpec>,
}

/// One entry of `backbone.branches`: a second backbone fed the same crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// ONNX file, relative to the bundle directory (listed in `files`).
    pub file: String,
    /// Prefix of its tensor names in the merged graph (`"lite0/"`).
    pub prefix: String,
    /// Mean it expects subtracted (per channel or for all).
    pub mean: MeanSpec,
    /// Factor it expects after the mean.
    pub scale: f32,
}

/// A mean for all channels or one per channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MeanSpec {
    /// Same mean for R, G and B.
    Scalar(f32),
    /// Means of R, G, B.
    PerChannel([f32; 3]),
}

impl BackboneConfig {
    /// Length of the vector the head or classifier scores: the pooled
    /// features' when the backbone has them, else the embedding's.
    pub fn scoring_dim(&self) -> usize {
        self.features.as_ref().map_or(self.dim, |f| f.dim)
    }

    /// The normalisation the backbone expects.
    pub fn normalize(&self) -> Normalize {
        Normalize {
            mean: self.mean.per_channel(),
            scale: self.scale,
            bgr: self.bgr,
        }
    }

    /// The graph edit that loads this backbone: its branches merged (from
    /// `branch_files`, the resolved paths of [`Self::branches`] in order),
    /// then its features pooled.
    pub fn model_edit(&self, branch_files: &[PathBuf]) -> Result<ModelEdit> {
        if branch_files.len() != self.branches.len() {
            return Err(Error::config(format!(
                "backbone has {} branches but {} files were given",
                self.branches.len(),
                branch_files.len()
            )));
        }
        if !self.branches.is_empty() && self.features.is_none() {
            return Err(Error::config(
                "backbone.branches needs backbone.features: a branch contributes only pooled tensors",
            ));
        }
        let mut edit = match &self.features {
            Some(f) if f.pool.is_empty() || f.dim == 0 => {
                return Err(Error::config(
                    "backbone.features must name at least one tensor and a dim > 0",
                ))
            }
            Some(f) => ModelEdit::pooled(f),
            None => ModelEdit::none(),
        };
        // A branch gets the main input's channels: both must be RGB (a swap
        // node for a BGR backbone is not needed by any bundle yet).
        if !self.branches.is_empty() && self.bgr {
            return Err(Error::config(
                "backbone.branches needs an RGB backbone (bgr: false)",
            ));
        }
        let main_mean = self.mean.per_channel();
        for (b, path) in self.branches.iter().zip(branch_files) {
            let (scale, offset) =
                Branch::affine(main_mean, self.scale, b.mean.per_channel(), b.scale)
                    .map_err(Error::config)?;
            edit.branches.push(Branch {
                path: path.clone(),
                prefix: b.prefix.clone(),
                scale,
                offset,
            });
        }
        Ok(edit)
    }
}

impl MeanSpec {
    /// The mean of R, G and B.
    pub fn per_channel(self) -> [f32; 3] {
        match self {
            MeanSpec::Scalar(m) => [m; 3],
            MeanSpec::PerChannel(m) => m,
        }
    }
}

/// An L2-normalised embedding vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// L2-normalises `v` (a zero vector stays zero).
    pub fn normalized(mut v: Vec<f32>) -> Self {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 && n.is_finite() {
            v.iter_mut().for_each(|x| *x /= n);
        }
        Self(v)
    }
    /// Euclidean norm (1 for a normalised, non-zero embedding).
    pub fn norm(&self) -> f32 {
        self.0.iter().map(|x| x * x).sum::<f32>().sqrt()
    }
    /// Cosine similarity in `[-1, 1]`.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        let dot: f32 = self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum();
        let d = self.norm() * other.norm();
        if d > 0.0 {
            dot / d
        } else {
            0.0
        }
    }
}

/// What the backbone gives for one face.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneOutput {
    /// The identity embedding (tracking; scoring when there are no features).
    pub embedding: Embedding,
    /// The pooled multi-level features (raw, not normalised), when the
    /// backbone's config asks for them.
    pub features: Option<Vec<f32>>,
}

impl BackboneOutput {
    /// The vector the head or classifier scores.
    pub fn scoring_input(&self) -> &[f32] {
        self.features.as_deref().unwrap_or(&self.embedding.0)
    }
}

/// Runs the backbone on aligned faces in batches.
pub struct Embedder {
    model: Arc<dyn InferenceModel>,
    config: BackboneConfig,
    aligner: Aligner,
    max_batch: usize,
    threads: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("config", &self.config)
            .finish()
    }
}

/// Largest batch sent to the backbone at once.
pub const DEFAULT_EMBED_BATCH: usize = 16;

impl Embedder {
    /// Loads the backbone ONNX at `path`; `aligner` must produce its input size.
    /// A backbone with branches needs [`Self::load_with_branches`].
    pub fn load(
        backend: &dyn Backend,
        path: &Path,
        config: BackboneConfig,
        aligner: Aligner,
    ) -> Result<Self> {
        Self::load_with_branches(backend, path, &[], config, aligner)
    }

    /// As [`Self::load`], with the resolved files of `config.branches`.
    pub fn load_with_branches(
        backend: &dyn Backend,
        path: &Path,
        branch_files: &[PathBuf],
        config: BackboneConfig,
        aligner: Aligner,
    ) -> Result<Self> {
        let s = aligner.config().size as usize;
        if config.input != [3, s, s] {
            return Err(Error::config(format!(
                "backbone input {:?} does not match the aligner's {s}x{s} crops",
                config.input
            )));
        }
        if config.dim == 0 || !config.scale.is_finite() {
            return Err(Error::config("backbone dim must be > 0 and scale finite"));
        }
        if let Some(c) = &config.center {
            if c.len() != config.dim {
                return Err(Error::config("backbone center length differs from dim"));
            }
        }
        let edit = config.model_edit(branch_files)?;
        let model = backend.load_edited(path, ShapePolicy::FixedBatch(1), &edit)?;
        Ok(Self {
            model,
            config,
            aligner,
            max_batch: DEFAULT_EMBED_BATCH,
            threads: 1,
        })
    }

    /// Spreads the faces of one call over `threads` threads (1 = the calling
    /// thread only; clamped to 1..=[`crate::parallel::MAX_THREADS`]).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.clamp(1, crate::parallel::MAX_THREADS);
    }

    /// The batch actually sent to the backbone.
    fn batch(&self) -> usize {
        self.max_batch.min(self.model.preferred_batch()).max(1)
    }

    /// The backbone description.
    pub fn config(&self) -> &BackboneConfig {
        &self.config
    }

    /// The aligner that prepares its input.
    pub fn aligner(&self) -> &Aligner {
        &self.aligner
    }

    /// Embeds the faces `dets` of `frame` (one embedding per detection, in order).
    pub fn embed_detections(&self, frame: &Frame, dets: &[Detection]) -> Result<Vec<Embedding>> {
        Ok(embeddings(self.describe_detections(frame, dets)?))
    }

    /// Embeds whole images that already are aligned faces (resized to the input size).
    pub fn embed_crops(&self, crops: &[Frame]) -> Result<Vec<Embedding>> {
        Ok(embeddings(self.describe_crops(crops)?))
    }

    /// Embedding and pooled features of the faces `dets` of `frame`, in order.
    pub fn describe_detections(
        &self,
        frame: &Frame,
        dets: &[Detection],
    ) -> Result<Vec<BackboneOutput>> {
        let norm = self.config.normalize();
        self.embed_items(dets, |d, buf| self.aligner.align_into(frame, d, norm, buf))
    }

    /// Embedding and pooled features of whole images that already are
    /// aligned faces (resized to the input size).
    pub fn describe_crops(&self, crops: &[Frame]) -> Result<Vec<BackboneOutput>> {
        let [_, h, w] = self.config.input;
        let norm = self.config.normalize();
        self.embed_items(crops, |f, buf| {
            let full = crate::resample::Rect::full(f);
            if crate::resample::resize_area_chw(f, full, w, h, norm, buf) {
                Ok(())
            } else {
                Err(Error::frame("crop cannot be resized"))
            }
        })
    }

    /// Fills one input per item with `fill`, runs the backbone in chunks of
    /// its preferred batch spread over the threads; embeddings in item order.
    fn embed_items<T: Sync>(
        &self,
        items: &[T],
        fill: impl Fn(&T, &mut [f32]) -> Result<()> + Sync,
    ) -> Result<Vec<BackboneOutput>> {
        let [c, h, w] = self.config.input;
        let item = c * h * w;
        let chunks: Vec<&[T]> = items.chunks(self.batch()).collect();
        let parts = crate::parallel::map(
            &chunks,
            self.threads,
            |c| c.len() as f64,
            |chunk| {
                let mut data = vec![0f32; chunk.len() * item];
                for (x, buf) in chunk.iter().zip(data.chunks_exact_mut(item)) {
                    fill(x, buf)?;
                }
                self.run(chunk.len(), data)
            },
        )?;
        Ok(parts.into_iter().flatten().collect())
    }

    fn run(&self, n: usize, data: Vec<f32>) -> Result<Vec<BackboneOutput>> {
        let [c, h, w] = self.config.input;
        let res = self.model.run(&Tensor::new(vec![n, c, h, w], data)?)?;
        let t = res
            .first()
            .ok_or_else(|| Error::model(self.model.name(), "no output"))?;
        if t.batch() != n || t.item_len() != self.config.dim {
            return Err(Error::model(
                self.model.name(),
                format!("output {:?}, expected [{n}, {}]", t.shape, self.config.dim),
            ));
        }
        // The pooled output is the graph's last (see `ModelEdit`).
        let pooled = match &self.config.features {
            None => None,
            Some(f) => {
                let p = res
                    .last()
                    .filter(|_| res.len() > 1)
                    .ok_or_else(|| Error::model(self.model.name(), "no pooled output"))?;
                if p.batch() != n || p.item_len() != f.dim {
                    return Err(Error::model(
                        self.model.name(),
                        format!(
                            "pooled features {:?}, expected [{n}, {}] (backbone.features.dim)",
                            p.shape, f.dim
                        ),
                    ));
                }
                Some(p)
            }
        };
        Ok((0..n)
            .map(|i| {
                let mut v = t.item(i).to_vec();
                if let Some(c) = &self.config.center {
                    v.iter_mut().zip(c).for_each(|(x, m)| *x -= m);
                }
                BackboneOutput {
                    embedding: Embedding::normalized(v),
                    features: pooled.map(|p| p.item(i).to_vec()),
                }
            })
            .collect())
    }
}

fn embeddings(v: Vec<BackboneOutput>) -> Vec<Embedding> {
    v.into_iter().map(|o| o.embedding).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_norm() {
        let a = Embedding::normalized(vec![3.0, 4.0]);
        assert!((a.norm() - 1.0).abs() < 1e-6);
        let b = Embedding::normalized(vec![-3.0, -4.0]);
        assert!((a.cosine(&b) + 1.0).abs() < 1e-6);
        let z = Embedding::normalized(vec![0.0, 0.0]);
        assert_eq!(z.cosine(&a), 0.0);
    }

    #[test]
    fn mean_spec_parses_both_forms() {
        let s: MeanSpec = serde_json::from_str("127.5").unwrap();
        assert_eq!(s, MeanSpec::Scalar(127.5));
        let p: MeanSpec = serde_json::from_str("[1, 2, 3]").unwrap();
        assert_eq!(p, MeanSpec::PerChannel([1.0, 2.0, 3.0]));
    }
}
