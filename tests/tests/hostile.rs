//! Hostile and odd inputs for `fakewatch scan`: every one gets an object with
//! `error` set (or a clean `unknown`), nothing crashes, nothing allocates a
//! 16k×16k frame, and the scan goes on to the next input. Odd but valid media
//! (phone photos and videos stored sideways, a crowd of 50 faces, variable
//! frame rate) are scanned correctly.

use std::path::{Path, PathBuf};
use std::process::Command;

use fakewatch_sdk::Frame;
use fakewatch_tests::{make_clip, ndjson, root, run, scratch};

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A valid PNG signature and IHDR claiming `w`×`h` RGB, then a tiny IDAT.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        v.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        v.extend(&body);
        v.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    v
}

fn gst(args: &str) {
    let ok = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args.split_whitespace())
        .status()
        .expect("gst-launch-1.0")
        .success();
    assert!(ok, "gst-launch-1.0 {args}");
}

/// `fakewatch scan --json --frames 3` over `names` in `dir`: no panic, one
/// object per input. Returns the exit code, stderr and the objects.
fn scan_each(dir: &Path, names: &[&str]) -> (Option<i32>, String, Vec<serde_json::Value>) {
    let paths: Vec<String> = names
        .iter()
        .map(|n| dir.join(n).display().to_string())
        .collect();
    let mut args = vec!["scan", "--json", "--frames", "3"];
    args.extend(paths.iter().map(String::as_str));
    let o = run("fakewatch", &args);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = ndjson(&o.stdout);
    assert_eq!(out.len(), names.len(), "one object per input\n{stderr}");
    (o.status.code(), stderr, out)
}

/// The result object of the input named `name`.
fn by_name<'a>(out: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    out.iter()
        .find(|r| Path::new(r["input"].as_str().unwrap()).file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

#[test]
fn hostile_and_odd_media_get_errors_or_unknown_and_the_scan_goes_on() {
    let dir = scratch("hostile");
    let photo = root().join("tests/fixtures/t1.jpg");
    let jpeg = std::fs::read(&photo).unwrap();
    let p = |name: &str| -> PathBuf { dir.join(name) };
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(p(name), bytes).unwrap();
    };
    write("empty.jpg", b"");
    write("truncated.jpg", &jpeg[..jpeg.len() / 3]);
    write("garbage.png", b"\x89PNG\r\n\x1a\nthis is not a png at all");
    write("huge.png", &png_header_only(16384, 16384));
    write("zero.png", &png_header_only(0, 0));
    write("empty.mp4", b"");
    write("text.mp4", b"just some text, not a video\n");
    // Odd but valid: greyscale and 16-bit images, a face-less picture.
    let f = Frame::load(&photo).unwrap();
    let gray = image::GrayImage::from_fn(f.width(), f.height(), |x, y| {
        let [r, g, b] = f.pixel(x, y).unwrap();
        image::Luma([((u32::from(r) + u32::from(g) + u32::from(b)) / 3) as u8])
    });
    gray.save(p("gray.png")).unwrap();
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(f.width(), f.height(), |x, y| {
        let [r, g, b] = f.pixel(x, y).unwrap();
        image::Rgb([u16::from(r) * 257, u16::from(g) * 257, u16::from(b) * 257])
    });
    rgb16.save(p("rgb16.png")).unwrap();
    Frame::filled(320, 240, [90, 90, 90])
        .unwrap()
        .save(p("noface.png"))
        .unwrap();
    // A real clip cut short, and a file with audio only.
    let clip = make_clip(&photo, 12, &p("clip.avi"));
    let bytes = std::fs::read(&clip).unwrap();
    write("cut.avi", &bytes[..bytes.len() / 2]);
    gst(&format!(
        "audiotestsrc num-buffers=20 ! wavenc ! filesink location={}",
        p("audio.wav").display()
    ));
    // Endless and non-regular "images": refused, not read forever.
    std::os::unix::fs::symlink("/dev/zero", p("zero-dev.jpg")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(p("fifo.png"))
        .status()
        .unwrap();
    assert!(fifo.success(), "mkfifo");

    let names = [
        "empty.jpg",
        "truncated.jpg",
        "garbage.png",
        "huge.png",
        "zero.png",
        "empty.mp4",
        "text.mp4",
        "gray.png",
        "rgb16.png",
        "noface.png",
        "cut.avi",
        "audio.wav",
        "zero-dev.jpg",
        "fifo.png",
        "clip.avi",
    ];
    let (code, stderr, out) = scan_each(&dir, &names);
    assert_eq!(code, Some(2), "some inputs fail: exit 2\n{stderr}");
    let by_name = |n: &str| by_name(&out, n);
    for bad in [
        "empty.jpg",
        "truncated.jpg",
        "garbage.png",
        "huge.png",
        "zero.png",
        "empty.mp4",
        "text.mp4",
        "audio.wav",
        "zero-dev.jpg",
        "fifo.png",
    ] {
        let r = by_name(bad);
        assert!(r["error"].is_string(), "{bad}: {r}");
        assert_eq!(r["label"], "unknown", "{bad}");
        assert!(r["score"].is_null());
    }
    assert!(by_name("zero-dev.jpg")["error"]
        .as_str()
        .unwrap()
        .contains("not a regular file"));
    assert!(by_name("huge.png")["error"]
        .as_str()
        .unwrap()
        .contains("exceeds"));
    // Valid odd images are scanned: the six faces are found in grey and 16-bit.
    for ok in ["gray.png", "rgb16.png"] {
        let r = by_name(ok);
        assert!(r["error"].is_null(), "{ok}: {r}");
        assert_eq!(r["faces"], 6, "{ok}: {r}");
    }
    let nf = by_name("noface.png");
    assert!(nf["error"].is_null());
    assert_eq!(nf["label"], "unknown");
    // A clip cut in half still gives what it has (or a clean error); the
    // intact one after it is scanned normally.
    let cut = by_name("cut.avi");
    assert!(
        cut["error"].is_string() || cut["faces"].as_u64().unwrap() > 0,
        "{cut}"
    );
    assert_eq!(by_name("clip.avi")["frames"], 3);
}

/// `jpeg` with an EXIF APP1 segment carrying `orientation` spliced in after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], [0xFF, 0xD8], "a JPEG starts with SOI");
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes()); // IFD0 offset
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(u32::from(orientation).to_le_bytes());
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

