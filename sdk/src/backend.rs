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
pub use crate::pooling::ModelEdit;

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
    /// One plan for the declared shape with the batch (first) dimension set
    /// to this value, built at load; other shapes are refused. The other
    /// dimensions must be fixed by the file.
    FixedBatch(usize),
}

/// A loaded model: one f32 input, one or more f32 outputs.
pub trait InferenceModel: Send + Sync {
    /// Runs the model on one input tensor.
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>>;
    /// A short name for logs and errors.
    fn name(&self) -> &str;
    /// The batch size at which this model runs fastest per item; callers
    /// that have many items send them in chunks of at most this size.
    fn preferred_batch(&self) -> usize {
        usize::MAX
    }
}

/// Something that turns ONNX files into runnable models.
pub trait Backend: Send + Sync {
    /// The backend's name (`"tract"`, `"ort-cpu"`, ...).
    fn name(&self) -> &'static str;
    /// Loads the ONNX file at `path` with `edit` applied to its graph
    /// (for example a backbone's pooled multi-level output).
    fn load_edited(
        &self,
        path: &Path,
        policy: ShapePolicy,
        edit: &ModelEdit,
    ) -> Result<Arc<dyn InferenceModel>>;
    /// Loads the ONNX file at `path` as it is.
    fn load(&self, path: &Path, policy: ShapePolicy) -> Result<Arc<dyn InferenceModel>> {
        self.load_edited(path, policy, &ModelEdit::none())
    }
}

/// The pure-Rust tract backend.
#[derive(Debug, Clone, Default)]
pub struct TractBackend;

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }
    fn load_edited(
        &self,
        path: &Path,
        policy: ShapePolicy,
        edit: &ModelEdit,
    ) -> Result<Arc<dyn InferenceModel>> {
        Ok(Arc::new(TractModel::load_edited(path, policy, edit)?))
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A model run by tract.
pub struct TractModel {
    name: String,
    policy: ShapePolicy,
    /// The input shape the file declares (`None` for a symbolic dimension).
    declared: Vec<Option<usize>>,
    /// The parsed file, kept for [`ShapePolicy::PerShape`]: plans built from it
    /// with a concrete input fact are faster than a symbolic typed model made
    /// concrete afterwards (FaceNet at batch 1: 63 ms against 124 ms).
    inference: Option<tract_onnx::prelude::InferenceModel>,
    symbolic: Option<Plan>,
    plans: Mutex<Vec<(Vec<usize>, Plan)>>,
    /// Per output: the axis of a final softmax computed here instead of in
    /// the plan (tract's softmax over a non-innermost axis cost 14 of PNet's
    /// 52 ms on a 385×217 level).
    host_softmax: Vec<Option<usize>>,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish()
    }
}

/// The values of a constant tensor (int8, uint8, int32 or f32) as f32.
fn constant_values(t: &tract_onnx::pb::TensorProto) -> std::result::Result<Vec<f32>, String> {
    use tract_onnx::pb::tensor_proto::DataType;
    let n = t.dims.iter().product::<i64>().max(0) as usize;
    let raw = &t.raw_data;
    let v: Vec<f32> = match DataType::try_from(t.data_type) {
        Ok(DataType::Int8) if !raw.is_empty() => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        Ok(DataType::Uint8) if !raw.is_empty() => raw.iter().map(|&b| f32::from(b)).collect(),
        Ok(DataType::Int32) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Int32) => {
            t.int32_data.iter().map(|&v| v as f32).collect()
        }
        Ok(DataType::Float) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Ok(DataType::Float) => t.float_data.clone(),
        _ => {
            return Err(format!(
                "{}: unsupported constant type {}",
                t.name, t.data_type
            ))
        }
    };
    if v.len() != n {
        return Err(format!(
            "{}: {} values for shape {:?}",
            t.name,
            v.len(),
            t.dims
        ));
    }
    Ok(v)
}

