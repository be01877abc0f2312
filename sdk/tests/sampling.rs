//! Frame sampling of MP4 files whose container timing misleads: each file is
//! made here with GStreamer (x264enc, mp4mux, avenc_aac), and frame `i` of
//! each is a flat grey of its own level `LEVEL0 + LEVEL_STEP * i`, so the
//! decoded pixels tell which frame the sampler really handed over. Every variant
//! must give the 8 frames asked for, distinct and spread over the whole
//! video.
#![cfg(feature = "gst")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};

use fakewatch_sdk::sampling::{even_indices, Sampling};
use fakewatch_sdk::video::{count_video_frames, for_each_sampled};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Frames in each test video (1.6 s at 30 fps).
const FRAMES: u64 = 48;
const FPS: i32 = 30;
const LEVEL0: f64 = 16.0;
const LEVEL_STEP: f64 = 4.0;
const ASKED: usize = 8;

#[derive(Clone, Copy, Default)]
struct Variant {
    /// Seconds of AAC audio (0: none).
    audio_s: f64,
    /// The audio track is the file's first track.
    audio_first: bool,
    /// x264 B-frames (mp4mux then writes `ctts` and an edit list).
    bframes: u32,
    /// Full-range YUV (`yuvj420p`).
    full_range: bool,
    /// Frame spacing alternates between 20 ms and 47 ms.
    variable_rate: bool,
}

fn level(i: u64) -> u8 {
    (LEVEL0 + LEVEL_STEP * i as f64) as u8
}

/// Writes the variant's MP4 to `path`.
fn write_mp4(path: &Path, v: Variant) {
    gst::init().unwrap();
    let colorimetry = if v.full_range {
        ",colorimetry=(string)1:4:0:0"
    } else {
        ""
    };
    let video = format!(
        "appsrc name=src format=time caps=video/x-raw,format=GRAY8,width=64,height=48,framerate={FPS}/1 \
         ! videoconvert ! video/x-raw,format=I420{colorimetry} \
         ! x264enc bframes={} b-adapt=false key-int-max=12 ! mux.video_0",
        v.bframes
    );
    let audio = if v.audio_s > 0.0 {
        let buffers = (v.audio_s * 44_100.0 / 1024.0).ceil() as u32;
        format!(
            "audiotestsrc num-buffers={buffers} samplesperbuffer=1024 ! audio/x-raw,rate=44100 \
             ! audioconvert ! avenc_aac ! mux.audio_0"
        )
    } else {
        String::new()
    };
    // mp4mux orders its tracks by pad request, and gst_parse requests the
    // pads in the order the links appear.
    let (first, second) = if v.audio_first {
        (audio.as_str(), video.as_str())
    } else {
        (video.as_str(), audio.as_str())
    };
    let desc = format!(
        "mp4mux name=mux ! filesink location={} {first} {second}",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut pts_ms = 0u64;
    for i in 0..FRAMES {
        let mut buf = gst::Buffer::from_slice(vec![level(i); 64 * 48]);
        let step_ms = if v.variable_rate {
            if i % 2 == 0 {
                20
            } else {
                47
            }
        } else {
            1000 / FPS as u64
        };
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(pts_ms));
            b.set_duration(gst::ClockTime::from_mseconds(step_ms));
        }
        pts_ms += step_ms;
        src.push_buffer(buf).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("writing the test video timed out");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("writing {}: {}", path.display(), e.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// The bodies of the boxes at `path` (e.g. `["moov", "trak"]`), in order.
fn boxes<'a>(data: &'a [u8], path: &[&str]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind = &data[at + 4..at + 8];
        let (header, size) = match size32 {
            1 => (
                16,
                u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize,
            ),
            0 => (8, data.len() - at),
            n => (8, n),
        };
        if size < header || at + size > data.len() {
            break;
        }
        if kind == path[0].as_bytes() {
            let body = &data[at + header..at + size];
            if path.len() == 1 {
                out.push(body);
            } else {
                out.extend(boxes(body, &path[1..]));
            }
        }
        at += size;
    }
    out
}

