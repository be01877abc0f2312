//! Multi-level features: intermediate activations of a backbone, each
//! global-average pooled over its spatial axes and concatenated in order.
//!
//! Identity embeddings are trained to ignore what a forgery leaves behind;
//! mid-level activations keep more of it (issue 23: a linear probe on faceres'
//! pooled `conv_pw_3..13` reached 0.79 test AUC where its 1024-d descriptor
//! reached 0.72). The bundle's `backbone.features` names the tensors; at load
//! the ONNX graph gains `GlobalAveragePool → Flatten` per tensor and one
//! `Concat` as an extra, last output, so every backend computes the pooled
//! vector in the same pass as the embedding, with its own kernels.
//!
//! A backbone may also carry *branches*: other ONNX backbones run on the same
//! aligned crop (`backbone.branches`). At load each branch's graph is merged
//! into the main one under a name prefix, fed by the main input through an
//! affine map that turns the main normalisation into the branch's, so the
//! features of two networks (faceres' and EfficientNet-Lite0's levels, say)
//! come out of one plan and one pass without a merged copy of their weights
//! on disk.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, ModelProto,
    NodeProto, TensorProto, TypeProto, ValueInfoProto,
};

/// Name of the graph output the pooled features are written to.
pub const POOLED_OUTPUT: &str = "fakewatch/pooled_features";

/// The bundle's `backbone.features` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Intermediate NCHW tensors of the backbone graph, pooled and
    /// concatenated in this order.
    pub pool: Vec<String>,
    /// Length of the concatenated vector (the sum of the tensors' channels,
    /// times the number of statistics).
    pub dim: usize,
    /// Statistics taken over each tensor's spatial axes, in this order:
    /// the vector is every tensor's first statistic, then every tensor's
    /// second, and so on. Absent: the mean only.
    #[serde(default = "default_stats", skip_serializing_if = "is_mean_only")]
    pub stats: Vec<PoolStat>,
}

/// A statistic of one channel over its spatial positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStat {
    /// Global average (`GlobalAveragePool`).
    Mean,
    /// Global maximum (`GlobalMaxPool`): the strongest local response, which
    /// an average over the face dilutes.
    Max,
    /// Standard deviation, `sqrt(max(0, E[x²] − E[x]²))`: texture contrast.
    Std,
}

fn default_stats() -> Vec<PoolStat> {
    vec![PoolStat::Mean]
}

fn is_mean_only(s: &Vec<PoolStat>) -> bool {
    s.as_slice() == [PoolStat::Mean]
}

/// Another backbone merged into the main graph (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The branch's ONNX file.
    pub path: PathBuf,
    /// Prefix given to every tensor, node and initializer name of the branch
    /// (`"lite0/"`: its `stage3` becomes `lite0/stage3`).
    pub prefix: String,
    /// The branch input is `main_input * scale + offset[channel]`.
    pub scale: f32,
    /// Per-channel offset of that map (channels in the main input's order).
    pub offset: [f32; 3],
}

impl Branch {
    /// The map from a main input normalised as `(x - main_mean) * main_scale`
    /// to a branch input normalised as `(x - mean) * scale`, `x` the pixel.
    pub fn affine(
        main_mean: [f32; 3],
        main_scale: f32,
        mean: [f32; 3],
        scale: f32,
    ) -> std::result::Result<(f32, [f32; 3]), String> {
        if main_scale == 0.0 || !main_scale.is_finite() || !scale.is_finite() {
            return Err("backbone and branch scales must be finite and non-zero".into());
        }
        let offset = [0, 1, 2].map(|c| (main_mean[c] - mean[c]) * scale);
        Ok((scale / main_scale, offset))
    }
}

/// A change made to an ONNX graph before a backend plans it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelEdit {
    /// Backbones merged into the graph before pooling (their tensors can be
    /// pooled under their prefix).
    pub branches: Vec<Branch>,
    /// Tensors to pool into the extra output [`POOLED_OUTPUT`]; empty: none.
    pub pool: Vec<String>,
    /// Statistics of each tensor (see [`FeatureSpec::stats`]); empty: the mean.
    pub stats: Vec<PoolStat>,
}

impl ModelEdit {
    /// No change.
    pub fn none() -> Self {
        Self::default()
    }

    /// Pools `spec`'s tensors into an extra output.
    pub fn pooled(spec: &FeatureSpec) -> Self {
        Self {
            branches: vec![],
            pool: spec.pool.clone(),
            stats: spec.stats.clone(),
        }
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty() && self.branches.is_empty()
    }

