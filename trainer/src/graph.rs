//! ONNX graphs as trainable candle computations.
//!
//! [`TrainableGraph`] reads a backbone's ONNX file (the same file the SDK runs
//! with tract or onnxruntime), turns its float weights into candle variables
//! and evaluates the graph with candle's differentiable ops, so the network
//! can be fine-tuned end to end. [`TrainableGraph::to_model`] writes the tuned
//! weights back into the original graph: the exported file has the same
//! nodes, names and opset as its source, and only the weights differ, so the
//! SDK runs it without any change.
//!
//! The op set is the one of the project's backbones (faceres' MobileNet and
//! FaceNet's Inception-ResNet as produced by tf2onnx); any other op is a clear
//! error naming it. Convolutions are written as taps + matrix products
//! (grouped 1×1 = one matmul, K×K = im2col by strided views, depthwise = a
//! weighted sum of shifted views), whose gradients candle computes with fast
//! kernels on the CPU.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

use crate::cpu_ops::{strided_view, Clamp, DepthwiseGeometry, OpPath};
use crate::quantize::float_values;

/// Ops whose weight-like inputs are never trained (clip bounds, shapes, epsilons).
const FROZEN_CONSUMERS: [&str; 8] = [
    "Min",
    "Max",
    "Clip",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Pow",
    "Div",
];

/// A float initializer: trained or held fixed.
enum Param {
    Trainable(Var),
    Fixed(Tensor),
}

impl Param {
    fn tensor(&self) -> &Tensor {
        match self {
            Self::Trainable(v) => v.as_tensor(),
            Self::Fixed(t) => t,
        }
    }
}

/// A backbone ONNX graph whose weights are candle variables.
pub struct TrainableGraph {
    model: ModelProto,
    nodes: Vec<NodeProto>,
    params: BTreeMap<String, Param>,
    ints: HashMap<String, Vec<i64>>,
    /// Node index of each parameter's first consumer.
    first_use: HashMap<String, usize>,
    input: String,
    output: String,
    /// How depthwise convolutions and clamps run: the CPU kernels, or
    /// candle's generic ops on other devices (see [`TrainableGraph::move_to`]).
    op_path: OpPath,
}

impl std::fmt::Debug for TrainableGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableGraph")
            .field("nodes", &self.nodes.len())
            .field("params", &self.params.len())
            .field("input", &self.input)
            .field("output", &self.output)
            .field("op_path", &self.op_path)
            .finish()
    }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a tract_onnx::pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn int_values(t: &TensorProto) -> Result<Vec<i64>> {
    Ok(if !t.raw_data.is_empty() {
        match t.data_type {
            x if x == DataType::Int64 as i32 => t
                .raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            x if x == DataType::Int32 as i32 => t
                .raw_data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            _ => bail!("{}: not an integer tensor", t.name),
        }
    } else if !t.int64_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.int32_data.iter().map(|&v| i64::from(v)).collect()
    })
}

/// Resolves a signed ONNX axis against `rank`.
fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&a),
        "axis {a} out of range for rank {rank}"
    );
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Zero-pads an NCHW tensor (top, left, bottom, right).
fn pad4(x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
    let mut x = x.clone();
    if pads[0] + pads[2] > 0 {
        x = x.pad_with_zeros(2, pads[0], pads[2])?;
    }
    if pads[1] + pads[3] > 0 {
        x = x.pad_with_zeros(3, pads[1], pads[3])?;
    }
    Ok(x)
}

/// Pads an NCHW tensor with a constant (max pooling pads with −∞ in effect).
fn pad4_with(x: &Tensor, pads: [usize; 4], fill: f32) -> Result<Tensor> {
    let mut x = x.clone();
    for (dim, before, after) in [(2, pads[0], pads[2]), (3, pads[1], pads[3])] {
        let mut parts = Vec::with_capacity(3);
        for (len, is_fill) in [(before, true), (0, false), (after, true)] {
            if !is_fill {
                parts.push(x.clone());
            } else if len > 0 {
                let mut dims = x.dims().to_vec();
                dims[dim] = len;
                parts.push(Tensor::full(fill, dims, x.device())?);
            }
        }
        if parts.len() > 1 {
            x = Tensor::cat(&parts, dim)?;
        }
    }
    Ok(x)
}