/// The handler type (`vide`, `soun`) of each track, in file order.
fn track_kinds(data: &[u8]) -> Vec<String> {
    boxes(data, &["moov", "trak"])
        .into_iter()
        .map(|t| {
            let hdlr = boxes(t, &["mdia", "hdlr"]);
            String::from_utf8_lossy(&hdlr[0][8..12]).into_owned()
        })
        .collect()
}

/// The video track's box bodies at `path` below its `trak`.
fn video_boxes<'a>(data: &'a [u8], path: &[&str]) -> Vec<&'a [u8]> {
    let traks = boxes(data, &["moov", "trak"]);
    let kinds = track_kinds(data);
    let i = kinds.iter().position(|k| k == "vide").unwrap();
    boxes(traks[i], path)
}

/// Scales the video track's `mdhd` duration (and the movie's) by `k` in
/// place: headers that overstate the video's length.
fn overstate_durations(data: &mut [u8], k: u32) {
    fn patch(data: &mut [u8], kind: &[u8; 4], off: usize, k: u32) -> usize {
        let mut n = 0;
        let mut at = 0;
        while let Some(p) = data[at..].windows(4).position(|w| w == kind) {
            let body = at + p + 4;
            assert_eq!(data[body], 0, "a version-0 {kind:?} box");
            let d = body + off;
            let old = u32::from_be_bytes(data[d..d + 4].try_into().unwrap());
            data[d..d + 4].copy_from_slice(&(old * k).to_be_bytes());
            n += 1;
            at = d + 4;
        }
        n
    }
    // version/flags 4, creation 4, modification 4, timescale 4, duration.
    assert!(patch(data, b"mdhd", 16, k) >= 1);
    assert_eq!(patch(data, b"mvhd", 16, k), 1);
    // version/flags 4, creation 4, modification 4, track id 4, reserved 4, duration.
    assert!(patch(data, b"tkhd", 20, k) >= 1);
}

/// The mean value of a frame's pixels.
fn mean(f: &fakewatch_sdk::Frame) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for y in 0..f.height() {
        for x in 0..f.width() {
            let p = f.pixel(x, y).unwrap();
            sum += p.iter().map(|&v| f64::from(v)).sum::<f64>();
            n += 3.0;
        }
    }
    sum / n
}

/// Frame indices read back from the sampled frames' pixels (the nearest
/// mean among all frames decoded in order), with the sampler's own indices.
fn sampled(path: &Path) -> Vec<(u64, u64)> {
    let input = path.to_string_lossy();
    let mut all = Vec::new();
    for_each_sampled(&input, Sampling::First(FRAMES as usize + 10), |_, f| {
        all.push(mean(&f));
        Ok(())
    })
    .unwrap();
    assert_eq!(all.len() as u64, FRAMES, "{input}: frames decoded in order");
    let mut out = Vec::new();
    for_each_sampled(&input, Sampling::Even(ASKED), |k, f| {
        let m = mean(&f);
        let i = (0..all.len())
            .min_by(|&a, &b| (all[a] - m).abs().total_cmp(&(all[b] - m).abs()))
            .unwrap();
        out.push((k, i as u64));
        Ok(())
    })
    .unwrap();
    out
}

fn assert_spread(name: &str, got: &[(u64, u64)]) {
    let want = even_indices(FRAMES, ASKED);
    let pixels: Vec<u64> = got.iter().map(|g| g.1).collect();
    assert_eq!(got.len(), ASKED, "{name}: frames {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(&want) {
        // The sampler's index and the frame's content agree, and both sit
        // where an even spread over the whole video puts them (±1: an
        // edit list may hide the first frame).
        assert!(
            g.0.abs_diff(g.1) <= 1 && g.1.abs_diff(*w) <= 1,
            "{name}: (sampler index, frame read back) {got:?}, want about {want:?}"
        );
    }
    let mut distinct = pixels.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ASKED, "{name}: repeated frames {pixels:?}");
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("fakewatch-sampling-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check(name: &str, v: Variant, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let path = dir().join(format!("{name}.mp4"));
    write_mp4(&path, v);
    let mut data = std::fs::read(&path).unwrap();
    edit(&mut data);
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        count_video_frames(&path.to_string_lossy()),
        Some(FRAMES),
        "{name}"
    );
    assert_spread(name, &sampled(&path));
    let _ = std::fs::remove_file(&path);
    data
}

