//! Multi-level pooled features (`backbone.features`): computed in the same
//! pass as the embedding, equal across backends, and consistent with the
//! embedding where the two overlap.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use fakewatch_sdk::align::Aligner;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::embed::{Embedder, Embedding};
use fakewatch_sdk::pooling::{FeatureSpec, PoolStat};
use fakewatch_sdk::{Error, Frame, Perception};

fn t1() -> Frame {
    Frame::load(common::root().join("tests/fixtures/t1.jpg")).unwrap()
}

/// For each multi-level bundle: its features, the channels of its last pooled
/// tensor (which is the tensor its embedding pools).
const BUNDLES: [(&str, usize, usize); 2] = [
    ("models/base-faceres-ml", 2944, 1024),
    ("models/base-lite0-ml", 2024, 1280),
];

#[test]
fn pooled_features_match_the_embedding_and_every_backend() {
    let frame = t1();
    for (dir, dim, last) in BUNDLES {
        let bundle = Bundle::load(common::root().join(dir)).unwrap();
        let spec = bundle.manifest().backbone.features.clone().unwrap();
        assert_eq!(spec.dim, dim, "{dir}");
        let mut reference: Option<Vec<Vec<f32>>> = None;
        for case in common::backends() {
            let p = Perception::from_bundle(&bundle, case.backend.as_ref()).unwrap();
            let faces = p.analyze(&frame).unwrap();
            assert_eq!(faces.len(), 6, "{dir}");
            let feats: Vec<Vec<f32>> = faces
                .iter()
                .map(|f| f.features.clone().expect("pooled features"))
                .collect();
            for (f, v) in faces.iter().zip(&feats) {
                assert_eq!(v.len(), dim);
                assert_eq!(f.scoring_input(), v.as_slice());
                assert!(v.iter().all(|x| x.is_finite()));
                // The last level pooled is what the backbone's own output
                // averages: once L2-normalised it is the embedding.
                let tail = Embedding::normalized(v[dim - last..].to_vec());
                let d = tail
                    .0
                    .iter()
                    .zip(&f.embedding.0)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{dir} on {}: {d}", case.backend.name());
            }
            match &reference {
                None => reference = Some(feats),
                Some(want) => {
                    let d = feats
                        .iter()
                        .flatten()
                        .zip(want.iter().flatten())
                        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                        .fold(0f32, f32::max);
                    eprintln!("{dir}: {} vs tract: {d}", case.backend.name());
                    assert!(d <= case.value_tol, "{dir} on {}: {d}", case.backend.name());
                }
            }
        }
    }
}

#[test]
fn a_tensor_the_graph_lacks_is_an_error_naming_it() {
    let bundle = Bundle::load(common::root().join("models/base-faceres-ml")).unwrap();
    let m = bundle.manifest();
    let mut config = m.backbone.clone();
    config.features = Some(FeatureSpec {
        pool: vec![
            "conv_pw_3_relu/clip_by_value:0".into(),
            "no_such_tensor".into(),
        ],
        dim: 10,
        stats: vec![PoolStat::Mean],
    });
    for case in common::backends() {
        let e = Embedder::load(
            case.backend.as_ref(),
            &bundle.resolve(&m.backbone.file).unwrap(),
            config.clone(),
            Aligner::new(m.aligner).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Model { .. }), "{e:?}");
        assert!(e.to_string().contains("no_such_tensor"), "{e}");
    }
}

#[test]
fn a_wrong_dim_is_an_error_not_a_panic() {
    let bundle = Bundle::load(common::root().join("models/base-faceres-ml")).unwrap();
    let m = bundle.manifest();
    let mut config = m.backbone.clone();
    if let Some(f) = config.features.as_mut() {
        f.dim += 1;
    }
    let embedder = Embedder::load(
        &fakewatch_sdk::backend::TractBackend,
        &bundle.resolve(&m.backbone.file).unwrap(),
        config,
        Aligner::new(m.aligner).unwrap(),
    )
    .unwrap();
    let e = embedder.describe_crops(&[t1()]).unwrap_err();
    assert!(e.to_string().contains("backbone.features.dim"), "{e}");
}

