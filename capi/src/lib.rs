//! C ABI of the fakewatch SDK (`include/fakewatch.h`), for kiosk software
//! and other C/C++ hosts.
//!
//! ```c
//! FwDetector *d = fw_open("models/default");
//! if (!d) { fprintf(stderr, "%s\n", fw_last_error()); return 1; }
//! FwFace faces[16];
//! int32_t n = fw_push_frame(d, pixels, len, width, height, stride, FW_PIXEL_FORMAT_RGB8, faces, 16);
//! // n: faces in the frame, or -1 (then fw_last_error())
//! FwVerdict v; fw_verdict(d, &v);
//! fw_close(d);
//! ```
//!
//! Several streams through one set of models (a monitor with many channels,
//! a video-call gateway): `fw_multi_open`, `fw_multi_add_stream`, then
//! `fw_push_frame_on` / `fw_verdict_on` with the stream id. Calls for
//! different streams may come from different threads at the same time.
//!
//! Rules: every function checks its pointers and sizes; errors return `NULL`
//! or a negative value and leave a message for [`fw_last_error`] (per thread);
//! no panic crosses the boundary (each entry point catches them and reports
//! them as errors); the caller owns every buffer it passes in.

#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use fakewatch_sdk::backend::{Backend, TractBackend};
use fakewatch_sdk::bundle::{Bundle, PublicKey};
use fakewatch_sdk::detector::ScoredFace;
use fakewatch_sdk::detector::Session;
use fakewatch_sdk::runtime::BackendSpec;
use fakewatch_sdk::{
    DeepfakeDetector, Frame, FrameRef, Label, MultiSession, PixelFormat, StreamId,
};

/// Pixel layouts accepted by [`fw_push_frame`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwPixelFormat {
    /// Packed R, G, B.
    Rgb8 = 0,
    /// Packed B, G, R.
    Bgr8 = 1,
    /// Packed R, G, B, A.
    Rgba8 = 2,
    /// Packed B, G, R, A (or BGRx).
    Bgra8 = 3,
    /// 8-bit grey.
    Gray8 = 4,
    /// Packed YUYV 4:2:2.
    Yuyv = 5,
    /// NV12: Y plane then interleaved U/V at half resolution.
    Nv12 = 6,
    /// I420: Y, U, V planes, chroma at half resolution.
    I420 = 7,
}

/// Verdict labels.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwLabel {
    /// Score below the bundle's threshold.
    Real = 0,
    /// Score at or above the threshold.
    Fake = 1,
    /// No face scored yet.
    Unknown = 2,
}

/// One face of a frame.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FwFace {
    /// Box left edge, pixels.
    pub x1: f32,
    /// Box top edge.
    pub y1: f32,
    /// Box right edge.
    pub x2: f32,
    /// Box bottom edge.
    pub y2: f32,
    /// Detector confidence.
    pub detection_score: f32,
    /// P(fake) of this face in this frame.
    pub p_fake: f32,
    /// Track id, or -1 when the face is not tracked.
    pub track: i64,
    /// Five landmarks: x0, y0, x1, y1, … (eyes, nose, mouth corners).
    pub landmarks: [f32; 10],
}

/// The verdict of the frames pushed since open or reset.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FwVerdict {
    /// Real, fake or unknown.
    pub label: FwLabel,
    /// P(fake) of the stream; NaN when no face was scored.
    pub score: f32,
    /// The decision threshold in use.
    pub threshold: f32,
    /// Tracks that contributed.
    pub tracks: u32,
    /// Frames pushed.
    pub frames: u64,
    /// Faces scored.
    pub faces: u64,
}

/// An open bundle with its current stream (opaque). The session holds the
/// detector.
pub struct FwDetector {
    session: Session,
}

/// An open bundle shared by several streams (opaque); see
/// [`fw_multi_open`].
pub struct FwMulti {
    multi: MultiSession,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: impl Into<String>) {
    let s = msg.into().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(s).unwrap_or_default());
}

fn guard<T>(fail: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => {
            set_error("");
            v
        }
        Ok(Err(e)) => {
            set_error(e);
            fail
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(format!("internal error (panic): {what}"));
            fail
        }
    }
}

