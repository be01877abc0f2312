//! Motion-JPEG AVI files without GStreamer: the container capture cards and
//! cameras write, read in pure Rust so that builds without the `gst` feature
//! (cross-compiled appliances, qemu) can still scan video.
//!
//! Only what MJPEG AVI needs: the RIFF tree, `avih` (frame period and count),
//! and the `##dc`/`##db` chunks of `movi`, each a JPEG. Every size is checked
//! against the file, so a truncated or hostile file is an error, never a
//! panic or a huge allocation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::sampling::{Sampling, VideoInfo};

/// Largest AVI file read into memory.
pub const MAX_AVI_BYTES: u64 = 2 << 30;

/// An MJPEG AVI file: the JPEG chunks and the stream properties.
#[derive(Debug)]
pub struct MjpegAvi {
    path: PathBuf,
    data: Vec<u8>,
    /// (offset, length) of each video chunk.
    chunks: Vec<(usize, usize)>,
    info: VideoInfo,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Video {
        uri: path.display().to_string(),
        reason: reason.into(),
    }
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl MjpegAvi {
    /// Reads and indexes `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        if !meta.is_file() {
            return Err(bad(path, "not a regular file"));
        }
        if meta.len() > MAX_AVI_BYTES {
            return Err(bad(path, format!("{} bytes is too large", meta.len())));
        }
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(path, data)
    }

    /// Indexes an AVI held in memory (errors name it `<memory>`).
    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        if data.len() as u64 > MAX_AVI_BYTES {
            return Err(bad(Path::new("<memory>"), "too large"));
        }
        Self::parse(Path::new("<memory>"), data)
    }

    fn parse(path: &Path, data: Vec<u8>) -> Result<Self> {
        if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"AVI " {
            return Err(bad(path, "not an AVI file"));
        }
        let mut chunks = Vec::new();
        let (mut period_us, mut total, mut width, mut height) = (0u32, 0u32, 0u32, 0u32);
        // Iterative walk over the RIFF tree: (start, end) of lists to visit.
        let mut stack = vec![(12usize, data.len())];
        while let Some((mut at, end)) = stack.pop() {
            while at + 8 <= end {
                let id = &data[at..at + 4];
                let size = u32le(&data, at + 4).unwrap_or(0) as usize;
                let body = at + 8;
                let body_end = body.saturating_add(size).min(end);
                if id == b"LIST" || id == b"RIFF" {
                    if body + 4 <= body_end {
                        stack.push((body + 4, body_end));
                    }
                } else if id == b"avih" && body_end >= body + 40 {
                    period_us = u32le(&data, body).unwrap_or(0);
                    total = u32le(&data, body + 16).unwrap_or(0);
                    width = u32le(&data, body + 32).unwrap_or(0);
                    height = u32le(&data, body + 36).unwrap_or(0);
                } else if id.len() == 4
                    && id[0].is_ascii_digit()
                    && id[1].is_ascii_digit()
                    && (&id[2..4] == b"dc" || &id[2..4] == b"db")
                    && size > 0
                    && body + size <= end
                {
                    chunks.push((body, size));
                }
                // Chunks are padded to even sizes.
                at = body.saturating_add(size).saturating_add(size & 1);
            }
        }
        chunks.sort_unstable();
        if chunks.is_empty() {
            return Err(bad(path, "no video frames"));
        }
        let fps = (period_us > 0).then(|| 1e6 / f64::from(period_us));
        let count = if total > 0 {
            (total as usize).min(chunks.len())
        } else {
            chunks.len()
        };
        let info = VideoInfo {
            width,
            height,
            fps,
            duration: fps.map(|f| Duration::from_secs_f64(count as f64 / f)),
            frames: Some(chunks.len() as u64),
        };
        Ok(Self {
            path: path.into(),
            data,
            chunks,
            info,
        })
    }

    /// Stream properties.
    pub fn info(&self) -> VideoInfo {
        self.info
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether there are no frames (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Decodes frame `k`.
    pub fn frame(&self, k: usize) -> Result<Frame> {
        let &(at, len) = self
            .chunks
            .get(k)
            .ok_or_else(|| bad(&self.path, format!("no frame {k}")))?;
        let mut f = Frame::decode(&self.data[at..at + len])
            .map_err(|e| bad(&self.path, format!("frame {k}: {e}")))?;
        if let Some(fps) = self.info.fps {
            f.timestamp = Some(Duration::from_secs_f64(k as f64 / fps));
        }
        Ok(f)
    }

    /// Hands each frame `sampling` selects to `f`, one decoded frame at a time.
    pub fn for_each_sampled(
        &self,
        sampling: Sampling,
        mut f: impl FnMut(u64, Frame) -> Result<()>,
    ) -> Result<VideoInfo> {
        let mut info = self.info;
        info.duration = info
            .fps
            .map(|fps| Duration::from_secs_f64(self.len() as f64 / fps));
        for k in sampling.indices(&info) {
            if (k as usize) < self.len() {
                f(k, self.frame(k as usize)?)?;
            }
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend((body.len() as u32).to_le_bytes());
        v.extend(body);
        if body.len() % 2 == 1 {
            v.push(0);
        }
        v
    }

    fn list(kind: &[u8; 4], items: &[Vec<u8>]) -> Vec<u8> {
        let mut body = kind.to_vec();
        for i in items {
            body.extend(i);
        }
        chunk(b"LIST", &body)
    }

    /// A small AVI written the way muxers lay it out.
    fn avi(frames: &[Frame], period_us: u32) -> Vec<u8> {
        let mut avih = vec![0u8; 56];
        avih[0..4].copy_from_slice(&period_us.to_le_bytes());
        avih[16..20].copy_from_slice(&(frames.len() as u32).to_le_bytes());
        avih[32..36].copy_from_slice(&frames[0].width().to_le_bytes());
        avih[36..40].copy_from_slice(&frames[0].height().to_le_bytes());
        let hdrl = list(b"hdrl", &[chunk(b"avih", &avih)]);
        let movi: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| chunk(b"00dc", &f.to_jpeg(95).unwrap()))
            .collect();
        let movi = list(b"movi", &movi);
        let mut body = b"AVI ".to_vec();
        body.extend(hdrl);
        body.extend(movi);
        chunk(b"RIFF", &body)
    }

    #[test]
    fn reads_frames_rate_and_samples() {
        let frames: Vec<Frame> = (0..5u8)
            .map(|i| Frame::filled(33, 17, [i * 50, 0, 0]).unwrap())
            .collect();
        let a = MjpegAvi::parse(Path::new("t.avi"), avi(&frames, 100_000)).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a.info().fps, Some(10.0));
        assert_eq!((a.info().width, a.info().height), (33, 17));
        let f3 = a.frame(3).unwrap();
        assert!(f3.pixel(5, 5).unwrap()[0].abs_diff(150) < 8);
        assert_eq!(f3.timestamp, Some(Duration::from_millis(300)));
        let mut got = vec![];
        a.for_each_sampled(Sampling::Even(3), |k, _| {
            got.push(k);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], 0);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let frames = [Frame::filled(8, 8, [9, 9, 9]).unwrap()];
        let good = avi(&frames, 40_000);
        for cut in [0, 11, 40, good.len() / 2, good.len() - 3] {
            let r = MjpegAvi::parse(Path::new("t.avi"), good[..cut].to_vec());
            // Either refused, or the surviving frames decode or fail cleanly.
            if let Ok(a) = r {
                for k in 0..a.len() {
                    let _ = a.frame(k);
                }
            }
        }
        assert!(MjpegAvi::parse(Path::new("x"), b"RIFF\0\0\0\0WAVEfmt ".to_vec()).is_err());
        // A chunk claiming 4 GB is clamped to the file, not allocated.
        let mut huge = good.clone();
        let at = huge.windows(4).position(|w| w == b"00dc").unwrap();
        huge[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = MjpegAvi::parse(Path::new("t.avi"), huge).map(|a| a.len());
    }
}
