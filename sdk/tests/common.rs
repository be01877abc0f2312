//! Shared helpers of the SDK's integration tests: paths, and the list of
//! backends every model test runs against with its tolerance.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use fakewatch_sdk::backend::{Backend, TractBackend};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The perception-only bundle shipped in `models/base`.
pub fn base_bundle() -> PathBuf {
    root().join("models/base")
}

/// A backend under test and the tolerance its outputs are held to.
pub struct BackendCase {
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Largest accepted absolute difference of box coordinates (pixels).
    pub box_tol: f32,
    /// Largest accepted absolute difference of probabilities.
    pub score_tol: f32,
}

/// Every backend compiled into this build.
pub fn backends() -> Vec<BackendCase> {
    vec![BackendCase {
        backend: Arc::new(TractBackend),
        box_tol: 0.0,
        score_tol: 0.0,
    }]
}
