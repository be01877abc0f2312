//! Build script: with `FAKEWATCH_CUDA_RPATH` set (by `.ci/cuda-build`), the
//! binaries find the CUDA runtime libraries of the wheel-installed toolkit
//! through their run path, so `fakewatch-train --device cuda` runs without
//! `LD_LIBRARY_PATH`. Nothing changes without it.

fn main() {
    println!("cargo:rerun-if-env-changed=FAKEWATCH_CUDA_RPATH");
    if let Ok(dirs) = std::env::var("FAKEWATCH_CUDA_RPATH") {
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    }
}
