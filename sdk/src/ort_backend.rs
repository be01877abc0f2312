//! The onnxruntime backend (feature `ort`): the same ONNX files on
//! onnxruntime's CPU, CUDA or TensorRT execution provider.
//!
//! onnxruntime is loaded at run time (`ort`'s `load-dynamic`): nothing is
//! linked at build time, so the default build stays pure Rust and one binary
//! runs with whichever `libonnxruntime.so` the machine has (the PyPI wheel's,
//! or on a Jetson the build that carries the TensorRT provider). The library
//! comes from [`OrtOptions::library`] or else the `ORT_DYLIB_PATH` variable;
//! a missing file or a version older than 1.17 is an [`Error::Backend`], not
//! a panic.
//!
//! onnxruntime keeps one library per process: the first [`OrtBackend::new`]
//! loads it, and a later call naming a different file is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
#[cfg(feature = "ort-cuda")]
use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::ValueType;

use crate::backend::{
    check_input_shape, model_file_name, Backend, InferenceModel, ModelEdit, ShapePolicy, Tensor,
};
use crate::error::{Error, Result};

/// Environment variable naming `libonnxruntime.so` when
/// [`OrtOptions::library`] is `None` (the name `ort` itself uses).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Batch size the onnxruntime backend asks for when a model's batch
/// dimension is free: onnxruntime runs a batch faster per item than single
/// items, unlike tract (see [`crate::backend::TractModel`]).
pub const ORT_PREFERRED_BATCH: usize = 16;

/// Which onnxruntime execution provider runs the models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrtProvider {
    /// onnxruntime's own CPU kernels.
    Cpu,
    /// NVIDIA CUDA (onnxruntime-gpu, or the Jetson build).
    Cuda {
        /// CUDA device index.
        device: i32,
    },
    /// NVIDIA TensorRT through onnxruntime (nodes TensorRT cannot take fall
    /// back to CUDA, then CPU).
    TensorRt {
        /// CUDA device index.
        device: i32,
        /// Build FP16 engines (on by default: Jetson GPUs run FP16 at twice
        /// the FP32 rate).
        fp16: bool,
        /// Where built engines are kept, so a device does not rebuild them
        /// (minutes on a Jetson) at every start; `None` rebuilds each time.
        engine_cache: Option<PathBuf>,
    },
}

impl OrtProvider {
    /// Parses `cpu`, `cuda` or `tensorrt` (defaults: device 0, FP16 on, no
    /// engine cache).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { device: 0 }),
            "tensorrt" | "trt" => Ok(Self::TensorRt {
                device: 0,
                fp16: true,
                engine_cache: None,
            }),
            other => Err(Error::config(format!(
                "unknown onnxruntime provider {other:?} (expected cpu, cuda or tensorrt)"
            ))),
        }
    }
    /// The backend name this provider gives: `ort-cpu`, `ort-cuda`, `ort-tensorrt`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Cpu => "ort-cpu",
            Self::Cuda { .. } => "ort-cuda",
            Self::TensorRt { .. } => "ort-tensorrt",
        }
    }
}

/// Settings of the onnxruntime backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// `libonnxruntime.so` (or `.dylib`/`.dll`); `None` reads `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// The execution provider.
    pub provider: OrtProvider,
    /// Fail when the provider cannot register, instead of falling back to
    /// onnxruntime's CPU kernels with one warning.
    pub strict: bool,
    /// Intra-op threads per session; 0 lets onnxruntime choose (one per
    /// physical core).
    pub threads: usize,
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            library: None,
            provider: OrtProvider::Cpu,
            strict: false,
            threads: 0,
        }
    }
}

/// The library this process loaded and its environment (onnxruntime allows
/// one of each per process).
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads onnxruntime from `path` once per process and returns its
/// environment; the same path again returns it, another path is an error.
fn load_library(path: &Path) -> Result<Environment> {
    let err = |reason: String| Error::Backend {
        backend: "ort".into(),
        reason,
    };
    let mut loaded = LOADED
        .lock()
        .map_err(|_| err("onnxruntime loader poisoned".into()))?;
    if let Some((p, env)) = loaded.as_ref() {
        return if p == path {
            Ok(env.clone())
        } else {
            Err(err(format!(
                "onnxruntime is already loaded from {} in this process; cannot load {}",
                p.display(),
                path.display()
            )))
        };
    }
    if !path.is_file() {
        return Err(err(format!(
            "no onnxruntime library at {} (set `{ORT_DYLIB_ENV}` or the backend's library path to libonnxruntime.so)",
            path.display()
        )));
    }
    let env = ort::init_from(path)
        .map_err(|e| err(e.to_string()))?
        .with_name("fakewatch")
        .build()
        .map_err(|e| err(e.to_string()))?;
    *loaded = Some((path.to_path_buf(), env.clone()));
    Ok(env)
}