/// The MP4 at `path` with its first track's display matrix set to "rotate 90°
/// clockwise" (what a phone writes when it records held upright).
fn set_mp4_rotation_90(path: &Path) {
    let mut d = std::fs::read(path).unwrap();
    let i = d.windows(4).position(|w| w == b"tkhd").expect("tkhd box");
    assert_eq!(d[i + 4], 0, "version-0 tkhd");
    // size+type precede; version/flags, times, track id, reserved, duration,
    // reserved, layer, group, volume, reserved: the matrix is 40 bytes on.
    let m = i + 4 + 40;
    let matrix: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
    for (k, v) in matrix.iter().enumerate() {
        d[m + 4 * k..m + 4 * k + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(path, d).unwrap();
}

#[test]
fn rotated_crowded_and_variable_rate_media_are_scanned() {
    let dir = scratch("odd-media");
    let photo = root().join("tests/fixtures/t1.jpg");
    let p = |name: &str| -> PathBuf { dir.join(name) };
    let upright = image::open(&photo).unwrap().to_rgb8();

    // A phone photo: pixels stored a quarter turn anticlockwise, EXIF says
    // "turn 90° clockwise to view". The same pixels without the tag too.
    let stored = image::imageops::rotate270(&upright);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92)
        .encode_image(&stored)
        .unwrap();
    std::fs::write(p("exif-rotated.jpg"), with_exif_orientation(&jpeg, 6)).unwrap();
    std::fs::write(p("sideways.jpg"), &jpeg).unwrap();

    // A phone video: the same sideways pixels with a rotation in the MP4.
    let stored_png = p("stored.png");
    stored.save(&stored_png).unwrap();
    gst(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! imagefreeze num-buffers=10 \
         ! video/x-raw,framerate=10/1 ! videoconvert ! x264enc ! mp4mux ! filesink location={}",
        stored_png.display(),
        p("rotated.mp4").display()
    ));
    let mp4 = std::fs::read(p("rotated.mp4")).unwrap();
    // mp4mux writes the index last: the first half has none.
    std::fs::write(p("cut.mp4"), &mp4[..mp4.len() / 2]).unwrap();
    set_mp4_rotation_90(&p("rotated.mp4"));

    // A crowd: 50 faces cut from the photo (boxes from `fakewatch faces`) on a
    // 1080p grid.
    let o = run("fakewatch", &["faces", "--json", photo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let boxes: Vec<[f64; 4]> = ndjson(&o.stdout)[0]["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let b = f["box"].as_array().unwrap();
            [0, 1, 2, 3].map(|k| b[k].as_f64().unwrap())
        })
        .collect();
    assert_eq!(boxes.len(), 6);
    let mut crowd = image::RgbImage::from_pixel(1920, 1080, image::Rgb([110, 110, 120]));
    let (cols, cell_w, cell_h) = (10u32, 192u32, 216u32);
    for i in 0..50u32 {
        let [x1, y1, x2, y2] = boxes[i as usize % boxes.len()];
        let side = (x2 - x1).max(y2 - y1) * 1.5;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let x0 = (cx - side / 2.0).max(0.0) as u32;
        let y0 = (cy - side / 2.0).max(0.0) as u32;
        let s = (side as u32)
            .min(upright.width() - x0)
            .min(upright.height() - y0);
        let patch = image::imageops::crop_imm(&upright, x0, y0, s, s).to_image();
        let patch =
            image::imageops::resize(&patch, 170, 170, image::imageops::FilterType::Triangle);
        let (x, y) = ((i % cols) * cell_w + 11, (i / cols) * cell_h + 23);
        image::imageops::overlay(&mut crowd, &patch, i64::from(x), i64::from(y));
    }
    crowd.save(p("crowd-50.png")).unwrap();

    // Variable frame rate: a 20 fps stream with about half its frames
    // dropped at random, timestamps kept (Matroska stores each one).
    gst(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=60 \
         ! video/x-raw,framerate=20/1 ! identity drop-probability=0.5 ! videoconvert \
         ! jpegenc ! matroskamux ! filesink location={}",
        photo.display(),
        p("vfr.mkv").display()
    ));

    let names = [
        "exif-rotated.jpg",
        "sideways.jpg",
        "rotated.mp4",
        "cut.mp4",
        "crowd-50.png",
        "vfr.mkv",
    ];
    let (code, stderr, out) = scan_each(&dir, &names);
    let by_name = |n: &str| by_name(&out, n);
    assert_eq!(code, Some(2), "cut.mp4 fails: exit 2\n{stderr}");
    // Turned upright by its EXIF tag: all six faces.
    let exif = by_name("exif-rotated.jpg");
    assert!(exif["error"].is_null(), "{exif}");
    assert_eq!(exif["faces"], 6, "{exif}");
    // Without the tag the faces lie on their side: scanned, no error, and
    // fewer faces found (MTCNN looks for upright faces).
    let side = by_name("sideways.jpg");
    assert!(side["error"].is_null(), "{side}");
    assert!(side["faces"].as_u64().unwrap() < 6, "{side}");
    // The MP4's rotation is applied: the six faces on each sampled frame.
    let rot = by_name("rotated.mp4");
    assert!(rot["error"].is_null(), "{rot}");
    assert_eq!(rot["frames"], 3, "{rot}");
    assert_eq!(rot["faces"], 18, "{rot}");
    assert_eq!(rot["tracks"].as_array().unwrap().len(), 6, "{rot}");
    assert!(by_name("cut.mp4")["error"].is_string());
    // The crowd: (nearly) every face found and judged.
    let crowd = by_name("crowd-50.png");
    assert!(crowd["error"].is_null(), "{crowd}");
    assert!(crowd["faces"].as_u64().unwrap() >= 45, "{crowd}");
    assert_eq!(crowd["faces"], crowd["tracks"].as_array().unwrap().len());
    assert_ne!(crowd["label"], "unknown", "{crowd}");
    // Variable frame rate: three frames sampled from what is there.
    let vfr = by_name("vfr.mkv");
    assert!(vfr["error"].is_null(), "{vfr}");
    assert_eq!(vfr["frames"], 3, "{vfr}");
    assert_eq!(vfr["tracks"].as_array().unwrap().len(), 6, "{vfr}");
}
