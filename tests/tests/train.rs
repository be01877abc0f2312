//! `fakewatch-train fit` end to end on the shared DFDC crops (a small seeded
//! configuration): the bundle it writes loads in the SDK, scans, and a rerun
//! reproduces the same metrics from the embedding cache.
//!
//! The DFDC test needs ../shared (research data) and skips without it; the
//! video test makes its own clips.

use std::path::Path;

use fakewatch_tests::{make_clip, root, run, scan_json, scratch, shared};

/// Runs `fakewatch-train ARGS`, asserted to succeed.
fn train(args: &[&str]) {
    let o = run("fakewatch-train", args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `fakewatch-train fit --config CONFIG --out OUT --cache CACHE EXTRA…`; the
/// report it writes.
fn fit_with(config: &Path, out: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "fit",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    train(&args);
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fit(out: &Path, cache: &Path) -> serde_json::Value {
    fit_with(Path::new("trainer/configs/smoke.json"), out, cache, &[])
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
    let scanned = scan_json(&a, &t1);
    assert_eq!(scanned["faces"], 6);
    assert!(scanned["score"].as_f64().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No research data needed: a `labels_csv` dataset of videos made here with
/// GStreamer (the t1 photo and its mirror image as "real" and "fake" clips),
/// so the trainer's video path runs for real — frame sampling, decode,
/// per-frame faces, the cache's per-sampling keys and video-level metrics.
#[test]
fn fit_on_videos_made_here() {
    let dir = scratch("fit-video");
    let t1 = root().join("tests/fixtures/t1.jpg");
    let mirror = fakewatch_sdk::Frame::load(&t1).unwrap().flip_horizontal();
    let mirror_path = dir.join("mirror.jpg");
    mirror.save(&mirror_path).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let real = make_clip(&t1, 6, &dir.join("real.avi"));
    let fake = make_clip(&mirror_path, 6, &dir.join("fake.avi"));
    let mut csv = String::from("file,label,group,split\n");
    for split in ["train", "val", "test"] {
        for (label, src) in [("real", &real), ("fake", &fake)] {
            let name = format!("{label}_{split}.avi");
            std::fs::copy(src, data.join(&name)).unwrap();
            csv += &format!("{name},{label},{split}_{label},{split}\n");
        }
    }
    std::fs::write(data.join("labels.csv"), csv).unwrap();
    let config = serde_json::json!({
        "name": "video-smoke",
        "dataset": {"layout": "labels_csv", "path": data},
        "perception": "models/base",
        "sampling": {"even": 3},
        "triplet": {"layers": [16, 8], "batch": 8, "steps": 5, "seed": 1},
        "classifier": "logistic",
        "decision": {"frames": 3},
        "compare": false,
        "tsne_points": 0,
        "seed": 1
    });
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let out = dir.join("bundle");
    let report = fit_with(&cfg, &out, &dir.join("cache"), &["--threads", "2"]);
    // Three sampled frames of each of the six clips, the largest face each.
    assert_eq!(report["faces"]["train"], 6);
    assert_eq!(report["faces"]["test"], 6);
    // Several faces per video: video-level metrics over the two test clips.
    assert_eq!(report["bundle"]["video"]["n"], 2);
    assert!(fakewatch_sdk::bundle::Bundle::load(&out).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `labels_csv` dataset of still images made here: t1 as "real", its
/// mirror image as "fake"; three copies per class in train (the triplet head
/// needs positives), one in val and test.
fn image_dataset(dir: &Path) -> std::path::PathBuf {
    let t1 = root().join("tests/fixtures/t1.jpg");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    fakewatch_sdk::Frame::load(&t1)
        .unwrap()
        .flip_horizontal()
        .save(data.join("mirror.jpg"))
        .unwrap();
    std::fs::copy(&t1, data.join("t1.jpg")).unwrap();
    let mut csv = String::from("file,label,group,split\n");
    for (split, copies) in [("train", 3), ("val", 1), ("test", 1)] {
        for (label, src) in [("real", "t1.jpg"), ("fake", "mirror.jpg")] {
            for k in 0..copies {
                let name = format!("{label}_{split}_{k}.jpg");
                std::fs::copy(data.join(src), data.join(&name)).unwrap();
                csv += &format!("{name},{label},{split}_{label},{split}\n");
            }
        }
    }
    std::fs::write(data.join("labels.csv"), csv).unwrap();
    data
}

/// A tiny fit configuration for [`image_dataset`].
fn image_config(name: &str, data: &Path) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "dataset": {"layout": "labels_csv", "path": data},
        "perception": "models/base",
        "triplet": {"layers": [16, 8], "batch": 4, "steps": 5, "seed": 1},
        "classifier": "logistic",
        "compare": false,
        "tsne_points": 0,
        "seed": 1
    })
}

/// No research data needed: `fit` with self-blended fakes only (the SBI
/// protocol) on images made here, with train augmentation and the JPEG-q30
/// robustness test. The dataset's train and val fakes are left out and each
/// real face gets a blended twin; the test keeps the dataset's fakes. Seeded:
/// a run with a fresh cache regenerates the same blends and metrics. Then
/// `self-blend-grid` writes its example PNG.
#[test]
fn fit_with_self_blended_fakes_and_the_example_grid() {
    let dir = scratch("self-blend");
    let data = image_dataset(&dir);
    let mut config = image_config("self-blend-smoke", &data);
    config["fakes"] = "self_blended".into();
    config["augment"] = serde_json::json!({});
    config["robustness_jpeg"] = 30.into();
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let ra = fit_with(&cfg, &a, &dir.join("cache-a"), &[]);
    let rb = fit_with(&cfg, &b, &dir.join("cache-b"), &[]);
    assert_eq!(
        ra["bundle"], rb["bundle"],
        "same seed, same blends, same metrics"
    );
    // Three real train faces and their blends; one real val face and its blend.
    assert_eq!(ra["faces"]["train"], 6, "{}", ra["faces"]);
    assert_eq!(ra["faces"]["val"], 2);
    assert_eq!(ra["faces"]["test"], 2);
    assert!(
        ra["robustness"]["frame"]["auc"].is_number(),
        "{}",
        ra["robustness"]
    );
    let hist = &ra["validation_scores"];
    let total: u64 = ["real", "fake"]
        .iter()
        .flat_map(|k| hist[k].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 2);
    let bundle = fakewatch_sdk::bundle::Bundle::load(&a).unwrap();
    let metrics = bundle.manifest().metrics.clone().unwrap();
    assert_eq!(metrics["fakes"], "self_blended");
    assert_eq!(metrics["robustness"]["jpeg_quality"], 30);

    let grid = dir.join("grid.png");
    train(&[
        "self-blend-grid",
        data.to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
        "--count",
        "2",
    ]);
    let g = fakewatch_sdk::Frame::load(&grid).unwrap();
    assert_eq!((g.width(), g.height()), (640, 320));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No research data needed: `finetune` of faceres end to end on images made
/// here (real and self-blended fakes, augmented 64 px crops), stopped at a
/// checkpoint and resumed; the perception bundle it writes holds the tuned
/// backbone, which tract reproduces, and `fit` turns it into a bundle that
/// scans.
#[test]
fn finetune_resumes_and_its_backbone_fits_and_scans() {
    let dir = scratch("finetune");
    let data = image_dataset(&dir);
    let config = |steps: usize| {
        let c = serde_json::json!({
            "name": "finetune-smoke",
            "dataset": {"layout": "labels_csv", "path": data},
            "perception": "models/base-faceres",
            "input_size": 64,
            "fakes": "both",
            "augment": {},
            "steps": steps,
            "batch": 4,
            "freeze_convs": 2,
            "val_faces": 4,
            "checkpoint_every": 2,
            "seed": 1
        });
        let path = dir.join(format!("finetune-{steps}.json"));
        std::fs::write(&path, c.to_string()).unwrap();
        path
    };
    let out = dir.join("tuned");
    let straight = dir.join("straight");
    let finetune = |cfg: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "finetune",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        train(&args);
    };
    let state = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap())
            .unwrap()
    };
    finetune(&config(2), &out, &[]);
    assert_eq!(state(&out)["step"], 2);
    finetune(&config(4), &out, &["--resume"]);
    let ck = state(&out);
    assert_eq!(ck["step"], 4);
    assert_eq!(ck["losses"].as_array().unwrap().len(), 4, "{ck}");
    // The optimiser's moments are checkpointed too: stopping at step 2 and
    // resuming gives the same training as one uninterrupted run (the loss of
    // step 4 follows the update of step 3, which uses the restored moments).
    finetune(&config(4), &straight, &[]);
    let losses = |v: &serde_json::Value| -> Vec<f64> {
        v["losses"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| [l["bce"].as_f64().unwrap(), l["triplet"].as_f64().unwrap()])
            .collect()
    };
    let (resumed, uninterrupted) = (losses(&ck), losses(&state(&straight)));
    for (a, b) in resumed.iter().zip(&uninterrupted) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{resumed:?} vs {uninterrupted:?}"
        );
    }

    let bundle = fakewatch_sdk::bundle::Bundle::load(&out).unwrap();
    let m = bundle.manifest();
    assert_eq!(m.backbone.file, "backbone.onnx");
    assert_eq!(m.backbone.input, [3, 64, 64]);
    assert_eq!(m.aligner.size, 64);
    assert!(m.head.is_none());
    let metrics = m.metrics.clone().unwrap();
    assert!(metrics["export_max_relative_error"].as_f64().unwrap() <= 1e-4);
    // The tuned backbone differs from its source.
    let tuned = std::fs::read(out.join("backbone.onnx")).unwrap();
    let source = std::fs::read(root().join("models/faceres.onnx")).unwrap();
    assert_ne!(tuned, source);

    let mut fit_cfg = image_config("finetuned-smoke", &data);
    fit_cfg["perception"] = out.to_str().unwrap().into();
    let cfg = dir.join("fit.json");
    std::fs::write(&cfg, fit_cfg.to_string()).unwrap();
    let bundle_dir = dir.join("bundle");
    let r = fit_with(&cfg, &bundle_dir, &dir.join("cache"), &[]);
    assert!(r["sdk_max_abs_diff"].as_f64().unwrap() < 1e-4);
    let scanned = scan_json(&bundle_dir, &root().join("tests/fixtures/t1.jpg"));
    assert_eq!(scanned["faces"], 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No research data needed: `fit` with the paper's bagging (three balanced
/// bags of random forests, majority vote) on images made here. The bags live
/// in one classifier file that the SDK reproduces, and the bundle scans.
#[test]
fn fit_with_bagged_classifiers() {
    let dir = scratch("bagging");
    let data = image_dataset(&dir);
    let mut config = image_config("bagged-smoke", &data);
    config["classifier"] = "random_forest".into();
    config["forest"] = serde_json::json!({"trees": 3, "max_depth": 3, "min_leaf": 1});
    config["bagging"] = serde_json::json!({"bags": 3, "vote": "max_vote"});
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let out = dir.join("bundle");
    let r = fit_with(&cfg, &out, &dir.join("cache"), &[]);
    assert!(r["sdk_max_abs_diff"].as_f64().unwrap() < 1e-4, "{r}");
    let name = r["bundle"]["name"].as_str().unwrap();
    assert!(name.contains("3 bags, max vote"), "{name}");
    let clf = std::fs::read(out.join("classifier.onnx")).unwrap();
    for part in [&b"bag0."[..], b"bag2.", b"bag_votes"] {
        assert!(clf.windows(part.len()).any(|w| w == part), "no {part:?}");
    }
    let scanned = scan_json(&out, &root().join("tests/fixtures/t1.jpg"));
    assert_eq!(scanned["faces"], 6);
    let score = scanned["score"].as_f64().unwrap();
    // A majority vote of three bags is a multiple of 1/3 per face; the
    // video score is a mean over tracks' frames, so it stays in 0..=1.
    assert!((0.0..=1.0).contains(&score), "{score}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No research data needed: `fit` on pooled multi-level features
/// (`models/base-faceres-ml`), with the triplet head and without one. The
/// standardisation learnt on the training split travels inside the first
/// shipped model (folded into the head, or in front of the classifier), so
/// the SDK scores raw pooled features exactly as the trainer did, and the
/// bundle scans. The bundle's decision replays the trainer's validation
/// metrics through the SDK.
#[test]
fn fit_on_multi_level_features_with_and_without_a_head() {
    let dir = scratch("multi-level");
    let data = image_dataset(&dir);
    for head in ["triplet", "none"] {
        let mut config = image_config(&format!("multi-level-{head}"), &data);
        config["perception"] = "models/base-faceres-ml".into();
        config["head"] = head.into();
        let cfg = dir.join(format!("{head}.json"));
        std::fs::write(&cfg, config.to_string()).unwrap();
        let out = dir.join(head);
        let r = fit_with(&cfg, &out, &dir.join("cache"), &[]);
        assert!(r["sdk_max_abs_diff"].as_f64().unwrap() < 1e-4, "{r}");
        // The bundle's decision, read back and replayed by the SDK on the
        // validation videos, gives the trainer's validation metrics.
        let replay = &r["sdk_validation_replay"];
        let f = |k: &str| replay[k].as_f64().unwrap();
        assert!((f("auc") - f("trainer_auc")).abs() < 1e-3, "{replay}");
        assert!((f("acc") - f("trainer_acc")).abs() < 1e-9, "{replay}");
        let bundle = fakewatch_sdk::bundle::Bundle::load(&out).unwrap();
        let decision = bundle.decision();
        assert_eq!(f64::from(decision.threshold), f("threshold"), "{replay}");
        assert_eq!(
            decision.is_calibrated(),
            !r["bundle"]["calibration"].is_null(),
            "{r}"
        );
        let m = bundle.manifest();
        assert_eq!(m.backbone.features.as_ref().map(|f| f.dim), Some(2944));
        assert_eq!(m.head.is_some(), head == "triplet", "{head}");
        assert_eq!(out.join("head.onnx").exists(), head == "triplet");
        let card = std::fs::read_to_string(out.join("MODEL_CARD.md")).unwrap();
        assert!(card.contains("2944-d global-average-pooled"), "{card}");
        let scanned = scan_json(&out, &root().join("tests/fixtures/t1.jpg"));
        assert_eq!(scanned["faces"], 6);
        let score = scanned["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{score}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No research data needed: `fit` on still images made here (t1 and its
/// mirror image), then `quantize --detector` on that bundle. The int8 bundle
/// has QDQ MTCNN nets and a QDQ backbone a quarter of the size, references
/// the float classifier, carries test metrics beside the fp32 ones, and scans.
#[test]
fn quantize_writes_an_int8_bundle_that_scans() {
    let dir = scratch("quantize");
    let t1 = root().join("tests/fixtures/t1.jpg");
    let data = image_dataset(&dir);
    let config = image_config("image-smoke", &data);
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let (fp32, int8) = (dir.join("fp32"), dir.join("fp32-int8"));
    let cache = dir.join("cache");
    fit_with(&cfg, &fp32, &cache, &[]);
    train(&[
        "quantize",
        fp32.to_str().unwrap(),
        "--out",
        int8.to_str().unwrap(),
        "--calibration-faces",
        "2",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    let bundle = fakewatch_sdk::bundle::Bundle::load(&int8).unwrap();
    let m = bundle.manifest();
    assert_eq!(m.name, "image-smoke-int8");
    assert_eq!(m.backbone.file, "backbone-int8.onnx");
    // The detector stays float: the source's file, referenced.
    let canon = |p: std::path::PathBuf| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        canon(bundle.resolve(&m.detector.pnet).unwrap()),
        canon(root().join("models/mtcnn_pnet.onnx"))
    );
    assert_eq!(
        m.classifier.as_ref().unwrap().file,
        "../fp32/classifier.onnx"
    );
    let size = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().len();
    let q = size(int8.join("backbone-int8.onnx"));
    assert!(
        q * 3 < size(root().join("models/facenet.onnx")),
        "{q} bytes"
    );
    let metrics = m.metrics.as_ref().unwrap();
    assert_eq!(metrics["faces"], 2);
    assert!(metrics["fp32"]["auc"].is_number());
    let agreement = &metrics["agreement_with_fp32"];
    assert!(
        agreement["embedding_cosine_min"].as_f64().unwrap() > 0.95,
        "{agreement}"
    );
    let training = m.training.as_ref().unwrap();
    assert_eq!(training["quantization"]["weight_bits"], 7);
    assert_eq!(training["backbone"]["ops"], 133);

    let scanned = scan_json(&int8, &t1);
    assert_eq!(scanned["faces"], 6);

    // `--detector`: the MTCNN nets too, calibrated on the inputs the detector
    // fed them (two faces here: enough to run, not to be accurate).
    let det = dir.join("det-int8");
    train(&[
        "quantize",
        fp32.to_str().unwrap(),
        "--out",
        det.to_str().unwrap(),
        "--calibration-faces",
        "2",
        "--detector",
        "--no-eval",
    ]);
    let bundle = fakewatch_sdk::bundle::Bundle::load(&det).unwrap();
    let m = bundle.manifest();
    assert_eq!(m.detector.pnet, "mtcnn_pnet-int8.onnx");
    assert_eq!(m.detector.rnet, "mtcnn_rnet-int8.onnx");
    assert_eq!(m.detector.onet, "mtcnn_onet-int8.onnx");
    assert!(m.metrics.is_none(), "--no-eval writes no metrics");
    let training = m.training.as_ref().unwrap();
    for net in ["pnet", "rnet", "onet"] {
        assert!(
            training["detector"][net]["inputs"].as_u64().unwrap() > 0,
            "{net}"
        );
    }
    let scanned = scan_json(&det, &t1);
    assert!(scanned["faces"].as_u64().unwrap() > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
