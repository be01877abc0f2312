//! Post-training static int8 quantization of ONNX graphs, written out in the
//! QDQ form (`QuantizeLinear` → `DequantizeLinear` pairs around float ops).
//!
//! QDQ is the form onnxruntime fuses into integer kernels (`QLinearConv`,
//! `QLinearMatMul`) and the form TensorRT takes for explicit int8 (its implicit
//! calibrator API is deprecated). tract reads it too: it folds the weight
//! dequantization into float constants and runs the activation pairs as
//! rounding steps, so on tract a QDQ file gives int8 accuracy, not int8 speed.
//!
//! What is quantized:
//! - the weights of every `Conv`, `Gemm` and `MatMul` whose weight is an
//!   initializer: int8, symmetric, one scale per output channel;
//! - their biases: int32 with scale `input scale × weight scale`, as the QDQ
//!   spec wants for a fused integer kernel;
//! - the activations entering and leaving those ops (the output after a lone
//!   following `Relu`, so the ReLU is folded into the range): per tensor, with
//!   ranges measured on calibration inputs (min–max or a percentile). Graph
//!   outputs stay float.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto,
    TensorProto,
};
use tract_onnx::prelude::*;

/// Largest magnitude of a symmetric int8 weight (−127..=127, so that the
/// range is symmetric and −128 is never used).
pub const WEIGHT_QMAX: f32 = 127.0;
/// Largest magnitude of a 7-bit ("reduce range") weight. x86 CPUs with AVX2
/// but without VNNI multiply u8 × s8 pairs with `vpmaddubsw`, whose int16 sum
/// of two products saturates for 8-bit weights (255·127·2 > 32767) but not
/// for 7-bit ones (255·63·2 < 32767).
pub const WEIGHT_QMAX_REDUCED: f32 = 63.0;
/// Largest magnitude of a quantized bias (`i32`), with headroom for the
/// products an integer kernel adds to it.
pub const BIAS_QMAX: f32 = (1u32 << 30) as f32;
/// Histogram bins per tensor for the percentile calibration.
pub const HISTOGRAM_BINS: usize = 2048;
/// Default percentile for [`Calibration::Percentile`].
pub const DEFAULT_PERCENTILE: f64 = 99.99;
/// Minimum ONNX opset of a QDQ graph with per-axis scales.
pub const QDQ_OPSET: i64 = 13;

/// How activation ranges are taken from the calibration runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The `percentile`-th and `(100 − percentile)`-th percentiles of the
    /// values seen, which drops rare outliers.
    Percentile {
        /// In percent, e.g. 99.99.
        percentile: f64,
    },
}

/// Integer type of the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ActivationType {
    /// uint8 with a zero point (asymmetric): the best accuracy on CPUs
    /// (onnxruntime's U8S8 kernels).
    U8,
    /// int8 with zero point 0 (symmetric): the form TensorRT requires.
    S8,
}

/// Observed value range of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
}

/// Scale and zero point of one quantized activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationParams {
    /// Real value of one integer step.
    pub scale: f32,
    /// Integer that stands for 0.0.
    pub zero_point: i32,
}

impl ActivationType {
    /// Scale and zero point covering `r` (widened to include 0, so that zero
    /// padding is exact).
    pub fn params(self, r: Range) -> ActivationParams {
        let (lo, hi) = (r.min.min(0.0), r.max.max(0.0));
        match self {
            ActivationType::U8 => {
                let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as i32;
                ActivationParams { scale, zero_point }
            }
            ActivationType::S8 => {
                let m = hi.max(-lo);
                let scale = if m > 0.0 { m / 127.0 } else { 1.0 };
                ActivationParams {
                    scale,
                    zero_point: 0,
                }
            }
        }
    }

    fn data_type(self) -> DataType {
        match self {
            ActivationType::U8 => DataType::Uint8,
            ActivationType::S8 => DataType::Int8,
        }
    }
}

/// One op whose weight gets quantized.
#[derive(Debug, Clone)]
struct Target {
    /// Index in the graph's node list.
    node: usize,
    /// The weight's output-channel axis.
    axis: usize,
    /// Whether input 2 is a float bias initializer to quantize to int32.
    bias: bool,
}

