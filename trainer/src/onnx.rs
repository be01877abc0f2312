//! Writing small ONNX graphs from Rust (through tract's prost types): the
//! triplet head (Gemm/ReLU MLP with an L2-normalised output), the logistic
//! classifier (Gemm + Sigmoid) and the random forest (`ai.onnx.ml`
//! TreeEnsembleClassifier, no ZipMap). Both classifiers take `features`
//! `[N, d]` and give `p_fake` `[N, 1]`, so the SDK runs either unchanged.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Opset of the written graphs.
pub const OPSET: i64 = 13;
/// Opset of the `ai.onnx.ml` domain (TreeEnsembleClassifier).
pub const ML_OPSET: i64 = 3;
/// Added under the square root of the L2 normalisation.
pub const L2_EPS: f32 = 1e-12;

/// A dense layer `y = x Wᵀ + b` with `W` of shape `[out, in]` (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Weights, `out × in`.
    pub weight: Vec<f32>,
    /// Bias, `out`.
    pub bias: Vec<f32>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

#[cfg(test)]
impl Dense {
    /// Applies the layer to one row.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        (0..self.outputs)
            .map(|o| {
                let w = &self.weight[o * self.inputs..(o + 1) * self.inputs];
                w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + self.bias[o]
            })
            .collect()
    }
}

#[cfg(test)]
/// Forward pass of an MLP head in plain Rust: ReLU between layers, L2 at the end.
pub fn mlp_forward(layers: &[Dense], x: &[f32]) -> Vec<f32> {
    let mut h = x.to_vec();
    for (i, l) in layers.iter().enumerate() {
        h = l.forward(&h);
        if i + 1 < layers.len() {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    let n = (h.iter().map(|v| v * v).sum::<f32>() + L2_EPS).sqrt();
    h.iter().map(|v| v / n).collect()
}

struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

fn tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v,
        ..Default::default()
    }
}