/// Runs models on onnxruntime (see the module docs).
pub struct OrtBackend {
    options: OrtOptions,
    library: PathBuf,
    env: Environment,
    /// Whether the provider fallback was already reported (one warning per
    /// backend, not one per model).
    warned: AtomicBool,
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend")
            .field("options", &self.options)
            .field("library", &self.library)
            .finish()
    }
}

impl OrtBackend {
    /// Loads onnxruntime (once per process) and checks the options. The
    /// execution provider is registered per model in [`Backend::load`].
    pub fn new(options: OrtOptions) -> Result<Self> {
        let library = match &options.library {
            Some(p) => p.clone(),
            None => match std::env::var_os(ORT_DYLIB_ENV) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    return Err(Error::Backend {
                        backend: "ort".into(),
                        reason: format!(
                        "no onnxruntime library given: set `{ORT_DYLIB_ENV}` or the library path"
                    ),
                    })
                }
            },
        };
        let env = load_library(&library)?;
        Ok(Self {
            options,
            library,
            env,
            warned: AtomicBool::new(false),
        })
    }
    /// The onnxruntime library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }
    /// The settings.
    pub fn options(&self) -> &OrtOptions {
        &self.options
    }

    /// Registers the provider on `builder`; on failure falls back to CPU
    /// with a warning, or fails when strict. Returns the provider that runs.
    fn register(
        &self,
        builder: &mut ort::session::builder::SessionBuilder,
        model: &str,
    ) -> Result<&'static str> {
        let result = match &self.options.provider {
            OrtProvider::Cpu => return Ok("cpu"),
            OrtProvider::Cuda { device } => register_cuda(builder, *device),
            OrtProvider::TensorRt {
                device,
                fp16,
                engine_cache,
            } => register_tensorrt(builder, *device, *fp16, engine_cache.as_deref()),
        };
        let name = self.options.provider.backend_name();
        match result {
            Ok(()) => Ok(name),
            Err(reason) if self.options.strict => Err(Error::Backend {
                backend: name.into(),
                reason: format!("{model}: {reason}"),
            }),
            Err(reason) => {
                if self.warned.swap(true, Ordering::Relaxed) {
                    log::debug!("{name} is not available for {model} ({reason}); CPU provider");
                } else {
                    log::warn!(
                        "{name} is not available ({reason}); running {model} and the \
                         following models on onnxruntime's CPU provider"
                    );
                }
                Ok("ort-cpu (fallback)")
            }
        }
    }
}

#[cfg(feature = "ort-cuda")]
fn register_cuda(
    builder: &mut ort::session::builder::SessionBuilder,
    device: i32,
) -> std::result::Result<(), String> {
    let ep = ort::ep::CUDA::default().with_device_id(device);
    ep.register(builder).map_err(|e| e.to_string())
}

#[cfg(not(feature = "ort-cuda"))]
fn register_cuda(
    _: &mut ort::session::builder::SessionBuilder,
    _: i32,
) -> std::result::Result<(), String> {
    Err("this build has no CUDA provider support (cargo feature `ort-cuda`)".into())
}

#[cfg(feature = "ort-tensorrt")]
fn register_tensorrt(
    builder: &mut ort::session::builder::SessionBuilder,
    device: i32,
    fp16: bool,
    cache: Option<&Path>,
) -> std::result::Result<(), String> {
    let mut ep = ort::ep::TensorRT::default()
        .with_device_id(device)
        .with_fp16(fp16);
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir).map_err(|e| format!("engine cache {}: {e}", dir.display()))?;
        ep = ep
            .with_engine_cache(true)
            .with_engine_cache_path(dir.display())
            .with_timing_cache(true)
            .with_timing_cache_path(dir.display());
    }
    ep.register(builder).map_err(|e| e.to_string())?;
    // Nodes TensorRT cannot take go to CUDA rather than the CPU.
    register_cuda(builder, device)
}

