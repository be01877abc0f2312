//! Which frames of a video are analysed (no decoder needed: shared by the
//! trainer's configuration and the GStreamer reader).

use std::time::Duration;

/// What is known about an opened video.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VideoInfo {
    /// Width of decoded frames.
    pub width: u32,
    /// Height of decoded frames.
    pub height: u32,
    /// Nominal frame rate, if the stream declares one.
    pub fps: Option<f64>,
    /// Duration, as the container declares it (it may be its longest
    /// stream's, or wrong).
    pub duration: Option<Duration>,
    /// Frames the video stream holds, counted packet by packet (not derived
    /// from timing), when that was done.
    pub frames: Option<u64>,
}

impl VideoInfo {
    /// Number of frames: the counted [`Self::frames`] when known, else the
    /// estimate duration × fps (which a container's timing can get wrong:
    /// audio longer than video, edit lists, odd packet durations).
    pub fn frame_count(&self) -> Option<u64> {
        if let Some(n) = self.frames {
            return Some(n);
        }
        match (self.fps, self.duration) {
            (Some(f), Some(d)) if f > 0.0 => Some((d.as_secs_f64() * f).round() as u64),
            _ => None,
        }
    }
}

/// Indices of `n` frames spread evenly over `total` (the centre of `n` equal
/// bins); all frames when `n >= total`.
pub fn even_indices(total: u64, n: usize) -> Vec<u64> {
    if n == 0 || total == 0 {
        return Vec::new();
    }
    if n as u64 >= total {
        return (0..total).collect();
    }
    (0..n as u64)
        .map(|i| ((2 * i + 1) * total) / (2 * n as u64))
        .collect()
}

/// Which frames of a video are analysed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// `n` frames spread evenly over the clip (the first `n` when its length
    /// is unknown).
    Even(usize),
    /// The first `n` frames.
    First(usize),
    /// Runs of `run` frames `stride` frames apart (what a sequence model
    /// reads), the runs spread evenly over the clip: `n` frames rounded up
    /// to whole runs.
    Runs {
        /// Frames wanted (rounded up to whole runs).
        n: usize,
        /// Frames per run.
        run: usize,
        /// Source frames between two frames of a run.
        stride: usize,
    },
    /// About `fps` frames per second of video, at most `max`.
    Rate {
        /// Frames per second of video time.
        fps: f64,
        /// Most frames.
        max: usize,
    },
}

impl Sampling {
    /// The most frames this sampling yields.
    pub fn max_frames(&self) -> usize {
        match *self {
            Self::Even(n) | Self::First(n) => n,
            Self::Runs { n, run, .. } => n.div_ceil(run.max(1)) * run.max(1),
            Self::Rate { max, .. } => max,
        }
    }

    /// A short stable tag (cache keys, logs): `even25`, `first25`, `rate2x25`.
    pub fn tag(&self) -> String {
        match *self {
            Self::Even(n) => format!("even{n}"),
            Self::First(n) => format!("first{n}"),
            Self::Runs { n, run, stride } => format!("runs{n}x{run}s{stride}"),
            Self::Rate { fps, max } => format!("rate{fps}x{max}"),
        }
    }

    /// Frame indices to keep for a clip of `info`.
    pub fn indices(&self, info: &VideoInfo) -> Vec<u64> {
        match *self {
            Self::Even(n) => match info.frame_count() {
                Some(total) if total > 0 => even_indices(total, n),
                _ => (0..n as u64).collect(),
            },
            Self::First(n) => (0..n as u64).collect(),
            Self::Runs { n, run, stride } => {
                let (run, stride) = (run.max(1), stride.max(1) as u64);
                let runs = n.div_ceil(run);
                let span = (run as u64 - 1) * stride + 1;
                match info.frame_count() {
                    Some(total) if total > span => {
                        let mut v: Vec<u64> = even_indices(total - span + 1, runs)
                            .into_iter()
                            .flat_map(|start| (0..run as u64).map(move |k| start + k * stride))
                            .collect();
                        v.sort_unstable();
                        v.dedup();
                        v
                    }
                    // Shorter than one run (or unknown): one run from the start.
                    Some(total) => (0..total).step_by(stride as usize).take(run).collect(),
                    None => (0..run as u64).map(|k| k * stride).collect(),
                }
            }
            Self::Rate { fps, max } => {
                let src = info
                    .fps
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .unwrap_or(25.0);
                let step = if fps > 0.0 { (src / fps).max(1.0) } else { 1.0 };
                let limit = info.frame_count().unwrap_or(u64::MAX);
                (0..max)
                    .map(|i| (i as f64 * step).round() as u64)
                    .take_while(|&i| i < limit)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_indices_cover_the_clip() {
        assert_eq!(even_indices(100, 4), vec![12, 37, 62, 87]);
        assert_eq!(even_indices(3, 5), vec![0, 1, 2]);
        assert!(even_indices(0, 5).is_empty());
        assert!(even_indices(10, 0).is_empty());
    }

    #[test]
    fn runs_are_spread_and_keep_their_stride() {
        let info = |frames| VideoInfo {
            frames: Some(frames),
            ..VideoInfo::default()
        };
        let s = Sampling::Runs {
            n: 5,
            run: 3,
            stride: 2,
        };
        assert_eq!(s.max_frames(), 6);
        // Starts spread over the 100 − 5 + 1 = 96 valid starts: 24 and 72.
        assert_eq!(s.indices(&info(100)), vec![24, 26, 28, 72, 74, 76]);
        assert_eq!(s.indices(&info(4)), vec![0, 2], "shorter than one run");
        assert_eq!(s.indices(&VideoInfo::default()), vec![0, 2, 4]);
        assert_eq!(s.tag(), "runs5x3s2");
    }

    #[test]
    fn sampling_indices() {
        let info = VideoInfo {
            width: 2,
            height: 2,
            fps: Some(30.0),
            duration: Some(std::time::Duration::from_secs(10)),
            frames: None,
        };
        assert_eq!(Sampling::Even(4).indices(&info), vec![37, 112, 187, 262]);
        assert_eq!(Sampling::First(3).indices(&info), vec![0, 1, 2]);
        assert_eq!(
            Sampling::Rate { fps: 2.0, max: 4 }.indices(&info),
            vec![0, 15, 30, 45]
        );
        assert_eq!(
            Sampling::Rate { fps: 2.0, max: 100 }.indices(&info).len(),
            20
        );
        assert_eq!(Sampling::Even(25).tag(), "even25");
    }

    #[test]
    fn a_counted_frame_total_wins_over_the_timing_estimate() {
        // Audio longer than video: the container says 12.7 s, the video
        // stream holds 184 frames at 30 fps.
        let info = VideoInfo {
            width: 2,
            height: 2,
            fps: Some(30.0),
            duration: Some(std::time::Duration::from_secs_f64(12.7)),
            frames: Some(184),
        };
        assert_eq!(info.frame_count(), Some(184));
        let picked = Sampling::Even(8).indices(&info);
        assert_eq!(picked, even_indices(184, 8));
        assert!(picked.iter().all(|&i| i < 184));
    }
}
