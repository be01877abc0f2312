//! `fakewatch scan --explain DIR`: for each input, a PNG a reviewer can
//! read — every track's P(fake) over the video's sampled frames against the
//! decision threshold, and the three most suspicious face crops with their
//! times. It is a prompt for review, not proof, and the picture says so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::{Point, RgbColor};
use embedded_graphics::text::Alignment;
use fakewatch_sdk::detector::Step;
use fakewatch_sdk::plot::{legend, series_color, small_text, text, Axes, Panel};
use fakewatch_sdk::{BBox, Frame, Label, Verdict};

/// Width of an explanation image.
pub const WIDTH: u32 = 960;
/// Height of an explanation image.
pub const HEIGHT: u32 = 600;
/// Suspicious crops shown.
pub const TOP_CROPS: usize = 3;
/// Side of a shown crop, pixels.
pub const CROP_SIDE: u32 = 128;
/// Context around a face box in a shown crop (share of the box's larger side).
const CROP_CONTEXT: f32 = 1.3;
/// Tracks drawn as lines (more share the palette's colours).
const MAX_LEGEND: usize = 6;
/// Colour of the decision threshold.
pub const THRESHOLD_COLOR: Rgb888 = Rgb888::new(120, 0, 0);
/// Colour of faces no track holds.
const UNTRACKED: Rgb888 = Rgb888::new(150, 150, 150);
/// What every explanation says under its figures.
pub const DISCLAIMER: [&str; 2] = [
    "A prompt for review, not proof: P(fake) comes from a model with known errors",
    "(README, detection quality). Look at the faces and the source before acting on it.",
];

/// A scored face's place on the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point2 {
    /// Seconds into the video (or the frame index when times are unknown).
    t: f64,
    track: Option<u32>,
    p_fake: f32,
}

/// One of the most suspicious faces.
#[derive(Debug, Clone)]
struct Suspect {
    t: f64,
    track: Option<u32>,
    p_fake: f32,
    crop: Frame,
}

