//! The C ABI with the real default bundle: `fw_push_frame` with arbitrary
//! (small) geometry, stride, pixel format, buffer length and output capacity,
//! then `fw_verdict`, sometimes `fw_reset`; or the same through a
//! multi-stream detector (`fw_push_frame_on` / `fw_verdict_on`, two streams
//! and sometimes a stream id that does not exist). Every call returns a
//! status and the detector stays usable; nothing panics across the boundary.
//!
//! Input: width, height (1..=64), stride (0..=300), format (0..=9, 8 and 9
//! invalid), faces_cap (0..=3), flags, then the pixel bytes (the length
//! passed is what is there).
#![no_main]

use std::ffi::CString;

use fakewatch::{
    fw_multi_add_stream, fw_multi_open, fw_open, fw_push_frame, fw_push_frame_on, fw_reset,
    fw_verdict, fw_verdict_on, FwDetector, FwFace, FwLabel, FwMulti, FwVerdict,
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

struct Multi(*mut FwMulti);
// SAFETY: libFuzzer calls the target from one thread.
unsafe impl Send for Multi {}
unsafe impl Sync for Multi {}

/// A multi-stream detector with streams 0 and 1.
fn multi() -> *mut FwMulti {
    static M: std::sync::OnceLock<Multi> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default");
        let c = CString::new(dir).expect("path");
        // SAFETY: a valid C string.
        let m = unsafe { fw_multi_open(c.as_ptr(), 2) };
        assert!(!m.is_null(), "cannot open {dir}");
        for name in [c"a", c"b"] {
            // SAFETY: a multi-stream detector and a valid C string.
            assert!(unsafe { fw_multi_add_stream(m, name.as_ptr()) } >= 0);
        }
        Multi(m)
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
    if flags & 4 == 4 {
        // Streams 0 and 1 exist; 2 and 3 do not.
        let stream = u32::from((flags >> 3) & 3);
        let m = multi();
        // SAFETY: as for fw_push_frame below.
        let n = unsafe {
            fw_push_frame_on(
                m,
                stream,
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
        if stream >= 2 {
            assert_eq!(n, -1, "an unknown stream is an error");
        }
        let mut v = FwVerdict {
            label: FwLabel::Unknown,
            score: 0.0,
            threshold: 0.0,
            tracks: 0,
            frames: 0,
            faces: 0,
        };
        // SAFETY: a multi-stream detector and a writable verdict.
        let r = unsafe { fw_verdict_on(m, stream, &mut v) };
        assert_eq!(r, if stream < 2 { 0 } else { -1 });
        return;
    }
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
