//! `Bundle::load_with` on a directory whose `bundle.json` (and `bundle.sig`)
//! come from the input: parsing, validation, path resolution and signature
//! checking must end in `Ok` or `Err`, never a panic or a hang.
//!
//! Input: byte 0 selects whether a public key is configured; with one, the
//! next 64 bytes are written as `bundle.sig` (hex-encoded or raw, by bit 1).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fakewatch_sdk::bundle::{public_key, Bundle};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("fakewatch-fuzz-bundle-{}", std::process::id()));
        // A model file beside the bundle, as real bundles reference `../x.onnx`.
        std::fs::create_dir_all(d.join("b")).expect("temp dir");
        std::fs::write(d.join("m.onnx"), b"not really a model").expect("temp file");
        d.join("b")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let d = dir();
    let (sig, json) = if mode & 1 == 1 && rest.len() >= 64 {
        rest.split_at(64)
    } else {
        (&[][..], rest)
    };
    if std::fs::write(d.join("bundle.json"), json).is_err() {
        return;
    }
    let key = (mode & 1 == 1).then(|| public_key(&[7; 32]));
    if key.is_some() {
        let text: Vec<u8> = if mode & 2 == 2 {
            sig.iter()
                .flat_map(|b| format!("{b:02x}").into_bytes())
                .collect()
        } else {
            sig.to_vec()
        };
        let _ = std::fs::write(d.join("bundle.sig"), text);
    } else {
        let _ = std::fs::remove_file(d.join("bundle.sig"));
    }
    if let Ok(b) = Bundle::load_with(d, key.as_ref()) {
        for f in b.manifest().referenced_files() {
            let _ = b.resolve(f);
        }
    }
});
