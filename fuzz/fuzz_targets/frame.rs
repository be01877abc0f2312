//! Frames from untrusted buffers: any width, height, stride and pixel format
//! over any bytes must give a frame (then converted to RGB) or an error.
//!
//! Input: width u16, height u16, stride u32 (all little-endian), format byte,
//! then the pixel bytes.
#![no_main]

use fakewatch_sdk::{FrameRef, PixelFormat};
use libfuzzer_sys::fuzz_target;

const FORMATS: [PixelFormat; 8] = [
    PixelFormat::Rgb8,
    PixelFormat::Bgr8,
    PixelFormat::Rgba8,
    PixelFormat::Bgra8,
    PixelFormat::Gray8,
    PixelFormat::Yuyv,
    PixelFormat::Nv12,
    PixelFormat::I420,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let width = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let height = u32::from(u16::from_le_bytes([data[2], data[3]]));
    let stride = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    let format = FORMATS[usize::from(data[8]) % FORMATS.len()];
    let pixels = &data[9..];
    if let Ok(f) = FrameRef::new(pixels, width, height, stride, format) {
        let rgb = f.to_rgb();
        assert_eq!((rgb.width(), rgb.height()), (width, height));
        assert!(rgb.row(height - 1).is_some());
    }
});
