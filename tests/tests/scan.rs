//! `fakewatch scan` end to end: the §5 JSON contract on images, videos,
//! directories and bad inputs, with the committed default bundle (real
//! models; no research data needed), plus the shared DFDC fakes and talking
//! heads when `../shared` is present.

use fakewatch_tests::{make_clip, ndjson, root, run, scratch, shared};

const KEYS: [&str; 8] = [
    "input", "kind", "frames", "faces", "score", "label", "tracks", "error",
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
    assert_eq!(img["tracks"].as_array().unwrap().len(), 6);
    assert!(img["error"].is_null());
    assert!(bad["error"].as_str().unwrap().contains("broken.jpg"));
    assert_eq!(bad["label"], "unknown");
    assert_eq!(vid["kind"], "video");
    assert_eq!(
        (vid["frames"].as_u64(), vid["faces"].as_u64()),
        (Some(4), Some(24))
    );
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
