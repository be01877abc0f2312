//! The onnxruntime backend's own contract (feature `ort`): a missing library
//! and an unavailable execution provider are errors or a logged fallback,
//! never a panic. Its numbers are checked against tract by the shared
//! backend suite (`models.rs`, `perception.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
#![cfg(feature = "ort")]

mod common;

use std::path::PathBuf;

use fakewatch_sdk::backend::{Backend, ShapePolicy, Tensor};
use fakewatch_sdk::ort_backend::{OrtBackend, OrtOptions, OrtProvider};
use fakewatch_sdk::Error;

fn options(provider: OrtProvider, strict: bool) -> Option<OrtOptions> {
    Some(OrtOptions {
        library: Some(common::ort_library()?),
        provider,
        strict,
        threads: 1,
    })
}

#[test]
fn a_missing_library_is_an_error() {
    let err = OrtBackend::new(OrtOptions {
        library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
        ..OrtOptions::default()
    })
    .unwrap_err();
    // Whether or not another test loaded the real library first, this one
    // is refused with a message naming the path.
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
}

#[test]
fn an_unknown_provider_name_is_an_error() {
    assert!(OrtProvider::parse("cpu").is_ok());
    assert!(OrtProvider::parse("tensorrt").is_ok());
    let err = OrtProvider::parse("opencl").unwrap_err();
    assert!(err.to_string().contains("opencl"), "{err}");
}

/// CUDA cannot register here (a CPU-only onnxruntime, and no GPU): strict
/// fails with a message, otherwise the model runs on the CPU provider.
#[test]
fn an_unavailable_provider_falls_back_unless_strict() {
    let model = common::root().join("models/mtcnn_rnet.onnx");
    let Some(strict) = options(OrtProvider::Cuda { device: 0 }, true) else {
        return;
    };
    let backend = OrtBackend::new(strict).unwrap();
    assert_eq!(backend.name(), "ort-cuda");
    let Err(err) = backend.load(&model, ShapePolicy::Symbolic) else {
        panic!("strict CUDA loaded on a machine without it");
    };
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(err.to_string().contains("mtcnn_rnet.onnx"), "{err}");
    eprintln!("strict CUDA: {err}");

    let lenient = options(OrtProvider::Cuda { device: 0 }, false).unwrap();
    let m = OrtBackend::new(lenient)
        .unwrap()
        .load(&model, ShapePolicy::Symbolic)
        .unwrap();
    let out = m
        .run(&Tensor::new(vec![2, 3, 24, 24], vec![0.1; 2 * 3 * 24 * 24]).unwrap())
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].batch(), 2);
}

#[test]
fn a_missing_model_file_is_an_error() {
    let Some(opts) = options(OrtProvider::Cpu, false) else {
        return;
    };
    let backend = OrtBackend::new(opts).unwrap();
    let Err(err) = backend.load(
        std::path::Path::new("/nonexistent.onnx"),
        ShapePolicy::Symbolic,
    ) else {
        panic!("a missing file loaded");
    };
    assert!(err.to_string().contains("nonexistent.onnx"), "{err}");
}