/// The message of the last failed call on this thread ("" after a success).
/// Valid until the next fakewatch call on the same thread.
#[no_mangle]
pub extern "C" fn fw_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn fw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Opens a bundle directory (sha256 of every file checked). Returns `NULL` on
/// error (see [`fw_last_error`]). Free with [`fw_close`]. Each pushed frame's
/// detection and embedding are spread over every core this process may use
/// (short-lived threads inside [`fw_push_frame`]).
#[no_mangle]
pub unsafe extern "C" fn fw_open(bundle_dir: *const c_char) -> *mut FwDetector {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        unsafe { open(bundle_dir, std::ptr::null()) }
    })
}

/// As [`fw_open`], and refuses the bundle unless its `bundle.sig` is an
/// ed25519 signature of `bundle.json` by `public_key_hex` (64 hex digits, from
/// `fakewatch-train keygen`; checked before anything in the bundle is used).
#[no_mangle]
pub unsafe extern "C" fn fw_open_signed(
    bundle_dir: *const c_char,
    public_key_hex: *const c_char,
) -> *mut FwDetector {
    guard(std::ptr::null_mut(), || {
        if public_key_hex.is_null() {
            return Err("public_key_hex is NULL".into());
        }
        // SAFETY: forwarded from the caller.
        unsafe { open(bundle_dir, public_key_hex) }
    })
}

/// As [`fw_open_signed`] with a chosen inference backend: `backend` is
/// `"tract"` (pure Rust; also when NULL) or, in a library built with the
/// `ort` feature, `"ort-cpu"`, `"ort-cuda"` or `"ort-tensorrt"` (onnxruntime
/// from `ORT_DYLIB_PATH`; a provider that cannot be used falls back to
/// onnxruntime's CPU with a warning). `public_key_hex` may be NULL (unsigned
/// bundles accepted). Returns `NULL` on error (see [`fw_last_error`]).
#[no_mangle]
pub unsafe extern "C" fn fw_open_with(
    bundle_dir: *const c_char,
    public_key_hex: *const c_char,
    backend: *const c_char,
) -> *mut FwDetector {
    guard(std::ptr::null_mut(), || {
        let name = if backend.is_null() {
            String::new()
        } else {
            // SAFETY: the caller passes a NUL-terminated string.
            unsafe { CStr::from_ptr(backend) }
                .to_str()
                .map_err(|_| "backend is not UTF-8".to_string())?
                .to_string()
        };
        let backend = BackendSpec {
            name,
            ..BackendSpec::default()
        }
        .open()
        .map_err(|e| e.to_string())?;
        // SAFETY: forwarded from the caller.
        unsafe { open_on(bundle_dir, public_key_hex, backend.as_ref()) }
    })
}

/// Opens a bundle, checking its signature when `key_hex` is not NULL.
///
/// # Safety
/// Both pointers are NULL or NUL-terminated strings.
unsafe fn open(
    bundle_dir: *const c_char,
    key_hex: *const c_char,
) -> Result<*mut FwDetector, String> {
    // SAFETY: forwarded from the caller.
    unsafe { open_on(bundle_dir, key_hex, &TractBackend) }
}

/// [`open`] on `backend`.
///
/// # Safety
/// Both pointers are NULL or NUL-terminated strings.
unsafe fn open_on(
    bundle_dir: *const c_char,
    key_hex: *const c_char,
    backend: &dyn Backend,
) -> Result<*mut FwDetector, String> {
    // SAFETY: forwarded from the caller.
    let det = unsafe { open_detector(bundle_dir, key_hex, backend) }?;
    Ok(Box::into_raw(Box::new(FwDetector {
        session: det.live_session(),
    })))
}

/// The detector of a bundle, its signature checked when `key_hex` is not
/// NULL.
///
/// # Safety
/// Both pointers are NULL or NUL-terminated strings.
unsafe fn open_detector(
    bundle_dir: *const c_char,
    key_hex: *const c_char,
    backend: &dyn Backend,
) -> Result<Arc<DeepfakeDetector>, String> {
    if bundle_dir.is_null() {
        return Err("bundle_dir is NULL".into());
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let dir = unsafe { CStr::from_ptr(bundle_dir) }
        .to_str()
        .map_err(|_| "bundle_dir is not UTF-8".to_string())?;
    let key: Option<PublicKey> = if key_hex.is_null() {
        None
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(key_hex) }
            .to_str()
            .map_err(|_| "public_key_hex is not UTF-8".to_string())?;
        Some(
            text.parse()
                .map_err(|e: fakewatch_sdk::Error| e.to_string())?,
        )
    };
    let bundle =
        Bundle::load_with(std::path::Path::new(dir), key.as_ref()).map_err(|e| e.to_string())?;
    if bundle.manifest().classifier.is_none() {
        return Err(format!("bundle {dir} has no classifier"));
    }
    DeepfakeDetector::builder(&bundle)
        .threads(fakewatch_sdk::parallel::available_threads())
        .build(backend)
        .map_err(|e| e.to_string())
}

