//! `camera:N` through `nokhwa` (feature `nokhwa`): the portable camera API
//! (V4L2 on Linux, AVFoundation on macOS, Media Foundation on Windows). Raw
//! frames are converted by the SDK (nokhwa's own MJPEG decoder, mozjpeg, is
//! left out).

use anyhow::{Context, Result};
use fakewatch_sdk::{Frame, FrameRef, PixelFormat};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use nokhwa::Camera;

use super::frames::{FrameSource, Size};

/// Frame rate asked for when only a size is given.
const DEFAULT_CAMERA_FPS: u32 = 30;

/// An open camera stream.
pub struct NokhwaSource {
    camera: Camera,
}

impl NokhwaSource {
    /// Opens camera `index`, closest to `size` and `fps` when given.
    pub fn open(index: u32, size: Option<Size>, fps: Option<u32>) -> Result<Self> {
        let want = match (size, fps) {
            (Some(s), f) => RequestedFormatType::Closest(CameraFormat::new(
                Resolution::new(s.width, s.height),
                FrameFormat::MJPEG,
                f.unwrap_or(DEFAULT_CAMERA_FPS),
            )),
            (None, Some(f)) => RequestedFormatType::HighestFrameRate(f),
            (None, None) => RequestedFormatType::AbsoluteHighestFrameRate,
        };
        let mut camera = Camera::new(
            CameraIndex::Index(index),
            RequestedFormat::new::<RgbFormat>(want),
        )
        .with_context(|| format!("opening camera {index}"))?;
        camera
            .open_stream()
            .with_context(|| format!("starting camera {index}"))?;
        log::info!("camera {index}: {}", camera.camera_format());
        Ok(Self { camera })
    }
}

impl FrameSource for NokhwaSource {
    fn next(&mut self) -> Result<Option<Frame>> {
        let fmt = self.camera.camera_format();
        let (w, h) = (fmt.width(), fmt.height());
        let raw = self.camera.frame_raw().context("camera frame")?;
        let (stride, pf) = match fmt.format() {
            FrameFormat::MJPEG => return Ok(Some(Frame::decode(&raw)?)),
            FrameFormat::YUYV => (w as usize * 2, PixelFormat::Yuyv),
            FrameFormat::NV12 => (w as usize, PixelFormat::Nv12),
            FrameFormat::GRAY => (w as usize, PixelFormat::Gray8),
            FrameFormat::RAWRGB => (w as usize * 3, PixelFormat::Rgb8),
            FrameFormat::RAWBGR => (w as usize * 3, PixelFormat::Bgr8),
        };
        Ok(Some(FrameRef::new(&raw, w, h, stride, pf)?.to_rgb()))
    }
    fn fps(&self) -> Option<f64> {
        Some(f64::from(self.camera.frame_rate())).filter(|f| *f > 0.0)
    }
}