/// Rewrites each `PRelu` whose slopes are constants no greater than 1 as
/// `Max(x, Mul(x, slope))`, which is the same function for such slopes (for
/// x < 0, slope·x ≥ x; for x ≥ 0, x ≥ slope·x) and the same floats. tract
/// lowers `PRelu` to a compare, a multiply and a select over the whole
/// tensor; MTCNN has one after every convolution, and in RNet and ONet they
/// took more time than the convolutions. Returns how many were rewritten.
pub(crate) fn rewrite_prelu(proto: &mut tract_onnx::pb::ModelProto) -> usize {
    use tract_onnx::pb::NodeProto;
    let Some(g) = proto.graph.as_mut() else {
        return 0;
    };
    // Only the slopes are decoded, not every weight of the model.
    let slopes: std::collections::HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "PRelu")
        .filter_map(|n| n.input.get(1).map(String::as_str))
        .collect();
    let small_slopes: std::collections::HashSet<String> = g
        .initializer
        .iter()
        .filter(|t| slopes.contains(t.name.as_str()))
        .filter(|t| {
            constant_values(t)
                .is_ok_and(|v| !v.is_empty() && v.iter().all(|s| s.is_finite() && *s <= 1.0))
        })
        .map(|t| t.name.clone())
        .collect();
    let mut n = 0;
    let mut nodes = Vec::with_capacity(g.node.len());
    for node in std::mem::take(&mut g.node) {
        let rewritable = node.op_type == "PRelu"
            && node.input.len() == 2
            && node.output.len() == 1
            && small_slopes.contains(&node.input[1]);
        if !rewritable {
            nodes.push(node);
            continue;
        }
        let scaled = format!("{}/prelu_scaled", node.output[0]);
        nodes.push(NodeProto {
            name: format!("{}/mul", node.name),
            op_type: "Mul".into(),
            input: vec![node.input[0].clone(), node.input[1].clone()],
            output: vec![scaled.clone()],
            ..Default::default()
        });
        nodes.push(NodeProto {
            name: node.name.clone(),
            op_type: "Max".into(),
            input: vec![node.input[0].clone(), scaled],
            output: node.output.clone(),
            ..Default::default()
        });
        n += 1;
    }
    g.node = nodes;
    n
}