/// The timeline of one input, filled frame by frame during a scan.
#[derive(Debug, Default)]
pub struct Timeline {
    points: Vec<Point2>,
    /// Each track's score fused with its sequence model's, after each
    /// frame (bundles with a sequence model, once a track has a window).
    fused: Vec<Point2>,
    suspects: Vec<Suspect>,
    /// Every frame had a timestamp (else x is the frame number).
    timed: bool,
    frames: usize,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self {
            timed: true,
            ..Self::default()
        }
    }

    /// Adds the analysed frame `index` (its step's scored faces, and the
    /// session's verdict after it: the tracks' fused scores); keeps a crop
    /// of each face that is among the most suspicious so far.
    pub fn add(&mut self, index: u64, frame: &Frame, step: &Step, verdict: &Verdict) {
        self.frames += 1;
        let t = match frame.timestamp {
            Some(ts) if self.timed => ts.as_secs_f64(),
            _ => {
                self.timed = false;
                index as f64
            }
        };
        for tv in verdict
            .tracks
            .iter()
            .filter(|tv| tv.sequence_score.is_some())
        {
            if step.faces.iter().any(|f| f.track == Some(tv.id)) {
                self.fused.push(Point2 {
                    t,
                    track: Some(tv.id),
                    p_fake: tv.score,
                });
            }
        }
        for f in &step.faces {
            self.points.push(Point2 {
                t,
                track: f.track,
                p_fake: f.p_fake,
            });
            let weakest = self
                .suspects
                .iter()
                .map(|s| s.p_fake)
                .fold(f32::INFINITY, f32::min);
            if self.suspects.len() < TOP_CROPS || f.p_fake > weakest {
                if let Some(crop) = thumbnail(frame, &f.face.detection.bbox) {
                    self.suspects.push(Suspect {
                        t,
                        track: f.track,
                        p_fake: f.p_fake,
                        crop,
                    });
                    self.suspects.sort_by(|a, b| b.p_fake.total_cmp(&a.p_fake));
                    self.suspects.truncate(TOP_CROPS);
                }
            }
        }
    }

    /// The explanation image: `title` on top, then the timeline against
    /// `threshold`, the crops and the disclaimer.
    pub fn render(&self, title: &str, threshold: f32, calibrated: bool) -> Result<Frame> {
        let mut f = Frame::filled(WIDTH, HEIGHT, [255, 255, 255])?;
        text(
            &mut f,
            title,
            Point::new(WIDTH as i32 / 2, 24),
            Alignment::Center,
        );
        let t_max = self.points.iter().map(|p| p.t).fold(0.0, f64::max);
        // A still image is one column in the middle.
        let still = self.frames <= 1;
        let panel = Panel {
            left: 80,
            top: 56,
            width: 620,
            height: 240,
            axes: Axes {
                x0: if still { -1.0 } else { 0.0 },
                x1: if t_max > 0.0 { t_max } else { 1.0 },
                y0: 0.0,
                y1: 1.0,
            },
        };
        panel.dashed_hline(&mut f, f64::from(threshold), THRESHOLD_COLOR);
        let mut tracks: Vec<u32> = self.points.iter().filter_map(|p| p.track).collect();
        tracks.sort_unstable();
        tracks.dedup();
        let mut entries = Vec::new();
        for (i, &id) in tracks.iter().enumerate() {
            let of = |pts: &[Point2]| -> Vec<(f64, f64)> {
                pts.iter()
                    .filter(|p| p.track == Some(id))
                    .map(|p| (p.t, f64::from(p.p_fake)))
                    .collect()
            };
            panel.polyline(&mut f, &of(&self.points), series_color(i), 2, true);
            panel.polyline(&mut f, &of(&self.fused), series_color(i), 1, false);
            if i < MAX_LEGEND {
                entries.push((format!("track #{id}"), series_color(i)));
            }
        }
        if !self.fused.is_empty() {
            entries.push(("thin: with sequence".into(), UNTRACKED));
        }
        if tracks.len() > MAX_LEGEND {
            entries.push((format!("+{} more", tracks.len() - MAX_LEGEND), UNTRACKED));
        }
        let loose: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter(|p| p.track.is_none())
            .map(|p| (p.t, f64::from(p.p_fake)))
            .collect();
        panel.dots(&mut f, &loose, UNTRACKED);
        let score = if calibrated { "P(fake)" } else { "score" };
        let xlabel = match (still, self.timed) {
            (true, _) => "one image",
            (false, true) => "time in the video (s)",
            (false, false) => "frame",
        };
        panel.frame_box(&mut f, xlabel, score, true);
        entries.push((format!("threshold {threshold:.2}"), THRESHOLD_COLOR));
        legend(
            &mut f,
            &entries,
            Point::new(730, 80 + 20 * (entries.len() as i32 - 1)),
        );
        if self.points.is_empty() {
            text(
                &mut f,
                "no face was found in the sampled frames",
                Point::new(390, 180),
                Alignment::Center,
            );
        }
        // The most suspicious faces.
        let top = 370;
        text(
            &mut f,
            "most suspicious faces",
            Point::new(80, top - 12),
            Alignment::Left,
        );
        for (k, s) in self.suspects.iter().enumerate() {
            let left = 80 + k as u32 * (CROP_SIDE + 60);
            fakewatch_sdk::draw::blit(&mut f, &s.crop, left, top as u32);
            let when = if self.timed {
                format!("t {:.2} s", s.t)
            } else {
                format!("frame {}", s.t)
            };
            let who = s
                .track
                .map_or("no track".to_string(), |id| format!("track #{id}"));
            let y = top + CROP_SIDE as i32 + 14;
            small_text(
                &mut f,
                &format!("{when}, {who}"),
                Point::new(left as i32, y),
                Rgb888::BLACK,
            );
            small_text(
                &mut f,
                &format!("{score} {:.2}", s.p_fake),
                Point::new(left as i32, y + 12),
                Rgb888::BLACK,
            );
        }
        for (i, line) in DISCLAIMER.iter().enumerate() {
            text(
                &mut f,
                line,
                Point::new(WIDTH as i32 / 2, HEIGHT as i32 - 34 + 18 * i as i32),
                Alignment::Center,
            );
        }
        Ok(f)
    }

    /// Frames added.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// The title of an input's explanation.
pub fn title(input: &str, label: Label, score: Option<f32>, calibrated: bool) -> String {
    let name = Path::new(input)
        .file_name()
        .map_or(input.into(), |n| n.to_string_lossy().into_owned());
    let what = if calibrated { "P(fake)" } else { "score" };
    match score {
        Some(s) => format!("{name}: {} ({what} {s:.2})", label.as_str().to_uppercase()),
        None => format!("{name}: {}", label.as_str().to_uppercase()),
    }
}

