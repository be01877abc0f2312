//! V4L2 capture (USB cameras, HDMI capture cards) through the `v4l` crate:
//! format negotiation among MJPEG, YUYV and NV12, memory-mapped buffers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fakewatch_sdk::{Frame, FrameRef, PixelFormat};
use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::frames::Size;

/// Formats this source decodes, in order of preference.
pub const PREFERRED: &[&str] = &["MJPG", "YUYV", "NV12"];

/// An open V4L2 capture stream.
pub struct V4lSource {
    stream: Stream<'static>,
    fourcc: FourCC,
    width: u32,
    height: u32,
    stride: usize,
    fps: Option<f64>,
    _device: Device,
}

impl V4lSource {
    /// Opens `device`, negotiating `fourcc` (or the first of [`PREFERRED`]
    /// the device offers), `size` and `fps`.
    pub fn open(
        device: &Path,
        size: Option<Size>,
        fps: Option<u32>,
        fourcc: Option<&str>,
    ) -> Result<Self> {
        let dev = Device::with_path(device)
            .with_context(|| format!("opening V4L2 device {}", device.display()))?;
        let offered: Vec<String> = dev
            .enum_formats()
            .with_context(|| format!("{}: listing formats", device.display()))?
            .iter()
            .map(|d| d.fourcc.str().unwrap_or("????").to_string())
            .collect();
        let wanted: Vec<&str> = match fourcc {
            Some(f) => vec![f],
            None => PREFERRED.to_vec(),
        };
        let Some(chosen) = wanted
            .iter()
            .find(|w| offered.iter().any(|o| o == *w) && PREFERRED.contains(w))
        else {
            bail!(
                "{}: offers {} but fakewatch reads {} (asked for {})",
                device.display(),
                offered.join(", "),
                PREFERRED.join(", "),
                wanted.join(", ")
            );
        };
        let mut fmt = dev.format()?;
        fmt.fourcc = FourCC::new(&chosen_bytes(chosen));
        if let Some(s) = size {
            fmt.width = s.width;
            fmt.height = s.height;
        }
        let fmt = dev
            .set_format(&fmt)
            .with_context(|| format!("{}: setting format {chosen}", device.display()))?;
        if fmt.fourcc.str().ok() != Some(*chosen) {
            bail!(
                "{}: asked for {chosen}, the driver chose {}",
                device.display(),
                fmt.fourcc
            );
        }
        let mut rate = None;
        if let Some(f) = fps {
            let p = dev.set_params(&v4l::video::capture::Parameters::with_fps(f))?;
            let (n, d) = (p.interval.numerator, p.interval.denominator);
            rate = (n > 0).then(|| f64::from(d) / f64::from(n));
        }
        let stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
            .with_context(|| format!("{}: mapping capture buffers", device.display()))?;
        log::info!(
            "{}: {}x{} {chosen}{}",
            device.display(),
            fmt.width,
            fmt.height,
            rate.map(|r| format!(" @ {r:.1} fps")).unwrap_or_default()
        );
        Ok(Self {
            stream,
            fourcc: fmt.fourcc,
            width: fmt.width,
            height: fmt.height,
            stride: fmt.stride as usize,
            fps: rate,
            _device: dev,
        })
    }
}

fn chosen_bytes(s: &str) -> [u8; 4] {
    let mut b = [b' '; 4];
    for (d, c) in b.iter_mut().zip(s.bytes()) {
        *d = c;
    }
    b
}

impl super::source::FrameSource for V4lSource {
    fn next(&mut self) -> Result<Option<Frame>> {
        let (buf, meta) = self.stream.next().context("V4L2 capture")?;
        let data = buf
            .get(..meta.bytesused as usize)
            .filter(|d| !d.is_empty())
            .unwrap_or(buf);
        let (w, h) = (self.width, self.height);
        let frame = match self.fourcc.str().unwrap_or("") {
            "MJPG" => Frame::decode(data)?,
            "YUYV" => FrameRef::new(
                data,
                w,
                h,
                self.stride.max(w as usize * 2),
                PixelFormat::Yuyv,
            )?
            .to_rgb(),
            "NV12" => {
                FrameRef::new(data, w, h, self.stride.max(w as usize), PixelFormat::Nv12)?.to_rgb()
            }
            other => bail!("unsupported V4L2 format {other}"),
        };
        Ok(Some(frame))
    }
    fn fps(&self) -> Option<f64> {
        self.fps
    }
}
