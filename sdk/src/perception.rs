//! The perception path of a bundle: detection, alignment and embedding.

use std::time::{Duration, Instant};

use crate::align::Aligner;
use crate::backend::{Backend, ShapePolicy};
use crate::bundle::Bundle;
use crate::embed::{Embedder, Embedding};
use crate::error::Result;
use crate::frame::Frame;
use crate::geometry::Detection;
use crate::mtcnn::{DetectTimings, Mtcnn, MtcnnConfig};

/// Most PNet plans kept per detector with [`ShapePolicy::PerShape`] (one per
/// pyramid level of the frame sizes seen).
pub const PNET_PLAN_CACHE: usize = 64;

/// A detected face with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Box, score and landmarks.
    pub detection: Detection,
    /// Backbone embedding (L2-normalised).
    pub embedding: Embedding,
    /// Pooled multi-level features, when the bundle's backbone has them.
    pub features: Option<Vec<f32>>,
}

impl Face {
    /// The vector the bundle's head or classifier scores: the pooled
    /// features when there are any, else the embedding.
    pub fn scoring_input(&self) -> &[f32] {
        self.features.as_deref().unwrap_or(&self.embedding.0)
    }
}

/// Detector + aligner + embedder, loaded from a bundle.
#[derive(Debug)]
pub struct Perception {
    detector: Mtcnn,
    embedder: Embedder,
}

/// Time spent per stage of [`Perception::analyze_timed`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerceptionTimings {
    /// Detector stages.
    pub detect: DetectTimings,
    /// Alignment + backbone.
    pub embed: Duration,
}

impl Perception {
    /// Loads the bundle's detector and backbone with `backend`.
    pub fn from_bundle(bundle: &Bundle, backend: &dyn Backend) -> Result<Self> {
        Self::from_bundle_with(
            bundle,
            backend,
            ShapePolicy::PerShape {
                capacity: PNET_PLAN_CACHE,
            },
        )
    }

    /// As [`Self::from_bundle`], choosing how PNet's symbolic input is planned.
    pub fn from_bundle_with(
        bundle: &Bundle,
        backend: &dyn Backend,
        pnet_policy: ShapePolicy,
    ) -> Result<Self> {
        let m = bundle.manifest();
        let d = &m.detector;
        let (pnet, rnet, onet) = (
            bundle.resolve(&d.pnet)?,
            bundle.resolve(&d.rnet)?,
            bundle.resolve(&d.onet)?,
        );
        let aligner = Aligner::new(m.aligner)?;
        let backbone = bundle.resolve(&m.backbone.file)?;
        let branches = m
            .backbone
            .branches
            .iter()
            .map(|b| bundle.resolve(&b.file))
            .collect::<Result<Vec<_>>>()?;
        // The detector's three nets and the backbone load (parse, optimise,
        // plan) on two threads: start-up is part of every `scan` process.
        let (detector, embedder) = std::thread::scope(|s| {
            let detector =
                s.spawn(|| Mtcnn::load(backend, &pnet, &rnet, &onet, pnet_policy, d.config()));
            let embedder = Embedder::load_with_branches(
                backend,
                &backbone,
                &branches,
                m.backbone.clone(),
                aligner,
            );
            let detector = detector
                .join()
                .unwrap_or_else(|_| Err(crate::Error::model("detector", "loading panicked")));
            (detector, embedder)
        });
        Ok(Self {
            detector: detector?,
            embedder: embedder?,
        })
    }

    /// Spreads each frame's detection and embedding work over `threads`
    /// threads (default 1: the calling thread; [`crate::parallel::available_threads`]
    /// uses every core).
    pub fn set_threads(&mut self, threads: usize) {
        self.detector.set_threads(threads);
        self.embedder.set_threads(threads);
    }

    /// Threads used per frame.
    pub fn threads(&self) -> usize {
        self.detector.threads()
    }

    /// The detector.
    pub fn detector(&self) -> &Mtcnn {
        &self.detector
    }

    /// Replaces the detector's parameters.
    pub fn set_detector_config(&mut self, config: MtcnnConfig) -> Result<()> {
        self.detector.set_config(config)
    }

    /// The embedder (with its aligner).
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Detects faces.
    pub fn detect(&self, frame: &Frame) -> Result<Vec<Detection>> {
        self.detector.detect(frame)
    }

    /// Embeds already detected faces.
    pub fn embed(&self, frame: &Frame, dets: &[Detection]) -> Result<Vec<Embedding>> {
        self.embedder.embed_detections(frame, dets)
    }

    /// Detects and embeds every face of `frame`.
    pub fn analyze(&self, frame: &Frame) -> Result<Vec<Face>> {
        Ok(self.analyze_timed(frame)?.0)
    }

    /// As [`Self::analyze`], with per-stage timings.
    pub fn analyze_timed(&self, frame: &Frame) -> Result<(Vec<Face>, PerceptionTimings)> {
        let (dets, detect) = self.detector.detect_timed(frame)?;
        let t = Instant::now();
        let faces = self.faces_at(frame, dets)?;
        let embed = t.elapsed();
        Ok((faces, PerceptionTimings { detect, embed }))
    }

    /// The faces of `frame` at detections found elsewhere (for example in
    /// another version of the same frame): embedded, with pooled features.
    pub fn faces_at(&self, frame: &Frame, dets: Vec<Detection>) -> Result<Vec<Face>> {
        let outs = self.embedder.describe_detections(frame, &dets)?;
        Ok(dets
            .into_iter()
            .zip(outs)
            .map(|(detection, o)| Face {
                detection,
                embedding: o.embedding,
                features: o.features,
            })
            .collect())
    }
}