fn floats_attr(name: &str, v: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats: v,
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn strings_attr(name: &str, v: Vec<&str>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Strings as i32,
        strings: v.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

impl Builder {
    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
    }
    fn gemm(&mut self, x: &str, l: &Dense, name: &str) -> Result<String> {
        ensure!(
            l.weight.len() == l.inputs * l.outputs && l.bias.len() == l.outputs,
            "{name}: bad shapes"
        );
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.inits
            .push(tensor(&w, &[l.outputs, l.inputs], &l.weight));
        self.inits.push(tensor(&b, &[l.outputs], &l.bias));
        self.node("Gemm", &[x, &w, &b], name, vec![int_attr("transB", 1)]);
        Ok(name.to_string())
    }
    fn model(self, name: &str, input: ValueInfoProto, output: ValueInfoProto) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "fakewatch-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![
                OperatorSetIdProto {
                    domain: String::new(),
                    version: OPSET,
                },
                OperatorSetIdProto {
                    domain: "ai.onnx.ml".into(),
                    version: ML_OPSET,
                },
            ],
            graph: Some(GraphProto {
                name: name.into(),
                node: self.nodes,
                initializer: self.inits,
                input: vec![input],
                output: vec![output],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The MLP head as ONNX: input `embedding` `[N, in]`, output `head` `[N, out]`.
pub fn head_model(layers: &[Dense]) -> Result<ModelProto> {
    ensure!(!layers.is_empty(), "head needs at least one layer");
    for w in layers.windows(2) {
        ensure!(w[0].outputs == w[1].inputs, "layer widths do not chain");
    }
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    let mut x = "embedding".to_string();
    for (i, l) in layers.iter().enumerate() {
        x = b.gemm(&x, l, &format!("dense{i}"))?;
        if i + 1 < layers.len() {
            let r = format!("relu{i}");
            b.node("Relu", &[&x], &r, vec![]);
            x = r;
        }
    }
    b.inits.push(TensorProto {
        name: "axes".into(),
        dims: vec![1],
        data_type: DataType::Int64 as i32,
        int64_data: vec![1],
        ..Default::default()
    });
    b.inits.push(tensor("eps", &[], &[L2_EPS]));
    b.node("Mul", &[&x, &x], "sq", vec![]);
    b.node(
        "ReduceSum",
        &["sq", "axes"],
        "sumsq",
        vec![int_attr("keepdims", 1)],
    );
    b.node("Add", &["sumsq", "eps"], "sumsq_eps", vec![]);
    b.node("Sqrt", &["sumsq_eps"], "norm", vec![]);
    b.node("Div", &[&x, "norm"], "head", vec![]);
    let (i, o) = (layers[0].inputs, layers[layers.len() - 1].outputs);
    Ok(b.model(
        "triplet_head",
        value_info("embedding", &[None, Some(i)]),
        value_info("head", &[None, Some(o)]),
    ))
}

/// Logistic regression as ONNX: input `features` `[N, in]`, output `p_fake` `[N, 1]`.
pub fn logistic_model(weights: &[f32], bias: f32) -> Result<ModelProto> {
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    let l = Dense {
        weight: weights.to_vec(),
        bias: vec![bias],
        inputs: weights.len(),
        outputs: 1,
    };
    let z = b.gemm("features", &l, "logit")?;
    b.node("Sigmoid", &[&z], "p_fake", vec![]);
    Ok(b.model(
        "logistic",
        value_info("features", &[None, Some(weights.len())]),
        value_info("p_fake", &[None, Some(1)]),
    ))
}

/// The GRU sequence scorer as ONNX: input `sequence` `[1, T, inputs]`
/// (one track, oldest step first), output `logit` `[1, 1]`. `steps` fixes T
/// in the input's shape (`None`: any length). The batch is fixed at 1:
/// tract 0.23.9 panics wiring a GRU whose batch is symbolic and which has
/// no initial state (`ops/rec/common.rs`), and a track is scored on its own.
pub fn gru_model(g: &crate::sequence::GruWeights, steps: Option<usize>) -> Result<ModelProto> {
    let (i, h) = (g.inputs, g.hidden);
    ensure!(
        g.w.len() == 3 * h * i
            && g.r.len() == 3 * h * h
            && g.wb.len() == 3 * h
            && g.rb.len() == 3 * h
            && g.out_w.len() == h,
        "GRU weights have the wrong sizes"
    );
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    b.inits.push(tensor("gru.W", &[1, 3 * h, i], &g.w));
    b.inits.push(tensor("gru.R", &[1, 3 * h, h], &g.r));
    let bias: Vec<f32> = g.wb.iter().chain(&g.rb).copied().collect();
    b.inits.push(tensor("gru.B", &[1, 6 * h], &bias));
    b.inits.push(i64_tensor("shape_nh", &[-1, h as i64]));
    b.node(
        "Transpose",
        &["sequence"],
        "time_major",
        vec![ints_attr("perm", vec![1, 0, 2])],
    );
    b.nodes.push(NodeProto {
        op_type: "GRU".into(),
        name: "gru".into(),
        input: ["time_major", "gru.W", "gru.R", "gru.B"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        output: vec![String::new(), "last".into()],
        attribute: vec![
            int_attr("hidden_size", h as i64),
            int_attr("linear_before_reset", 1),
        ],
        ..Default::default()
    });
    b.node("Reshape", &["last", "shape_nh"], "last_nh", vec![]);
    let out = Dense {
        weight: g.out_w.clone(),
        bias: vec![g.out_b],
        inputs: h,
        outputs: 1,
    };
    let logit = b.gemm("last_nh", &out, "logit")?;
    debug_assert_eq!(logit, "logit");
    Ok(b.model(
        "gru_sequence",
        value_info("sequence", &[Some(1), steps, Some(i)]),
        value_info("logit", &[Some(1), Some(1)]),
    ))
}

/// The C3D sequence scorer as ONNX: input `crops` `[1, 3, T, S, S]` (one
/// track's clip of face crops, pixel values 0–255), the pixel scaling,
/// the temporal-difference stem (`Slice`, `Sub`, `Pad`, `Concat`), three
/// 3-D `Conv` + `LeakyRelu`, a mean over time (`ReduceMean`), a 2 × 2
/// `AveragePool`, `Flatten` and a `Gemm`
/// logit: output `logit` `[1, 1]`.
pub fn c3d_model(m: &crate::c3d::C3dModel) -> Result<ModelProto> {
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    b.inits
        .push(tensor("pixel_scale", &[], &[crate::c3d::PIXEL_SCALE]));
    b.inits
        .push(tensor("pixel_shift", &[], &[crate::c3d::PIXEL_SHIFT]));
    b.node("Mul", &["crops", "pixel_scale"], "scaled", vec![]);
    b.node("Add", &["scaled", "pixel_shift"], "pixels", vec![]);
    // The stem: each frame's change from the one before, 0 for the first,
    // beside the frames.
    ensure!(m.steps > 1, "a C3D clip needs 2 frames");
    let t = m.steps as i64;
    b.inits.push(i64_tensor("t_axis", &[2]));
    b.inits.push(i64_tensor("t_from1", &[1]));
    b.inits.push(i64_tensor("t_to_end", &[t]));
    b.inits.push(i64_tensor("t_from0", &[0]));
    b.inits.push(i64_tensor("t_to_last", &[t - 1]));
    b.inits
        .push(i64_tensor("diff_pads", &[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
    b.inits
        .push(tensor("diff_gain", &[], &[crate::c3d::DIFF_GAIN]));
    b.node(
        "Slice",
        &["pixels", "t_from1", "t_to_end", "t_axis"],
        "later",
        vec![],
    );
    b.node(
        "Slice",
        &["pixels", "t_from0", "t_to_last", "t_axis"],
        "earlier",
        vec![],
    );
    b.node("Sub", &["later", "earlier"], "change", vec![]);
    b.node("Mul", &["change", "diff_gain"], "change_scaled", vec![]);
    b.node(
        "Pad",
        &["change_scaled", "diff_pads"],
        "change_padded",
        vec![],
    );
    b.node(
        "Concat",
        &["pixels", "change_padded"],
        "x0",
        vec![int_attr("axis", 1)],
    );
    let mut x = "x0".to_string();
    let mut inputs = crate::c3d::STEM_CHANNELS;
    for (i, c) in m.convs.iter().enumerate() {
        ensure!(
            c.inputs == inputs
                && c.weight.len() == c.outputs * c.inputs * 27
                && c.bias.len() == c.outputs,
            "conv{i}: bad shapes"
        );
        let (w, bias) = (format!("conv{i}.weight"), format!("conv{i}.bias"));
        b.inits
            .push(tensor(&w, &[c.outputs, c.inputs, 3, 3, 3], &c.weight));
        b.inits.push(tensor(&bias, &[c.outputs], &c.bias));
        let conv = format!("conv{i}");
        b.node(
            "Conv",
            &[&x, &w, &bias],
            &conv,
            vec![
                ints_attr("kernel_shape", vec![3, 3, 3]),
                ints_attr("strides", c.stride.iter().map(|&s| s as i64).collect()),
                ints_attr("pads", vec![1; 6]),
            ],
        );
        let relu = format!("relu{i}");
        b.node(
            "LeakyRelu",
            &[&conv],
            &relu,
            vec![float_attr("alpha", crate::c3d::LEAK)],
        );
        x = relu;
        inputs = c.outputs;
    }
    let features = inputs * crate::c3d::head_cells(m.side);
    ensure!(m.out_w.len() == features, "logit weights do not fit");
    b.node(
        "ReduceMean",
        &[&x],
        "over_time",
        vec![ints_attr("axes", vec![2]), int_attr("keepdims", 0)],
    );
    let k = crate::c3d::HEAD_POOL as i64;
    b.node(
        "AveragePool",
        &["over_time"],
        "cells",
        vec![
            ints_attr("kernel_shape", vec![k, k]),
            ints_attr("strides", vec![k, k]),
        ],
    );
    b.node("Flatten", &["cells"], "pooled", vec![int_attr("axis", 1)]);
    let out = Dense {
        weight: m.out_w.clone(),
        bias: vec![m.out_b],
        inputs: features,
        outputs: 1,
    };
    let logit = b.gemm("pooled", &out, "logit")?;
    debug_assert_eq!(logit, "logit");
    let (t, s) = (Some(m.steps), Some(m.side));
    Ok(b.model(
        "c3d_sequence",
        value_info("crops", &[Some(1), Some(3), t, s, s]),
        value_info("logit", &[Some(1), Some(1)]),
    ))
}

/// The random forest as ONNX: `TreeEnsembleClassifier` (domain `ai.onnx.ml`,
/// `BRANCH_LEQ` nodes, each leaf weighted `(1 − p, p) / trees` so the summed
/// scores are the forest's mean) followed by a Slice of the fake column:
/// input `features` `[N, d]`, output `p_fake` `[N, 1]`.
pub fn forest_model(forest: &crate::forest::Forest) -> Result<ModelProto> {
    use crate::forest::Node;
    ensure!(!forest.trees.is_empty(), "forest has no trees");
    let t = forest.trees.len() as f32;
    let (mut tree_ids, mut node_ids, mut features, mut modes) = (vec![], vec![], vec![], vec![]);
    let (mut values, mut trues, mut falses) = (vec![], vec![], vec![]);
    let (mut c_tree, mut c_node, mut c_id, mut c_w) = (vec![], vec![], vec![], vec![]);
    for (ti, tree) in forest.trees.iter().enumerate() {
        for (ni, node) in tree.nodes.iter().enumerate() {
            tree_ids.push(ti as i64);
            node_ids.push(ni as i64);
            match *node {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    features.push(feature as i64);
                    modes.push("BRANCH_LEQ");
                    values.push(threshold);
                    trues.push(left as i64);
                    falses.push(right as i64);
                }
                Node::Leaf { p_fake } => {
                    features.push(0);
                    modes.push("LEAF");
                    values.push(0.0);
                    trues.push(0);
                    falses.push(0);
                    for (class, w) in [(0, 1.0 - p_fake), (1, p_fake)] {
                        c_tree.push(ti as i64);
                        c_node.push(ni as i64);
                        c_id.push(class);
                        c_w.push(w / t);
                    }
                }
            }
        }
    }
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    b.nodes.push(NodeProto {
        op_type: "TreeEnsembleClassifier".into(),
        domain: "ai.onnx.ml".into(),
        name: "forest".into(),
        input: vec!["features".into()],
        output: vec!["label".into(), "probabilities".into()],
        attribute: vec![
            ints_attr("classlabels_int64s", vec![0, 1]),
            ints_attr("nodes_treeids", tree_ids),
            ints_attr("nodes_nodeids", node_ids),
            ints_attr("nodes_featureids", features),
            strings_attr("nodes_modes", modes),
            floats_attr("nodes_values", values),
            ints_attr("nodes_truenodeids", trues),
            ints_attr("nodes_falsenodeids", falses),
            ints_attr("class_treeids", c_tree),
            ints_attr("class_nodeids", c_node),
            ints_attr("class_ids", c_id),
            floats_attr("class_weights", c_w),
            string_attr("post_transform", "NONE"),
        ],
        ..Default::default()
    });
    b.inits.push(i64_tensor("fake_start", &[1]));
    b.inits.push(i64_tensor("fake_end", &[2]));
    b.inits.push(i64_tensor("class_axis", &[1]));
    b.node(
        "Slice",
        &["probabilities", "fake_start", "fake_end", "class_axis"],
        "p_fake",
        vec![],
    );
    Ok(b.model(
        "random_forest",
        value_info("features", &[None, Some(forest.dim)]),
        value_info("p_fake", &[None, Some(1)]),
    ))
}

/// How the classifiers of the bags are combined (the paper's bagging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BagVote {
    /// Mean P(fake) of the bags.
    #[default]
    Mean,
    /// Majority vote: the share of bags whose P(fake) exceeds
    /// [`BAG_VOTE_THRESHOLD`] (a score in steps of 1/k, so ROC curves and a
    /// validation threshold still apply).
    MaxVote,
}

impl BagVote {
    /// Its name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::MaxVote => "max vote",
        }
    }
}

/// P(fake) above which a bag votes "fake" in [`BagVote::MaxVote`].
pub const BAG_VOTE_THRESHOLD: f32 = 0.5;

/// Combines the scores of the bags for one face, as the ONNX graph of
/// [`bagged_model`] does.
pub fn combine_bags(scores: &[f32], vote: BagVote) -> f32 {
    if scores.is_empty() {
        return f32::NAN;
    }
    let k = scores.len() as f32;
    match vote {
        BagVote::Mean => scores.iter().sum::<f32>() / k,
        BagVote::MaxVote => scores.iter().filter(|&&s| s > BAG_VOTE_THRESHOLD).count() as f32 / k,
    }
}

/// One classifier graph from k classifier graphs (each `features` `[N, d]`
/// → `p_fake` `[N, 1]`): every member's nodes and initializers are renamed
/// under `bagK.`, their outputs are concatenated to `bag_scores` `[N, k]`
/// and combined per [`BagVote`] into `p_fake` `[N, 1]`. The bags live in
/// one file, so the SDK runs a bagged bundle unchanged.
pub fn bagged_model(members: Vec<ModelProto>, vote: BagVote) -> Result<ModelProto> {
    ensure!(!members.is_empty(), "bagging needs at least one member");
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
    };
    let mut dim = None;
    let mut outs = Vec::with_capacity(members.len());
    for (k, m) in members.into_iter().enumerate() {
        let g = m.graph.context("bag member without a graph")?;
        let input = g.input.first().context("bag member without an input")?;
        ensure!(
            input.name == "features" && g.output.len() == 1 && g.output[0].name == "p_fake",
            "bag member {k} is not a features -> p_fake classifier"
        );
        let d = value_dims(input).and_then(|d| d.get(1).copied().flatten());
        ensure!(
            dim.is_none() || dim == Some(d),
            "bag members take inputs of different widths"
        );
        dim = Some(d);
        let rename = |n: &str| {
            if n == "features" || n.is_empty() {
                n.to_string()
            } else {
                format!("bag{k}.{n}")
            }
        };
        for mut t in g.initializer {
            t.name = rename(&t.name);
            b.inits.push(t);
        }
        for mut n in g.node {
            n.name = rename(&n.name);
            n.input = n.input.iter().map(|s| rename(s)).collect();
            n.output = n.output.iter().map(|s| rename(s)).collect();
            b.nodes.push(n);
        }
        outs.push(rename("p_fake"));
    }
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    b.node("Concat", &refs, "bag_scores", vec![int_attr("axis", 1)]);
    let scores = match vote {
        BagVote::Mean => "bag_scores",
        BagVote::MaxVote => {
            b.inits
                .push(tensor("vote_threshold", &[], &[BAG_VOTE_THRESHOLD]));
            b.node(
                "Greater",
                &["bag_scores", "vote_threshold"],
                "bag_votes_bool",
                vec![],
            );
            b.node(
                "Cast",
                &["bag_votes_bool"],
                "bag_votes",
                vec![int_attr("to", DataType::Float as i64)],
            );
            "bag_votes"
        }
    };
    b.node(
        "ReduceMean",
        &[scores],
        "p_fake",
        vec![ints_attr("axes", vec![1]), int_attr("keepdims", 1)],
    );
    Ok(b.model(
        "bagged_classifier",
        value_info("features", &[None, dim.flatten()]),
        value_info("p_fake", &[None, Some(1)]),
    ))
}

/// The dimensions of a value (`None` for a symbolic one).
fn value_dims(v: &ValueInfoProto) -> Option<Vec<Option<usize>>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) => usize::try_from(v).ok(),
                _ => None,
            })
            .collect(),
    )
}

