//! `fakewatch scan` end to end: the §5 JSON contract on images, videos,
//! directories and bad inputs, with the committed default bundle (real
//! models; no research data needed), plus the shared DFDC fakes and talking
//! heads when `../shared` is present.

use fakewatch_tests::{make_clip, ndjson, root, run, scan_json, scratch, shared};

const KEYS: [&str; 9] = [
    "input",
    "kind",
    "frames",
    "frames_requested",
    "faces",
    "score",
    "label",
    "tracks",
    "error",
];

fn check_contract(o: &serde_json::Value) {
    for k in KEYS {
        assert!(o.get(k).is_some(), "missing {k} in {o}");
    }
    assert_eq!(
        o.as_object().unwrap().len(),
        KEYS.len(),
        "extra keys in {o}"
    );
    let label = o["label"].as_str().unwrap();
    assert!(["real", "fake", "unknown"].contains(&label));
    match o["score"].as_f64() {
        Some(s) => {
            assert!((0.0..=1.0).contains(&s));
            assert_ne!(label, "unknown");
        }
        None => assert_eq!(label, "unknown"),
    }
}

#[test]
fn image_video_directory_and_bad_inputs() {
    let dir = scratch("scan");
    let t1 = root().join("tests/fixtures/t1.jpg");
    let clip = make_clip(&t1, 12, &dir.join("clip.avi"));
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::copy(&t1, media.join("b.jpg")).unwrap();
    std::fs::copy(&clip, media.join("a.avi")).unwrap();
    std::fs::write(media.join("notes.txt"), "not media").unwrap();
    let broken = dir.join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 truncated").unwrap();
    let blank = dir.join("blank.png");
    fakewatch_sdk::Frame::filled(320, 240, [128, 128, 128])
        .unwrap()
        .save(&blank)
        .unwrap();

    let args = [
        "scan",
        "--json",
        "--frames",
        "4",
        t1.to_str().unwrap(),
        broken.to_str().unwrap(),
        clip.to_str().unwrap(),
        media.to_str().unwrap(),
        "/nonexistent/clip.mp4",
        blank.to_str().unwrap(),
    ];
    let out = run("fakewatch", &args);
    // Some inputs failed: exit status 2, and every input still has its line.
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = ndjson(&out.stdout);
    let inputs: Vec<&str> = objs.iter().map(|o| o["input"].as_str().unwrap()).collect();
    let media_a = format!("{}/a.avi", media.display());
    let media_b = format!("{}/b.jpg", media.display());
    assert_eq!(
        inputs,
        vec![
            t1.to_str().unwrap(),
            broken.to_str().unwrap(),
            clip.to_str().unwrap(),
            &media_a,
            &media_b,
            "/nonexistent/clip.mp4",
            blank.to_str().unwrap(),
        ],
        "one object per input, in order; directories expand to their media, sorted"
    );
    for o in &objs {
        check_contract(o);
    }
    let (img, bad, vid) = (&objs[0], &objs[1], &objs[2]);
    assert_eq!(img["kind"], "image");
    assert_eq!(
        (img["frames"].as_u64(), img["faces"].as_u64()),
        (Some(1), Some(6))
    );
    assert_eq!(img["frames_requested"], 1);
    assert_eq!(img["tracks"].as_array().unwrap().len(), 6);
    assert!(img["error"].is_null());
    assert!(bad["error"].as_str().unwrap().contains("broken.jpg"));
    assert_eq!(bad["label"], "unknown");
    assert_eq!(vid["kind"], "video");
    assert_eq!(
        (vid["frames"].as_u64(), vid["faces"].as_u64()),
        (Some(4), Some(24))
    );
    assert_eq!(vid["frames_requested"], 4);
    // A still scene: the six faces keep their tracks over the four frames.
    let tracks = vid["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 6);
    assert!(tracks.iter().all(|t| t["frames"] == 4));
    // The same picture scores the same as an image and as (MJPEG) video frames.
    let (si, sv) = (
        img["score"].as_f64().unwrap(),
        vid["score"].as_f64().unwrap(),
    );
    assert!((si - sv).abs() < 0.1, "image {si} vs video {sv}");
    assert!(objs[5]["error"].is_string());
    let none = &objs[6];
    assert!(none["error"].is_null());
    assert_eq!(
        (none["faces"].as_u64(), none["label"].as_str()),
        (Some(0), Some("unknown"))
    );
    assert!(none["score"].is_null());

    // A clip shorter than the bundle's minimum: no verdict from two frames,
    // and a warning that fewer frames were analysed than asked.
    let short = make_clip(&t1, 2, &dir.join("short.avi"));
    let out = run(
        "fakewatch",
        &["scan", "--json", "--frames", "8", short.to_str().unwrap()],
    );
    assert!(out.status.success());
    let o = &ndjson(&out.stdout)[0];
    check_contract(o);
    assert_eq!(
        (o["frames"].as_u64(), o["frames_requested"].as_u64()),
        (Some(2), Some(8))
    );
    assert_eq!(o["label"], "unknown", "{o}");
    assert_eq!(o["tracks"].as_array().unwrap().len(), 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 of the 8 frames asked for"), "{err}");
    let out = run(
        "fakewatch",
        &["scan", "--frames", "8", short.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNKNOWN") && text.contains("too few frames"),
        "{text}"
    );

    // Human output: one line per input.
    let out = run("fakewatch", &["scan", t1.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(
        text.contains("t1.jpg") && text.contains("6 faces"),
        "{text}"
    );
}

#[test]
fn a_bundle_without_classifier_is_refused_clearly() {
    let t1 = root().join("tests/fixtures/t1.jpg");
    let out = run(
        "fakewatch",
        &["scan", "--bundle", "models/base", t1.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no classifier"), "{err}");
}

/// `--profile` prints a stage table to stderr and changes nothing on stdout:
/// the same JSON, the counts of what was analysed, every stage with its time.
#[test]
fn profile_reports_every_stage_and_changes_no_result() {
    let t1 = root().join("tests/fixtures/t1.jpg");
    let t1 = t1.to_str().unwrap();
    let plain = run("fakewatch", &["scan", "--json", t1]);
    let profiled = run("fakewatch", &["scan", "--json", "--profile", t1]);
    assert!(plain.status.success() && profiled.status.success());
    assert_eq!(ndjson(&plain.stdout), ndjson(&profiled.stdout));
    let err = String::from_utf8_lossy(&profiled.stderr);
    assert!(
        err.contains("profile: 1 input(s), 1 frame(s), 6 face(s)"),
        "{err}"
    );
    let seconds = |stage: &str| -> f64 {
        let line = err
            .lines()
            .find(|l| l.starts_with(stage))
            .unwrap_or_else(|| panic!("no {stage} line in {err}"));
        line[stage.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no seconds in {line:?}"))
    };
    for stage in [
        "model load",
        "decode and other",
        "pyramid + PNet (wall)",
        "RNet crops + net",
        "ONet crops + net",
        "head + classifier",
    ] {
        assert!(seconds(stage) >= 0.0);
    }
    assert!(seconds("alignment + backbone") > 0.0, "{err}");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("profile:"));
}

/// Needs ../shared (research data): the two DFDC fake videos and the 20 real
/// talking heads, scanned with the default bundle. Prints every score; checks
/// the contract and that every clip yields a face and a score.
#[test]
fn shared_media_scores() {
    let Some(shared) = shared() else { return };
    let media = shared.join("data/media");
    let mut inputs = vec![media.join("dfdc-sample-videos").display().to_string()];
    inputs.push(media.join("talking-heads").display().to_string());
    let mut args = vec!["scan", "--json", "--frames", "8"];
    args.extend(inputs.iter().map(String::as_str));
    let out = run("fakewatch", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = ndjson(&out.stdout);
    assert!(objs.len() >= 22, "{} results", objs.len());
    for o in &objs {
        check_contract(o);
        eprintln!("{} {} {}", o["label"], o["score"], o["input"]);
        assert!(o["error"].is_null(), "{o}");
    }
    let scored = objs.iter().filter(|o| o["score"].is_number()).count();
    assert!(scored >= objs.len() - 1, "{scored}/{} scored", objs.len());
}

#[test]
fn signed_bundles_keygen_sign_and_refusals() {
    let dir = scratch("signed");
    // A signed copy of the default bundle (models referenced in place).
    let b = dir.join("models/signed");
    std::fs::create_dir_all(&b).unwrap();
    let src = root().join("models/default");
    // The bundle's own model files (a head only where it has one).
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            std::fs::copy(&p, b.join(p.file_name().unwrap())).unwrap();
        }
    }
    let manifest = std::fs::read_to_string(src.join("bundle.json")).unwrap();
    // Its "../*.onnx" paths resolve to links to the repository's models.
    std::fs::write(b.join("bundle.json"), &manifest).unwrap();
    for f in [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "facenet.onnx",
        "faceres.onnx",
        "efficientnet_lite0.onnx",
    ] {
        std::os::unix::fs::symlink(root().join("models").join(f), dir.join("models").join(f))
            .unwrap();
    }
    let key = dir.join("fw.key");
    let out = run("fakewatch-train", &["keygen", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(dir.join("fw.key.pub")).unwrap();
    assert_eq!(public.trim().len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key readable by its owner only");
    let again = run("fakewatch-train", &["keygen", key.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing key is not overwritten"
    );

    let t1 = root().join("tests/fixtures/t1.jpg");
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", "--json", "--bundle", b.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(t1.to_str().unwrap());
        run("fakewatch", &args)
    };
    // Unsigned and a key configured: refused, naming why.
    let pub_path = dir.join("fw.key.pub");
    let o = scan(&["--bundle-key", pub_path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not signed"), "{err}");
    // Signed: accepted with its key (as hex and as a file), refused with another.
    let o = run(
        "fakewatch-train",
        &["sign", b.to_str().unwrap(), "--key", key.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), public.trim());
    for k in [public.trim(), pub_path.to_str().unwrap()] {
        let o = scan(&["--bundle-key", k]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = &ndjson(&o.stdout)[0];
        assert_eq!(v["faces"], 6, "{v}");
    }
    let other = fakewatch_sdk::bundle::public_key(&[9; 32]).to_string();
    let o = scan(&["--bundle-key", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not signed by the configured key"));
    let o = scan(&["--bundle-key", "xyz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("64 hex digits"));
    // A changed threshold in the signed manifest is refused.
    std::fs::write(
        b.join("bundle.json"),
        manifest.replacen("\"threshold\": 0.", "\"threshold\": 0.0", 1),
    )
    .unwrap();
    let o = scan(&["--bundle-key", public.trim()]);
    assert_eq!(o.status.code(), Some(1));
}

/// The committed int8 bundle (`models/build_int8.sh`) scans like the fp32
/// one it was quantized from: same faces, same label, a close score. Its
/// backbone is QDQ int8; on tract its weights are folded to float at load.
#[test]
fn int8_bundle_scans_like_fp32() {
    let t1 = root().join("tests/fixtures/t1.jpg");
    let scan = |bundle: &str| scan_json(&root().join(bundle), &t1);
    let (fp32, int8) = (scan("models/default"), scan("models/default-int8"));
    check_contract(&int8);
    assert_eq!(fp32["faces"], int8["faces"]);
    assert_eq!(fp32["label"], int8["label"]);
    let d = (fp32["score"].as_f64().unwrap() - int8["score"].as_f64().unwrap()).abs();
    eprintln!("fp32 {} int8 {} (|Δ| {d})", fp32["score"], int8["score"]);
    assert!(d < INT8_SCORE_TOL, "scores differ by {d}");
}

/// Largest accepted difference between the fp32 and int8 bundles' scores of
/// `t1.jpg` (measured: see the test's output). The multi-level default pools
/// early activations, which 8-bit weights move more than the final
/// descriptor: with faceres + Lite0 and mean / max / std pooling, P(fake)
/// 0.9307 fp32 against 0.9628 int8 (|Δ| 0.032) on this project's 2-core x86
/// (faceres alone: 0.9463 / 0.9709; the 1024-d descriptor within 0.01).
const INT8_SCORE_TOL: f64 = 0.05;

#[test]
fn explain_writes_a_timeline_per_input_and_changes_no_result() {
    let dir = scratch("scan-explain");
    let clip = make_clip(
        &root().join("tests/fixtures/t1.jpg"),
        8,
        &dir.join("clip.avi"),
    );
    let t1 = root().join("tests/fixtures/t1.jpg");
    let out = dir.join("explain");
    let args = |explain: bool| {
        let mut v = vec![
            "scan".to_string(),
            "--json".into(),
            "--frames".into(),
            "4".into(),
        ];
        if explain {
            v.push("--explain".into());
            v.push(out.to_string_lossy().into_owned());
        }
        v.push(clip.to_string_lossy().into_owned());
        v.push(t1.to_string_lossy().into_owned());
        v.push("/nonexistent.mp4".into());
        v
    };
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let (a, b) = (args(false), args(true));
    let plain = run("fakewatch", &as_refs(&a));
    let explained = run("fakewatch", &as_refs(&b));
    assert_eq!(ndjson(&plain.stdout), ndjson(&explained.stdout));
    // One picture per scanned input; none for the input that failed.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["000-clip.png", "001-t1.png"]);
    for name in &names {
        let f = fakewatch_sdk::Frame::load(out.join(name)).unwrap();
        assert_eq!((f.width(), f.height()), (960, 600), "{name}");
        // The dashed decision line (dark red) is drawn.
        let mut dashes = 0;
        for y in 0..f.height() {
            for x in 0..f.width() {
                dashes += usize::from(f.pixel(x, y) == Some([120, 0, 0]));
            }
        }
        assert!(dashes > 200, "{name}: {dashes} threshold pixels");
    }
}