/// Where the explanation of the `k`-th input goes in `dir`.
pub fn path_for(dir: &Path, k: usize, input: &str) -> PathBuf {
    let stem: String = Path::new(input)
        .file_stem()
        .map_or("input".into(), |s| s.to_string_lossy().into_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{k:03}-{stem}.png"))
}

/// Writes `f` to `path`.
pub fn save(f: &Frame, path: &Path) -> Result<()> {
    f.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// A [`CROP_SIDE`]² crop around a face box, with context.
fn thumbnail(frame: &Frame, b: &BBox) -> Option<Frame> {
    fakewatch_sdk::draw::thumbnail(frame, b, CROP_SIDE, CROP_CONTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakewatch_sdk::detector::ScoredFace;
    use fakewatch_sdk::{Detection, Face, Landmarks, Point as P};

    fn face(x: f32, track: Option<u32>, p_fake: f32) -> ScoredFace {
        ScoredFace {
            face: Face {
                detection: Detection {
                    bbox: BBox {
                        x1: x,
                        y1: 10.0,
                        x2: x + 20.0,
                        y2: 34.0,
                    },
                    score: 0.99,
                    landmarks: Landmarks([P { x: 0.0, y: 0.0 }; 5]),
                },
                embedding: fakewatch_sdk::embed::Embedding(vec![1.0]),
                features: None,
            },
            track,
            p_fake,
        }
    }

    #[test]
    fn keeps_the_most_suspicious_crops_and_draws_the_timeline() {
        let mut tl = Timeline::new();
        // A frame whose left half is red and right half blue.
        let mut frame = Frame::filled(100, 60, [200, 0, 0]).unwrap();
        for y in 0..60 {
            for x in 50..100 {
                frame.set_pixel(x, y, [0, 0, 200]);
            }
        }
        for (k, ps) in [[0.2f32, 0.9], [0.3, 0.6], [0.95, 0.1]].iter().enumerate() {
            frame.timestamp = Some(std::time::Duration::from_millis(500 * k as u64));
            let step = Step {
                faces: vec![face(10.0, Some(1), ps[0]), face(70.0, Some(2), ps[1])],
                ..Step::default()
            };
            // From the third frame on, track 1 has a sequence score.
            let mut v = Verdict::error();
            if k == 2 {
                v.tracks.push(fakewatch_sdk::verdict::TrackVerdict {
                    id: 1,
                    score: 0.7,
                    frame_score: Some(0.5),
                    sequence_score: Some(0.9),
                    frames: 3,
                    label: Label::Fake,
                });
            }
            tl.add(k as u64, &frame, &step, &v);
        }
        assert_eq!(tl.frames(), 3);
        assert_eq!(
            tl.fused,
            [Point2 {
                t: 1.0,
                track: Some(1),
                p_fake: 0.7
            }]
        );
        let top: Vec<(f32, Option<u32>)> =
            tl.suspects.iter().map(|s| (s.p_fake, s.track)).collect();
        assert_eq!(top, [(0.95, Some(1)), (0.9, Some(2)), (0.6, Some(2))]);
        // Track 1's crop is red, track 2's blue.
        assert_eq!(tl.suspects[0].crop.pixel(64, 64), Some([200, 0, 0]));
        assert_eq!(tl.suspects[1].crop.pixel(64, 64), Some([0, 0, 200]));
        let img = tl
            .render("clip.mp4: FAKE (P(fake) 0.95)", 0.5, true)
            .unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        let count = |c: Rgb888| {
            let mut n = 0;
            for y in 0..HEIGHT {
                for x in 0..WIDTH {
                    n += usize::from(img.pixel(x, y) == Some([c.r(), c.g(), c.b()]));
                }
            }
            n
        };
        assert!(count(THRESHOLD_COLOR) > 200, "the threshold line");
        assert!(count(series_color(0)) > 100, "track 1's line");
        assert!(count(series_color(1)) > 100, "track 2's line");
        // The crops are pasted under the plot.
        assert_eq!(img.pixel(80 + 64, 370 + 64), Some([200, 0, 0]));
        assert_eq!(
            title("/x/clip.mp4", Label::Fake, Some(0.951), true),
            "clip.mp4: FAKE (P(fake) 0.95)"
        );
        assert_eq!(
            path_for(Path::new("/o"), 2, "/v/a b.mp4"),
            PathBuf::from("/o/002-a_b.png")
        );
    }

    #[test]
    fn an_input_without_faces_still_explains_itself() {
        let tl = Timeline::new();
        let img = tl.render("empty.jpg: UNKNOWN", 0.5, true).unwrap();
        assert_eq!(img.width(), WIDTH);
        assert!(thumbnail(
            &img,
            &BBox {
                x1: 5.0,
                y1: 5.0,
                x2: 5.0,
                y2: 5.0
            }
        )
        .is_none());
    }
}