/// Replaces each `DequantizeLinear` of constant inputs (the int8 weights and
/// int32 biases of a QDQ model) by the float initializer it computes,
/// `(q − zero_point) × scale` along its axis, in f32 as tract would. tract
/// folds these itself, but only after analysing every wired cast/sub/mul,
/// which made the int8 FaceNet take seconds longer to load. Returns how many
/// nodes were folded; a malformed constant is an error.
pub(crate) fn fold_constant_dequantize(
    proto: &mut tract_onnx::pb::ModelProto,
) -> std::result::Result<usize, String> {
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::pb::TensorProto;
    let Some(g) = proto.graph.as_mut() else {
        return Ok(0);
    };
    let index: std::collections::HashMap<String, usize> = g
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut folded = vec![];
    let mut keep = Vec::with_capacity(g.node.len());
    for node in std::mem::take(&mut g.node) {
        let consts: Option<Vec<usize>> = (node.op_type == "DequantizeLinear"
            && (2..=3).contains(&node.input.len()))
        .then(|| node.input.iter().map(|i| index.get(i).copied()).collect())
        .flatten();
        let Some(consts) = consts else {
            keep.push(node);
            continue;
        };
        let x = &g.initializer[consts[0]];
        let q = constant_values(x)?;
        let scale = constant_values(&g.initializer[consts[1]])?;
        let zp = match consts.get(2) {
            Some(&i) => constant_values(&g.initializer[i])?,
            None => vec![0.0],
        };
        let channels = scale.len();
        if channels == 0 || (zp.len() != channels && zp.len() != 1) {
            return Err(format!("{}: bad scale or zero point", node.name));
        }
        let inner = if channels == 1 {
            q.len().max(1)
        } else {
            let rank = x.dims.len() as i64;
            let axis = node
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(1, |a| a.i);
            let axis = if axis < 0 { axis + rank } else { axis };
            if !(0..rank).contains(&axis) || x.dims[axis as usize] as usize != channels {
                return Err(format!("{}: scales do not match axis {axis}", node.name));
            }
            x.dims[axis as usize + 1..].iter().product::<i64>() as usize
        };
        let values: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = (i / inner) % channels;
                (v - zp[if zp.len() == 1 { 0 } else { c }]) * scale[c]
            })
            .collect();
        folded.push(TensorProto {
            name: node.output.first().cloned().unwrap_or_default(),
            dims: x.dims.clone(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }
    g.node = keep;
    let n = folded.len();
    if n > 0 {
        g.initializer.extend(folded);
        let used: std::collections::HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(g.output.iter().map(|o| o.name.as_str()))
            .collect();
        let used: std::collections::HashSet<String> = used.into_iter().map(String::from).collect();
        g.initializer.retain(|t| used.contains(&t.name));
    }
    Ok(n)
}

impl TractModel {
    /// Parses and type-checks the ONNX file; optimises the symbolic plan now
    /// (for [`ShapePolicy::Symbolic`]) or per shape on first use.
    pub fn load(path: &Path, policy: ShapePolicy) -> Result<Self> {
        Self::load_edited(path, policy, &ModelEdit::none())
    }

    /// As [`Self::load`], with `edit` applied to the graph first.
    pub fn load_edited(path: &Path, policy: ShapePolicy, edit: &ModelEdit) -> Result<Self> {
        let name = model_file_name(path)?;
        let err = |e: TractError| Error::model(name.clone(), format!("{e:#}"));
        let onnx = tract_onnx::onnx();
        let mut proto = onnx.proto_model_for_path(path).map_err(err)?;
        edit.apply(&mut proto)
            .map_err(|reason| Error::model(name.clone(), reason))?;
        fold_constant_dequantize(&mut proto)
            .map_err(|reason| Error::model(name.clone(), reason))?;
        rewrite_prelu(&mut proto);
        let parsed = onnx
            .parse(&proto, path.parent().and_then(Path::to_str))
            .map_err(err)?;
        drop(proto);
        if !parsed.unresolved_inputs.is_empty() {
            return Err(Error::model(
                name,
                format!("unresolved inputs {:?}", parsed.unresolved_inputs),
            ));
        }
        let inference = parsed.model;
        if inference.input_outlets().map_err(err)?.len() != 1 {
            return Err(Error::model(name, "expected exactly one input"));
        }
        let keep = matches!(
            policy,
            ShapePolicy::PerShape { .. } | ShapePolicy::FixedBatch(_)
        )
        .then(|| inference.clone());
        let typed = inference
            .into_typed()
            .map_err(err)?
            .into_decluttered()
            .map_err(err)?;
        let (typed, host_softmax) = detach_softmax(typed).map_err(err)?;
        let fact = typed.input_fact(0).map_err(err)?;
        if fact.datum_type != f32::datum_type() {
            return Err(Error::model(
                name,
                format!("input is {:?}, expected f32", fact.datum_type),
            ));
        }
        let declared = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
        let mut model = Self {
            name: name.clone(),
            policy,
            declared,
            inference: keep,
            symbolic: None,
            plans: Mutex::new(Vec::new()),
            host_softmax,
        };
        match policy {
            ShapePolicy::Symbolic => {
                model.symbolic = Some(
                    typed
                        .into_optimized()
                        .map_err(err)?
                        .into_runnable()
                        .map_err(err)?,
                );
            }
            ShapePolicy::FixedBatch(n) => {
                drop(typed);
                let mut shape = Vec::with_capacity(model.declared.len());
                for (i, d) in model.declared.iter().enumerate() {
                    match (i, d) {
                        (0, _) => shape.push(n.max(1)),
                        (_, Some(d)) => shape.push(*d),
                        (_, None) => {
                            return Err(Error::model(
                                &model.name,
                                format!("input dimension {i} is symbolic; a fixed-batch plan needs it fixed"),
                            ))
                        }
                    }
                }
                // Planned from the parsed model itself rather than a second
                // handle on it, so nothing else holds the original weights
                // while tract packs them: `fakewatch scan` of a photo with
                // FaceNet peaked at 230 MiB instead of 253 (2-core x86).
                let parsed = model
                    .inference
                    .take()
                    .ok_or_else(|| Error::model(&model.name, "no model to plan from"))?;
                let plan = model.build_from(parsed, &shape)?;
                model.declared = shape.iter().map(|&d| Some(d)).collect();
                model.symbolic = Some(plan);
            }
            ShapePolicy::PerShape { .. } => {}
        }
        Ok(model)
    }

    /// The input shape the model declares; `None` for a symbolic dimension.
    pub fn input_shape(&self) -> Vec<Option<usize>> {
        self.declared.clone()
    }

    fn plan_for(&self, shape: &[usize]) -> Result<Plan> {
        if let Some(p) = &self.symbolic {
            return Ok(p.clone());
        }
        let capacity = match self.policy {
            ShapePolicy::PerShape { capacity } => capacity.max(1),
            ShapePolicy::Symbolic | ShapePolicy::FixedBatch(_) => 1,
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
        let plan = self.build(shape)?;
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

    /// An optimised plan for a concrete input shape, from the parsed file.
    fn build(&self, shape: &[usize]) -> Result<Plan> {
        let m = self
            .inference
            .clone()
            .ok_or_else(|| Error::model(&self.name, "no model to plan from"))?;
        self.build_from(m, shape)
    }

    /// An optimised plan for a concrete input shape from parsed model `m`.
    fn build_from(&self, m: tract_onnx::prelude::InferenceModel, shape: &[usize]) -> Result<Plan> {
        let err = |e: TractError| Error::model(self.name.clone(), format!("{e:#}"));
        let (typed, host) = typed_at(m, shape).and_then(detach_softmax).map_err(err)?;
        if host != self.host_softmax {
            return Err(Error::model(
                &self.name,
                "outputs changed shape between plans",
            ));
        }
        typed
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)
    }
}

impl InferenceModel for TractModel {
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        check_input_shape(&self.name, &self.declared, input)?;
        let err = |e: TractError| Error::model(self.name.clone(), format!("{e:#}"));
        let plan = self.plan_for(&input.shape)?;
        let t = tract_onnx::prelude::Tensor::from_shape(&input.shape, &input.data).map_err(err)?;
        let outputs = plan.run(tvec!(t.into_tvalue())).map_err(err)?;
        outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let view = o.to_plain_array_view::<f32>().map_err(err)?;
                let mut t = Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                };
                if let Some(axis) = self.host_softmax.get(i).copied().flatten() {
                    softmax_axis(&mut t, axis);
                }
                Ok(t)
            })
            .collect()
    }
    fn name(&self) -> &str {
        &self.name
    }
    /// Measured on a 2-core x86: tract's convolution plans are fastest per item
    /// at batch 1 (RNet 0.35 ms/crop at 1, 0.78 at 428; FaceNet 94 ms at 1,
    /// 125 ms/face at 2), so tract models take one item at a time.
    fn preferred_batch(&self) -> usize {
        1
    }
}

