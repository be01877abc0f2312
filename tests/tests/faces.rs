//! End to end: `fakewatch faces` on images and real decoded video.

use fakewatch_tests::{make_clip, ndjson, root, run, scratch, shared};

#[test]
fn faces_json_on_t1_reports_six_faces() {
    let out = run("fakewatch", &["faces", "--json", "tests/fixtures/t1.jpg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = ndjson(&out.stdout);
    assert_eq!(objs.len(), 1);
    let o = &objs[0];
    assert_eq!(o["input"], "tests/fixtures/t1.jpg");
    assert_eq!(o["frame"], 0);
    let faces = o["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 6);
    for f in faces {
        assert_eq!(f["box"].as_array().unwrap().len(), 4);
        assert!(f["score"].as_f64().unwrap() >= 0.98);
        let lm = f["landmarks"].as_array().unwrap();
        assert_eq!(lm.len(), 5);
        assert!(lm.iter().all(|p| p.as_array().unwrap().len() == 2));
    }
}

#[test]
fn faces_embed_and_draw() {
    let dir = scratch("draw");
    let png = dir.join("t1.png");
    let out = run(
        "fakewatch",
        &[
            "faces",
            "--json",
            "--embed",
            "--draw",
            png.to_str().unwrap(),
            "tests/fixtures/t1.jpg",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = &ndjson(&out.stdout)[0];
    for f in o["faces"].as_array().unwrap() {
        assert!((f["embedding_norm"].as_f64().unwrap() - 1.0).abs() < 1e-3);
    }
    // The drawing is the photo with green boxes: pixels on a box edge are green.
    let img = fakewatch_sdk::Frame::load(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 886));
    let f = &o["faces"][0]["box"];
    let (x1, y1) = (
        f[0].as_f64().unwrap().round() as u32,
        f[1].as_f64().unwrap().round() as u32,
    );
    let p = img.pixel(x1 + 20, y1).unwrap();
    assert_eq!(p, [0, 255, 0], "box edge pixel");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let out = run("fakewatch", &["faces", "/nonexistent/x.jpg"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.jpg"));
    let dir = scratch("bad");
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff not really a jpeg").unwrap();
    let out = run("fakewatch", &["faces", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("decode"));
    let txt = dir.join("notes.mp4");
    std::fs::write(&txt, b"hello").unwrap();
    let out = run("fakewatch", &["faces", txt.to_str().unwrap()]);
    assert!(!out.status.success());
}

/// A real encoded clip made here with GStreamer: the t1 photo, 12 frames of MJPEG in AVI.
#[test]
fn faces_on_a_decoded_video() {
    let dir = scratch("video");
    let clip = make_clip(
        &root().join("tests/fixtures/t1.jpg"),
        12,
        &dir.join("t1.avi"),
    );
    let out = run(
        "fakewatch",
        &["faces", "--json", "--frames", "3", clip.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = ndjson(&out.stdout);
    assert_eq!(objs.len(), 3);
    let frames: Vec<u64> = objs.iter().map(|o| o["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, vec![2, 6, 10], "evenly spaced over 12 frames");
    for o in &objs {
        assert_eq!(o["faces"].as_array().unwrap().len(), 6);
    }
}

/// Needs ../shared (research data): the 20 talking-head clips, 8 frames each.
#[test]
fn talking_heads_have_a_face_in_95_percent_of_frames() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("data/media/talking-heads");
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "mp4") && !p.to_string_lossy().contains("street")
        })
        .collect();
    clips.sort();
    assert!(clips.len() >= 19, "talking-head clips: {}", clips.len());
    let (mut frames, mut with_face) = (0, 0);
    for c in &clips {
        let out = run(
            "fakewatch",
            &["faces", "--json", "--frames", "8", c.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            c.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for o in ndjson(&out.stdout) {
            frames += 1;
            if !o["faces"].as_array().unwrap().is_empty() {
                with_face += 1;
            }
        }
    }
    let rate = with_face as f64 / frames as f64;
    eprintln!(
        "talking heads: face in {with_face}/{frames} frames ({:.1} %)",
        rate * 100.0
    );
    assert!(frames >= 8 * clips.len() - clips.len());
    assert!(
        rate >= 0.95,
        "face found in {:.1} % of frames",
        rate * 100.0
    );
}