/// Opens a bundle (as [`fw_open`]) for up to `max_streams` streams that
/// share its models; each stream keeps its own tracks and verdict. Returns
/// `NULL` on error (see [`fw_last_error`]). Free with [`fw_multi_close`].
#[no_mangle]
pub unsafe extern "C" fn fw_multi_open(
    bundle_dir: *const c_char,
    max_streams: u32,
) -> *mut FwMulti {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        let detector = unsafe { open_detector(bundle_dir, std::ptr::null(), &TractBackend) }?;
        let multi = MultiSession::new(detector, max_streams as usize).map_err(|e| e.to_string())?;
        Ok(Box::into_raw(Box::new(FwMulti { multi })))
    })
}

/// Closes a multi-stream detector and all its streams (`NULL` is ignored).
/// No other call on it may be running.
#[no_mangle]
pub unsafe extern "C" fn fw_multi_close(multi: *mut FwMulti) {
    guard((), || {
        if !multi.is_null() {
            // SAFETY: `multi` came from `fw_multi_open` and is not used again.
            drop(unsafe { Box::from_raw(multi) });
        }
        Ok(())
    })
}

/// The C string at `p` as UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| format!("{what} is not UTF-8"))
}

/// Opens a stream named `name` (unique among the open streams). Returns its
/// id (≥ 0), or -1 on error, e.g. when `max_streams` streams are open.
#[no_mangle]
pub unsafe extern "C" fn fw_multi_add_stream(multi: *const FwMulti, name: *const c_char) -> i64 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_multi_open`.
        let m = unsafe { multi.as_ref() }.ok_or("multi is NULL")?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { c_str(name, "name") }?;
        let id = m.multi.add_stream(name).map_err(|e| e.to_string())?;
        Ok(i64::from(id.0))
    })
}

/// Closes stream `stream`. Returns 0, or -1 on error (unknown stream).
#[no_mangle]
pub unsafe extern "C" fn fw_multi_remove_stream(multi: *const FwMulti, stream: u32) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_multi_open`.
        let m = unsafe { multi.as_ref() }.ok_or("multi is NULL")?;
        m.multi
            .remove_stream(StreamId(stream))
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