/// A model file's name for messages, once the path is known to be a file.
pub(crate) fn model_file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path.is_file() {
        Ok(name)
    } else {
        Err(Error::model(
            name,
            format!("no such file {}", path.display()),
        ))
    }
}

/// Refuses an input whose shape does not fit the model's declared one
/// (`None`: any size) or has an empty dimension.
pub(crate) fn check_input_shape(
    model: &str,
    declared: &[Option<usize>],
    input: &Tensor,
) -> Result<()> {
    let fits = declared.len() == input.shape.len()
        && declared
            .iter()
            .zip(&input.shape)
            .all(|(d, &s)| d.is_none_or(|d| d == s) && s > 0);
    if fits {
        Ok(())
    } else {
        Err(Error::model(
            model,
            format!(
                "input shape {:?} does not fit the model's {declared:?}",
                input.shape
            ),
        ))
    }
}

/// The parsed model typed and decluttered with its input fixed to `shape`
/// (faster plans than fixing the shape of an already typed symbolic model).
fn typed_at(
    mut m: tract_onnx::prelude::InferenceModel,
    shape: &[usize],
) -> TractResult<TypedModel> {
    m.set_input_fact(0, f32::fact(shape).into())?;
    m.into_typed()?.into_decluttered()
}

/// Replaces every model output produced by a plain f32 softmax over one axis
/// with the softmax's input, and returns which axis to normalise on the host.
fn detach_softmax(mut typed: TypedModel) -> TractResult<(TypedModel, Vec<Option<usize>>)> {
    use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
    let outlets = typed.output_outlets()?.to_vec();
    let mut host = vec![None; outlets.len()];
    let mut new_outlets = outlets.clone();
    for (i, o) in outlets.iter().enumerate() {
        let node = typed.node(o.node);
        if let Some(sm) = node.op_as::<Softmax>() {
            let input = node.inputs.first().copied();
            if let (SoftmaxKind::Softmax, None, [axis], Some(input)) =
                (sm.kind, sm.quant_output_dt, sm.axes.as_slice(), input)
            {
                if typed.outlet_fact(input)?.datum_type == f32::datum_type() {
                    host[i] = Some(*axis);
                    new_outlets[i] = input;
                }
            }
        }
    }
    if host.iter().any(Option::is_some) {
        typed.select_output_outlets(&new_outlets)?;
        typed = typed.into_compact()?;
    }
    Ok((typed, host))
}