/// The ops and activation tensors [`quantize`] will rewrite, found from the
/// graph alone (before calibration).
#[derive(Debug, Clone)]
pub struct Plan {
    targets: Vec<Target>,
    /// Activation tensors to quantize, in first-seen order.
    pub activations: Vec<String>,
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// The float values of an initializer (raw or typed storage).
pub(crate) fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    ensure!(
        t.data_type == DataType::Float as i32,
        "{}: not a float tensor",
        t.name
    );
    let n: i64 = t.dims.iter().product();
    let v: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    ensure!(
        v.len() as i64 == n,
        "{}: {} values for shape {:?}",
        t.name,
        v.len(),
        t.dims
    );
    Ok(v)
}

/// Finds the quantizable ops of `model` and the activations around them,
/// leaving the ops named in `keep_float` (ONNX node names) in float: for layers too sensitive to int8 weights, such as faceres's first
/// depthwise convolution (its 3×3 kernels nearly cancel on raw 0..255 input,
/// and 7-bit weights alone drop the embedding cosine to 0.84). The tensors
/// around a kept op are still quantized where a neighbouring op needs them.
/// A name that matches no quantizable op is an error.
pub fn plan(model: &ModelProto, keep_float: &[String]) -> Result<Plan> {
    let g = model.graph.as_ref().context("model has no graph")?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    ensure!(
        opset >= QDQ_OPSET,
        "opset {opset}: QDQ with per-channel scales needs opset {QDQ_OPSET} or later"
    );
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for x in &n.input {
            consumers.entry(x.as_str()).or_default().push(i);
        }
    }
    let float_init = |name: &str, rank: usize| {
        inits
            .get(name)
            .is_some_and(|t| t.data_type == DataType::Float as i32 && t.dims.len() == rank)
    };
    let mut targets = vec![];
    let mut kept: HashSet<&str> = HashSet::new();
    let mut acts: Vec<String> = vec![];
    let mut seen = HashSet::new();
    let mut want = |t: &str, acts: &mut Vec<String>| {
        if !t.is_empty()
            && !inits.contains_key(t)
            && !outputs.contains(t)
            && seen.insert(t.to_string())
        {
            acts.push(t.to_string());
        }
    };
    for (i, n) in g.node.iter().enumerate() {
        if n.input.len() < 2 || n.output.is_empty() {
            continue;
        }
        let (w, out) = (n.input[1].as_str(), n.output[0].as_str());
        let (axis, channels) = match n.op_type.as_str() {
            "Conv" if float_init(w, 4) => (0, inits[w].dims[0]),
            "Gemm" if float_init(w, 2) => {
                if attr_i(n, "transA").unwrap_or(0) != 0 {
                    continue;
                }
                let axis = if attr_i(n, "transB").unwrap_or(0) != 0 {
                    0
                } else {
                    1
                };
                (axis, inits[w].dims[axis])
            }
            "MatMul" if float_init(w, 2) => (1, inits[w].dims[1]),
            _ => continue,
        };
        if keep_float.contains(&n.name) {
            kept.insert(n.name.as_str());
            continue;
        }
        let bias = n.input.get(2).is_some_and(|b| {
            float_init(b, 1)
                && inits[b.as_str()].dims[0] == channels
                && (n.op_type == "Conv"
                    || (attr_f(n, "alpha").unwrap_or(1.0) == 1.0
                        && attr_f(n, "beta").unwrap_or(1.0) == 1.0))
        });
        targets.push(Target {
            node: i,
            axis,
            bias,
        });
        want(&n.input[0], &mut acts);
        // Quantize after a lone ReLU: its output range is the one that matters.
        let after = match consumers.get(out).map(Vec::as_slice) {
            Some(&[c]) if g.node[c].op_type == "Relu" => g.node[c].output[0].as_str(),
            _ => out,
        };
        want(after, &mut acts);
    }
    if let Some(missing) = keep_float.iter().find(|k| !kept.contains(k.as_str())) {
        bail!("--keep-float {missing}: no quantizable op (Conv, Gemm, MatMul) of that name");
    }
    ensure!(
        !targets.is_empty(),
        "no Conv, Gemm or MatMul with constant weights"
    );
    Ok(Plan {
        targets,
        activations: acts,
    })
}

