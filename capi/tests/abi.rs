//! The C ABI's error paths through the Rust library (no model is loaded, so
//! this also runs under qemu in `.ci/aarch64`, which checks that the C library
//! cross-builds; the C example program is run by the `tests/` crate).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::ffi::CStr;

use fakewatch::{fw_last_error, fw_open, fw_version};

#[test]
fn version_and_a_missing_bundle_through_the_c_entry_points() {
    // SAFETY: fw_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(fw_version()) };
    assert_eq!(version.to_str(), Ok(env!("CARGO_PKG_VERSION")));
    let path = c"/nonexistent/bundle";
    // SAFETY: a valid NUL-terminated path; a null handle is the documented failure.
    let handle = unsafe { fw_open(path.as_ptr()) };
    assert!(handle.is_null());
    // SAFETY: fw_last_error returns this thread's message, valid until the next call.
    let err = unsafe { CStr::from_ptr(fw_last_error()) }.to_string_lossy();
    assert!(err.contains("/nonexistent/bundle"), "{err}");
}