/// A backbone with a branch (`models/base-faceres-lite0-ml`: EfficientNet-Lite0
/// merged into faceres at load) gives, in one pass, exactly the features the
/// two backbones give on their own: faceres' levels, then Lite0's, each on
/// its own normalisation of the same crop.
#[test]
fn a_branch_gives_the_features_of_its_backbones_on_their_own() {
    let frame = t1();
    let load = |dir: &str| Bundle::load(common::root().join(dir)).unwrap();
    let (both, faceres, lite0) = (
        load("models/base-faceres-lite0-ml"),
        load("models/base-faceres-ml"),
        load("models/base-lite0-ml"),
    );
    assert_eq!(both.manifest().backbone.branches.len(), 1);
    for case in common::backends() {
        let b = case.backend.as_ref();
        let feats = |bundle: &Bundle| -> Vec<Vec<f32>> {
            let p = Perception::from_bundle(bundle, b).unwrap();
            p.analyze(&frame)
                .unwrap()
                .into_iter()
                .map(|f| f.features.expect("pooled features"))
                .collect()
        };
        let (got, a, c) = (feats(&both), feats(&faceres), feats(&lite0));
        assert_eq!(got.len(), 6);
        let mut worst = 0f32;
        for ((g, a), c) in got.iter().zip(&a).zip(&c) {
            assert_eq!(g.len(), 4968);
            let want: Vec<f32> = a.iter().chain(c).copied().collect();
            for (x, y) in g.iter().zip(&want) {
                worst = worst.max((x - y).abs() / y.abs().max(1.0));
            }
        }
        eprintln!("branch vs separate on {}: {worst}", b.name());
        assert!(worst <= 1e-4, "{}: {worst}", b.name());
    }
}

#[test]
fn a_branch_without_its_file_or_with_a_clashing_prefix_is_an_error() {
    let bundle = Bundle::load(common::root().join("models/base-faceres-lite0-ml")).unwrap();
    let m = bundle.manifest();
    let main = bundle.resolve(&m.backbone.file).unwrap();
    let lite0 = bundle.resolve(&m.backbone.branches[0].file).unwrap();
    let aligner = || Aligner::new(m.aligner).unwrap();
    let tract = &fakewatch_sdk::backend::TractBackend;
    // The branch's file not given.
    let e = Embedder::load(tract, &main, m.backbone.clone(), aligner()).unwrap_err();
    assert!(e.to_string().contains("branches"), "{e}");
    // A file that is not ONNX.
    let not_onnx = common::root().join("tests/fixtures/t1.jpg");
    let e = Embedder::load_with_branches(tract, &main, &[not_onnx], m.backbone.clone(), aligner())
        .unwrap_err();
    assert!(e.to_string().contains("branch"), "{e}");
    // Merging faceres into itself without a prefix that separates the names.
    let mut config = m.backbone.clone();
    config.branches[0].prefix = String::new();
    let e = Embedder::load_with_branches(tract, &main, &[lite0], config, aligner()).unwrap_err();
    assert!(e.to_string().contains("prefix"), "{e}");
}

/// Max and standard-deviation pooling: the vector is every level's mean,
/// then every level's max, then every level's std, with the means exactly
/// those of a mean-only bundle.
#[test]
fn max_and_std_pooling_follow_the_means() {
    let bundle = Bundle::load(common::root().join("models/base-faceres-ml")).unwrap();
    let m = bundle.manifest();
    let aligner = || Aligner::new(m.aligner).unwrap();
    let path = bundle.resolve(&m.backbone.file).unwrap();
    let tract = &fakewatch_sdk::backend::TractBackend;
    let mean_only = Embedder::load(tract, &path, m.backbone.clone(), aligner()).unwrap();
    let mut config = m.backbone.clone();
    if let Some(f) = config.features.as_mut() {
        f.stats = vec![PoolStat::Mean, PoolStat::Max, PoolStat::Std];
        f.dim *= 3;
    }
    let all = Embedder::load(tract, &path, config, aligner()).unwrap();
    let frame = t1();
    let p = Perception::from_bundle(&bundle, tract).unwrap();
    let dets = p.detect(&frame).unwrap();
    let want = mean_only.describe_detections(&frame, &dets).unwrap();
    let got = all.describe_detections(&frame, &dets).unwrap();
    assert_eq!(got.len(), 6);
    for (g, w) in got.iter().zip(&want) {
        let (g, w) = (g.features.as_ref().unwrap(), w.features.as_ref().unwrap());
        let n = w.len();
        assert_eq!(g.len(), 3 * n);
        assert_eq!(&g[..n], w.as_slice());
        for i in 0..n {
            let (mean, max, std) = (g[i], g[n + i], g[2 * n + i]);
            assert!(max >= mean - 1e-6, "max {max} < mean {mean}");
            assert!(std >= 0.0 && std.is_finite());
            // ReLU6 activations: in [0, 6], so a std is at most 3.
            assert!(std <= 3.0 + 1e-4, "std {std}");
            // A channel that is constant has no spread and its max is its mean.
            if std == 0.0 {
                assert!((max - mean).abs() < 1e-4);
            }
        }
        assert!(g[2 * n..].iter().any(|&s| s > 0.01));
    }
}
