//! The C ABI with the real default bundle: `fw_push_frame` with arbitrary
//! (small) geometry, stride, pixel format, buffer length and output capacity,
//! then `fw_verdict`, sometimes `fw_reset`. Every call returns a status and
//! the detector stays usable; nothing panics across the boundary.
//!
//! Input: width, height (1..=64), stride (0..=300), format (0..=9, 8 and 9
//! invalid), faces_cap (0..=3), flags, then the pixel bytes (the length
//! passed is what is there).
#![no_main]

use std::ffi::CString;

use fakewatch::{
    fw_open, fw_push_frame, fw_reset, fw_verdict, FwDetector, FwFace, FwLabel, FwVerdict,
};
use libfuzzer_sys::fuzz_target;

struct Detector(*mut FwDetector);
// SAFETY: libFuzzer calls the target from one thread.
unsafe impl Send for Detector {}
unsafe impl Sync for Detector {}

fn detector() -> *mut FwDetector {
    static D: std::sync::OnceLock<Detector> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default");
        let c = CString::new(dir).expect("path");
        // SAFETY: a valid C string.
        let d = unsafe { fw_open(c.as_ptr()) };
        assert!(!d.is_null(), "cannot open {dir}");
        Detector(d)
    })
    .0
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let width = u32::from(data[0] % 64) + 1;
    let height = u32::from(data[1] % 64) + 1;
    let stride = usize::from(data[2]) + usize::from(data[3] % 45);
    let format = u32::from(data[4] % 10);
    let cap = usize::from(data[5] & 3);
    let flags = data[5] >> 2;
    let pixels = &data[6..];
    let d = detector();
    let mut faces = [FwFace::default(); 3];
    let faces_ptr = if flags & 1 == 1 && cap == 0 {
        std::ptr::null_mut()
    } else {
        faces.as_mut_ptr()
    };
    // SAFETY: `pixels` has `pixels.len()` readable bytes, `faces` 3 writable
    // faces (cap ≤ 3).
    let n = unsafe {
        fw_push_frame(
            d,
            pixels.as_ptr(),
            pixels.len(),
            width,
            height,
            stride,
            format,
            faces_ptr,
            cap,
        )
    };
    assert!(n >= -1);
    let mut v = FwVerdict {
        label: FwLabel::Unknown,
        score: 0.0,
        threshold: 0.0,
        tracks: 0,
        frames: 0,
        faces: 0,
    };
    // SAFETY: a detector from fw_open and a writable verdict.
    assert_eq!(unsafe { fw_verdict(d, &mut v) }, 0);
    if flags & 2 == 2 {
        // SAFETY: as above.
        assert_eq!(unsafe { fw_reset(d) }, 0);
    }
});
