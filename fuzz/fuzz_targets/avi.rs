//! The pure-Rust MJPEG AVI reader (used without GStreamer): indexing any
//! bytes, then decoding the first frames it found.
#![no_main]

use fakewatch_sdk::avi::MjpegAvi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(avi) = MjpegAvi::from_bytes(data.to_vec()) {
        let _ = avi.info();
        for k in 0..avi.len().min(3) {
            let _ = avi.frame(k);
        }
    }
});