#[cfg(not(feature = "ort-tensorrt"))]
fn register_tensorrt(
    _: &mut ort::session::builder::SessionBuilder,
    _: i32,
    _: bool,
    _: Option<&Path>,
) -> std::result::Result<(), String> {
    Err("this build has no TensorRT provider support (cargo feature `ort-tensorrt`)".into())
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.options.provider.backend_name()
    }
    fn load_edited(
        &self,
        path: &Path,
        policy: ShapePolicy,
        edit: &ModelEdit,
    ) -> Result<Arc<dyn InferenceModel>> {
        // onnxruntime plans any shape the file allows; the policy only
        // shapes tract's plans.
        let _ = policy;
        Ok(Arc::new(OrtModel::load(self, path, edit)?))
    }
}

/// A model run by onnxruntime.
pub struct OrtModel {
    name: String,
    provider: &'static str,
    /// `Session::run` needs `&mut`: one run at a time per model (onnxruntime
    /// spreads each run over its own intra-op threads).
    session: Mutex<Session>,
    input: String,
    declared: Vec<Option<usize>>,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .finish()
    }
}

impl OrtModel {
    fn load(backend: &OrtBackend, path: &Path, edit: &ModelEdit) -> Result<Self> {
        let name = model_file_name(path)?;
        let err = |e: String| Error::model(name.clone(), e);
        let mut builder = Session::builder(&backend.env)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?;
        if backend.options.threads > 0 {
            builder = builder
                .with_intra_threads(backend.options.threads)
                .map_err(|e| err(e.to_string()))?;
        }
        let provider = backend.register(&mut builder, &name)?;
        let session = if edit.is_empty() {
            builder.commit_from_file(path)
        } else {
            // The same edit tract applies, on tract's parse of the file,
            // handed to onnxruntime as bytes.
            use prost::Message;
            use tract_onnx::prelude::Framework;
            let mut proto = tract_onnx::onnx()
                .proto_model_for_path(path)
                .map_err(|e| err(format!("{e:#}")))?;
            edit.apply(&mut proto).map_err(&err)?;
            builder.commit_from_memory(&proto.encode_to_vec())
        }
        .map_err(|e| err(e.to_string()))?;
        let [input] = session.inputs() else {
            return Err(err("expected exactly one input".into()));
        };
        let declared = match input.dtype() {
            ValueType::Tensor {
                ty: ort::value::TensorElementType::Float32,
                shape,
                ..
            } => shape
                .iter()
                .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                .collect(),
            other => return Err(err(format!("input is {other:?}, expected f32"))),
        };
        let input = input.name().to_string();
        Ok(Self {
            name,
            provider,
            session: Mutex::new(session),
            input,
            declared,
        })
    }
    /// The input shape the file declares; `None` for a symbolic dimension.
    pub fn input_shape(&self) -> Vec<Option<usize>> {
        self.declared.clone()
    }
    /// The provider that runs this model (`ort-cpu (fallback)` when the
    /// asked one could not register).
    pub fn provider(&self) -> &'static str {
        self.provider
    }
}

impl InferenceModel for OrtModel {
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        check_input_shape(&self.name, &self.declared, input)?;
        let err = |e: ort::Error| Error::model(self.name.clone(), e.to_string());
        let value = ort::value::Tensor::from_array((input.shape.clone(), input.data.clone()))
            .map_err(err)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::model(&self.name, "session poisoned"))?;
        let outputs = session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(err)?;
        let mut result = Vec::with_capacity(outputs.len());
        for (_, value) in outputs.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
            let shape = shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::model(&self.name, "negative output dimension"))?;
            result.push(Tensor::new(shape, data.to_vec())?);
        }
        Ok(result)
    }
    fn name(&self) -> &str {
        &self.name
    }
    /// The file's batch size when it fixes one, else [`ORT_PREFERRED_BATCH`]
    /// ([`ShapePolicy::FixedBatch`] only sets tract's plan: onnxruntime takes
    /// any batch the file allows).
    fn preferred_batch(&self) -> usize {
        match self.declared.first() {
            Some(Some(n)) => *n,
            _ => ORT_PREFERRED_BATCH,
        }
    }
}
