//! `fakewatch-train`: train, calibrate, evaluate and quantize fakewatch
//! bundles. Parses the command line and hands it to the library.

use clap::Parser;

/// Large tensor buffers are reused between training steps (see `alloc`).
#[global_allocator]
static ALLOCATOR: fakewatch_trainer::alloc::ReusingAllocator =
    fakewatch_trainer::alloc::ReusingAllocator;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = fakewatch_trainer::run(fakewatch_trainer::Cli::parse()) {
        eprintln!("fakewatch-train: {e:#}");
        std::process::exit(1);
    }
}
