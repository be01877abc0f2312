//! Model files: each one matches the manifest's sha256 and loads in every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use fakewatch_sdk::backend::{ShapePolicy, Tensor};
use fakewatch_sdk::bundle::sha256_file;

#[test]
fn manifest_sha256_and_load() {
    let root = common::root();
    let text = std::fs::read_to_string(root.join("models/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let models = manifest["models"].as_object().expect("models map");
    for name in [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "facenet.onnx",
        "efficientnet_lite0.onnx",
        "default/classifier.onnx",
    ] {
        assert!(models.contains_key(name), "manifest lacks {name}");
    }
    // Every ONNX file under models/ is in the manifest.
    let mut onnx = Vec::new();
    let mut dirs = vec![root.join("models")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                onnx.push(p);
            }
        }
    }
    for p in onnx {
        let rel = p.strip_prefix(root.join("models")).unwrap();
        let rel = rel.to_str().unwrap();
        assert!(
            models.contains_key(rel),
            "{rel} is not in models/manifest.json"
        );
    }
    for (name, meta) in models {
        let path = root.join("models").join(name);
        let want = meta["sha256"].as_str().unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            want,
            "{name} differs from the manifest"
        );
        for key in ["source", "licence", "normalisation", "input", "sha256"] {
            assert!(meta.get(key).is_some(), "{name}: manifest lacks {key}");
        }
        if meta["source"].get("registry").is_some() {
            // Converted from a registry package: say from where and how.
            for key in ["conversion", "path_in_package"] {
                assert!(meta.get(key).is_some(), "{name}: manifest lacks {key}");
            }
        }
        // Load and run once on a zero input of the declared shape (symbolic dims = 1 or 48).
        let shape: Vec<usize> = meta["input"]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|v| v as usize)
                    .unwrap_or(if d == "N" { 1 } else { 48 })
            })
            .collect();
        // Then on a seeded input in [-1, 1), where every backend's outputs
        // must match tract's within the case's value tolerance.
        let n: usize = shape.iter().product();
        let mut seed = 0x9e37_79b9_u32;
        let varied: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect();
        let varied = Tensor::new(shape.clone(), varied).unwrap();
        let mut reference: Option<Vec<Tensor>> = None;
        for case in common::backends() {
            let started = std::time::Instant::now();
            let m = case.backend.load(&path, ShapePolicy::Symbolic).unwrap();
            let got = m.run(&varied).unwrap();
            assert!(!got.is_empty());
            assert!(
                got.iter().all(|t| t.data.iter().all(|v| v.is_finite())),
                "{name}: non-finite output"
            );
            match &reference {
                None => reference = Some(got),
                Some(want) => {
                    assert_eq!(got.len(), want.len(), "{name}");
                    for (g, w) in got.iter().zip(want) {
                        assert_eq!(g.shape, w.shape, "{name}");
                        // Absolute below 1, relative above (EfficientNet-Lite0's
                        // pooled ReLU6 outputs reach ~6: ort-cpu vs tract 9.1e-6
                        // absolute, 1.5e-6 relative, on this project's 2-core x86).
                        let d = g
                            .data
                            .iter()
                            .zip(&w.data)
                            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                            .fold(0f32, f32::max);
                        eprintln!("{name}: {} vs tract: {d}", case.backend.name());
                        // Files written by `fakewatch-train quantize` are QDQ int8.
                        let int8 = meta["source"].get("quantization").is_some();
                        let tol = if int8 {
                            case.int8_value_tol
                        } else {
                            case.value_tol
                        };
                        assert!(d <= tol, "{name} on {}: {d}", case.backend.name());
                    }
                }
            }
            // And on zeros (a black image). Native only: under qemu-user
            // (`.ci/aarch64`) each run of a backbone takes minutes, and the
            // run above already loads, runs and checks every model there.
            if cfg!(not(target_arch = "aarch64")) {
                let out = m
                    .run(&Tensor::new(shape.clone(), vec![0.0; n]).unwrap())
                    .unwrap();
                assert!(!out.is_empty());
                assert!(
                    out.iter().all(|t| t.data.iter().all(|v| v.is_finite())),
                    "{name}: non-finite output on zeros"
                );
            }
            eprintln!(
                "{name} on {}: loaded and run in {:.1} s",
                case.backend.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let fx = &manifest["fixtures"]["tests/fixtures/t1.jpg"];
    assert_eq!(
        sha256_file(&root.join("tests/fixtures/t1.jpg")).unwrap(),
        fx["sha256"].as_str().unwrap()
    );
}

#[test]
fn wrong_input_shape_is_an_error_not_a_panic() {
    let path = common::root().join("models/mtcnn_rnet.onnx");
    for case in common::backends() {
        let m = case.backend.load(&path, ShapePolicy::Symbolic).unwrap();
        assert!(m
            .run(&Tensor::new(vec![1, 3, 12, 12], vec![0.0; 432]).unwrap())
            .is_err());
        assert!(m
            .run(&Tensor::new(vec![0, 3, 24, 24], vec![]).unwrap())
            .is_err());
    }
    assert!(fakewatch_sdk::backend::TractBackend.load_missing_is_error());
}

trait MissingFile {
    fn load_missing_is_error(&self) -> bool;
}

impl MissingFile for fakewatch_sdk::backend::TractBackend {
    fn load_missing_is_error(&self) -> bool {
        use fakewatch_sdk::backend::Backend;
        self.load(
            std::path::Path::new("/nonexistent.onnx"),
            ShapePolicy::Symbolic,
        )
        .is_err()
    }
}