/// Softmax of `t` along `axis`, in place (max-subtracted, exact `exp`).
fn softmax_axis(t: &mut Tensor, axis: usize) {
    let Some(&n) = t.shape.get(axis) else { return };
    let inner: usize = t.shape.iter().skip(axis + 1).product();
    let block = n * inner;
    if block == 0 {
        return;
    }
    for chunk in t.data.chunks_exact_mut(block) {
        for j in 0..inner {
            let max = (0..n)
                .map(|k| chunk[k * inner + j])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for k in 0..n {
                let e = (chunk[k * inner + j] - max).exp();
                chunk[k * inner + j] = e;
                sum += e;
            }
            for k in 0..n {
                chunk[k * inner + j] /= sum;
            }
        }
    }
}

/// Floating-point operations (2 per multiply-add, as tract's cost model
/// counts them) of one run of the ONNX file at `path` on an input of `shape`.
pub fn tract_flops(path: &Path, shape: &[usize]) -> Result<f64> {
    use tract_onnx::tract_core::ops::Cost;
    let name = path.display().to_string();
    let err = |e: TractError| Error::model(name.clone(), format!("{e:#}"));
    let m = tract_onnx::onnx().model_for_path(path).map_err(err)?;
    let typed = typed_at(m, shape).map_err(err)?;
    let mut fma = 0f64;
    for node in typed.nodes() {
        let inputs: Vec<&TypedFact> = node
            .inputs
            .iter()
            .map(|o| typed.outlet_fact(*o))
            .collect::<TractResult<_>>()
            .map_err(err)?;
        for (cost, n) in node.op.cost(&inputs).map_err(err)? {
            if let Cost::FMA(_) = cost {
                fma += n
                    .to_i64()
                    .map_err(|e| Error::model(name.clone(), format!("{e:#}")))?
                    as f64;
            }
        }
    }
    Ok(2.0 * fma)
}

/// The f32 matrix-multiply throughput tract reaches on one core of this
/// machine (FLOP/s): the fastest of repeated 512 × 512 × 512 products over
/// about `budget`.
pub fn tract_peak_flops(budget: std::time::Duration) -> Result<f64> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    const N: usize = 512;
    let err = |e: TractError| Error::model("matmul", format!("{e:#}"));
    let mut m = TypedModel::default();
    let a = m.add_source("a", f32::fact([N, N])).map_err(err)?;
    let b = m
        .add_const(
            "b",
            tract_onnx::prelude::Tensor::from_shape(&[N, N], &vec![0.5f32; N * N]).map_err(err)?,
        )
        .map_err(err)?;
    let axes = "mk,kn->mn".parse().map_err(err)?;
    let c = m
        .wire_node("mm", EinSum::new(axes, f32::datum_type()), &[a, b])
        .map_err(err)?;
    m.select_output_outlets(&c).map_err(err)?;
    let plan = m
        .into_optimized()
        .map_err(err)?
        .into_runnable()
        .map_err(err)?;
    let input = tract_onnx::prelude::Tensor::from_shape(&[N, N], &vec![0.25f32; N * N])
        .map_err(err)?
        .into_tvalue();
    plan.run(tvec!(input.clone())).map_err(err)?;
    // The best of single runs: on a shared machine the mean undercounts.
    let start = std::time::Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0u32;
    while runs < 5 || start.elapsed() < budget {
        let t = std::time::Instant::now();
        plan.run(tvec!(input.clone())).map_err(err)?;
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok(2.0 * (N * N * N) as f64 / best)
}

#[cfg(test)]
mod tests {
    use super::{fold_constant_dequantize, rewrite_prelu};
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

