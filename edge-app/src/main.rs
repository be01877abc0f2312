//! `fakewatch`: deepfake detection on files and live sources. Parses the
//! command line and hands it to the library (`lib.rs`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use fakewatch_edge::{bench, faces, live, scan, AppContext};
use fakewatch_sdk::runtime::BackendArgs;

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
    backend: BackendArgs,
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
    fakewatch_edge::tune_malloc();
    let cli = Cli::parse();
    let ctx = match fakewatch_edge::parse_bundle_key(cli.bundle_key.clone())
        .and_then(|key| AppContext::new(cli.backend.clone(), key))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fakewatch: {e:#}");
            std::process::exit(1);
        }
    };
    let res: Result<()> = match cli.command {
        Command::Scan(a) => scan::run(a, &ctx),
        Command::Faces(a) => faces::run(a, &ctx),
        Command::Bench(a) => bench::run(a, &ctx),
        Command::Run(a) => live::run(*a, &ctx),
    };
    if let Err(e) = res {
        eprintln!("fakewatch: {e:#}");
        std::process::exit(1);
    }
}