/// As [`fw_push_frame`], for stream `stream` of a multi-stream detector.
/// Frames of one stream are analysed in the order of the calls; calls for
/// different streams may run concurrently on different threads.
#[no_mangle]
pub unsafe extern "C" fn fw_push_frame_on(
    multi: *const FwMulti,
    stream: u32,
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
    faces: *mut FwFace,
    faces_cap: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_multi_open`.
        let m = unsafe { multi.as_ref() }.ok_or("multi is NULL")?;
        // SAFETY: forwarded from the caller.
        let frame = unsafe { c_frame(data, len, width, height, stride, format) }?;
        check_faces_out(faces, faces_cap)?;
        let step = m
            .multi
            .process(StreamId(stream), &frame)
            .map_err(|e| e.to_string())?;
        // SAFETY: forwarded from the caller.
        unsafe { write_faces(&step.faces, faces, faces_cap) }
    })
}

/// As [`fw_verdict`], for stream `stream`. Returns 0, or -1 on error.
#[no_mangle]
pub unsafe extern "C" fn fw_verdict_on(
    multi: *const FwMulti,
    stream: u32,
    out: *mut FwVerdict,
) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_multi_open`.
        let m = unsafe { multi.as_ref() }.ok_or("multi is NULL")?;
        // SAFETY: NULL or a caller-owned `FwVerdict`.
        let out = unsafe { out.as_mut() }.ok_or("out is NULL")?;
        *out = m
            .multi
            .with_session(StreamId(stream), |s| verdict_of(s))
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

/// Closes a detector (`NULL` is ignored).
#[no_mangle]
pub unsafe extern "C" fn fw_close(detector: *mut FwDetector) {
    guard((), || {
        if !detector.is_null() {
            // SAFETY: `detector` came from `fw_open` and is not used again.
            drop(unsafe { Box::from_raw(detector) });
        }
        Ok(())
    })
}

/// Starts a new stream: forgets tracks and scores.
#[no_mangle]
pub unsafe extern "C" fn fw_reset(detector: *mut FwDetector) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_open`.
        let d = unsafe { detector.as_mut() }.ok_or("detector is NULL")?;
        d.session.reset();
        Ok(0)
    })
}

/// The SDK format of a raw `FwPixelFormat` value from C (checked: an
/// out-of-range value is an error, never undefined behaviour).
fn pixel_format(raw: u32) -> Result<PixelFormat, String> {
    Ok(match raw {
        x if x == FwPixelFormat::Rgb8 as u32 => PixelFormat::Rgb8,
        x if x == FwPixelFormat::Bgr8 as u32 => PixelFormat::Bgr8,
        x if x == FwPixelFormat::Rgba8 as u32 => PixelFormat::Rgba8,
        x if x == FwPixelFormat::Bgra8 as u32 => PixelFormat::Bgra8,
        x if x == FwPixelFormat::Gray8 as u32 => PixelFormat::Gray8,
        x if x == FwPixelFormat::Yuyv as u32 => PixelFormat::Yuyv,
        x if x == FwPixelFormat::Nv12 as u32 => PixelFormat::Nv12,
        x if x == FwPixelFormat::I420 as u32 => PixelFormat::I420,
        other => return Err(format!("unknown pixel format {other}")),
    })
}

/// Detects, tracks and scores the faces of one frame. `format` is an
/// `FwPixelFormat` value. `data` holds `len`
/// bytes: `height` rows of `stride` bytes (planar formats: the planes follow
/// each other with the same stride). Writes up to `faces_cap` faces to
/// `faces` (which may be `NULL` when `faces_cap` is 0) and returns how many
/// faces the frame has (possibly more than written), or -1 on error.
#[no_mangle]
pub unsafe extern "C" fn fw_push_frame(
    detector: *mut FwDetector,
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
    faces: *mut FwFace,
    faces_cap: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_open`.
        let d = unsafe { detector.as_mut() }.ok_or("detector is NULL")?;
        // SAFETY: forwarded from the caller.
        let frame = unsafe { c_frame(data, len, width, height, stride, format) }?;
        check_faces_out(faces, faces_cap)?;
        let scored = d.session.process(&frame).map_err(|e| e.to_string())?;
        // SAFETY: forwarded from the caller.
        unsafe { write_faces(&scored, faces, faces_cap) }
    })
}

/// The RGB frame of a caller's buffer (checked: sizes, stride, format).
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
unsafe fn c_frame(
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
) -> Result<Frame, String> {
    if data.is_null() {
        return Err("data is NULL".into());
    }
    let format = pixel_format(format)?;
    // SAFETY: the caller promises `len` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    Ok(FrameRef::new(bytes, width, height, stride, format)
        .map_err(|e| e.to_string())?
        .to_rgb())
}

fn check_faces_out(faces: *mut FwFace, faces_cap: usize) -> Result<(), String> {
    if faces.is_null() && faces_cap > 0 {
        return Err("faces is NULL but faces_cap > 0".into());
    }
    Ok(())
}

/// Writes up to `faces_cap` of `scored` to `faces` and returns how many the
/// frame has.
///
/// # Safety
/// `faces` points to `faces_cap` writable `FwFace`s (or `faces_cap` is 0).
unsafe fn write_faces(
    scored: &[ScoredFace],
    faces: *mut FwFace,
    faces_cap: usize,
) -> Result<i32, String> {
    let out: &mut [FwFace] = if faces_cap == 0 {
        &mut []
    } else {
        // SAFETY: the caller owns `faces_cap` writable `FwFace`s at `faces`.
        unsafe { std::slice::from_raw_parts_mut(faces, faces_cap) }
    };
    for (o, s) in out.iter_mut().zip(scored) {
        let det = &s.face.detection;
        let mut lm = [0f32; 10];
        for (i, p) in det.landmarks.0.iter().enumerate() {
            lm[2 * i] = p.x;
            lm[2 * i + 1] = p.y;
        }
        *o = FwFace {
            x1: det.bbox.x1,
            y1: det.bbox.y1,
            x2: det.bbox.x2,
            y2: det.bbox.y2,
            detection_score: det.score,
            p_fake: s.p_fake,
            track: s.track.map_or(-1, i64::from),
            landmarks: lm,
        };
    }
    i32::try_from(scored.len()).map_err(|_| "too many faces".to_string())
}