/// Kernel geometry of a Conv or pooling node.
struct Window {
    k: [usize; 2],
    s: [usize; 2],
    pads: [usize; 4],
}

impl Window {
    fn of(node: &NodeProto, kernel: Option<[usize; 2]>) -> Result<Self> {
        let k = match kernel {
            Some(k) => k,
            None => {
                let k = attr_ints(node, "kernel_shape").context("kernel_shape missing")?;
                ensure!(k.len() == 2, "{}: only 2-d windows", node.name);
                [k[0] as usize, k[1] as usize]
            }
        };
        let s = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0, 0, 0, 0]);
        if let Some(d) = attr_ints(node, "dilations") {
            ensure!(d.iter().all(|&v| v == 1), "{}: dilation", node.name);
        }
        let auto = attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).to_string());
        ensure!(
            auto.as_deref()
                .is_none_or(|a| a == "NOTSET" || a == "VALID"),
            "{}: auto_pad {auto:?} is not supported",
            node.name
        );
        ensure!(
            s.len() == 2 && p.len() == 4 && p.iter().all(|&v| v >= 0) && s[0] > 0 && s[0] == s[1],
            "{}: bad strides or pads (strides must be equal)",
            node.name
        );
        Ok(Self {
            k,
            s: [s[0] as usize, s[1] as usize],
            pads: [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize],
        })
    }

    /// Output height and width for an `h`×`w` input.
    fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let hp = h + self.pads[0] + self.pads[2];
        let wp = w + self.pads[1] + self.pads[3];
        ensure!(
            hp >= self.k[0] && wp >= self.k[1],
            "input {h}x{w} smaller than the kernel"
        );
        Ok((
            (hp - self.k[0]) / self.s[0] + 1,
            (wp - self.k[1]) / self.s[1] + 1,
        ))
    }

    /// Pads `x` (with `fill` outside) so that every tap is in range; returns
    /// the padded tensor and the output size.
    fn prepare(&self, x: &Tensor, fill: f32) -> Result<(Tensor, usize, usize)> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = self.out_size(h, w)?;
        let hp = h + self.pads[0] + self.pads[2];
        let wp = w + self.pads[1] + self.pads[3];
        // Extra rows/columns so that the strided views can take s·o elements.
        let extra_h = (self.k[0] - 1 + self.s[0] * oh).saturating_sub(hp);
        let extra_w = (self.k[1] - 1 + self.s[1] * ow).saturating_sub(wp);
        let pads = [
            self.pads[0],
            self.pads[1],
            self.pads[2] + extra_h,
            self.pads[3] + extra_w,
        ];
        let xp = if fill == 0.0 {
            pad4(x, pads)?
        } else {
            pad4_with(x, pads, fill)?
        };
        Ok((xp, oh, ow))
    }
}