/// Puts `(x − mean) · inv_std` in front of a model's only input, so a
/// classifier trained on standardised features takes raw ones (the graph
/// input keeps its name; the old input becomes an inner tensor).
pub fn prepend_standardization(
    model: &mut ModelProto,
    mean: &[f32],
    inv_std: &[f32],
) -> Result<()> {
    ensure!(mean.len() == inv_std.len(), "mean and scale lengths differ");
    let g = model.graph.as_mut().context("model has no graph")?;
    ensure!(g.input.len() == 1, "expected exactly one graph input");
    let input = g.input[0].name.clone();
    let inner = format!("{input}/standardised");
    for n in &mut g.node {
        for i in &mut n.input {
            if *i == input {
                *i = inner.clone();
            }
        }
    }
    let d = mean.len();
    let (m, s, c) = (
        format!("{input}/mean"),
        format!("{input}/inv_std"),
        format!("{input}/centred"),
    );
    g.initializer.push(tensor(&m, &[d], mean));
    g.initializer.push(tensor(&s, &[d], inv_std));
    let node = |op: &str, a: &str, b: &str, out: &str| NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: vec![a.into(), b.into()],
        output: vec![out.into()],
        ..Default::default()
    };
    let mut nodes = vec![node("Sub", &input, &m, &c), node("Mul", &c, &s, &inner)];
    nodes.append(&mut g.node);
    g.node = nodes;
    Ok(())
}

