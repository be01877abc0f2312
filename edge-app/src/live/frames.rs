//! What every capture source shares: the frame size a device is asked for,
//! and the trait a source implements. Apart from `source.rs`, which opens
//! the sources (`camera.rs`, `v4l2.rs`, GStreamer, files), so the sources do
//! not import the module that opens them.

use anyhow::{bail, Context, Result};
use fakewatch_sdk::Frame;

/// Width × height, written `WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl std::str::FromStr for Size {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .with_context(|| format!("size {s:?}: expected WxH"))?;
        let (width, height) = (w.trim().parse()?, h.trim().parse()?);
        if width == 0 || height == 0 {
            bail!("size {s:?}: zero side");
        }
        Ok(Self { width, height })
    }
}

/// Something that yields frames.
pub trait FrameSource {
    /// The next frame; `None` at the end.
    fn next(&mut self) -> Result<Option<Frame>>;
    /// The source's frame rate, when it states one.
    fn fps(&self) -> Option<f64>;
}
