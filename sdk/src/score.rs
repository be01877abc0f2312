//! The bundle's scoring stages: optional triplet head + classifier (a face's
//! scoring input → classifier output). How those outputs become a verdict is
//! [`crate::verdict`]'s business.

use std::sync::Arc;

use crate::backend::{Backend, InferenceModel, ShapePolicy, Tensor};
use crate::bundle::Bundle;
use crate::error::{Error, Result};

/// Faces scored per model call.
pub const SCORE_BATCH: usize = 64;

/// Head + classifier of a bundle.
pub struct Scorer {
    head: Option<Arc<dyn InferenceModel>>,
    classifier: Arc<dyn InferenceModel>,
    input_dim: usize,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("head", &self.head.as_ref().map(|h| h.name().to_string()))
            .field("classifier", &self.classifier.name())
            .field("input_dim", &self.input_dim)
            .finish()
    }
}

impl Scorer {
    /// Loads the bundle's head (optional: a frames-only bundle classifies the
    /// raw embedding) and classifier. A bundle without a classifier cannot
    /// score faces: that is an [`Error::Bundle`].
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Self> {
        let m = bundle.manifest();
        let Some(c) = &m.classifier else {
            return Err(Error::Bundle {
                path: bundle.dir().into(),
                reason: "has no classifier: it can detect faces but not score them \
                         (train one with `fakewatch-train fit`)"
                    .into(),
            });
        };
        let head = match &m.head {
            Some(h) => Some(backend.load(&bundle.resolve(&h.file)?, ShapePolicy::Symbolic)?),
            None => None,
        };
        let classifier = backend.load(&bundle.resolve(&c.file)?, ShapePolicy::Symbolic)?;
        Ok(Self {
            head,
            classifier,
            input_dim: m.backbone.scoring_dim(),
        })
    }

    /// P(fake) of each scoring input, in order: a face's
    /// [`crate::perception::Face::scoring_input`] (its pooled features when
    /// the bundle's backbone has them, else its embedding's values).
    pub fn score<V: AsRef<[f32]>>(&self, inputs: &[V]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(SCORE_BATCH) {
            let mut data = Vec::with_capacity(chunk.len() * self.input_dim);
            for e in chunk {
                let e = e.as_ref();
                if e.len() != self.input_dim {
                    return Err(Error::config(format!(
                        "scoring input has {} values, the bundle's backbone gives {}",
                        e.len(),
                        self.input_dim
                    )));
                }
                data.extend_from_slice(e);
            }
            let mut x = Tensor::new(vec![chunk.len(), self.input_dim], data)?;
            if let Some(h) = &self.head {
                x = first_output(h.as_ref(), &x)?;
            }
            let p = first_output(self.classifier.as_ref(), &x)?;
            if p.data.len() != chunk.len() {
                return Err(Error::model(
                    self.classifier.name(),
                    format!("gave {} scores for {} faces", p.data.len(), chunk.len()),
                ));
            }
            for v in p.data {
                if !v.is_finite() {
                    return Err(Error::model(self.classifier.name(), "non-finite score"));
                }
                out.push(v.clamp(0.0, 1.0));
            }
        }
        Ok(out)
    }
}

fn first_output(m: &dyn InferenceModel, x: &Tensor) -> Result<Tensor> {
    m.run(x)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::model(m.name(), "produced no output"))
}
