//! Helpers for the workspace-level end-to-end tests: locating the built
//! binaries, the repository's files and the optional shared research data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary (`target/<profile>/NAME`), built and up to date.
///
/// Cargo only builds a package's binaries for that package's own integration
/// tests, so the first call in a test process runs `cargo build` for the
/// binary crates and the C library with the same profile and target directory
/// (a no-op when they are fresh). A stale binary would test old code; a missing one cannot run.
///
/// The build selects the whole workspace (`--workspace --bins --lib`), as
/// `cargo test --workspace` does, so both resolve the same features and the
/// binaries reuse every dependency the tests were built with. A narrower
/// selection (`-p fakewatch-edge …`) resolves other features (`cc`'s
/// `parallel`, which `libfuzzer-sys` turns on, reaches tract's build script)
/// and compiled tract once more: 7 minutes of CI on 2 cores.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target directory")
        .to_path_buf();
    if let Err(e) = BUILT.get_or_init(|| build_binaries(&dir)) {
        panic!("building the workspace binaries failed:\n{e}");
    }
    let p = dir.join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// The target directory of the running test's profile (`target/<profile>`),
/// with the workspace's binaries and C library built.
pub fn profile_dir() -> PathBuf {
    bin("fakewatch")
        .parent()
        .expect("profile directory")
        .to_path_buf()
}

fn build_binaries(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // `cargo test` builds with the `test` profile, which writes to
    // `target/debug` like `dev`; the dependency artefacts are only shared
    // with a build of the same profile.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "test",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let out = Command::new(cargo)
        .args(["build", "--profile", profile])
        .args(["--workspace", "--bins", "--lib"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
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

/// `fakewatch scan --json --bundle BUNDLE INPUT`, asserted to succeed: the
/// result object of the one input.
pub fn scan_json(bundle: &Path, input: &Path) -> serde_json::Value {
    let out = run(
        "fakewatch",
        &[
            "scan",
            "--json",
            "--bundle",
            bundle.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "scan {} with {}: {}",
        input.display(),
        bundle.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    ndjson(&out.stdout).remove(0)
}

/// A scratch directory unique to this process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fakewatch-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Encodes a still photo as an MJPEG/AVI clip of `frames` frames at 12 fps with
/// GStreamer (`gst-launch-1.0`, Debian `gstreamer1.0-tools`): a real encoded
/// video made by the tests themselves.
pub fn make_clip(photo: &Path, frames: u32, out: &Path) -> PathBuf {
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", photo.display()))
        .args(["!", "jpegdec", "!", "videoconvert", "!", "imagefreeze"])
        .arg(format!("num-buffers={frames}"))
        .args([
            "!",
            "video/x-raw,framerate=12/1",
            "!",
            "jpegenc",
            "!",
            "avimux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", out.display()))
        .status()
        .expect("gst-launch-1.0 (Debian gstreamer1.0-tools) is needed to make the test clip");
    assert!(status.success(), "gst-launch-1.0 failed");
    out.to_path_buf()
}

/// The path of system program `name` (e.g. `mosquitto`, `chromium`), or
/// `None` with a SKIP line saying which Debian package `.ci/deps` installs.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    eprintln!(
        "SKIP: `{name}` is not installed (Debian package {package}; `bash .ci/deps` installs it)"
    );
    None
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status line + headers, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(String, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    Ok((
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf[split + 4..].to_vec(),
    ))
}
