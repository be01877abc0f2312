//! `fakewatch`: deepfake detection on files and live sources.

mod bench;
mod faces;
mod inputs;
mod live;
mod overlay;
mod scan;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fakewatch",
    version,
    about = "Deepfake-video detection on the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    let cli = Cli::parse();
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
