//! The C ABI from C: `capi/examples/detect.c` compiled with the system C
//! compiler against `capi/include/fakewatch.h` and `libfakewatch.so`, run on
//! the test photo.

use std::io::Write;
use std::process::Command;

use fakewatch_sdk::Frame;
use fakewatch_tests::{profile_dir, root, scratch};

#[test]
fn c_example_scores_the_test_photo() {
    let lib_dir = profile_dir();
    assert!(
        lib_dir.join("libfakewatch.so").is_file(),
        "libfakewatch.so was not built in {}",
        lib_dir.display()
    );
    let dir = scratch("capi");
    let exe = dir.join("detect");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .arg(root().join("capi/examples/detect.c"))
        .arg("-I")
        .arg(root().join("capi/include"))
        .arg("-L")
        .arg(&lib_dir)
        .args(["-lfakewatch", "-lm", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .expect("a C compiler (cc)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The photo as a binary PPM.
    let photo = Frame::load(root().join("tests/fixtures/t1.jpg")).unwrap();
    let ppm = dir.join("t1.ppm");
    let mut f = std::fs::File::create(&ppm).unwrap();
    writeln!(f, "P6 {} {} 255", photo.width(), photo.height()).unwrap();
    f.write_all(&photo.to_packed()).unwrap();
    drop(f);
    let o = Command::new(&exe)
        .arg(root().join("models/default"))
        .arg(&ppm)
        .arg("2")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("bad stride: invalid frame"), "{out}");
    assert!(
        out.contains("frame 0: 6 faces") && out.contains("frame 1: 6 faces"),
        "{out}"
    );
    // Tracks persist across the two frames: ids 1..=6 both times.
    for id in 1..=6 {
        assert_eq!(out.matches(&format!("track={id} ")).count(), 2, "{out}");
    }
    let verdict = out.lines().find(|l| l.starts_with("verdict: ")).unwrap();
    assert!(verdict.contains("tracks=6 frames=2 faces=12"), "{verdict}");
    assert!(verdict.starts_with("verdict: fake") || verdict.starts_with("verdict: real"));
    // A missing bundle is a message, not a crash.
    let o = Command::new(&exe)
        .args(["/nonexistent/bundle"])
        .arg(&ppm)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fw_open: "));
    // With a public key configured, the unsigned shipped bundle is refused.
    let o = Command::new(&exe)
        .arg(root().join("models/default"))
        .arg(&ppm)
        .arg("1")
        .arg(fakewatch_sdk::bundle::public_key(&[7; 32]).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fw_open: ") && err.contains("not signed"),
        "{err}"
    );
}