/// A session's verdict as C sees it.
fn verdict_of(s: &Session) -> FwVerdict {
    let v = s.verdict();
    FwVerdict {
        label: match v.label {
            Label::Real => FwLabel::Real,
            Label::Fake => FwLabel::Fake,
            Label::Unknown => FwLabel::Unknown,
        },
        score: v.score.unwrap_or(f32::NAN),
        threshold: s.detector().decision().threshold,
        tracks: v.tracks.len() as u32,
        frames: s.frames() as u64,
        faces: s.faces() as u64,
    }
}

/// Writes the current verdict to `out`. Returns 0, or -1 on error.
#[no_mangle]
pub unsafe extern "C" fn fw_verdict(detector: *const FwDetector, out: *mut FwVerdict) -> i32 {
    guard(-1, || {
        // SAFETY: NULL or a pointer from `fw_open`.
        let d = unsafe { detector.as_ref() }.ok_or("detector is NULL")?;
        // SAFETY: NULL or a caller-owned `FwVerdict`.
        let out = unsafe { out.as_mut() }.ok_or("out is NULL")?;
        *out = verdict_of(&d.session);
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> String {
        // SAFETY: fw_last_error returns a valid C string.
        unsafe { CStr::from_ptr(fw_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn bad_arguments_are_errors_not_crashes() {
        unsafe {
            assert!(fw_open(std::ptr::null()).is_null());
            assert!(err().contains("NULL"));
            let missing = CString::new("/nonexistent/bundle").unwrap();
            assert!(fw_open(missing.as_ptr()).is_null());
            assert!(!err().is_empty());
            let mut v = std::mem::zeroed::<FwVerdict>();
            assert_eq!(fw_verdict(std::ptr::null(), &mut v), -1);
            assert_eq!(
                fw_push_frame(
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    0,
                    1,
                    1,
                    3,
                    FwPixelFormat::Rgb8 as u32,
                    std::ptr::null_mut(),
                    0
                ),
                -1
            );
            fw_close(std::ptr::null_mut());
            assert_eq!(err(), "");
            // A backend name is checked before the bundle is read.
            let nope = CString::new("nope").unwrap();
            assert!(fw_open_with(missing.as_ptr(), std::ptr::null(), nope.as_ptr()).is_null());
            assert!(err().contains("unknown backend \"nope\""), "{}", err());
            let bad_key = CString::new("zz").unwrap();
            let tract = CString::new("tract").unwrap();
            assert!(fw_open_with(missing.as_ptr(), bad_key.as_ptr(), tract.as_ptr()).is_null());
            assert!(err().contains("64 hex digits"), "{}", err());

            let v = CStr::from_ptr(fw_version()).to_str().unwrap();
            assert_eq!(v, env!("CARGO_PKG_VERSION"));
        }
    }

    /// Loads the default bundle's models: left to native runs (under qemu
    /// in `.ci/aarch64` it would take long; the emulated scan there loads
    /// them through `fakewatch`).
    #[test]
    #[cfg_attr(target_arch = "aarch64", ignore = "loads models; slow under qemu")]
    fn the_default_bundle_opens_on_a_named_backend() {
        unsafe {
            let tract = CString::new("tract").unwrap();
            let default =
                CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default")).unwrap();
            let d = fw_open_with(default.as_ptr(), std::ptr::null(), tract.as_ptr());
            assert!(!d.is_null(), "{}", err());
            let mut v = std::mem::zeroed::<FwVerdict>();
            assert_eq!(fw_verdict(d, &mut v), 0);
            assert_eq!((v.label, v.frames), (FwLabel::Unknown, 0));
            fw_close(d);
        }
    }

    /// Two streams through one bundle: each has its own faces and
    /// verdict; the cap, unknown streams and bad pointers are errors.
    #[test]
    #[cfg_attr(target_arch = "aarch64", ignore = "loads models; slow under qemu")]
    fn streams_share_a_bundle_and_keep_their_own_verdicts() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let t1 = fakewatch_sdk::Frame::load(format!("{root}/tests/fixtures/t1.jpg")).unwrap();
        let blank = vec![128u8; 64 * 48 * 3];
        unsafe {
            assert!(fw_multi_open(std::ptr::null(), 2).is_null());
            assert!(err().contains("NULL"), "{}", err());
            let dir = CString::new(format!("{root}/models/default")).unwrap();
            assert!(fw_multi_open(dir.as_ptr(), 0).is_null());
            assert!(err().contains("max_streams"), "{}", err());
            let m = fw_multi_open(dir.as_ptr(), 2);
            assert!(!m.is_null(), "{}", err());
            let (a, b) = (c"cam1", c"cam2");
            let ia = fw_multi_add_stream(m, a.as_ptr());
            let ib = fw_multi_add_stream(m, b.as_ptr());
            assert_eq!((ia, ib), (0, 1), "{}", err());
            assert_eq!(fw_multi_add_stream(m, c"cam3".as_ptr()), -1);
            assert!(err().contains("max_streams 2"), "{}", err());
            assert_eq!(fw_multi_add_stream(m, std::ptr::null()), -1);

            let mut faces = [std::mem::zeroed::<FwFace>(); 8];
            let n = fw_push_frame_on(
                m,
                ia as u32,
                t1.data().as_ptr(),
                t1.data().len(),
                t1.width(),
                t1.height(),
                t1.stride(),
                FwPixelFormat::Rgb8 as u32,
                faces.as_mut_ptr(),
                faces.len(),
            );
            assert_eq!(n, 6, "{}", err());
            assert!(faces[..6]
                .iter()
                .all(|f| f.track >= 0 && f.p_fake.is_finite()));
            let n = fw_push_frame_on(
                m,
                ib as u32,
                blank.as_ptr(),
                blank.len(),
                64,
                48,
                64 * 3,
                FwPixelFormat::Rgb8 as u32,
                faces.as_mut_ptr(),
                faces.len(),
            );
            assert_eq!(n, 0, "{}", err());
            // A short buffer is that call's error; the streams go on.
            let n = fw_push_frame_on(
                m,
                ib as u32,
                blank.as_ptr(),
                10,
                64,
                48,
                64 * 3,
                FwPixelFormat::Rgb8 as u32,
                std::ptr::null_mut(),
                0,
            );
            assert_eq!(n, -1);
            let mut va = std::mem::zeroed::<FwVerdict>();
            let mut vb = std::mem::zeroed::<FwVerdict>();
            assert_eq!(fw_verdict_on(m, ia as u32, &mut va), 0);
            assert_eq!(fw_verdict_on(m, ib as u32, &mut vb), 0);
            assert_eq!((va.frames, va.faces, va.tracks), (1, 6, 6));
            assert_eq!((vb.frames, vb.faces, vb.label), (1, 0, FwLabel::Unknown));
            assert_eq!(fw_verdict_on(m, 7, &mut va), -1);
            assert!(err().contains("no such stream"), "{}", err());
            assert_eq!(fw_multi_remove_stream(m, ib as u32), 0);
            assert_eq!(fw_verdict_on(m, ib as u32, &mut vb), -1);
            assert_eq!(fw_multi_add_stream(m, c"cam3".as_ptr()), 2);
            fw_multi_close(m);
            fw_multi_close(std::ptr::null_mut());
        }
    }

    #[test]
    fn header_is_current() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let cfg = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).unwrap();
        let mut fresh = Vec::new();
        cbindgen::Builder::new()
            .with_crate(dir)
            .with_config(cfg)
            .generate()
            .unwrap()
            .write(&mut fresh);
        let path = format!("{dir}/include/fakewatch.h");
        let committed = std::fs::read(&path).unwrap_or_default();
        if committed != fresh {
            if std::env::var_os("FAKEWATCH_BLESS").is_some() {
                std::fs::write(&path, &fresh).unwrap();
            } else {
                panic!("{path} is stale: rerun with FAKEWATCH_BLESS=1");
            }
        }
    }
}
