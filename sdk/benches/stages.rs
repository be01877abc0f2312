//! Criterion benches of the perception stages on the repository photo
//! cropped to 720p (six faces), tract backend, one thread and all cores.
//!
//! `cargo bench -p fakewatch-sdk --bench stages` (add `-- detect` to filter).
//! End-to-end figures, FLOP floors and the reference comparison are
//! `fakewatch bench` (see bench/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failure
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use fakewatch_sdk::backend::{Backend, ShapePolicy, Tensor, TractBackend};
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::parallel::available_threads;
use fakewatch_sdk::perception::{Perception, PNET_PLAN_CACHE};
use fakewatch_sdk::{Detection, Frame};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn frame_720p() -> Frame {
    let f = Frame::load(root().join("tests/fixtures/t1.jpg")).expect("fixture");
    let mut data = Vec::new();
    for y in 60..780 {
        data.extend_from_slice(f.row(y).expect("row"));
    }
    Frame::from_rgb(1280, 720, data).expect("frame")
}

fn stages(c: &mut Criterion) {
    let bundle = Bundle::load(root().join("models/base")).expect("bundle");
    let frame = frame_720p();
    for threads in [1, available_threads()] {
        let mut p = Perception::from_bundle_with(
            &bundle,
            &TractBackend,
            ShapePolicy::PerShape {
                capacity: PNET_PLAN_CACHE,
            },
        )
        .expect("perception");
        p.set_threads(threads);
        let dets: Vec<Detection> = p.detect(&frame).expect("detect");
        let mut g = c.benchmark_group(format!("720p_6faces_{threads}t"));
        g.sample_size(10);
        g.bench_function("detect", |b| b.iter(|| p.detect(&frame).expect("detect")));
        g.bench_function("embed", |b| {
            b.iter(|| p.embed(&frame, &dets).expect("embed"))
        });
        g.bench_function("analyze", |b| {
            b.iter(|| p.analyze(&frame).expect("analyze"))
        });
        g.finish();
    }
    // Single runs of each network at the shapes the detector uses.
    let m = bundle.manifest();
    let mut g = c.benchmark_group("nets");
    g.sample_size(20);
    for (name, file, shape) in [
        ("pnet_385x217", &m.detector.pnet, vec![1, 3, 217, 385]),
        ("rnet_crop", &m.detector.rnet, vec![1, 3, 24, 24]),
        ("onet_crop", &m.detector.onet, vec![1, 3, 48, 48]),
        ("facenet_face", &m.backbone.file, vec![1, 3, 160, 160]),
    ] {
        let path = bundle.resolve(file).expect("model path");
        let model = TractBackend
            .load(&path, ShapePolicy::PerShape { capacity: 1 })
            .expect("load");
        let n: usize = shape.iter().product();
        let x = Tensor::new(shape, vec![0.1; n]).expect("tensor");
        g.bench_function(name, |b| b.iter(|| model.run(&x).expect("run")));
    }
    let aligner = p_aligner(&bundle);
    let dets = Perception::from_bundle(&bundle, &TractBackend)
        .expect("perception")
        .detect(&frame)
        .expect("detect");
    let mut buf = vec![0f32; aligner.item_len()];
    g.bench_function("align_6faces", |b| {
        b.iter(|| {
            for d in &dets {
                aligner
                    .align_into(
                        &frame,
                        d,
                        fakewatch_sdk::resample::Normalize::MTCNN,
                        &mut buf,
                    )
                    .expect("align");
            }
        })
    });
    g.finish();
}

fn p_aligner(bundle: &Bundle) -> fakewatch_sdk::align::Aligner {
    fakewatch_sdk::align::Aligner::new(bundle.manifest().aligner).expect("aligner")
}

criterion_group!(benches, stages);
criterion_main!(benches);