impl TrainableGraph {
    /// Reads an ONNX file with one input and one output.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let model = ModelProto::decode(bytes.as_slice())
            .with_context(|| format!("{}: not an ONNX model", path.display()))?;
        Self::from_model(model).with_context(|| format!("{}", path.display()))
    }

    /// Builds the trainable graph of `model` (every float weight trainable).
    pub fn from_model(model: ModelProto) -> Result<Self> {
        let g = model.graph.as_ref().context("model has no graph")?;
        let mut ints = HashMap::new();
        let mut floats = HashMap::new();
        for t in &g.initializer {
            if t.data_type == DataType::Float as i32 {
                floats.insert(t.name.clone(), t.clone());
            } else {
                ints.insert(t.name.clone(), int_values(t)?);
            }
        }
        let inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !floats.contains_key(&i.name) && !ints.contains_key(&i.name))
            .collect();
        ensure!(
            inputs.len() == 1 && g.output.len() == 1,
            "the graph must have one input and one output ({} and {})",
            inputs.len(),
            g.output.len()
        );
        let mut nodes = g.node.clone();
        for n in &mut nodes {
            // Constant nodes become initializers.
            if n.op_type == "Constant" {
                let t = attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .with_context(|| format!("{}: Constant without a tensor value", n.name))?;
                let name = n.output.first().context("Constant without output")?.clone();
                if t.data_type == DataType::Float as i32 {
                    let mut t = t.clone();
                    t.name = name.clone();
                    floats.insert(name, t);
                } else {
                    ints.insert(name, int_values(t)?);
                }
            }
        }
        nodes.retain(|n| n.op_type != "Constant");
        let mut first_use = HashMap::new();
        let mut frozen = HashSet::new();
        for (i, n) in nodes.iter().enumerate() {
            for inp in &n.input {
                first_use.entry(inp.clone()).or_insert(i);
                let fixed_slot = FROZEN_CONSUMERS.contains(&n.op_type.as_str())
                    || (n.op_type == "BatchNormalization"
                        && n.input
                            .iter()
                            .position(|x| x == inp)
                            .is_some_and(|p| p >= 3));
                if fixed_slot {
                    frozen.insert(inp.clone());
                }
            }
        }
        let mut params = BTreeMap::new();
        for (name, t) in floats {
            let v = float_values(&t)?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let tensor = Tensor::from_vec(v, dims, &Device::Cpu)?;
            let p = if frozen.contains(&name) || tensor.elem_count() <= 1 {
                Param::Fixed(tensor)
            } else {
                Param::Trainable(Var::from_tensor(&tensor)?)
            };
            params.insert(name, p);
        }
        let input = inputs[0].name.clone();
        let output = g.output[0].name.clone();
        let graph = Self {
            model,
            nodes,
            params,
            ints,
            first_use,
            input,
            output,
            op_path: OpPath::CpuKernel,
        };
        graph.check_ops()?;
        Ok(graph)
    }

    fn check_ops(&self) -> Result<()> {
        const OPS: [&str; 29] = [
            "Conv",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Relu",
            "Sigmoid",
            "Min",
            "Max",
            "Clip",
            "Sqrt",
            "Reciprocal",
            "GlobalAveragePool",
            "ReduceMean",
            "ReduceSum",
            "Squeeze",
            "Unsqueeze",
            "Flatten",
            "Reshape",
            "MatMul",
            "Gemm",
            "Concat",
            "MaxPool",
            "AveragePool",
            "BatchNormalization",
            "Transpose",
            "Identity",
            "Dropout",
            "Softmax",
        ];
        for n in &self.nodes {
            ensure!(
                OPS.contains(&n.op_type.as_str()),
                "op {} (node {}) is not supported for fine-tuning",
                n.op_type,
                n.name
            );
        }
        Ok(())
    }

    /// Number of Conv nodes (the unit of [`TrainableGraph::freeze_convs`]).
    pub fn conv_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.op_type == "Conv").count()
    }

    /// Holds fixed every weight first used before the `k`-th Conv node (in
    /// graph order), so the first `k` convolutions and everything between
    /// them keep their pretrained values.
    pub fn freeze_convs(&mut self, k: usize) -> Result<()> {
        let cut = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Conv")
            .nth(k)
            .map_or(self.nodes.len(), |(i, _)| i);
        for (name, p) in self.params.iter_mut() {
            if self.first_use.get(name).is_some_and(|&i| i < cut) {
                if let Param::Trainable(v) = p {
                    *p = Param::Fixed(v.as_tensor().clone());
                }
            }
        }
        Ok(())
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.params
            .values()
            .filter_map(|p| match p {
                Param::Trainable(v) => Some(v.clone()),
                Param::Fixed(_) => None,
            })
            .collect()
    }

    /// Number of trainable scalars.
    pub fn trainable_len(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Moves every weight to `device` (trainable ones become new variables:
    /// take [`TrainableGraph::vars`] after this) and picks the op path for
    /// it ([`OpPath::for_device`]).
    pub fn move_to(&mut self, device: &Device) -> Result<()> {
        for p in self.params.values_mut() {
            *p = match p {
                Param::Trainable(v) => Param::Trainable(Var::from_tensor(&v.to_device(device)?)?),
                Param::Fixed(t) => Param::Fixed(t.to_device(device)?),
            };
        }
        self.op_path = OpPath::for_device(device);
        Ok(())
    }

    /// Runs depthwise convolutions and clamps on `path` (the portable path
    /// works on the CPU too: the CPU/CUDA parity test compares both there).
    #[cfg(test)]
    pub(crate) fn set_op_path(&mut self, path: OpPath) -> Result<()> {
        let on_cpu = self.params.values().all(|p| p.tensor().device().is_cpu());
        ensure!(
            path == OpPath::Portable || on_cpu,
            "the CPU kernels need the weights on the CPU"
        );
        self.op_path = path;
        Ok(())
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.params
            .values()
            .next()
            .map_or(Device::Cpu, |p| p.tensor().device().clone())
    }

    fn value<'a>(&'a self, vals: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
        vals.get(name)
            .or_else(|| self.params.get(name).map(Param::tensor))
            .with_context(|| format!("value {name} is not computed before use"))
    }

    /// The value of a fixed one-element weight named `name`, if it is one.
    fn fixed_scalar(&self, name: Option<&String>) -> Result<Option<f32>> {
        Ok(match name.and_then(|n| self.params.get(n)) {
            Some(Param::Fixed(t)) if t.elem_count() == 1 => {
                Some(t.flatten_all()?.to_vec1::<f32>()?[0])
            }
            _ => None,
        })
    }

    fn ints_of(&self, name: &str) -> Result<&Vec<i64>> {
        self.ints
            .get(name)
            .with_context(|| format!("{name}: a constant integer input is needed"))
    }

    /// Evaluates the graph on `x` (the ONNX input, e.g. `[n, 3, h, w]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_timed(x, None)
    }

    /// [`TrainableGraph::forward`], adding each node's time to `times`
    /// under its op type (for `finetune-bench`).
    pub fn forward_timed(
        &self,
        x: &Tensor,
        mut times: Option<&mut BTreeMap<String, std::time::Duration>>,
    ) -> Result<Tensor> {
        let mut vals: HashMap<String, Tensor> = HashMap::new();
        vals.insert(self.input.clone(), x.clone());
        for n in &self.nodes {
            let t0 = std::time::Instant::now();
            let out = self
                .eval(n, &vals)
                .with_context(|| format!("{} node {}", n.op_type, n.name))?;
            if let Some(t) = times.as_deref_mut() {
                *t.entry(n.op_type.clone()).or_default() += t0.elapsed();
            }
            let name = n.output.first().context("node without output")?;
            vals.insert(name.clone(), out);
        }
        vals.remove(&self.output)
            .with_context(|| format!("output {} not computed", self.output))
    }

    fn eval(&self, n: &NodeProto, vals: &HashMap<String, Tensor>) -> Result<Tensor> {
        let arg = |i: usize| -> Result<&Tensor> {
            let name = n.input.get(i).context("missing input")?;
            self.value(vals, name)
        };
        Ok(match n.op_type.as_str() {
            "Conv" => self.conv(
                n,
                arg(0)?,
                arg(1)?,
                n.input.get(2).map(|_| arg(2)).transpose()?,
            )?,
            "Add" => arg(0)?.broadcast_add(arg(1)?)?,
            "Sub" => arg(0)?.broadcast_sub(arg(1)?)?,
            "Mul" => arg(0)?.broadcast_mul(arg(1)?)?,
            "Div" => arg(0)?.broadcast_div(arg(1)?)?,
            "Min" | "Max" => match self.fixed_scalar(n.input.get(1))? {
                Some(c) => Clamp {
                    lo: if n.op_type == "Max" {
                        c
                    } else {
                        f32::NEG_INFINITY
                    },
                    hi: if n.op_type == "Min" { c } else { f32::INFINITY },
                    open_low: false,
                }
                .apply_on(self.op_path, arg(0)?)?,
                None if n.op_type == "Min" => arg(0)?.broadcast_minimum(arg(1)?)?,
                None => arg(0)?.broadcast_maximum(arg(1)?)?,
            },
            "Relu" => Clamp::RELU.apply_on(self.op_path, arg(0)?)?,
            "Sigmoid" => candle_nn::ops::sigmoid(arg(0)?)?,
            "Sqrt" => arg(0)?.sqrt()?,
            "Reciprocal" => arg(0)?.recip()?,
            "Identity" | "Dropout" => arg(0)?.clone(),
            "Softmax" => {
                let x = arg(0)?;
                let a = axis(attr_int(n, "axis", -1), x.rank())?;
                candle_nn::ops::softmax(x, a)?
            }
            "Clip" => {
                let bound = |i: usize| self.fixed_scalar(n.input.get(i).filter(|s| !s.is_empty()));
                if let (Ok(lo), Ok(hi)) = (bound(1), bound(2)) {
                    let given = |i: usize| n.input.get(i).is_some_and(|s| !s.is_empty());
                    if (lo.is_some() || !given(1)) && (hi.is_some() || !given(2)) {
                        return Ok(Clamp {
                            lo: lo.unwrap_or(f32::NEG_INFINITY),
                            hi: hi.unwrap_or(f32::INFINITY),
                            open_low: false,
                        }
                        .apply_on(self.op_path, arg(0)?)?);
                    }
                }
                let mut x = arg(0)?.clone();
                if let Some(lo) = n.input.get(1).filter(|s| !s.is_empty()) {
                    x = x.broadcast_maximum(self.value(vals, lo)?)?;
                }
                if let Some(hi) = n.input.get(2).filter(|s| !s.is_empty()) {
                    x = x.broadcast_minimum(self.value(vals, hi)?)?;
                }
                x
            }
            "GlobalAveragePool" => arg(0)?.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?,
            "ReduceMean" | "ReduceSum" => {
                let x = arg(0)?;
                let axes = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => match n.input.get(1) {
                        Some(name) => self.ints_of(name)?.clone(),
                        None => (0..x.rank() as i64).collect(),
                    },
                };
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis(a, x.rank()))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                let mut y = x.clone();
                for &a in axes.iter().rev() {
                    y = if n.op_type == "ReduceMean" {
                        y.mean_keepdim(a)?
                    } else {
                        y.sum_keepdim(a)?
                    };
                }
                if attr_int(n, "keepdims", 1) == 0 {
                    for &a in axes.iter().rev() {
                        y = y.squeeze(a)?;
                    }
                }
                y
            }
            "Squeeze" => {
                let x = arg(0)?;
                let axes = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => match n.input.get(1) {
                        Some(name) => self.ints_of(name)?.clone(),
                        None => (0..x.rank() as i64)
                            .filter(|&a| x.dims()[a as usize] == 1)
                            .collect(),
                    },
                };
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis(a, x.rank()))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                let mut y = x.clone();
                for &a in axes.iter().rev() {
                    y = y.squeeze(a)?;
                }
                y
            }
            "Unsqueeze" => {
                let x = arg(0)?;
                let axes = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => self.ints_of(n.input.get(1).context("axes")?)?.clone(),
                };
                let out_rank = x.rank() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis(a, out_rank))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                let mut y = x.clone();
                for &a in &axes {
                    y = y.unsqueeze(a)?;
                }
                y
            }
            "Flatten" => {
                let x = arg(0)?;
                let a = axis(attr_int(n, "axis", 1), x.rank() + 1)?;
                let outer: usize = x.dims()[..a].iter().product();
                let inner: usize = x.dims()[a..].iter().product();
                x.reshape((outer, inner))?
            }
            "Reshape" => {
                let x = arg(0)?;
                let spec = self.ints_of(n.input.get(1).context("shape")?)?;
                let mut dims = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        0 => dims.push(*x.dims().get(i).context("0 past the input rank")?),
                        -1 => {
                            infer = Some(i);
                            dims.push(1);
                        }
                        d if d > 0 => dims.push(d as usize),
                        _ => bail!("bad reshape dim {d}"),
                    }
                }
                if let Some(i) = infer {
                    let known: usize = dims.iter().product();
                    ensure!(
                        known > 0 && x.elem_count() % known == 0,
                        "cannot infer a dim"
                    );
                    dims[i] = x.elem_count() / known;
                }
                x.reshape(dims)?
            }
            "MatMul" => {
                let (a, b) = (arg(0)?, arg(1)?);
                if a.rank() == 2 && b.rank() == 2 {
                    a.matmul(b)?
                } else {
                    a.broadcast_matmul(b)?
                }
            }
            "Gemm" => {
                let mut a = arg(0)?.clone();
                let mut b = arg(1)?.clone();
                if attr_int(n, "transA", 0) != 0 {
                    a = a.t()?;
                }
                if attr_int(n, "transB", 0) != 0 {
                    b = b.t()?;
                }
                let mut y = (a.matmul(&b)? * f64::from(attr_float(n, "alpha", 1.0)))?;
                if n.input.len() > 2 {
                    let c = (arg(2)? * f64::from(attr_float(n, "beta", 1.0)))?;
                    y = y.broadcast_add(&c)?;
                }
                y
            }
            "Concat" => {
                let xs: Vec<&Tensor> = (0..n.input.len()).map(arg).collect::<Result<_>>()?;
                let a = axis(attr_int(n, "axis", 0), xs[0].rank())?;
                Tensor::cat(&xs, a)?
            }
            "Transpose" => {
                let x = arg(0)?;
                let perm = attr_ints(n, "perm")
                    .unwrap_or_else(|| (0..x.rank() as i64).rev().collect::<Vec<_>>());
                let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
                x.permute(perm)?
            }
            "MaxPool" | "AveragePool" => {
                let x = arg(0)?;
                let w = Window::of(n, None)?;
                let max = n.op_type == "MaxPool";
                ensure!(
                    max || w.pads.iter().all(|&p| p == 0)
                        || attr_int(n, "count_include_pad", 0) == 1,
                    "average pooling over padding that is not counted"
                );
                ensure!(
                    attr_int(n, "ceil_mode", 0) == 0,
                    "ceil_mode pooling is not supported"
                );
                let (xp, oh, ow) = w.prepare(x, if max { -1e30 } else { 0.0 })?;
                let mut acc: Option<Tensor> = None;
                for ky in 0..w.k[0] {
                    for kx in 0..w.k[1] {
                        let t = strided_view(&xp, ky, kx, w.s[0], oh, ow)?;
                        acc = Some(match acc {
                            None => t,
                            Some(a) if max => a.maximum(&t)?,
                            Some(a) => (a + t)?,
                        });
                    }
                }
                let y = acc.context("empty window")?;
                if max {
                    y
                } else {
                    (y / (w.k[0] * w.k[1]) as f64)?
                }
            }
            "BatchNormalization" => {
                let x = arg(0)?;
                let shape = |t: &Tensor| -> Result<Tensor> {
                    let mut dims = vec![1usize; x.rank()];
                    dims[1] = t.elem_count();
                    Ok(t.reshape(dims)?)
                };
                let eps = f64::from(attr_float(n, "epsilon", 1e-5));
                let inv = (shape(arg(4)?)? + eps)?.sqrt()?.recip()?;
                let scale = shape(arg(1)?)?.broadcast_mul(&inv)?;
                x.broadcast_sub(&shape(arg(3)?)?)?
                    .broadcast_mul(&scale)?
                    .broadcast_add(&shape(arg(2)?)?)?
            }
            other => bail!("op {other} is not supported for fine-tuning"),
        })
    }

    fn conv(&self, n: &NodeProto, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (o, ci, kh, kw) = w.dims4()?;
        let (batch, c, _, _) = x.dims4()?;
        let group = attr_int(n, "group", 1) as usize;
        let win = Window::of(n, Some([kh, kw]))?;
        if group > 1 && group == c && ci == 1 && o == c {
            // Depthwise: one custom op (implicit zero padding, threaded,
            // its own backward) instead of k² views of a padded copy.
            let (_, _, h, wd) = x.dims4()?;
            let (out_h, out_w) = win.out_size(h, wd)?;
            let y = DepthwiseGeometry {
                stride: win.s[0],
                pad_top: win.pads[0],
                pad_left: win.pads[1],
                out_h,
                out_w,
            }
            .apply_on(self.op_path, x, w)?;
            return Ok(match b {
                Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
                None => y,
            });
        }
        let (xp, oh, ow) = win.prepare(x, 0.0)?;
        let y = if group == 1 {
            ensure!(ci == c, "input has {c} channels, kernel {ci}");
            let cols = if kh == 1 && kw == 1 {
                strided_view(&xp, 0, 0, win.s[0], oh, ow)?.reshape((batch, c, oh * ow))?
            } else {
                let taps: Vec<Tensor> = (0..kh * kw)
                    .map(|t| strided_view(&xp, t / kw, t % kw, win.s[0], oh, ow))
                    .collect::<candle_core::Result<_>>()?;
                Tensor::stack(&taps, 2)?.reshape((batch, c * kh * kw, oh * ow))?
            };
            // One matmul for the whole batch, [o, k] × [k, batch·oh·ow]:
            // broadcasting the weights over the batch instead would copy
            // them (and their gradient) once per face.
            let k = ci * kh * kw;
            let cols = cols
                .transpose(0, 1)?
                .contiguous()?
                .reshape((k, batch * oh * ow))?;
            w.reshape((o, k))?
                .matmul(&cols)?
                .reshape((o, batch, oh, ow))?
                .transpose(0, 1)?
                .contiguous()?
        } else {
            bail!("grouped convolution with {group} groups (only 1 and depthwise)");
        };
        Ok(match b {
            Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
            None => y,
        })
    }

    /// The source model with the current weights written into its
    /// initializers; `input_hw` also sets the input's height and width.
    pub fn to_model(&self, input_hw: Option<(usize, usize)>) -> Result<ModelProto> {
        let mut model = self.model.clone();
        let g = model.graph.as_mut().context("model has no graph")?;
        for t in g.initializer.iter_mut() {
            if let Some(Param::Trainable(v)) = self.params.get(&t.name) {
                let values = v.as_tensor().flatten_all()?.to_dtype(DType::F32)?;
                let values = values.to_vec1::<f32>()?;
                ensure!(
                    values.iter().all(|x| x.is_finite()),
                    "{}: weights are not finite",
                    t.name
                );
                t.float_data.clear();
                t.raw_data = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            }
        }
        if let Some((h, w)) = input_hw {
            // Shapes recorded for the source size would contradict the new one.
            g.value_info.clear();
            let input = g
                .input
                .iter_mut()
                .find(|i| i.name == self.input)
                .context("input missing")?;
            if let Some(tract_onnx::pb::type_proto::Value::TensorType(tt)) =
                input.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                if let Some(shape) = tt.shape.as_mut() {
                    for (d, v) in shape.dim.iter_mut().skip(2).zip([h, w]) {
                        d.value = Some(
                            tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(
                                v as i64,
                            ),
                        );
                    }
                }
            }
        }
        Ok(model)
    }

    /// Writes [`TrainableGraph::to_model`] to `path`.
    pub fn save(&self, path: &Path, input_hw: Option<(usize, usize)>) -> Result<()> {
        crate::onnx::save(&self.to_model(input_hw)?, path)
    }

    /// Replaces the trainable weights with those of another file of the same
    /// graph (a checkpoint written by [`TrainableGraph::save`]).
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let other = Self::load(path)?;
        for (name, p) in &self.params {
            if let Param::Trainable(v) = p {
                let src = other
                    .params
                    .get(name)
                    .with_context(|| format!("{}: no weight {name}", path.display()))?;
                ensure!(
                    src.tensor().dims() == v.dims(),
                    "{}: weight {name} has another shape",
                    path.display()
                );
                v.set(&src.tensor().to_device(v.device())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faceres() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/faceres.onnx")
    }

    fn input(n: usize, hw: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n * 3 * hw * hw)
            .map(|_| rng.uniform() * 255.0)
            .collect()
    }

    /// tract's output for `model` on `x` (`[n, 3, hw, hw]`).
    fn tract_run(model: &ModelProto, x: &[f32], n: usize, hw: usize) -> Vec<f32> {
        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx()
            .model_for_proto_model(model)
            .unwrap()
            .with_input_fact(
                0,
                InferenceFact::dt_shape(f32::datum_type(), [n, 3, hw, hw]),
            )
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let t = tract_onnx::prelude::Tensor::from_shape(&[n, 3, hw, hw], x).unwrap();
        let out = plan.run(tvec![t.into()]).unwrap();
        let v = out[0].to_plain_array_view::<f32>().unwrap();
        v.iter().copied().collect()
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn faceres_forward_matches_tract_and_tuned_weights_export() {
        let path = faceres();
        let mut g = TrainableGraph::load(&path).unwrap();
        assert_eq!(g.conv_count(), 27);
        let all = g.trainable_len();
        assert!(all > 3_000_000, "{all} trainable weights");
        let (n, hw) = (2, 224);
        let x = input(n, hw, 1);
        let xt = Tensor::from_vec(x.clone(), (n, 3, hw, hw), &Device::Cpu).unwrap();
        let ours = g.forward(&xt).unwrap();
        assert_eq!(ours.dims(), &[n, 1024]);
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let reference = tract_run(&g.to_model(None).unwrap(), &x, n, hw);
        let err = max_rel(&ours, &reference);
        assert!(err < 1e-4, "candle vs tract: {err}");

        // One gradient step changes the weights; the export carries them and
        // tract (at another input size) reproduces the tuned forward pass.
        g.freeze_convs(5).unwrap();
        assert!(g.trainable_len() < all);
        let vars = g.vars();
        let hw = 96;
        let x = input(1, hw, 2);
        let xt = Tensor::from_vec(x.clone(), (1, 3, hw, hw), &Device::Cpu).unwrap();
        let loss = g.forward(&xt).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut moved = 0;
        for v in &vars {
            if let Some(gr) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (gr * 1e-3).unwrap()).unwrap())
                    .unwrap();
                moved += 1;
            }
        }
        assert!(moved > 10, "{moved} variables got a gradient");
        let tuned = g
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let exported = g.to_model(Some((hw, hw))).unwrap();
        let reference = tract_run(&exported, &x, 1, hw);
        assert!(max_rel(&tuned, &reference) < 1e-4);
        let source = TrainableGraph::load(&path).unwrap();
        let before = tract_run(&source.to_model(Some((hw, hw))).unwrap(), &x, 1, hw);
        assert!(
            max_rel(&before, &reference) > 1e-4,
            "the step changed nothing"
        );

        // A checkpoint round trip restores the tuned weights.
        let dir = std::env::temp_dir().join(format!("fw-graph-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = dir.join("ck.onnx");
        g.save(&ck, Some((hw, hw))).unwrap();
        let mut fresh = TrainableGraph::load(&path).unwrap();
        fresh.load_weights(&ck).unwrap();
        let again = fresh
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(max_rel(&again, &tuned) < 1e-6);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn facenet_forward_matches_tract() {
        // Inception-ResNet-v1: Concat, MaxPool, AveragePool, BatchNormalization,
        // Reshape, residual scaling and the L2 normalisation at its end.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/facenet.onnx");
        let g = TrainableGraph::load(&path).unwrap();
        let (n, hw) = (1, 160);
        let x: Vec<f32> = input(n, hw, 3)
            .iter()
            .map(|v| (v - 127.5) / 128.0)
            .collect();
        let xt = Tensor::from_vec(x.clone(), (n, 3, hw, hw), &Device::Cpu).unwrap();
        let ours = g
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let reference = tract_run(&g.to_model(None).unwrap(), &x, n, hw);
        let err = max_rel(&ours, &reference);
        assert!(err < 1e-4, "candle vs tract: {err}");
    }

    #[test]
    fn unsupported_ops_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("fw-graph-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.onnx");
        std::fs::write(&junk, b"not a model").unwrap();
        assert!(TrainableGraph::load(&junk).is_err());
        assert!(TrainableGraph::load(&dir.join("missing.onnx")).is_err());
        let mut m = TrainableGraph::load(&faceres())
            .unwrap()
            .to_model(None)
            .unwrap();
        m.graph.as_mut().unwrap().node[3].op_type = "LSTM".into();
        let e = TrainableGraph::from_model(m).unwrap_err().to_string();
        assert!(e.contains("LSTM"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
