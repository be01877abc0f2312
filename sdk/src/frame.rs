//! Frames: owned and borrowed images with stride, and conversion to RGB8 from
//! the pixel formats cameras and decoders deliver.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// Largest accepted width or height. Larger frames are refused before any
/// allocation (8K UHD is 7680 × 4320).
pub const MAX_FRAME_SIDE: u32 = 8192;

/// Largest image file [`Frame::load`] reads (bytes).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Pixel layouts accepted by [`FrameRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B.
    Rgb8,
    /// Packed 8-bit B, G, R.
    Bgr8,
    /// Packed 8-bit R, G, B, A (alpha ignored).
    Rgba8,
    /// Packed 8-bit B, G, R, A or BGRx (alpha/padding ignored).
    Bgra8,
    /// 8-bit luma only.
    Gray8,
    /// Packed 4:2:2 Y0 U Y1 V (V4L2 `YUYV`), BT.601 limited range.
    Yuyv,
    /// Planar luma + interleaved U/V at half resolution (4:2:0), BT.601 limited range.
    Nv12,
    /// Planar Y, U, V at half resolution (4:2:0), BT.601 limited range.
    I420,
}

impl PixelFormat {
    /// Minimum bytes of one row of the first plane for `width` pixels.
    pub fn min_stride(self, width: u32) -> usize {
        let w = width as usize;
        match self {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => w * 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => w * 4,
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => w,
            PixelFormat::Yuyv => w.div_ceil(2) * 4,
        }
    }

    /// Total bytes a frame of `height` rows needs with the given first-plane
    /// stride. Chroma planes of NV12/I420 follow the luma plane; their stride is
    /// `stride` (NV12) or `stride / 2` rounded up (I420), as GStreamer and V4L2
    /// lay them out by default.
    pub fn required_len(self, height: u32, stride: usize) -> Option<usize> {
        let h = height as usize;
        let luma = stride.checked_mul(h)?;
        match self {
            PixelFormat::Nv12 => luma.checked_add(stride.checked_mul(h.div_ceil(2))?),
            PixelFormat::I420 => {
                let cs = stride.div_ceil(2);
                luma.checked_add(cs.checked_mul(h.div_ceil(2))?.checked_mul(2)?)
            }
            _ => Some(luma),
        }
    }
}

/// A borrowed frame in any [`PixelFormat`], validated at construction.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
}

fn check_dims(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::frame(format!("empty frame {width}x{height}")));
    }
    if width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(Error::frame(format!(
            "frame {width}x{height} exceeds the {MAX_FRAME_SIDE} px limit per side"
        )));
    }
    Ok(())
}

