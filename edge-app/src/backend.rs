//! `--backend`: which inference backend runs the bundle's models.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Result};
use clap::Args;
use fakewatch_sdk::backend::{Backend, TractBackend};

/// Backend options shared by every command.
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// Inference backend: `tract` (pure Rust, every target), or with the
    /// `ort` build feature `ort-cpu`, `ort-cuda`, `ort-tensorrt`
    /// (onnxruntime loaded at run time; also `FAKEWATCH_BACKEND`).
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,
    /// libonnxruntime.so for the `ort-*` backends (default: `ORT_DYLIB_PATH`).
    #[arg(long, global = true, value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// Fail when the asked execution provider (CUDA, TensorRT) cannot be
    /// used, instead of running on onnxruntime's CPU provider with a warning.
    #[arg(long, global = true)]
    pub strict_backend: bool,
    /// TensorRT engine cache directory (engines are built once per model and
    /// device, then reused at every start).
    #[arg(long, global = true, value_name = "DIR")]
    pub trt_cache: Option<PathBuf>,
    /// TensorRT in FP32 instead of the default FP16.
    #[arg(long, global = true)]
    pub trt_fp32: bool,
}

static BACKEND: OnceLock<Arc<dyn Backend>> = OnceLock::new();
static ARGS: OnceLock<BackendArgs> = OnceLock::new();

/// Sets up the backend once, before any command runs.
pub fn init(args: &BackendArgs) -> Result<()> {
    let name = args
        .backend
        .clone()
        .or_else(|| std::env::var("FAKEWATCH_BACKEND").ok())
        .unwrap_or_else(|| "tract".into());
    let backend = make(&name, args)?;
    log::info!("inference backend: {}", backend.name());
    let _ = BACKEND.set(backend);
    let _ = ARGS.set(args.clone());
    Ok(())
}

/// Another backend by name, with the same options (for `bench --compare`).
pub fn named(name: &str) -> Result<Arc<dyn Backend>> {
    make(name, ARGS.get().unwrap_or(&BackendArgs::default()))
}

/// The backend chosen by [`init`] (tract when none was).
pub fn backend() -> Arc<dyn Backend> {
    BACKEND
        .get()
        .cloned()
        .unwrap_or_else(|| Arc::new(TractBackend))
}

#[cfg(feature = "ort")]
fn make(name: &str, args: &BackendArgs) -> Result<Arc<dyn Backend>> {
    use fakewatch_sdk::ort_backend::{OrtBackend, OrtOptions, OrtProvider};
    let provider = match name {
        "tract" => return Ok(Arc::new(TractBackend)),
        "ort" | "ort-cpu" => OrtProvider::Cpu,
        "ort-cuda" => OrtProvider::Cuda { device: 0 },
        "ort-tensorrt" | "ort-trt" => OrtProvider::TensorRt {
            device: 0,
            fp16: !args.trt_fp32,
            engine_cache: args.trt_cache.clone(),
        },
        other => {
            bail!("unknown backend {other:?} (expected tract, ort-cpu, ort-cuda or ort-tensorrt)")
        }
    };
    Ok(Arc::new(OrtBackend::new(OrtOptions {
        library: args.ort_lib.clone(),
        provider,
        strict: args.strict_backend,
        threads: 0,
    })?))
}

#[cfg(not(feature = "ort"))]
fn make(name: &str, _: &BackendArgs) -> Result<Arc<dyn Backend>> {
    match name {
        "tract" => Ok(Arc::new(TractBackend)),
        n if n.starts_with("ort") => bail!(
            "backend {n:?}: this fakewatch was built without onnxruntime support \
             (cargo feature `ort`, `ort-cuda` or `ort-tensorrt`)"
        ),
        other => bail!("unknown backend {other:?} (this build has: tract)"),
    }
}
