//! Hostile and odd inputs for `fakewatch scan`: every one gets an object with
//! `error` set (or a clean `unknown`), nothing crashes, nothing allocates a
//! 16k×16k frame, and the scan goes on to the next input.

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
    let args: Vec<String> = ["scan", "--json", "--frames", "3"]
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().map(|n| p(n).display().to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run("fakewatch", &args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        o.status.code(),
        Some(2),
        "some inputs fail: exit 2\n{stderr}"
    );
    let out = ndjson(&o.stdout);
    assert_eq!(out.len(), names.len(), "one object per input");
    let by_name = |n: &str| {
        out.iter()
            .find(|r| Path::new(r["input"].as_str().unwrap()).file_name().unwrap() == n)
            .unwrap_or_else(|| panic!("no result for {n}"))
    };
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
