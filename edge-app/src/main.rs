//! `fakewatch`: deepfake detection on files and live sources.

mod backend;
mod bench;
mod faces;
mod inputs;
mod live;
mod overlay;
mod scan;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fakewatch_sdk::bundle::{Bundle, PublicKey};

#[derive(Parser)]
#[command(
    name = "fakewatch",
    version,
    about = "Deepfake-video detection on the edge"
)]
struct Cli {
    /// Refuse bundles not signed with this ed25519 public key (64 hex digits,
    /// or a file holding them; also `FAKEWATCH_BUNDLE_KEY`). See
    /// `fakewatch-train keygen` / `sign`.
    #[arg(long, global = true, value_name = "HEX|FILE")]
    bundle_key: Option<String>,
    #[command(flatten)]
    backend: backend::BackendArgs,
    #[command(subcommand)]
    command: Command,
}

/// The public key bundles must be signed with, once parsed (`None`: unsigned
/// bundles are accepted).
static BUNDLE_KEY: std::sync::OnceLock<Option<PublicKey>> = std::sync::OnceLock::new();

/// Parses `--bundle-key` or `FAKEWATCH_BUNDLE_KEY`: hex digits or a file of them.
fn parse_bundle_key(flag: Option<String>) -> Result<Option<PublicKey>> {
    let Some(v) = flag.or_else(|| std::env::var("FAKEWATCH_BUNDLE_KEY").ok()) else {
        return Ok(None);
    };
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let text = if std::path::Path::new(v).is_file() {
        std::fs::read_to_string(v).with_context(|| format!("reading bundle key {v}"))?
    } else {
        v.to_string()
    };
    Ok(Some(
        text.trim()
            .parse()
            .with_context(|| format!("bundle key {v:?}"))?,
    ))
}

/// The configured bundle key as text, for child processes.
pub fn bundle_key() -> Option<String> {
    BUNDLE_KEY.get().copied().flatten().map(|k| k.to_string())
}

/// Loads a bundle, checking its signature when a key is configured.
pub fn load_bundle(dir: &std::path::Path) -> Result<Bundle> {
    let key = BUNDLE_KEY.get().copied().flatten();
    Bundle::load_with(dir, key.as_ref())
        .with_context(|| format!("loading bundle {}", dir.display()))
}

#[derive(Subcommand)]
enum Command {
    /// Deepfake verdict per image, video or directory entry.
    Scan(scan::ScanArgs),
    /// Run the face detector (and optionally the embedder) on images or videos.
    Faces(faces::FacesArgs),
    /// Measure per-stage latency of the perception path.
    Bench(bench::BenchArgs),
    /// Live mode: a camera, capture card, stream or paced file through
    /// detection, tracking and scoring to overlaid frames and events.
    Run(Box<live::RunArgs>),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    tune_malloc();
    let cli = Cli::parse();
    match parse_bundle_key(cli.bundle_key.clone()) {
        Ok(k) => {
            let _ = BUNDLE_KEY.set(k);
        }
        Err(e) => {
            eprintln!("fakewatch: {e:#}");
            std::process::exit(1);
        }
    }
    if let Err(e) = backend::init(&cli.backend) {
        eprintln!("fakewatch: {e:#}");
        std::process::exit(1);
    }
    let res: Result<()> = match cli.command {
        Command::Scan(a) => scan::run(a),
        Command::Faces(a) => faces::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => live::run(*a),
    };
    if let Err(e) = res {
        eprintln!("fakewatch: {e:#}");
        std::process::exit(1);
    }
}

/// glibc allocator settings for a long-running video process, unless the
/// environment sets them (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`):
/// - two heap arenas: glibc gives every thread that allocates its own arena,
///   up to 8 per core, and keeps their freed pages; with the per-frame worker
///   threads that cost ~50 MB of RSS at 1080p (494 → 442 MiB peak, same speed);
/// - a fixed mmap threshold of [`MMAP_THRESHOLD`] instead of glibc's sliding
///   one. Frames up to 1080p come from the heap and are reused through the
///   live pipeline's buffer pool; larger blocks are mapped on their own and
///   go back to the kernel when freed. Measured on a 2-core x86 (1080p clip,
///   4 faces, `fakewatch run`): 2 MiB gave 321–336 MiB peak RSS but 15–25 %
///   slower analysis (more blocks mapped and zeroed per frame); 8, 16 and
///   32 MiB gave 356–381 MiB at the same speed.
///
/// Under Debian bookworm's qemu-user 7.2 with address-space randomisation
/// off, the fixed threshold makes loading FaceNet fail an allocation (the
/// emulator's brk); native runs are unaffected. Emulated runs set
/// `MALLOC_MMAP_THRESHOLD_=131072` (`.ci/aarch64`, `docs/jetson.md`).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called before any
        // thread is started.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// Blocks at least this large are mapped on their own (see [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 8 << 20;

/// Returns the allocator's free pages to the kernel (glibc `malloc_trim`).
/// Called once the models are loaded: parsing and optimising them leaves
/// freed blocks in the heap.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The bundle to use: the flag, `FAKEWATCH_BUNDLE`, or the repository's models.
pub fn find_bundle(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("FAKEWATCH_BUNDLE") {
        return Ok(PathBuf::from(p));
    }
    let mut roots = vec![PathBuf::from("models")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/fakewatch -> repository root
        if let Some(root) = exe
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.parent())
        {
            roots.push(root.join("models"));
        }
    }
    roots.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models"
    )));
    for root in &roots {
        for name in ["default", "base"] {
            let dir = root.join(name);
            if dir.join("bundle.json").is_file() {
                return Ok(dir);
            }
        }
    }
    anyhow::bail!("no bundle found: pass --bundle DIR or set FAKEWATCH_BUNDLE")
}