    /// Applies the edit to `proto`: merges the branches, then pools. A tensor
    /// that no node produces is an error naming it (a typo in a bundle must
    /// not silently drop a level).
    pub fn apply(&self, proto: &mut ModelProto) -> std::result::Result<(), String> {
        for b in &self.branches {
            let name = b.path.display().to_string();
            use tract_onnx::prelude::Framework;
            let branch = tract_onnx::onnx()
                .proto_model_for_path(&b.path)
                .map_err(|e| format!("branch {name}: {e:#}"))?;
            merge_branch(proto, branch, b).map_err(|e| format!("branch {name}: {e}"))?;
        }
        if self.pool.is_empty() {
            return Ok(());
        }
        let g = proto
            .graph
            .as_mut()
            .ok_or_else(|| "the model has no graph".to_string())?;
        let produced: std::collections::HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        if let Some(missing) = self.pool.iter().find(|t| !produced.contains(t.as_str())) {
            return Err(format!(
                "backbone.features names tensor {missing:?}, which no node of the graph produces"
            ));
        }
        if g.output.iter().any(|o| o.name == POOLED_OUTPUT) {
            return Err(format!("the graph already has an output {POOLED_OUTPUT:?}"));
        }
        let stats = if self.stats.is_empty() {
            default_stats()
        } else {
            self.stats.clone()
        };
        if let Some(twice) = stats
            .iter()
            .enumerate()
            .find(|(k, s)| stats[..*k].contains(s))
        {
            return Err(format!("backbone.features.stats lists {:?} twice", twice.1));
        }
        let mut flat = Vec::with_capacity(self.pool.len() * stats.len());
        // Each tensor's mean is computed once, whether asked for or for a std.
        let mut means = HashSet::new();
        for stat in stats {
            for (i, t) in self.pool.iter().enumerate() {
                let p = |what: &str| format!("{POOLED_OUTPUT}/{what}{i}");
                let pooled = match stat {
                    PoolStat::Mean => p("gap"),
                    PoolStat::Max => p("gmp"),
                    PoolStat::Std => p("std"),
                };
                match stat {
                    PoolStat::Mean => {
                        if means.insert(i) {
                            g.node
                                .push(node("GlobalAveragePool", &[t], &pooled, vec![]));
                        }
                    }
                    PoolStat::Max => g.node.push(node("GlobalMaxPool", &[t], &pooled, vec![])),
                    PoolStat::Std => {
                        let (mean, sq, mean_sq, mean2, var, pos) = (
                            p("gap"),
                            p("sq"),
                            p("gap_sq"),
                            p("mean2"),
                            p("var"),
                            p("var_pos"),
                        );
                        if means.insert(i) {
                            g.node.push(node("GlobalAveragePool", &[t], &mean, vec![]));
                        }
                        g.node.push(node("Mul", &[t, t], &sq, vec![]));
                        g.node
                            .push(node("GlobalAveragePool", &[&sq], &mean_sq, vec![]));
                        g.node.push(node("Mul", &[&mean, &mean], &mean2, vec![]));
                        g.node.push(node("Sub", &[&mean_sq, &mean2], &var, vec![]));
                        // Rounding can make E[x²] − E[x]² slightly negative.
                        g.node.push(node("Relu", &[&var], &pos, vec![]));
                        g.node.push(node("Sqrt", &[&pos], &pooled, vec![]));
                    }
                }
                let f = format!("{pooled}/flat");
                g.node
                    .push(node("Flatten", &[&pooled], &f, vec![int_attr("axis", 1)]));
                flat.push(f);
            }
        }
        let inputs: Vec<&str> = flat.iter().map(String::as_str).collect();
        g.node.push(node(
            "Concat",
            &inputs,
            POOLED_OUTPUT,
            vec![int_attr("axis", 1)],
        ));
        g.output.push(ValueInfoProto {
            name: POOLED_OUTPUT.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
        Ok(())
    }
}

/// The version of the default ONNX operator set a model imports.
fn default_opset(m: &ModelProto) -> Option<i64> {
    m.opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

/// The graph's one input that is not an initializer.
fn data_input(g: &tract_onnx::pb::GraphProto) -> std::result::Result<String, String> {
    let init: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !init.contains(n))
        .collect();
    match inputs.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(format!("expected one data input, found {inputs:?}")),
    }
}

/// Merges `branch` into `main` under `b.prefix`, its input fed by the main
/// input through `x * b.scale + b.offset`.
fn merge_branch(
    main: &mut ModelProto,
    branch: ModelProto,
    b: &Branch,
) -> std::result::Result<(), String> {
    if b.prefix.is_empty() {
        return Err("a branch needs a non-empty prefix".into());
    }
    if default_opset(main) != default_opset(&branch) {
        return Err(format!(
            "its ONNX opset {:?} differs from the main backbone's {:?}",
            default_opset(&branch),
            default_opset(main)
        ));
    }
    let bg = branch
        .graph
        .ok_or_else(|| "the model has no graph".to_string())?;
    let g = main
        .graph
        .as_mut()
        .ok_or_else(|| "the main model has no graph".to_string())?;
    let main_input = data_input(g)?;
    let branch_input = data_input(&bg)?;
    if bg.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Err("branches with subgraphs (If, Loop, Scan) are not supported".into());
    }
    let rename = |n: &str| {
        if n.is_empty() {
            String::new()
        } else {
            format!("{}{n}", b.prefix)
        }
    };
    let existing: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .chain(g.input.iter().map(|i| i.name.clone()))
        .collect();
    let scale = format!("{}fakewatch/scale", b.prefix);
    let offset = format!("{}fakewatch/offset", b.prefix);
    let scaled = format!("{}fakewatch/scaled", b.prefix);
    let mut renamed: HashMap<String, String> = HashMap::new();
    for t in bg.initializer.iter().map(|t| t.name.as_str()).chain(
        bg.node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    ) {
        renamed.insert(t.to_string(), rename(t));
    }
    renamed.insert(branch_input.clone(), rename(&branch_input));
    if let Some(clash) = renamed
        .values()
        .chain([&scale, &offset, &scaled])
        .find(|n| existing.contains(*n))
    {
        return Err(format!(
            "its tensor {clash:?} clashes with a name of the main graph (choose another prefix)"
        ));
    }
    g.initializer.push(TensorProto {
        name: scale.clone(),
        data_type: DataType::Float as i32,
        float_data: vec![b.scale],
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: offset.clone(),
        dims: vec![1, 3, 1, 1],
        data_type: DataType::Float as i32,
        float_data: b.offset.to_vec(),
        ..Default::default()
    });
    g.node
        .push(node("Mul", &[&main_input, &scale], &scaled, vec![]));
    g.node.push(node(
        "Add",
        &[&scaled, &offset],
        &rename(&branch_input),
        vec![],
    ));
    for mut t in bg.initializer {
        t.name = rename(&t.name);
        g.initializer.push(t);
    }
    for mut n in bg.node {
        n.name = rename(&n.name);
        for i in n.input.iter_mut() {
            // Names the branch does not define stay as they are (none should).
            if let Some(r) = renamed.get(i.as_str()) {
                *i = r.clone();
            }
        }
        for o in n.output.iter_mut() {
            *o = rename(o);
        }
        g.node.push(n);
    }
    Ok(())
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> ModelProto {
        ModelProto {
            graph: Some(tract_onnx::pb::GraphProto {
                node: vec![
                    node("Relu", &["x"], "a", vec![]),
                    node("Relu", &["a"], "b", vec![]),
                ],
                output: vec![ValueInfoProto {
                    name: "b".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn adds_one_concatenated_output_after_the_original() {
        let mut m = graph();
        let edit = ModelEdit {
            pool: vec!["a".into(), "b".into()],
            ..ModelEdit::none()
        };
        edit.apply(&mut m).unwrap();
        let g = m.graph.unwrap();
        let outs: Vec<_> = g.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outs, ["b", POOLED_OUTPUT]);
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Relu",
                "Relu",
                "GlobalAveragePool",
                "Flatten",
                "GlobalAveragePool",
                "Flatten",
                "Concat"
            ]
        );
        assert_eq!(g.node[6].input.len(), 2);
    }

    /// Mean, max and std of a known 2-channel 2×2 map, through tract.
    #[test]
    fn statistics_of_a_known_map() {
        use tract_onnx::prelude::*;
        let input = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(tract_onnx::pb::TensorShapeProto {
                        dim: [1, 2, 2, 2]
                            .iter()
                            .map(|&d| tract_onnx::pb::tensor_shape_proto::Dimension {
                                value: Some(
                                    tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(
                                        d,
                                    ),
                                ),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut m = ModelProto {
            graph: Some(tract_onnx::pb::GraphProto {
                node: vec![node("Relu", &["x"], "a", vec![])],
                input: vec![input],
                output: vec![ValueInfoProto {
                    name: "a".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            opset_import: vec![tract_onnx::pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        };
        let edit = ModelEdit {
            pool: vec!["a".into()],
            stats: vec![PoolStat::Mean, PoolStat::Max, PoolStat::Std],
            ..ModelEdit::none()
        };
        edit.apply(&mut m).unwrap();
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&m)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        // Channel 0: 1, 2, 3, 6; channel 1: 4 × 5 (constant).
        let x = tract_ndarray::Array4::from_shape_vec(
            (1, 2, 2, 2),
            vec![1f32, 2., 3., 6., 5., 5., 5., 5.],
        )
        .unwrap();
        let out = plan.run(tvec!(x.into_tensor().into_tvalue())).unwrap();
        let v: Vec<f32> = out[1]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let std0 = ((1f32 + 4. + 9. + 36.) / 4. - 9.).sqrt();
        let want = [3.0, 5.0, 6.0, 5.0, std0, 0.0];
        for (g, w) in v.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{v:?} vs {want:?}");
        }
    }

    #[test]
    fn a_branch_is_merged_under_its_prefix_behind_the_affine_map() {
        let with_input = |input: &str, init: Option<&str>| {
            let mut m = graph();
            let g = m.graph.as_mut().unwrap();
            g.node[0].input = vec![input.into()];
            g.input = vec![ValueInfoProto {
                name: input.into(),
                ..Default::default()
            }];
            if let Some(w) = init {
                g.initializer.push(TensorProto {
                    name: w.into(),
                    ..Default::default()
                });
                g.input.push(ValueInfoProto {
                    name: w.into(),
                    ..Default::default()
                });
                g.node[1].input.push(w.into());
            }
            m.opset_import = vec![tract_onnx::pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }];
            m
        };
        let mut main = with_input("x", None);
        let branch = with_input("img", Some("w"));
        let b = Branch {
            path: "branch.onnx".into(),
            prefix: "br/".into(),
            scale: 2.0,
            offset: [1.0, 2.0, 3.0],
        };
        merge_branch(&mut main, branch.clone(), &b).unwrap();
        let g = main.graph.as_ref().unwrap();
        let ops: Vec<(&str, Vec<&str>, &str)> = g
            .node
            .iter()
            .map(|n| {
                (
                    n.op_type.as_str(),
                    n.input.iter().map(String::as_str).collect(),
                    n.output[0].as_str(),
                )
            })
            .collect();
        assert_eq!(
            ops[2..],
            [
                (
                    "Mul",
                    vec!["x", "br/fakewatch/scale"],
                    "br/fakewatch/scaled"
                ),
                (
                    "Add",
                    vec!["br/fakewatch/scaled", "br/fakewatch/offset"],
                    "br/img"
                ),
                ("Relu", vec!["br/img"], "br/a"),
                ("Relu", vec!["br/a", "br/w"], "br/b"),
            ]
        );
        // The main graph's outputs and input are unchanged.
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.input.len(), 1);
        let offset = g
            .initializer
            .iter()
            .find(|t| t.name == "br/fakewatch/offset");
        assert_eq!(offset.unwrap().float_data, [1.0, 2.0, 3.0]);
        assert!(g.initializer.iter().any(|t| t.name == "br/w"));
        // The same branch again under the same prefix clashes; another opset refuses.
        let e = merge_branch(&mut main, branch.clone(), &b).unwrap_err();
        assert!(e.contains("clashes"), "{e}");
        let mut old = branch;
        old.opset_import[0].version = 11;
        let e = merge_branch(&mut with_input("x", None), old, &b).unwrap_err();
        assert!(e.contains("opset"), "{e}");
    }

    #[test]
    fn the_affine_map_turns_one_normalisation_into_the_other() {
        // faceres takes pixels (mean 0, scale 1); Lite0 takes (x - 127) / 128.
        let (scale, offset) = Branch::affine([0.0; 3], 1.0, [127.0; 3], 1.0 / 128.0).unwrap();
        for pixel in [0.0f32, 127.0, 255.0] {
            let main_input = (pixel - 0.0) * 1.0;
            let want = (pixel - 127.0) / 128.0;
            assert!((main_input * scale + offset[0] - want).abs() < 1e-6);
        }
        // From a normalised main input back to another normalisation.
        let (scale, offset) = Branch::affine([127.5; 3], 1.0 / 128.0, [0.0; 3], 1.0).unwrap();
        let main_input = (200.0 - 127.5) / 128.0;
        assert!((main_input * scale + offset[1] - 200.0).abs() < 1e-3);
        assert!(Branch::affine([0.0; 3], 0.0, [0.0; 3], 1.0).is_err());
    }

    #[test]
    fn unknown_tensor_is_an_error_naming_it() {
        let mut m = graph();
        let edit = ModelEdit {
            pool: vec!["nope".into()],
            ..ModelEdit::none()
        };
        let e = edit.apply(&mut m).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        let twice = ModelEdit {
            pool: vec!["a".into()],
            stats: vec![PoolStat::Max, PoolStat::Max],
            ..ModelEdit::none()
        };
        let e = twice.apply(&mut graph()).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn empty_edit_changes_nothing() {
        let mut m = graph();
        ModelEdit::none().apply(&mut m).unwrap();
        assert_eq!(m, graph());
    }
}