#[test]
fn a_plain_constant_rate_clip() {
    check("plain", Variant::default(), |_| {});
}

#[test]
fn audio_longer_than_the_video() {
    let data = check(
        "audio-longer",
        Variant {
            audio_s: 5.0,
            ..Default::default()
        },
        |_| {},
    );
    assert_eq!(track_kinds(&data), ["vide", "soun"]);
}

#[test]
fn audio_track_first() {
    let data = check(
        "audio-first",
        Variant {
            audio_s: 5.0,
            audio_first: true,
            ..Default::default()
        },
        |_| {},
    );
    assert_eq!(track_kinds(&data), ["soun", "vide"]);
}

#[test]
fn b_frames_with_an_edit_list() {
    let data = check(
        "b-frames",
        Variant {
            bframes: 2,
            audio_s: 3.0,
            ..Default::default()
        },
        |_| {},
    );
    assert_eq!(
        video_boxes(&data, &["mdia", "minf", "stbl", "ctts"]).len(),
        1
    );
    assert_eq!(video_boxes(&data, &["edts", "elst"]).len(), 1);
}

#[test]
fn full_range_yuv() {
    check(
        "full-range",
        Variant {
            full_range: true,
            ..Default::default()
        },
        |_| {},
    );
}

#[test]
fn variable_frame_rate() {
    let data = check(
        "vfr",
        Variant {
            variable_rate: true,
            ..Default::default()
        },
        |_| {},
    );
    let stts = video_boxes(&data, &["mdia", "minf", "stbl", "stts"]);
    let entries = u32::from_be_bytes(stts[0][4..8].try_into().unwrap());
    assert!(entries > 2, "a variable-rate stts, got {entries} entries");
}

/// Rewrites the deltas of the video track's `stts` in place: every entry but
/// the last gets `delta`, the last `last`, so packet durations no longer match
/// the frame spacing or the headers' durations (the phone clip had
/// `stts` = [(381 × 640), (1 × 32)]).
fn rewrite_stts(data: &mut [u8], delta: u32, last: u32) {
    let stts = video_boxes(data, &["mdia", "minf", "stbl", "stts"])[0];
    let entries = u32::from_be_bytes(stts[4..8].try_into().unwrap()) as usize;
    let start = stts.as_ptr() as usize - data.as_ptr() as usize;
    for e in 0..entries {
        let at = start + 8 + 8 * e + 4;
        let d = if e + 1 == entries { last } else { delta };
        data[at..at + 4].copy_from_slice(&d.to_be_bytes());
    }
}

#[test]
fn packet_durations_that_do_not_match_the_frames() {
    // A variable-rate file (one stts entry per frame) whose deltas are all
    // rewritten: 3 ticks per frame, then 1 for the last, against a declared
    // duration of 1.6 s.
    let data = check(
        "wrong-stts",
        Variant {
            variable_rate: true,
            audio_s: 3.0,
            ..Default::default()
        },
        |d| rewrite_stts(d, 3, 1),
    );
    let stts = video_boxes(&data, &["mdia", "minf", "stbl", "stts"]);
    let entries = u32::from_be_bytes(stts[0][4..8].try_into().unwrap()) as usize;
    let last = &stts[0][8 + 8 * (entries - 1)..8 + 8 * entries];
    assert_eq!(u32::from_be_bytes(last[4..8].try_into().unwrap()), 1);
}

#[test]
fn headers_that_overstate_the_duration() {
    // Durations ×4 in mvhd, tkhd and mdhd: timing alone would put 7 of the
    // 8 samples past the end of the video.
    check("long-headers", Variant::default(), |d| {
        overstate_durations(d, 4)
    });
}
