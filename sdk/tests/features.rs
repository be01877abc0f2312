//! Multi-level pooled features (`backbone.features`): computed in the same
//! pass as the embedding, equal across backends, and consistent with the
//! embedding where the two overlap.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use fakewatch_sdk::align::Aligner;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::embed::{Embedder, Embedding};
use fakewatch_sdk::pooling::FeatureSpec;
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
