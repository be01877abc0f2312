//! The `fakewatch` command as a library: each subcommand (`scan`, `faces`,
//! `bench`, `run`) is a module with its clap arguments and a `run(args,
//! &AppContext)`; the binary (`main.rs`) only parses arguments and builds the
//! context. Fuzz targets and tests call these modules directly.

pub mod bench;
pub mod explain;
pub mod faces;
pub mod inputs;
pub mod live;
pub mod overlay;
pub mod scan;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use fakewatch_sdk::backend::Backend;
use fakewatch_sdk::bundle::{Bundle, PublicKey};
use fakewatch_sdk::runtime::BackendArgs;

/// What every command runs with: the inference backend, the options it was
/// opened with, and the key bundles must be signed with.
pub struct AppContext {
    backend: Arc<dyn Backend>,
    backend_args: BackendArgs,
    bundle_key: Option<PublicKey>,
}

impl AppContext {
    /// Opens the backend `backend_args` names; `bundle_key`: refuse bundles
    /// not signed with it.
    pub fn new(backend_args: BackendArgs, bundle_key: Option<PublicKey>) -> Result<Self> {
        let backend = backend_args.spec(None).open()?;
        log::info!("inference backend: {}", backend.name());
        Ok(Self {
            backend,
            backend_args,
            bundle_key,
        })
    }

    /// The inference backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Another backend by name, with the same options (`bench --compare`).
    pub fn named_backend(&self, name: &str) -> Result<Arc<dyn Backend>> {
        Ok(self.backend_args.spec(Some(name)).open()?)
    }

    /// The key bundles must be signed with (`None`: unsigned bundles load).
    pub fn bundle_key(&self) -> Option<PublicKey> {
        self.bundle_key
    }

    /// Loads a bundle, checking its signature when a key is configured.
    pub fn load_bundle(&self, dir: &std::path::Path) -> Result<Bundle> {
        Bundle::load_with(dir, self.bundle_key.as_ref())
            .with_context(|| format!("loading bundle {}", dir.display()))
    }
}

/// Parses `--bundle-key` or `FAKEWATCH_BUNDLE_KEY`: hex digits or a file of them.
pub fn parse_bundle_key(flag: Option<String>) -> Result<Option<PublicKey>> {
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
pub fn tune_malloc() {
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