    fn t(name: &str, dt: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt as i32,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn model(scales: &[f32], axis: i64) -> ModelProto {
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    NodeProto {
                        op_type: "DequantizeLinear".into(),
                        name: "dq".into(),
                        input: vec!["q".into(), "s".into(), "z".into()],
                        output: vec!["w".into()],
                        attribute: vec![AttributeProto {
                            name: "axis".into(),
                            i: axis,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    NodeProto {
                        op_type: "MatMul".into(),
                        input: vec!["x".into(), "w".into()],
                        output: vec!["y".into()],
                        ..Default::default()
                    },
                ],
                initializer: vec![
                    // [[1, -2], [3, 127]] as int8.
                    t("q", DataType::Int8, &[2, 2], vec![1, 254, 3, 127]),
                    t("s", DataType::Float, &[scales.len() as i64], f(scales)),
                    t(
                        "z",
                        DataType::Int8,
                        &[scales.len() as i64],
                        (0..scales.len()).map(|i| (i % 2) as u8).collect(),
                    ),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn constant_dequantize_folds_per_axis() {
        let mut m = model(&[0.5, 2.0], 1);
        assert_eq!(fold_constant_dequantize(&mut m), Ok(1));
        let g = m.graph.unwrap();
        assert_eq!(g.node.len(), 1, "the DequantizeLinear node is gone");
        assert_eq!(g.initializer.len(), 1, "only the float weight is left");
        let w = &g.initializer[0];
        assert_eq!((w.name.as_str(), w.dims.clone()), ("w", vec![2, 2]));
        let v: Vec<f32> = w
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Column 0: scale 0.5, zero point 0; column 1: scale 2, zero point 1.
        assert_eq!(v, vec![0.5, -6.0, 1.5, 252.0]);
    }

    #[test]
    fn malformed_dequantize_is_an_error() {
        // Three scales for an axis of two.
        let mut m = model(&[1.0, 1.0, 1.0], 1);
        assert!(fold_constant_dequantize(&mut m).is_err());
        // An axis out of range.
        let mut m = model(&[1.0, 1.0], 5);
        assert!(fold_constant_dequantize(&mut m).is_err());
        // A graph without DequantizeLinear is left alone.
        let mut empty = ModelProto::default();
        assert_eq!(fold_constant_dequantize(&mut empty), Ok(0));
    }

    /// x (1×2×2×3) → PRelu(slope) → y, opset 13.
    fn prelu_model(slope: &[f32]) -> ModelProto {
        use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
        use tract_onnx::pb::{type_proto, OperatorSetIdProto, TensorShapeProto, TypeProto};
        let value = |name: &str| tract_onnx::pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: [1, 2, 2, 3]
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "PRelu".into(),
                    name: "act".into(),
                    input: vec!["x".into(), "slope".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                initializer: vec![t(
                    "slope",
                    DataType::Float,
                    &[2, 1, 1],
                    slope.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )],
                input: vec![value("x")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run_proto(m: &ModelProto, x: &[f32]) -> Vec<f32> {
        use tract_onnx::prelude::*;
        let parsed = tract_onnx::onnx().parse(m, None).unwrap().model;
        let plan = parsed.into_optimized().unwrap().into_runnable().unwrap();
        let input = Tensor::from_shape(&[1, 2, 2, 3], x).unwrap();
        let out = plan.run(tvec!(input.into_tvalue())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn prelu_with_small_slopes_becomes_max_of_x_and_scaled_x() {
        let x: Vec<f32> = vec![
            -3.0, -0.5, -0.0, 0.0, 0.25, 7.0, -1e-30, 1e30, -2.5, 1.5, -8.0, 3.0,
        ];
        let original = prelu_model(&[0.25, -0.75]);
        let mut rewritten = original.clone();
        assert_eq!(rewrite_prelu(&mut rewritten), 1);
        let ops: Vec<&str> = rewritten
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops, ["Mul", "Max"]);
        let (a, b) = (run_proto(&original, &x), run_proto(&rewritten, &x));
        let expect: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| if v < 0.0 { v * [0.25, -0.75][i / 6] } else { v })
            .collect();
        assert_eq!(a, expect);
        assert_eq!(b, expect, "the rewrite computes the same floats");
        // A slope above 1 makes max(x, a·x) pick a·x for x > 0: left alone.
        let mut steep = prelu_model(&[0.25, 1.5]);
        assert_eq!(rewrite_prelu(&mut steep), 0);
        assert_eq!(steep.graph.unwrap().node[0].op_type, "PRelu");
    }
}
