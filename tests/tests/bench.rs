//! `fakewatch bench` end to end on generated frames: the figures it prints
//! are there and consistent (no timing is asserted: speed is measured by the
//! benchmark itself, not by tests).

use fakewatch_tests::{ndjson, run, scratch};

#[test]
fn generated_frames_stages_floors_and_scan() {
    let dir = scratch("bench");
    let out = run(
        "fakewatch",
        &[
            "bench",
            "--runs",
            "1",
            "--threads",
            "2",
            "--sizes",
            "480p,320x240",
            "--faces",
            "1,4",
            "--scan",
            "--clip-frames",
            "6",
            "--scan-frames",
            "2",
            "--compare",
            "tract",
            "--json",
            "--work-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = ndjson(&out.stdout);
    assert_eq!(cases.len(), 4, "{cases:?}");
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(names, ["480p-1f", "480p-4f", "320x240-1f", "320x240-4f"]);
    for c in &cases {
        assert_eq!(c["threads"], 2);
        let (w, h) = (c["width"].as_u64().unwrap(), c["height"].as_u64().unwrap());
        assert!((w, h) == (854, 480) || (w, h) == (320, 240), "{c}");
        let stages: Vec<&str> = c["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "pyramid+pnet",
                "rnet",
                "onet",
                "alignment",
                "backbone",
                "head+classifier",
                "overlay"
            ]
        );
        let peak = c["peak_flops_per_core"].as_f64().unwrap();
        assert!(peak > 1e8, "peak {peak}");
        let faces = c["faces"].as_u64().unwrap();
        for s in c["stages"].as_array().unwrap() {
            let (gf, floor) = (
                s["gflop"].as_f64().unwrap(),
                s["floor_ms"].as_f64().unwrap(),
            );
            assert!(gf >= 0.0 && floor >= 0.0);
            // floor = FLOPs / (peak × threads used); one face per thread.
            let cores = if s["stage"] == "backbone" {
                faces.clamp(1, 2) as f64
            } else {
                2.0
            };
            assert!((floor - gf * 1e9 / (peak * cores) * 1e3).abs() < 1e-6 * (1.0 + floor));
        }
        // Every generated face is found at 480p; the default bundle's faceres
        // (MobileNet-v1 at 224×224, 0.57 GMAC ≈ 1.14 GFLOP) and its
        // EfficientNet-Lite0 branch (≈ 0.77 GFLOP) cost ≈ 1.91 GFLOP per face.
        if w == 854 {
            let want = if c["case"].as_str().unwrap().ends_with("-1f") {
                1
            } else {
                4
            };
            assert_eq!(faces, want, "{c}");
        }
        let backbone = &c["stages"][4];
        let per_face = backbone["gflop"].as_f64().unwrap() / faces.max(1) as f64;
        if faces > 0 {
            assert!((1.8..2.0).contains(&per_face), "{per_face} GFLOP per face");
        }
        assert_eq!(c["scan"]["frames"], 2, "{c}");
        // `--compare tract`: the same stages again on a second backend
        // instance, which finds the same faces.
        let other = &c["compare"]["tract"];
        assert_eq!(other["faces"], c["faces"], "{c}");
        assert_eq!(other["stages"].as_array().map(Vec::len), Some(7), "{c}");
        assert!(other["total_ms"].as_f64().unwrap() > 0.0);
        assert!(c["scan"]["videos_per_minute"].as_f64().unwrap() > 0.0);
    }
    assert!(dir.join("480p-4f.mp4").is_file());
}

#[test]
fn bad_settings_are_refused() {
    for args in [
        &["bench", "--sizes", "12x12"][..],
        &["bench", "--faces", "0"],
        &["bench", "--threads", "0"],
        &["bench", "tests/fixtures/t1.jpg", "--faces", "2"],
    ] {
        let out = run("fakewatch", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("fakewatch: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
