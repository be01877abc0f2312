//! The `fakewatch` binary starts, knows its version and refuses bad input
//! with a message (no model is loaded, so this also runs under qemu in
//! `.ci/aarch64`; the end-to-end tests live in the `tests/` crate).

use std::process::Command;

fn fakewatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fakewatch"))
        .args(args)
        .output()
        .expect("spawn fakewatch")
}

#[test]
fn prints_its_version() {
    let out = fakewatch(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("fakewatch {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn refuses_a_missing_bundle_with_a_message() {
    let out = fakewatch(&[
        "scan",
        "--bundle",
        "/nonexistent/bundle",
        "tests/fixtures/t1.jpg",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("fakewatch: "), "{err}");
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn refuses_an_unknown_or_unavailable_backend() {
    let out = fakewatch(&["--backend", "opencl", "scan", "tests/fixtures/t1.jpg"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown backend \"opencl\""), "{err}");
    // Without the `ort` feature: built without onnxruntime support; with it
    // and no library at the given path: that path is named.
    let out = fakewatch(&[
        "--backend",
        "ort-cpu",
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
        "scan",
        "tests/fixtures/t1.jpg",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without onnxruntime support")
            || err.contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
