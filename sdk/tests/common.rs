//! Shared helpers of the SDK's integration tests: paths, and the list of
//! backends every model test runs against with its tolerance.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::PathBuf;
use std::sync::Arc;

use fakewatch_sdk::backend::{Backend, TractBackend};

/// ort-cpu against tract on an int8 (QDQ) model: see
/// [`BackendCase::int8_value_tol`]. Measured with onnxruntime 1.23.2 on a
/// 2-core AMD EPYC (AVX2, no VNNI), seeded input of `models.rs`:
/// `facenet-int8.onnx` 0.0035 (integer kernels), `faceres-int8.onnx` 4.4e-7
/// (weights only: dequantized, float kernels), the int8 heads ≤ 1.5e-8.
pub const INT8_VALUE_TOL: f32 = 0.02;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The perception-only bundle shipped in `models/base`.
pub fn base_bundle() -> PathBuf {
    root().join("models/base")
}

/// A backend under test and the tolerance its outputs are held to, against
/// tract's (the reference: tract's own case has zero tolerance where a test
/// compares a backend with itself).
pub struct BackendCase {
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Largest accepted absolute difference of box coordinates (pixels).
    pub box_tol: f32,
    /// Largest accepted absolute difference of probabilities.
    pub score_tol: f32,
    /// Largest accepted absolute difference of one raw model output value or
    /// one embedding component.
    pub value_tol: f32,
    /// Largest accepted absolute difference of one raw output value of an
    /// int8 (QDQ) model. Integer kernels and tract's float emulation may round
    /// an activation one quantization step apart, and a step propagates.
    pub int8_value_tol: f32,
}

/// Every backend compiled into this build whose runtime is present.
///
/// With feature `ort`, onnxruntime comes from `ORT_DYLIB_PATH` or else
/// `target/onnxruntime/libonnxruntime.so` (where `.ci/onnxruntime` puts the
/// PyPI wheel's library). Without either, the ort case is left out with a
/// message on stderr, unless `FAKEWATCH_REQUIRE_ORT=1` (set by CI), which
/// makes that a failure.
pub fn backends() -> Vec<BackendCase> {
    #[allow(unused_mut)]
    let mut cases = vec![BackendCase {
        backend: Arc::new(TractBackend),
        box_tol: 0.0,
        score_tol: 0.0,
        value_tol: 0.0,
        int8_value_tol: 0.0,
    }];
    #[cfg(feature = "ort")]
    if let Some(case) = ort_cpu() {
        cases.push(case);
    }
    cases
}

/// The onnxruntime library the ort cases use, if one is present.
#[cfg(feature = "ort")]
pub fn ort_library() -> Option<PathBuf> {
    let lib = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root().join("target/onnxruntime/libonnxruntime.so"),
    };
    if lib.is_file() {
        return Some(lib);
    }
    let required = std::env::var("FAKEWATCH_REQUIRE_ORT").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "FAKEWATCH_REQUIRE_ORT=1 but no onnxruntime library at {}",
        lib.display()
    );
    eprintln!(
        "SKIP ort-cpu: no onnxruntime library at {} (run .ci/onnxruntime or set ORT_DYLIB_PATH)",
        lib.display()
    );
    None
}

/// onnxruntime's CPU provider. Tolerances: onnxruntime and tract order their
/// float sums differently. Measured with onnxruntime 1.23.2 on a 2-core x86
/// (AVX2): boxes and landmarks within 1.3e-4 px, detection scores within
/// 1.2e-7, embedding components within 2.7e-7, raw outputs of every model on
/// a seeded input within 3.3e-7 except EfficientNet-Lite0's (65 convolutions
/// deep: 7.9e-6) and pooled multi-level features within 7.6e-6 (relative);
/// the tolerances leave room for other CPUs' kernels.
#[cfg(feature = "ort")]
fn ort_cpu() -> Option<BackendCase> {
    use fakewatch_sdk::ort_backend::{OrtBackend, OrtOptions};
    let library = ort_library()?;
    let backend = OrtBackend::new(OrtOptions {
        library: Some(library),
        ..OrtOptions::default()
    })
    .expect("onnxruntime loads");
    Some(BackendCase {
        backend: Arc::new(backend),
        box_tol: 0.01,
        score_tol: 1e-5,
        value_tol: 3e-5,
        int8_value_tol: INT8_VALUE_TOL,
    })
}