impl<'a> FrameRef<'a> {
    /// Wrap a buffer. `stride` is the byte distance between rows of the first plane.
    /// Fails when the dimensions are zero or too large, the stride is too small for
    /// the width, or the buffer is too short.
    pub fn new(
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        check_dims(width, height)?;
        let min = format.min_stride(width);
        if stride < min {
            return Err(Error::frame(format!(
                "stride {stride} < {min} bytes needed for {width} px of {format:?}"
            )));
        }
        if matches!(
            format,
            PixelFormat::Nv12 | PixelFormat::I420 | PixelFormat::Yuyv
        ) && (!width.is_multiple_of(2)
            || !height.is_multiple_of(2) && format != PixelFormat::Yuyv)
        {
            return Err(Error::frame(format!(
                "{format:?} needs even dimensions, got {width}x{height}"
            )));
        }
        let need = format
            .required_len(height, stride)
            .ok_or_else(|| Error::frame("frame size overflows"))?;
        if data.len() < need {
            return Err(Error::frame(format!(
                "buffer of {} bytes < {need} needed for {width}x{height} {format:?} with stride {stride}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    /// Converts to an owned, tightly packed RGB8 [`Frame`].
    pub fn to_rgb(&self) -> Frame {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = vec![0u8; w * h * 3];
        let s = self.stride;
        let d = self.data;
        match self.format {
            PixelFormat::Rgb8 => {
                for y in 0..h {
                    out[y * w * 3..(y + 1) * w * 3].copy_from_slice(&d[y * s..y * s + w * 3]);
                }
            }
            PixelFormat::Bgr8 | PixelFormat::Rgba8 | PixelFormat::Bgra8 => {
                let (bpp, swap) = match self.format {
                    PixelFormat::Bgr8 => (3, true),
                    PixelFormat::Rgba8 => (4, false),
                    _ => (4, true),
                };
                for y in 0..h {
                    let src = &d[y * s..y * s + w * bpp];
                    let dst = &mut out[y * w * 3..(y + 1) * w * 3];
                    for (p, q) in src.chunks_exact(bpp).zip(dst.chunks_exact_mut(3)) {
                        if swap {
                            q.copy_from_slice(&[p[2], p[1], p[0]]);
                        } else {
                            q.copy_from_slice(&p[..3]);
                        }
                    }
                }
            }
            PixelFormat::Gray8 => {
                for y in 0..h {
                    let src = &d[y * s..y * s + w];
                    for (x, &v) in src.iter().enumerate() {
                        out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[v, v, v]);
                    }
                }
            }
            PixelFormat::Yuyv => {
                for y in 0..h {
                    let src = &d[y * s..];
                    let dst = &mut out[y * w * 3..(y + 1) * w * 3];
                    for x in 0..w {
                        let pair = (x / 2) * 4;
                        let luma = src[pair + if x % 2 == 0 { 0 } else { 2 }];
                        let rgb = yuv_to_rgb(luma, src[pair + 1], src[pair + 3]);
                        dst[x * 3..x * 3 + 3].copy_from_slice(&rgb);
                    }
                }
            }
            PixelFormat::Nv12 => {
                let uv = &d[s * h..];
                for y in 0..h {
                    let row = &uv[(y / 2) * s..];
                    for x in 0..w {
                        let c = (x / 2) * 2;
                        let rgb = yuv_to_rgb(d[y * s + x], row[c], row[c + 1]);
                        out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb);
                    }
                }
            }
            PixelFormat::I420 => {
                let cs = s.div_ceil(2);
                let ch = h.div_ceil(2);
                let u = &d[s * h..];
                let v = &u[cs * ch..];
                for y in 0..h {
                    for x in 0..w {
                        let ci = (y / 2) * cs + x / 2;
                        let rgb = yuv_to_rgb(d[y * s + x], u[ci], v[ci]);
                        out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb);
                    }
                }
            }
        }
        Frame {
            data: out,
            width: self.width,
            height: self.height,
            stride: w * 3,
            timestamp: None,
        }
    }
}

/// BT.601 limited-range YCbCr to RGB in fixed point (the convention of SD
/// cameras, V4L2 and most software decoders' default).
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16).max(0) * 298;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Frame buffers handed back for reuse, shared by the threads of a video
/// pipeline (clones share one pool).
///
/// Each new buffer of a 1080p frame is 6.2 MB of fresh pages that the kernel
/// must map and zero, up to twice per frame at 30 fps in a live pipeline; a buffer
/// from the pool has its pages already. [`BufferPool::take`] returns an empty
/// vector with the capacity of a returned one (or none), so callers fill it
/// with `extend_from_slice`. At most `capacity` buffers are kept.
#[derive(Debug, Clone)]
pub struct BufferPool {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
}

impl BufferPool {
    /// A pool that keeps at most `capacity` returned buffers.
    pub fn new(capacity: usize) -> Self {
        Self {
            free: Default::default(),
            capacity,
        }
    }

    /// An empty buffer, with the capacity of a returned one when there is one.
    pub fn take(&self) -> Vec<u8> {
        let mut v = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default();
        v.clear();
        v
    }

    /// A buffer from the pool holding a copy of `bytes`.
    pub fn copy_of(&self, bytes: &[u8]) -> Vec<u8> {
        let mut v = self.take();
        v.extend_from_slice(bytes);
        v
    }

    /// Hands a buffer back; dropped when the pool is full.
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        if let Ok(mut f) = self.free.lock() {
            if f.len() < self.capacity {
                f.push(buffer);
            }
        }
    }

    /// Buffers waiting for reuse.
    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

/// An owned RGB8 image with a row stride, optionally time-stamped.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    data: Vec<u8>,
    width: u32,
    height: u32,
    stride: usize,
    /// Presentation time within its stream, when known.
    pub timestamp: Option<Duration>,
}

impl Frame {
    /// A packed RGB8 frame from `width * height * 3` bytes.
    pub fn from_rgb(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        Self::from_rgb_strided(width, height, width as usize * 3, data)
    }

    /// The frame's bytes (rows `stride` apart), for reuse through a
    /// [`BufferPool`].
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// A copy of this frame whose bytes live in a buffer from `pool`.
    pub fn clone_in(&self, pool: &BufferPool) -> Self {
        Self {
            data: pool.copy_of(&self.data),
            width: self.width,
            height: self.height,
            stride: self.stride,
            timestamp: self.timestamp,
        }
    }