/// Writes a model to `path`.
pub fn save(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))
}

/// A tiny backbone for training tests: `[N, 3, 16, 16]` → Conv 3×3/2 →
/// Clip(0, 6) → depthwise Conv 3×3 → Relu → Conv 1×1 → GlobalAveragePool
/// `[N, 16, 1, 1]`, seeded weights. It has every op the fine-tuning paths
/// treat specially (full and depthwise convolutions, clamps).
#[cfg(test)]
pub(crate) fn tiny_backbone(seed: u64) -> ModelProto {
    let mut r = crate::rng::Rng::new(seed);
    let mut w = |n: usize, scale: f32| -> Vec<f32> {
        (0..n).map(|_| (r.uniform() * 2.0 - 1.0) * scale).collect()
    };
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    b.inits.push(tensor("c1.w", &[8, 3, 3, 3], &w(8 * 27, 0.4)));
    b.inits.push(tensor("c1.b", &[8], &w(8, 0.1)));
    b.inits.push(tensor("lo", &[], &[0.0]));
    b.inits.push(tensor("hi", &[], &[6.0]));
    b.inits.push(tensor("dw.w", &[8, 1, 3, 3], &w(8 * 9, 0.5)));
    b.inits.push(tensor("dw.b", &[8], &w(8, 0.1)));
    b.inits
        .push(tensor("c2.w", &[16, 8, 1, 1], &w(16 * 8, 0.5)));
    b.inits.push(tensor("c2.b", &[16], &w(16, 0.1)));
    let pads = || ints_attr("pads", vec![1, 1, 1, 1]);
    b.node(
        "Conv",
        &["x", "c1.w", "c1.b"],
        "c1",
        vec![ints_attr("strides", vec![2, 2]), pads()],
    );
    b.node("Clip", &["c1", "lo", "hi"], "r1", vec![]);
    b.node(
        "Conv",
        &["r1", "dw.w", "dw.b"],
        "dw",
        vec![int_attr("group", 8), pads()],
    );
    b.node("Relu", &["dw"], "r2", vec![]);
    b.node("Conv", &["r2", "c2.w", "c2.b"], "c2", vec![]);
    b.node("GlobalAveragePool", &["c2"], "y", vec![]);
    b.model(
        "tiny",
        value_info("x", &[None, Some(3), Some(16), Some(16)]),
        value_info("y", &[None, Some(16), Some(1), Some(1)]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::backend::{Backend, ShapePolicy, Tensor, TractBackend};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn dense(i: usize, o: usize, seed: &mut u64) -> Dense {
        Dense {
            weight: (0..i * o).map(|_| lcg(seed) * 0.3).collect(),
            bias: (0..o).map(|_| lcg(seed) * 0.1).collect(),
            inputs: i,
            outputs: o,
        }
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fakewatch-onnx-{name}-{}.onnx", std::process::id()))
    }

    #[test]
    fn head_round_trips_through_tract() {
        let mut seed = 7;
        let layers = vec![
            dense(512, 256, &mut seed),
            dense(256, 128, &mut seed),
            dense(128, 64, &mut seed),
        ];
        let path = tmp("head");
        save(&head_model(&layers).unwrap(), &path).unwrap();
        let m = TractBackend.load(&path, ShapePolicy::Symbolic).unwrap();
        let n = 3;
        let x: Vec<f32> = (0..n * 512).map(|_| lcg(&mut seed)).collect();
        let out = m
            .run(&Tensor::new(vec![n, 512], x.clone()).unwrap())
            .unwrap();
        assert_eq!(out[0].shape, vec![n, 64]);
        for r in 0..n {
            let want = mlp_forward(&layers, &x[r * 512..(r + 1) * 512]);
            for (a, b) in out[0].item(r).iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            let norm: f32 = out[0].item(r).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn forest_round_trips_through_tract() {
        use crate::forest::{fit, ForestConfig};
        let mut seed = 3;
        let x: Vec<Vec<f32>> = (0..300)
            .map(|_| (0..6).map(|_| lcg(&mut seed)).collect())
            .collect();
        let y: Vec<bool> = x.iter().map(|r| r[0] * r[1] > 0.0 || r[2] > 0.3).collect();
        let cfg = ForestConfig {
            trees: 7,
            max_depth: 6,
            ..Default::default()
        };
        let f = fit(&x, &y, &cfg).unwrap();
        let path = tmp("forest");
        save(&forest_model(&f).unwrap(), &path).unwrap();
        let m = TractBackend.load(&path, ShapePolicy::Symbolic).unwrap();
        let flat: Vec<f32> = x.iter().flatten().copied().collect();
        let out = m
            .run(&Tensor::new(vec![x.len(), 6], flat).unwrap())
            .unwrap();
        assert_eq!(out[0].shape, vec![x.len(), 1]);
        for (r, row) in x.iter().enumerate() {
            let want = f.predict(row);
            assert!(
                (out[0].data[r] - want).abs() < 1e-5,
                "{} vs {want}",
                out[0].data[r]
            );
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bagged_classifiers_round_trip_through_tract() {
        use crate::forest::{fit, ForestConfig};
        let mut seed = 11;
        let x: Vec<Vec<f32>> = (0..200)
            .map(|_| (0..4).map(|_| lcg(&mut seed)).collect())
            .collect();
        let y: Vec<bool> = x.iter().map(|r| r[0] + r[1] > 0.1).collect();
        let forest = fit(
            &x,
            &y,
            &ForestConfig {
                trees: 3,
                max_depth: 4,
                ..Default::default()
            },
        )
        .unwrap();
        let logistics = [
            (vec![1.0, 1.0, 0.0, 0.0], -0.1),
            (vec![2.0, 0.5, 0.0, 0.3], 0.2),
        ];
        let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
        let member_scores = |r: &[f32]| -> Vec<f32> {
            let mut s: Vec<f32> = logistics
                .iter()
                .map(|(w, b)| sig(w.iter().zip(r).map(|(a, b)| a * b).sum::<f32>() + b))
                .collect();
            s.push(forest.predict(r));
            s
        };
        let flat: Vec<f32> = x.iter().flatten().copied().collect();
        for vote in [BagVote::Mean, BagVote::MaxVote] {
            let mut members: Vec<ModelProto> = logistics
                .iter()
                .map(|(w, b)| logistic_model(w, *b).unwrap())
                .collect();
            members.push(forest_model(&forest).unwrap());
            let path = tmp(&format!("bagged-{vote:?}"));
            save(&bagged_model(members, vote).unwrap(), &path).unwrap();
            let m = TractBackend.load(&path, ShapePolicy::Symbolic).unwrap();
            let out = m
                .run(&Tensor::new(vec![x.len(), 4], flat.clone()).unwrap())
                .unwrap();
            assert_eq!(out[0].shape, vec![x.len(), 1]);
            let mut distinct = std::collections::BTreeSet::new();
            for (r, row) in x.iter().enumerate() {
                let want = combine_bags(&member_scores(row), vote);
                distinct.insert((want * 1000.0) as i32);
                assert!(
                    (out[0].data[r] - want).abs() < 1e-5,
                    "{vote:?}: {} vs {want}",
                    out[0].data[r]
                );
            }
            assert!(
                distinct.len() > 2,
                "{vote:?}: the test must see several scores"
            );
            let _ = std::fs::remove_file(path);
        }
        assert!(bagged_model(vec![], BagVote::Mean).is_err());
        assert!(bagged_model(
            vec![head_model(&[dense(4, 2, &mut seed)]).unwrap()],
            BagVote::Mean
        )
        .is_err());
        assert_eq!(combine_bags(&[0.2, 0.7, 0.9], BagVote::MaxVote), 2.0 / 3.0);
        assert!((combine_bags(&[0.2, 0.7, 0.9], BagVote::Mean) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn standardisation_in_front_of_a_classifier_equals_standardising_first() {
        let w = [0.5f32, -1.5, 2.0];
        let (mean, inv_std) = ([10.0f32, -2.0, 0.5], [0.1f32, 2.0, 1.0]);
        let mut m = logistic_model(&w, 0.25).unwrap();
        prepend_standardization(&mut m, &mean, &inv_std).unwrap();
        let path = tmp("std-logistic.onnx");
        save(&m, &path).unwrap();
        let model = TractBackend.load(&path, ShapePolicy::Symbolic).unwrap();
        let x = [12.0f32, -1.0, 3.0];
        let got = model
            .run(&Tensor::new(vec![1, 3], x.to_vec()).unwrap())
            .unwrap()[0]
            .data[0];
        let z: f32 = x
            .iter()
            .zip(mean.iter().zip(&inv_std))
            .zip(&w)
            .map(|((x, (m, s)), w)| (x - m) * s * w)
            .sum::<f32>()
            + 0.25;
        let want = 1.0 / (1.0 + (-z).exp());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn logistic_round_trips_through_tract() {
        let w = vec![0.5, -1.0, 2.0];
        let path = tmp("logistic");
        save(&logistic_model(&w, 0.25).unwrap(), &path).unwrap();
        let m = TractBackend.load(&path, ShapePolicy::Symbolic).unwrap();
        let out = m
            .run(&Tensor::new(vec![2, 3], vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]).unwrap())
            .unwrap();
        let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
        assert!((out[0].data[0] - sig(1.75)).abs() < 1e-6);
        assert!((out[0].data[1] - sig(0.25)).abs() < 1e-6);
        assert!(head_model(&[]).is_err());
        let _ = std::fs::remove_file(path);
    }
}
