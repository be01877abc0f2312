//! Inference backends: one trait, one tract implementation (pure Rust, every target).
//!
//! A backend loads an ONNX file into an [`InferenceModel`] that maps one f32
//! input tensor to its output tensors. Other backends (onnxruntime) implement
//! the same trait behind cargo features.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

use crate::error::{Error, Result};

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; fails if they disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::config(format!(
                "tensor shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }
    /// Number of rows along the first axis.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
    /// Values per item of the first axis.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    /// The slice of item `i` along the first axis (empty past the end).
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        self.data.get(i * n..(i + 1) * n).unwrap_or(&[])
    }
}

/// How a backend treats input dimensions that the model leaves symbolic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapePolicy {
    /// One plan optimised with symbolic dimensions, used for every input shape.
    Symbolic,
    /// A plan optimised per concrete input shape, built on first use and kept
    /// (at most `capacity`; the oldest is dropped beyond that).
    PerShape {
        /// How many concrete plans to keep.
        capacity: usize,
    },
}

/// A loaded model: one f32 input, one or more f32 outputs.
pub trait InferenceModel: Send + Sync {
    /// Runs the model on one input tensor.
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>>;
    /// A short name for logs and errors.
    fn name(&self) -> &str;
}

/// Something that turns ONNX files into runnable models.
pub trait Backend: Send + Sync {
    /// The backend's name (`"tract"`, `"ort-cpu"`, ...).
    fn name(&self) -> &'static str;
    /// Loads the ONNX file at `path`.
    fn load(&self, path: &Path, policy: ShapePolicy) -> Result<Arc<dyn InferenceModel>>;
}

/// The pure-Rust tract backend.
#[derive(Debug, Clone, Default)]
pub struct TractBackend;

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }
    fn load(&self, path: &Path, policy: ShapePolicy) -> Result<Arc<dyn InferenceModel>> {
        Ok(Arc::new(TractModel::load(path, policy)?))
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A model run by tract.
pub struct TractModel {
    name: String,
    typed: TypedModel,
    policy: ShapePolicy,
    symbolic: Option<Plan>,
    plans: Mutex<Vec<(Vec<usize>, Plan)>>,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish()
    }
}

impl TractModel {
    /// Parses and type-checks the ONNX file; optimises the symbolic plan now
    /// (for [`ShapePolicy::Symbolic`]) or per shape on first use.
    pub fn load(path: &Path, policy: ShapePolicy) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let err = |e: TractError| Error::model(name.clone(), format!("{e:#}"));
        if !path.is_file() {
            return Err(Error::model(
                name,
                format!("no such file {}", path.display()),
            ));
        }
        let inference = tract_onnx::onnx().model_for_path(path).map_err(err)?;
        if inference.input_outlets().map_err(err)?.len() != 1 {
            return Err(Error::model(name, "expected exactly one input"));
        }
        let typed = inference
            .into_typed()
            .map_err(err)?
            .into_decluttered()
            .map_err(err)?;
        let fact = typed.input_fact(0).map_err(err)?;
        if fact.datum_type != f32::datum_type() {
            return Err(Error::model(
                name,
                format!("input is {:?}, expected f32", fact.datum_type),
            ));
        }
        let symbolic = match policy {
            ShapePolicy::Symbolic => Some(
                typed
                    .clone()
                    .into_optimized()
                    .map_err(err)?
                    .into_runnable()
                    .map_err(err)?,
            ),
            ShapePolicy::PerShape { .. } => None,
        };
        Ok(Self {
            name,
            typed,
            policy,
            symbolic,
            plans: Mutex::new(Vec::new()),
        })
    }

    /// The input shape the model declares; `None` for a symbolic dimension.
    pub fn input_shape(&self) -> Vec<Option<usize>> {
        self.typed
            .input_fact(0)
            .map(|f| f.shape.iter().map(|d| d.to_usize().ok()).collect())
            .unwrap_or_default()
    }

    fn plan_for(&self, shape: &[usize]) -> Result<Plan> {
        if let Some(p) = &self.symbolic {
            return Ok(p.clone());
        }
        let capacity = match self.policy {
            ShapePolicy::PerShape { capacity } => capacity.max(1),
            ShapePolicy::Symbolic => 1,
        };
        {
            let plans = self
                .plans
                .lock()
                .map_err(|_| Error::model(&self.name, "plan cache poisoned"))?;
            if let Some((_, p)) = plans.iter().find(|(s, _)| s == shape) {
                return Ok(p.clone());
            }
        }
        let err = |e: TractError| Error::model(self.name.clone(), format!("{e:#}"));
        let mut m = self.typed.clone();
        m.set_input_fact(0, f32::fact(shape)).map_err(err)?;
        let plan = m
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::model(&self.name, "plan cache poisoned"))?;
        if plans.len() >= capacity {
            plans.remove(0);
        }
        plans.push((shape.to_vec(), plan.clone()));
        Ok(plan)
    }
}

impl InferenceModel for TractModel {
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let declared = self.input_shape();
        let fits = declared.len() == input.shape.len()
            && declared
                .iter()
                .zip(&input.shape)
                .all(|(d, &s)| d.is_none_or(|d| d == s) && s > 0);
        if !fits {
            return Err(Error::model(
                &self.name,
                format!(
                    "input shape {:?} does not fit the model's {declared:?}",
                    input.shape
                ),
            ));
        }
        let err = |e: TractError| Error::model(self.name.clone(), format!("{e:#}"));
        let plan = self.plan_for(&input.shape)?;
        let t = tract_onnx::prelude::Tensor::from_shape(&input.shape, &input.data).map_err(err)?;
        let outputs = plan.run(tvec!(t.into_tvalue())).map_err(err)?;
        outputs
            .iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().map_err(err)?;
                Ok(Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
    }
    fn name(&self) -> &str {
        &self.name
    }
}