    /// An RGB8 frame whose rows are `stride` bytes apart (padding kept as is).
    pub fn from_rgb_strided(width: u32, height: u32, stride: usize, data: Vec<u8>) -> Result<Self> {
        FrameRef::new(&data, width, height, stride, PixelFormat::Rgb8)?;
        Ok(Self {
            data,
            width,
            height,
            stride,
            timestamp: None,
        })
    }

    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Result<Self> {
        check_dims(width, height)?;
        let data = rgb.repeat(width as usize * height as usize);
        Self::from_rgb(width, height, data)
    }

    /// Converts any supported format to RGB8.
    pub fn from_ref(frame: &FrameRef<'_>) -> Self {
        frame.to_rgb()
    }

    /// Decodes an image file (JPEG or PNG; grey, alpha and 16-bit images are
    /// converted to RGB8; an EXIF orientation is applied). Dimensions are
    /// checked before pixels are decoded.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        // Regular files of bounded size only (not /dev/zero, a FIFO or a 4 GB blob).
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() || meta.len() > MAX_IMAGE_FILE_BYTES {
            return Err(Error::ImageDecode {
                path: path.into(),
                reason: format!("not a regular file of at most {MAX_IMAGE_FILE_BYTES} bytes"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::decode(&bytes).map_err(|e| match e {
            Error::ImageDecode { reason, .. } => Error::ImageDecode {
                path: path.into(),
                reason,
            },
            other => other,
        })
    }

    /// Decodes an in-memory JPEG or PNG, turned by its EXIF orientation.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let err = |reason: String| Error::ImageDecode {
            path: "<memory>".into(),
            reason,
        };
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))?;
        // The JPEG decoder fills a truncated file with grey and says nothing:
        // a JPEG without its end-of-image marker is refused instead of being
        // scored on a partial picture.
        if reader.format() == Some(image::ImageFormat::Jpeg)
            && !bytes.windows(2).any(|w| w == [0xFF, 0xD9])
        {
            return Err(err("truncated JPEG (no end-of-image marker)".into()));
        }
        let (w, h) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
        check_dims(w, h)?;
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_FRAME_SIDE);
        limits.max_image_height = Some(MAX_FRAME_SIDE);
        limits.max_alloc = Some(u64::from(MAX_FRAME_SIDE) * u64::from(MAX_FRAME_SIDE) * 8);
        reader.limits(limits);
        let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
        // Phone photos are stored sideways with an EXIF orientation; faces
        // are only found upright, so the picture is turned as a viewer shows it.
        let orientation = image::ImageDecoder::orientation(&mut decoder)
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
        img.apply_orientation(orientation);
        let img = img.into_rgb8();
        let (w, h) = img.dimensions();
        Self::from_rgb(w, h, img.into_raw())
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Bytes between the starts of two rows.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// The raw buffer (rows `stride` bytes apart).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The raw buffer, mutable (for drawing overlays in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    /// The `width * 3` pixel bytes of row `y`, or `None` past the last row.
    pub fn row(&self, y: u32) -> Option<&[u8]> {
        if y >= self.height {
            return None;
        }
        let start = y as usize * self.stride;
        self.data.get(start..start + self.width as usize * 3)
    }
    /// The pixel at `(x, y)`, or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width {
            return None;
        }
        let r = self.row(y)?;
        let i = x as usize * 3;
        Some([r[i], r[i + 1], r[i + 2]])
    }
    /// Sets the pixel at `(x, y)`; coordinates outside the frame are ignored.
    pub fn set_pixel(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = y as usize * self.stride + x as usize * 3;
            self.data[i..i + 3].copy_from_slice(&rgb);
        }
    }
    /// A tightly packed copy of the pixels (`width * height * 3` bytes).
    pub fn to_packed(&self) -> Vec<u8> {
        if self.stride == self.width as usize * 3 {
            return self.data[..self.width as usize * self.height as usize * 3].to_vec();
        }
        (0..self.height)
            .filter_map(|y| self.row(y))
            .flatten()
            .copied()
            .collect()
    }
    /// Mirrors the frame left to right.
    pub fn flip_horizontal(&self) -> Frame {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = vec![0u8; w * h * 3];
        for y in 0..h {
            let src = &self.data[y * self.stride..y * self.stride + w * 3];
            for x in 0..w {
                out[(y * w + x) * 3..(y * w + x) * 3 + 3]
                    .copy_from_slice(&src[(w - 1 - x) * 3..(w - 1 - x) * 3 + 3]);
            }
        }
        Frame {
            data: out,
            width: self.width,
            height: self.height,
            stride: w * 3,
            timestamp: self.timestamp,
        }
    }
    /// Writes the frame as PNG or JPEG (by the file extension).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let img = image::RgbImage::from_raw(self.width, self.height, self.to_packed())
            .ok_or_else(|| Error::frame("buffer does not match dimensions"))?;
        img.save(path).map_err(|e| Error::Io {
            path: path.into(),
            source: std::io::Error::other(e.to_string()),
        })
    }
    /// Re-encodes as JPEG at `quality` (1–100) and decodes again: the
    /// compression a frame suffers on its way through a video pipeline.
    pub fn jpeg_roundtrip(&self, quality: u8) -> Result<Frame> {
        Frame::decode(&self.to_jpeg(quality)?)
    }
    /// Encodes as JPEG at `quality` (1–100).
    pub fn to_jpeg(&self, quality: u8) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let mut enc =
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100));
        enc.encode(
            &self.to_packed(),
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::frame(e.to_string()))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_geometry() {
        let buf = vec![0u8; 100];
        assert!(FrameRef::new(&buf, 0, 10, 30, PixelFormat::Rgb8).is_err());
        assert!(FrameRef::new(&buf, 10, 10, 29, PixelFormat::Rgb8).is_err());
        assert!(FrameRef::new(&buf, 10, 10, 30, PixelFormat::Rgb8).is_err()); // 300 > 100
        assert!(FrameRef::new(&buf, 9000, 1, 27000, PixelFormat::Rgb8).is_err());
        assert!(FrameRef::new(&buf, 5, 4, 5, PixelFormat::Nv12).is_err()); // odd width
        assert!(FrameRef::new(&buf, usize::MAX as u32, 1, usize::MAX, PixelFormat::Rgb8).is_err());
    }

    #[test]
    fn stride_padding_is_skipped() {
        // 2x2 RGB with 2 bytes of padding per row.
        let data = vec![1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99];
        let f = Frame::from_rgb_strided(2, 2, 8, data).unwrap();
        assert_eq!(f.to_packed(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(f.pixel(1, 1), Some([10, 11, 12]));
        assert_eq!(f.pixel(2, 1), None);
    }

    #[test]
    fn packed_formats_convert() {
        let bgra = [10, 20, 30, 255, 40, 50, 60, 0];
        let f = FrameRef::new(&bgra, 2, 1, 8, PixelFormat::Bgra8)
            .unwrap()
            .to_rgb();
        assert_eq!(f.to_packed(), vec![30, 20, 10, 60, 50, 40]);
        let gray = [7u8, 9];
        let f = FrameRef::new(&gray, 2, 1, 2, PixelFormat::Gray8)
            .unwrap()
            .to_rgb();
        assert_eq!(f.to_packed(), vec![7, 7, 7, 9, 9, 9]);
    }

    #[test]
    fn yuv_formats_agree() {
        // A 4x2 image: left half red-ish, right half blue-ish, in all three YUV layouts.
        let (y0, u0, v0) = (82u8, 90u8, 240u8); // BT.601 red
        let (y1, u1, v1) = (41u8, 240u8, 110u8); // BT.601 blue
        let yuyv = [
            y0, u0, y0, v0, y1, u1, y1, v1, //
            y0, u0, y0, v0, y1, u1, y1, v1,
        ];
        let nv12 = [y0, y0, y1, y1, y0, y0, y1, y1, u0, v0, u1, v1];
        let i420 = [y0, y0, y1, y1, y0, y0, y1, y1, u0, u1, v0, v1];
        let a = FrameRef::new(&yuyv, 4, 2, 8, PixelFormat::Yuyv)
            .unwrap()
            .to_rgb();
        let b = FrameRef::new(&nv12, 4, 2, 4, PixelFormat::Nv12)
            .unwrap()
            .to_rgb();
        let c = FrameRef::new(&i420, 4, 2, 4, PixelFormat::I420)
            .unwrap()
            .to_rgb();
        assert_eq!(a, b);
        assert_eq!(b, c);
        let red = a.pixel(0, 0).unwrap();
        assert!(red[0] > 200 && red[1] < 40 && red[2] < 40, "{red:?}");
        let blue = a.pixel(3, 1).unwrap();
        assert!(blue[2] > 200 && blue[0] < 40, "{blue:?}");
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(Frame::decode(b"not an image").is_err());
        assert!(Frame::decode(&[]).is_err());
    }

    #[test]
    fn pooled_buffers_are_reused_and_bounded() {
        let pool = BufferPool::new(1);
        let f = Frame::from_rgb(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let copy = f.clone_in(&pool);
        assert_eq!(copy, f);
        let ptr = copy.data().as_ptr();
        pool.give(copy.into_data());
        pool.give(vec![0; 6]);
        assert_eq!(pool.available(), 1, "a full pool drops the extra buffer");
        let again = f.clone_in(&pool);
        assert_eq!(again.data().as_ptr(), ptr, "the returned buffer is reused");
        assert_eq!(again, f);
        assert!(pool.take().is_empty());
    }
}
