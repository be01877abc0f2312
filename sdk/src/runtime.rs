//! Run-time choice of inference backend: the `--backend`, `--ort-lib`,
//! `--strict-backend` and `--trt-*` options of both binaries, as one value.
//! (Apart from [`crate::backend`], so the backend trait does not depend on
//! the onnxruntime backend that implements it.)

use std::sync::Arc;

use crate::backend::{Backend, TractBackend};
use crate::error::{Error, Result};

/// A backend chosen by name at run time, as binaries' `--backend` flags do:
/// `tract`, or with feature `ort` `ort-cpu`, `ort-cuda`, `ort-tensorrt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSpec {
    /// The backend's name (empty: `tract`).
    pub name: String,
    /// libonnxruntime for the `ort-*` backends (`None`: `ORT_DYLIB_PATH`).
    pub ort_library: Option<std::path::PathBuf>,
    /// Fail when the asked execution provider cannot register instead of
    /// falling back to onnxruntime's CPU provider.
    pub strict: bool,
    /// TensorRT engine cache directory.
    pub trt_cache: Option<std::path::PathBuf>,
    /// TensorRT in FP32 instead of FP16.
    pub trt_fp32: bool,
}

impl BackendSpec {
    /// Opens the named backend (loads onnxruntime for the `ort-*` ones).
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        match self.name.as_str() {
            "" | "tract" => Ok(Arc::new(TractBackend)),
            #[cfg(feature = "ort")]
            name @ ("ort" | "ort-cpu" | "ort-cuda" | "ort-tensorrt" | "ort-trt") => {
                use crate::ort_backend::{OrtBackend, OrtOptions, OrtProvider};
                let provider = match OrtProvider::parse(name.strip_prefix("ort-").unwrap_or("cpu"))?
                {
                    OrtProvider::TensorRt { device, .. } => OrtProvider::TensorRt {
                        device,
                        fp16: !self.trt_fp32,
                        engine_cache: self.trt_cache.clone(),
                    },
                    other => other,
                };
                Ok(Arc::new(OrtBackend::new(OrtOptions {
                    library: self.ort_library.clone(),
                    provider,
                    strict: self.strict,
                    threads: 0,
                })?))
            }
            #[cfg(not(feature = "ort"))]
            name if name.starts_with("ort") => Err(Error::config(format!(
                "backend {name:?}: built without onnxruntime support \
                 (cargo feature `ort`, `ort-cuda` or `ort-tensorrt`)"
            ))),
            other => Err(Error::config(format!(
                "unknown backend {other:?} (expected tract, ort-cpu, ort-cuda or ort-tensorrt)"
            ))),
        }
    }
}

/// The backend options of both binaries (`fakewatch`, `fakewatch-train`),
/// as global flags.
#[cfg(feature = "cli")]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// Inference backend: `tract` (pure Rust, every target), or with the
    /// `ort` build feature `ort-cpu`, `ort-cuda`, `ort-tensorrt`
    /// (onnxruntime loaded at run time; also `FAKEWATCH_BACKEND`).
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,
    /// libonnxruntime.so for the `ort-*` backends (default: `ORT_DYLIB_PATH`).
    #[arg(long, global = true, value_name = "FILE")]
    pub ort_lib: Option<std::path::PathBuf>,
    /// Fail when the asked execution provider (CUDA, TensorRT) cannot be
    /// used, instead of running on onnxruntime's CPU provider with a warning.
    #[arg(long, global = true)]
    pub strict_backend: bool,
    /// TensorRT engine cache directory (engines are built once per model and
    /// device, then reused at every start).
    #[arg(long, global = true, value_name = "DIR")]
    pub trt_cache: Option<std::path::PathBuf>,
    /// TensorRT in FP32 instead of the default FP16.
    #[arg(long, global = true)]
    pub trt_fp32: bool,
}

#[cfg(feature = "cli")]
impl BackendArgs {
    /// The SDK's backend description (`--backend`, else `FAKEWATCH_BACKEND`,
    /// else tract).
    pub fn spec(&self, name: Option<&str>) -> BackendSpec {
        let name = name
            .map(str::to_string)
            .or_else(|| self.backend.clone())
            .or_else(|| std::env::var("FAKEWATCH_BACKEND").ok())
            .unwrap_or_default();
        BackendSpec {
            name,
            ort_library: self.ort_lib.clone(),
            strict: self.strict_backend,
            trt_cache: self.trt_cache.clone(),
            trt_fp32: self.trt_fp32,
        }
    }
}
