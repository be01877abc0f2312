//! `--backend`: which inference backend runs the bundle's models.

use clap::Args;
use fakewatch_sdk::runtime::BackendSpec;
use std::path::PathBuf;

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
