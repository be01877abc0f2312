//! Image decoding (`Frame::decode`: JPEG/PNG, limits, EXIF orientation).
#![no_main]

use fakewatch_sdk::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::decode(data) {
        assert!(f.width() > 0 && f.height() > 0);
        assert!(f.data().len() >= f.stride() * (f.height() as usize - 1));
    }
});