/// What [`quantize`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Ops with int8 weights.
    pub ops: usize,
    /// Activation tensors with a QDQ pair.
    pub activations: usize,
    /// Weight bytes before (float).
    pub weight_bytes_f32: usize,
    /// Weight bytes after (int8 + scales).
    pub weight_bytes_int8: usize,
    /// Channels whose weight scale was raised so that their int32 bias fits
    /// (see [`quantize_weight_floored`]).
    pub bias_limited_channels: usize,
}

fn tensor_bytes(name: String, dt: DataType, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        dims,
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn f32_tensor(name: String, dims: Vec<i64>, v: &[f32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    tensor_bytes(name, DataType::Float, dims, raw)
}

fn qdq_node(op: &str, inputs: [&str; 3], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: axis
            .map(|a| AttributeProto {
                name: "axis".into(),
                r#type: AttributeType::Int as i32,
                i: a,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Per-channel symmetric int8 of `w` (shape `dims`) along `axis`: the
/// integers (row-major, as `w`) and one scale per channel, each at least its
/// entry of `floor` (empty for none): a channel whose weights are all tiny next to its bias
/// would otherwise get a scale so small that the int32 bias
/// (`bias / (input scale × weight scale)`) overflows.
pub fn quantize_weight_floored(
    w: &[f32],
    dims: &[i64],
    axis: usize,
    qmax: f32,
    floor: &[f32],
) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let channel_of = |i: usize| (i / inner) % channels;
    let mut absmax = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = channel_of(i);
        absmax[c] = absmax[c].max(v.abs());
    }
    let scales: Vec<f32> = absmax
        .iter()
        .enumerate()
        .map(|(c, &m)| {
            let s = if m > 0.0 { m / qmax } else { 1.0 };
            floor.get(c).map_or(s, |&f| s.max(f))
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[channel_of(i)])
                .round_ties_even()
                .clamp(-qmax, qmax) as i8
        })
        .collect();
    (q, scales)
}

/// Rewrites `model` into QDQ form with the activation `ranges` measured by
/// [`calibrate`] (one per entry of `plan.activations`). `reduce_range` keeps
/// the weights to 7 bits ([`WEIGHT_QMAX_REDUCED`]).
pub fn quantize(
    model: &ModelProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
    act: ActivationType,
    reduce_range: bool,
) -> Result<(ModelProto, Summary)> {
    let qmax = if reduce_range {
        WEIGHT_QMAX_REDUCED
    } else {
        WEIGHT_QMAX
    };
    let mut out = model.clone();
    let g = out.graph.as_mut().context("model has no graph")?;
    let mut params: HashMap<&str, ActivationParams> = HashMap::new();
    for t in &plan.activations {
        let r = ranges
            .get(t)
            .with_context(|| format!("no calibration range for {t}"))?;
        ensure!(
            r.min.is_finite() && r.max.is_finite() && r.min <= r.max,
            "{t}: bad calibration range {r:?}"
        );
        params.insert(t, act.params(*r));
    }
    let inits: HashMap<String, TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let targets: HashMap<usize, &Target> = plan.targets.iter().map(|t| (t.node, t)).collect();
    let mut new_inits: Vec<TensorProto> = vec![];
    let mut nodes: Vec<NodeProto> = vec![];
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut summary = Summary::default();
    let zp_raw = |zp: i32| -> Vec<u8> {
        match act {
            ActivationType::U8 => vec![zp as u8],
            ActivationType::S8 => vec![zp as i8 as u8],
        }
    };
    let add_qdq = |t: &str,
                   nodes: &mut Vec<NodeProto>,
                   new_inits: &mut Vec<TensorProto>,
                   rename: &mut HashMap<String, String>| {
        let p = params[t];
        let (s, z, q, dq) = (
            format!("{t}/fw_scale"),
            format!("{t}/fw_zp"),
            format!("{t}/fw_q"),
            format!("{t}/fw_dq"),
        );
        new_inits.push(f32_tensor(s.clone(), vec![], &[p.scale]));
        new_inits.push(tensor_bytes(
            z.clone(),
            act.data_type(),
            vec![],
            zp_raw(p.zero_point),
        ));
        nodes.push(qdq_node("QuantizeLinear", [t, &s, &z], &q, None));
        nodes.push(qdq_node("DequantizeLinear", [&q, &s, &z], &dq, None));
        rename.insert(t.to_string(), dq);
    };
    for i in &g.input {
        if params.contains_key(i.name.as_str()) {
            add_qdq(&i.name, &mut nodes, &mut new_inits, &mut rename);
        }
    }
    let mut weight_dq: HashMap<String, (String, Vec<f32>)> = HashMap::new();
    for (i, node) in g.node.iter().enumerate() {
        let mut n = node.clone();
        for x in n.input.iter_mut() {
            if let Some(r) = rename.get(x.as_str()) {
                *x = r.clone();
            }
        }
        if let Some(t) = targets.get(&i) {
            let wname = node.input[1].clone();
            if !weight_dq.contains_key(&wname) {
                let w = &inits[&wname];
                let values = float_values(w)?;
                let floor = match (t.bias, params.get(node.input[0].as_str())) {
                    (true, Some(p)) => float_values(&inits[&node.input[2]])?
                        .iter()
                        .map(|b| b.abs() / (p.scale * BIAS_QMAX))
                        .collect(),
                    _ => vec![],
                };
                let (q, scales) = quantize_weight_floored(&values, &w.dims, t.axis, qmax, &floor);
                let raised = floor
                    .iter()
                    .zip(&scales)
                    .filter(|(f, s)| **f > 0.0 && *f >= *s)
                    .count();
                if raised > 0 {
                    log::debug!("{wname}: {raised} channel scales raised to fit the int32 bias");
                    summary.bias_limited_channels += raised;
                }
                summary.weight_bytes_f32 += values.len() * 4;
                summary.weight_bytes_int8 += q.len() + scales.len() * 5;
                let (qn, sn, zn, dq) = (
                    format!("{wname}/fw_int8"),
                    format!("{wname}/fw_scale"),
                    format!("{wname}/fw_zp"),
                    format!("{wname}/fw_dq"),
                );
                new_inits.push(tensor_bytes(
                    qn.clone(),
                    DataType::Int8,
                    w.dims.clone(),
                    q.iter().map(|&v| v as u8).collect(),
                ));
                new_inits.push(f32_tensor(sn.clone(), vec![scales.len() as i64], &scales));
                new_inits.push(tensor_bytes(
                    zn.clone(),
                    DataType::Int8,
                    vec![scales.len() as i64],
                    vec![0; scales.len()],
                ));
                nodes.push(qdq_node(
                    "DequantizeLinear",
                    [&qn, &sn, &zn],
                    &dq,
                    Some(t.axis as i64),
                ));
                weight_dq.insert(wname.clone(), (dq, scales));
            }
            let (dq, wscales) = &weight_dq[&wname];
            n.input[1] = dq.clone();
            let input_scale = params.get(node.input[0].as_str()).map(|p| p.scale);
            if let (true, Some(sx)) = (t.bias, input_scale) {
                let b = &inits[&node.input[2]];
                let bv = float_values(b)?;
                let scales: Vec<f32> = wscales.iter().map(|sw| sx * sw).collect();
                let q: Vec<u8> = bv
                    .iter()
                    .zip(&scales)
                    .flat_map(|(v, s)| {
                        let q = (f64::from(*v) / f64::from(*s))
                            .round()
                            .clamp(f64::from(i32::MIN), f64::from(i32::MAX))
                            as i32;
                        q.to_le_bytes()
                    })
                    .collect();
                let base = format!("{}/fw_bias{i}", node.input[2]);
                let (qn, sn, zn, dq) = (
                    format!("{base}_int32"),
                    format!("{base}_scale"),
                    format!("{base}_zp"),
                    format!("{base}_dq"),
                );
                new_inits.push(tensor_bytes(qn.clone(), DataType::Int32, b.dims.clone(), q));
                new_inits.push(f32_tensor(sn.clone(), vec![scales.len() as i64], &scales));
                new_inits.push(tensor_bytes(
                    zn.clone(),
                    DataType::Int32,
                    vec![scales.len() as i64],
                    vec![0; scales.len() * 4],
                ));
                nodes.push(qdq_node("DequantizeLinear", [&qn, &sn, &zn], &dq, Some(0)));
                n.input[2] = dq;
            }
            summary.ops += 1;
        }
        nodes.push(n);
        for o in &node.output {
            if params.contains_key(o.as_str()) {
                add_qdq(o, &mut nodes, &mut new_inits, &mut rename);
            }
        }
    }
    summary.activations = params.len();
    // Drop the float initializers nothing reads any more.
    let used: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut kept: Vec<TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    let dropped: HashSet<String> = g
        .initializer
        .iter()
        .filter(|t| !used.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    kept.extend(new_inits);
    g.initializer = kept;
    g.input.retain(|i| !dropped.contains(&i.name));
    g.node = nodes;
    out.producer_name = "fakewatch-train quantize".into();
    out.producer_version = env!("CARGO_PKG_VERSION").into();
    Ok((out, summary))
}

/// Running statistics of one tensor.
#[derive(Debug, Clone)]
struct Stat {
    min: f32,
    max: f32,
    hist: Vec<u64>,
}

impl Stat {
    fn new() -> Self {
        Stat {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: vec![],
        }
    }
    fn observe(&mut self, v: &[f32]) {
        for &x in v {
            if x.is_finite() {
                self.min = self.min.min(x);
                self.max = self.max.max(x);
            }
        }
    }
    fn bin(&self, x: f32) -> usize {
        let w = (self.max - self.min) / HISTOGRAM_BINS as f32;
        if w <= 0.0 {
            return 0;
        }
        (((x - self.min) / w) as usize).min(HISTOGRAM_BINS - 1)
    }
    fn histogram(&mut self, v: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; HISTOGRAM_BINS];
        }
        for &x in v {
            if x.is_finite() {
                let b = self.bin(x.clamp(self.min, self.max));
                self.hist[b] += 1;
            }
        }
    }
    fn range(&self, c: Calibration) -> Range {
        let full = Range {
            min: self.min,
            max: self.max,
        };
        let Calibration::Percentile { percentile } = c else {
            return full;
        };
        let total: u64 = self.hist.iter().sum();
        if total == 0 || self.max <= self.min {
            return full;
        }
        let w = (self.max - self.min) / HISTOGRAM_BINS as f32;
        let tail = ((1.0 - percentile / 100.0) * total as f64).max(0.0);
        let (mut lo, mut hi) = (0usize, HISTOGRAM_BINS - 1);
        let mut acc = 0u64;
        for (i, &h) in self.hist.iter().enumerate() {
            acc += h;
            if acc as f64 > tail {
                lo = i;
                break;
            }
        }
        acc = 0;
        for (i, &h) in self.hist.iter().enumerate().rev() {
            acc += h;
            if acc as f64 > tail {
                hi = i;
                break;
            }
        }
        Range {
            min: self.min + lo as f32 * w,
            max: (self.min + (hi + 1) as f32 * w).min(self.max),
        }
    }
}

/// One calibration input: its full shape (batch 1 first) and values.
#[derive(Debug, Clone)]
pub struct CalibrationInput {
    /// Shape, e.g. `[1, 3, 160, 160]`.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Runs `model` (one input) with tract on every input and measures the range
/// of each of `tensors`. Percentile calibration makes a second pass for the
/// histograms. `progress` is called once per run.
pub fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    inputs: &[CalibrationInput],
    method: Calibration,
    progress: &dyn Fn(),
) -> Result<HashMap<String, Range>> {
    ensure!(!inputs.is_empty(), "no calibration inputs");
    if let Calibration::Percentile { percentile } = method {
        ensure!(
            (50.0..=100.0).contains(&percentile),
            "percentile {percentile} is not within 50..=100"
        );
    }
    let g = model.graph.as_ref().context("model has no graph")?;
    ensure!(g.input.len() == 1, "calibration takes one-input models");
    let input_name = g.input[0].name.clone();
    let internal: Vec<&String> = tensors.iter().filter(|t| **t != input_name).collect();
    let mut plans = HashMap::new();
    let mut stats: Vec<Stat> = vec![Stat::new(); tensors.len()];
    let passes = if matches!(method, Calibration::MinMax) {
        1
    } else {
        2
    };
    for pass in 0..passes {
        for input in inputs {
            ensure!(
                input.shape.iter().product::<usize>() == input.data.len(),
                "calibration input: {} values for shape {:?}",
                input.data.len(),
                input.shape
            );
            if !plans.contains_key(&input.shape) {
                let mut m = tract_onnx::onnx()
                    .model_for_proto_model(model)
                    .context("tract cannot read the model")?;
                m.set_input_fact(
                    0,
                    InferenceFact::dt_shape(f32::datum_type(), input.shape.clone()),
                )?;
                let mut outlets = vec![];
                for t in &internal {
                    outlets.push(
                        m.find_outlet_label(t)
                            .with_context(|| format!("tensor {t} is not in the graph"))?,
                    );
                }
                m.select_output_outlets(&outlets)?;
                let p = m.into_optimized()?.into_runnable()?;
                plans.insert(input.shape.clone(), p);
            }
            let plan = &plans[&input.shape];
            let x = Tensor::from_shape(&input.shape, &input.data)?;
            let outs = plan.run(tvec![x.into()])?;
            let mut k = 0;
            for (t, st) in tensors.iter().zip(stats.iter_mut()) {
                let view;
                let values: &[f32] = if *t == input_name {
                    &input.data
                } else {
                    view = outs[k].to_plain_array_view::<f32>()?;
                    k += 1;
                    view.as_slice().context("non-contiguous output")?
                };
                if pass == 0 {
                    st.observe(values);
                } else {
                    st.histogram(values);
                }
            }
            progress();
        }
    }
    let mut out = HashMap::new();
    for (t, st) in tensors.iter().zip(&stats) {
        if st.min > st.max {
            bail!("{t}: no finite value seen during calibration");
        }
        out.insert(t.clone(), st.range(method));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{head_model, Dense};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn run(model: &ModelProto, input: &CalibrationInput) -> Vec<Vec<f32>> {
        let m = tract_onnx::onnx()
            .model_for_proto_model(model)
            .unwrap()
            .with_input_fact(
                0,
                InferenceFact::dt_shape(f32::datum_type(), input.shape.clone()),
            )
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = Tensor::from_shape(&input.shape, &input.data).unwrap();
        m.run(tvec![x.into()])
            .unwrap()
            .iter()
            .map(|t| {
                let v = t.to_plain_array_view::<f32>().unwrap();
                v.iter().copied().collect()
            })
            .collect()
    }

    fn initializer_types(m: &ModelProto) -> HashMap<i32, usize> {
        let mut h = HashMap::new();
        for t in &m.graph.as_ref().unwrap().initializer {
            *h.entry(t.data_type).or_default() += 1;
        }
        h
    }

    /// The project's own MLP head: Gemm weights go int8, the outputs stay
    /// within a few quantization steps of float.
    #[test]
    fn head_quantizes_and_stays_close() {
        let mut seed = 7;
        let mut dense = |i: usize, o: usize| Dense {
            weight: (0..i * o).map(|_| lcg(&mut seed) * 0.3).collect(),
            bias: (0..o).map(|_| lcg(&mut seed) * 0.1).collect(),
            inputs: i,
            outputs: o,
        };
        let layers = vec![dense(32, 24), dense(24, 8)];
        let model = head_model(&layers).unwrap();
        let inputs: Vec<CalibrationInput> = (0..64)
            .map(|_| CalibrationInput {
                shape: vec![1, 32],
                data: (0..32).map(|_| lcg(&mut seed)).collect(),
            })
            .collect();
        let p = plan(&model, &[]).unwrap();
        assert_eq!(p.targets.len(), 2);
        // Input, the ReLU after dense0, dense1's output (before the L2 norm).
        assert_eq!(p.activations, vec!["embedding", "relu0", "dense1"]);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile { percentile: 99.9 },
        ] {
            let ranges = calibrate(&model, &p.activations, &inputs, method, &|| ()).unwrap();
            for (act, reduce) in [
                (ActivationType::U8, false),
                (ActivationType::S8, false),
                (ActivationType::U8, true),
            ] {
                let (q, summary) = quantize(&model, &p, &ranges, act, reduce).unwrap();
                assert_eq!(summary.ops, 2);
                assert_eq!(summary.activations, 3);
                assert!(summary.weight_bytes_int8 * 3 < summary.weight_bytes_f32);
                let types = initializer_types(&q);
                // Two int8 weights and no float weight matrix left.
                assert!(types.get(&(DataType::Int8 as i32)).copied().unwrap_or(0) >= 2);
                // Two int32 biases and their two zero-point vectors.
                assert_eq!(
                    types.get(&(DataType::Int32 as i32)),
                    Some(&4),
                    "int32 biases"
                );
                let float_matrices = q
                    .graph
                    .as_ref()
                    .unwrap()
                    .initializer
                    .iter()
                    .filter(|t| t.data_type == DataType::Float as i32 && t.dims.len() == 2);
                assert_eq!(float_matrices.count(), 0);
                for x in inputs.iter().take(8) {
                    let d = max_abs_diff(&run(&model, x)[0], &run(&q, x)[0]);
                    assert!(d < 0.05, "{method:?} {act:?} {reduce}: {d}");
                }
            }
        }
    }

    /// The shipped MTCNN PNet (Conv + PRelu): quantized, its face
    /// probabilities on a smooth image stay within 0.05 of float.
    /// Largest absolute difference between two outputs.
    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn pnet_quantizes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mtcnn_pnet.onnx");
        let model = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
        let p = plan(&model, &[]).unwrap();
        assert_eq!(p.targets.len(), 5);
        let mut seed = 3;
        let image = |seed: &mut u64| {
            let (fx, fy, ph) = (lcg(seed) * 0.3, lcg(seed) * 0.3, lcg(seed) * 3.0);
            CalibrationInput {
                shape: vec![1, 3, 24, 32],
                data: (0..3 * 24 * 32)
                    .map(|i| {
                        let (c, y, x) = (i / 768, (i / 32) % 24, i % 32);
                        ((x as f32 * fx + y as f32 * fy + ph + c as f32).sin() * 0.9)
                            .clamp(-1.0, 1.0)
                    })
                    .collect(),
            }
        };
        let inputs: Vec<CalibrationInput> = (0..16).map(|_| image(&mut seed)).collect();
        let ranges =
            calibrate(&model, &p.activations, &inputs, Calibration::MinMax, &|| ()).unwrap();
        let (q, summary) = quantize(&model, &p, &ranges, ActivationType::U8, false).unwrap();
        assert_eq!(summary.ops, 5);
        for x in inputs.iter().take(4) {
            let (a, b) = (run(&model, x), run(&q, x));
            assert_eq!(a.len(), b.len());
            // Output 1 is the face probability map.
            let d = max_abs_diff(&a[1], &b[1]);
            assert!(d < 0.05, "prob differs by {d}");
        }
        // Keeping the first convolution float leaves four ops to quantize;
        // a name that is not a quantizable op is refused.
        let first = model
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .find(|n| n.op_type == "Conv");
        let first = first.unwrap().name.clone();
        assert_eq!(
            plan(&model, std::slice::from_ref(&first))
                .unwrap()
                .targets
                .len(),
            4
        );
        assert!(plan(&model, &["no-such-op".to_string()]).is_err());
        // Weights only (no activation ranges): weights int8, activations float.
        let mut w = plan(&model, &[first]).unwrap();
        w.activations.clear();
        let (q, summary) =
            quantize(&model, &w, &HashMap::new(), ActivationType::U8, false).unwrap();
        assert_eq!((summary.ops, summary.activations), (4, 0));
        let (a, b) = (run(&model, &inputs[0]), run(&q, &inputs[0]));
        let d = max_abs_diff(&a[1], &b[1]);
        assert!(d < 0.02, "weights-only prob differs by {d}");
    }

    #[test]
    fn refuses_what_it_cannot_quantize() {
        let model = head_model(&[Dense {
            weight: vec![1.0; 4],
            bias: vec![0.0; 2],
            inputs: 2,
            outputs: 2,
        }])
        .unwrap();
        let p = plan(&model, &[]).unwrap();
        // A range missing for one activation.
        assert!(quantize(&model, &p, &HashMap::new(), ActivationType::U8, false).is_err());
        // Non-finite ranges.
        let bad: HashMap<String, Range> = p
            .activations
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    Range {
                        min: f32::NAN,
                        max: 1.0,
                    },
                )
            })
            .collect();
        assert!(quantize(&model, &p, &bad, ActivationType::U8, false).is_err());
        // An old opset.
        let mut old = model.clone();
        old.opset_import[0].version = 11;
        assert!(plan(&old, &[]).is_err());
        // No calibration input, or one of the wrong size.
        assert!(calibrate(&model, &p.activations, &[], Calibration::MinMax, &|| ()).is_err());
        let wrong = CalibrationInput {
            shape: vec![1, 2],
            data: vec![0.0; 3],
        };
        assert!(calibrate(
            &model,
            &p.activations,
            &[wrong],
            Calibration::MinMax,
            &|| ()
        )
        .is_err());
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        // Two output channels of two values each.
        let (q, s) =
            quantize_weight_floored(&[1.0, -0.25, 0.01, -0.04], &[2, 2], 0, WEIGHT_QMAX, &[]);
        assert_eq!(s, vec![1.0 / 127.0, 0.04 / 127.0]);
        assert_eq!(q, vec![127, -32, 32, -127]);
        // Along axis 1 of a [2, 2] matrix, channels are columns.
        let (q, s) = quantize_weight_floored(&[1.5, 0.1, -2.0, 0.03], &[2, 2], 1, WEIGHT_QMAX, &[]);
        assert_eq!(s, vec![2.0 / 127.0, 0.1 / 127.0]);
        assert_eq!(q, vec![95, 127, -127, 38]);
        // An all-zero channel keeps a usable scale.
        let (q, s) = quantize_weight_floored(&[0.0, 0.0], &[1, 2], 0, WEIGHT_QMAX, &[]);
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
        // Reduced range: 7 bits.
        let (q, s) = quantize_weight_floored(&[1.0, -0.25], &[1, 2], 0, WEIGHT_QMAX_REDUCED, &[]);
        assert_eq!((q, s), (vec![63, -16], vec![1.0 / 63.0]));
        // A floor above the natural scale wins (bias headroom); below it, not.
        let (q, s) = quantize_weight_floored(&[0.01, -0.02], &[1, 2], 0, WEIGHT_QMAX, &[0.001]);
        assert_eq!((q, s), (vec![10, -20], vec![0.001]));
        let (_, s) = quantize_weight_floored(&[1.0, -0.5], &[1, 2], 0, WEIGHT_QMAX, &[0.001]);
        assert_eq!(s, vec![1.0 / 127.0]);
    }

    #[test]
    fn activation_params_cover_zero() {
        let p = ActivationType::U8.params(Range { min: 0.5, max: 2.5 });
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 2.5 / 255.0).abs() < 1e-9);
        let p = ActivationType::U8.params(Range {
            min: -1.0,
            max: 3.0,
        });
        assert_eq!(p.zero_point, 64);
        let p = ActivationType::S8.params(Range {
            min: -3.0,
            max: 1.0,
        });
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 3.0 / 127.0).abs() < 1e-9);
        assert_eq!(
            ActivationType::S8
                .params(Range { min: 0.0, max: 0.0 })
                .scale,
            1.0
        );
    }

    #[test]
    fn percentile_drops_outliers() {
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        v.push(1000.0);
        let mut s = Stat::new();
        s.observe(&v);
        s.histogram(&v);
        assert_eq!(s.range(Calibration::MinMax).max, 1000.0);
        let r = s.range(Calibration::Percentile { percentile: 99.9 });
        assert!(r.max < 2.0, "{r:?}");
        assert!(r.min <= 0.0 + 1e-6, "{r:?}");
    }
}
