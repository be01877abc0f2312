//! `fakewatch-train fit` end to end on the shared DFDC crops (a small seeded
//! configuration): the bundle it writes loads in the SDK, scans, and a rerun
//! reproduces the same metrics from the embedding cache.
//!
//! Needs ../shared (research data); skips without it.

use fakewatch_tests::{ndjson, root, run, scratch, shared};

fn fit(out: &std::path::Path, cache: &std::path::Path) -> serde_json::Value {
    let o = run(
        "fakewatch-train",
        &[
            "fit",
            "--config",
            "trainer/configs/smoke.json",
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fit_writes_a_bundle_that_scans_and_reproduces() {
    if shared().is_none() {
        return;
    }
    let dir = scratch("fit");
    let cache = dir.join("cache");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let ra = fit(&a, &cache);
    let rb = fit(&b, &cache);
    for r in [&ra, &rb] {
        assert!(r["sdk_max_abs_diff"].as_f64().unwrap() < 1e-4);
        let auc = r["bundle"]["frame"]["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc));
    }
    assert_eq!(ra["bundle"], rb["bundle"], "same seed, same metrics");
    for f in [
        "bundle.json",
        "head.onnx",
        "classifier.onnx",
        "roc.png",
        "tsne_head.png",
        "MODEL_CARD.md",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let bundle = fakewatch_sdk::bundle::Bundle::load(&a).unwrap();
    let m = bundle.manifest();
    assert_eq!(m.classifier.as_ref().unwrap().kind, "random_forest");
    assert_eq!(m.decision.as_ref().unwrap().frames, 4);
    assert!(m.training.is_some());
    // Models are referenced, not copied.
    assert!(!a.join("facenet.onnx").exists());

    let t1 = root().join("tests/fixtures/t1.jpg");
    let out = run(
        "fakewatch",
        &[
            "scan",
            "--json",
            "--bundle",
            a.to_str().unwrap(),
            t1.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = &ndjson(&out.stdout)[0];
    assert_eq!(o["faces"], 6);
    assert!(o["score"].as_f64().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
