//! Helpers for the workspace-level end-to-end tests: locating the built
//! binaries, the repository's files and the optional shared research data.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary built by the same `cargo test` run (`target/<profile>/NAME`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target directory");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo test --workspace`",
        p.display()
    );
    p
}

/// Runs a workspace binary with `args` from the repository root.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .current_dir(root())
        .output()
        .expect("spawn binary")
}

/// `../shared` if present. Tests that need the shared research data call this
/// and return early, printing why, when it is absent.
pub fn shared() -> Option<PathBuf> {
    let p = root().join("../shared");
    if p.join("data").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/data is absent; this test needs the shared research data");
        None
    }
}

/// Parses NDJSON output.
pub fn ndjson(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A scratch directory unique to this process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fakewatch-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
