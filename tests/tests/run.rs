//! `fakewatch run` end to end: real decode, real models, real encoders, a real
//! MQTT broker (Debian `mosquitto`) and a real browser (Debian `chromium`).
//! The clips are made here from the repository's test photo; nothing here
//! needs the shared research data except the last test.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fakewatch_sdk::video::VideoReader;
use fakewatch_sdk::Frame;
use fakewatch_tests::{bin, free_port, http_get, make_clip, ndjson, root, scratch, shared, tool};
use serde_json::Value;

/// Colours of the overlay's verdict boxes (edge-app `overlay::label_color`).
const VERDICT_COLOURS: [[u8; 3]; 3] = [[230, 40, 40], [40, 200, 80], [240, 200, 40]];

fn photo() -> PathBuf {
    root().join("tests/fixtures/t1.jpg")
}

fn fakewatch() -> Command {
    let mut c = Command::new(bin("fakewatch"));
    c.current_dir(root());
    c
}

fn check_summary(events: &[Value]) -> &Value {
    let last = events.last().expect("events");
    assert_eq!(last["event"], "summary", "last event: {last}");
    for k in [
        "frames_in",
        "frames_processed",
        "dropped",
        "processed_fps",
        "first_verdict_latency_ms",
    ] {
        assert!(last.get(k).is_some(), "summary lacks {k}: {last}");
    }
    // Every event has its id fields; seq counts up from 0 without gaps.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "{e}");
        assert_eq!(e["run"], events[0]["run"]);
    }
    last
}

/// Pixels in a verdict colour; `tolerance` (sum of absolute channel
/// differences) allows for lossy video coding.
fn verdict_pixels_near(f: &Frame, tolerance: u32) -> usize {
    let mut n = 0;
    for y in 0..f.height() {
        for x in 0..f.width() {
            let Some(p) = f.pixel(x, y) else { continue };
            let near = VERDICT_COLOURS.iter().any(|c| {
                c.iter()
                    .zip(p)
                    .map(|(a, b)| u32::from(a.abs_diff(b)))
                    .sum::<u32>()
                    <= tolerance
            });
            n += usize::from(near);
        }
    }
    n
}

fn verdict_pixels(f: &Frame) -> usize {
    verdict_pixels_near(f, 0)
}

#[test]
fn file_source_gives_an_overlaid_video_frames_and_events() {
    let dir = scratch("run-file");
    let clip = make_clip(&photo(), 24, &dir.join("clip.avi"));
    let out = dir.join("out.mp4");
    let pngs = dir.join("png");
    let events_file = dir.join("events.ndjson");
    let o = fakewatch()
        .args(["run", "--source"])
        .arg(&clip)
        .arg("--sink")
        .arg(format!("file:{}", out.display()))
        .arg("--sink")
        .arg(format!("png-dir:{}", pngs.display()))
        .args(["--events", "-", "--events"])
        .arg(&events_file)
        .args(["--no-pace", "--detect-every", "6"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    assert_eq!(
        events,
        ndjson(&std::fs::read(&events_file).unwrap()),
        "stdout and file carry the same events"
    );
    assert_eq!(events[0]["event"], "start");
    let s = check_summary(&events);
    assert_eq!(s["frames_in"], 24);
    assert_eq!(s["frames_processed"], 24);
    assert_eq!(s["dropped"], 0, "--no-pace drops nothing");
    assert_eq!(s["frames_analyzed"], 4, "every 6th of 24 frames");
    assert_eq!(s["reason"], "end");
    let kinds = |k: &str| events.iter().filter(|e| e["event"] == k).count();
    // t1.jpg has six faces: six tracks, each with a verdict; one stream verdict.
    assert_eq!(kinds("track_appeared"), 6, "{events:?}");
    let track_verdicts: HashSet<_> = events
        .iter()
        .filter(|e| e["event"] == "verdict_changed" && e["scope"] == "track")
        .map(|e| e["track"].as_u64().unwrap())
        .collect();
    assert_eq!(track_verdicts.len(), 6);
    assert!(events
        .iter()
        .any(|e| e["event"] == "verdict_changed" && e["scope"] == "stream"));
    assert!(s["first_verdict_latency_ms"].as_f64().unwrap() > 0.0);

    // The video decodes back to 24 overlaid frames at the clip's rate.
    let mut r = VideoReader::open(out.to_str().unwrap()).unwrap();
    let mut frames = vec![];
    while let Some(f) = r.next_frame().unwrap() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 24);
    assert_eq!(r.info().fps, Some(12.0));
    // Frames after the first analysis carry verdict boxes; the PNGs equal
    // what went into the encoder.
    let png_last = Frame::load(pngs.join("frame-000023.png")).unwrap();
    let src = Frame::load(photo()).unwrap();
    assert_eq!(
        (png_last.width(), png_last.height()),
        (src.width(), src.height())
    );
    assert!(verdict_pixels(&png_last) > 1000, "no verdict overlay drawn");
    let before = verdict_pixels_near(&src, 60);
    assert!(
        verdict_pixels_near(&frames[23], 60) > before + 1000,
        "overlay lost in the MP4"
    );
    assert_eq!(std::fs::read_dir(&pngs).unwrap().count(), 24);
}

#[test]
fn raw_frames_on_stdin_are_a_source() {
    let src = Frame::load(photo()).unwrap();
    let (w, h) = (src.width(), src.height());
    let mut child = fakewatch()
        .args(["run", "--source", "-", "--size"])
        .arg(format!("{w}x{h}"))
        .args(["--format", "rgb24", "--events", "-", "--no-pace"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..3 {
            stdin.write_all(&src.to_packed()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    let s = check_summary(&events);
    assert_eq!(s["frames_in"], 3);
    assert!(s["tracks_seen"].as_u64().unwrap() >= 5, "{s}");
}

#[test]
fn bad_settings_fail_clearly_before_anything_runs() {
    let dir = scratch("run-bad");
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, "source = \"x.mp4\"\ndetect_evry = 2\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--config".into(), cfg.display().to_string()],
            "detect_evry",
        ),
        (vec![], "no source"),
        (
            vec!["--source".into(), "/nonexistent/clip.mp4".into()],
            "no such file",
        ),
        (
            vec![
                "--source".into(),
                photo().display().to_string(),
                "--sink".into(),
                "ftp:x".into(),
            ],
            "unknown kind",
        ),
        (vec!["--source".into(), "-".into()], "--size"),
        (
            vec![
                "--source".into(),
                photo().display().to_string(),
                "--events".into(),
                "mqtt://host".into(),
            ],
            "topic",
        ),
    ];
    for (args, needle) in cases {
        let o = fakewatch().arg("run").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

struct Broker {
    child: Child,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(mosquitto: &Path, dir: &Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Started as root, mosquitto drops to its own user: let it save the
        // persistent sessions there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                data.display()
            ),
        )
        .unwrap();
        let mut b = Self {
            child: Command::new(mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            port,
            conf,
        };
        b.wait_up();
        b
    }
    fn wait_up(&mut self) {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn stop(&mut self) {
        // SIGTERM: mosquitto saves its persistent sessions on the way out.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
    fn restart(&mut self, mosquitto: &Path) {
        self.child = Command::new(mosquitto)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.wait_up();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects every message on `topic` with a persistent session, reconnecting
/// through broker restarts.
fn subscriber(
    port: u16,
    topic: &str,
    until: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Value>> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let topic = topic.to_string();
    let mut opts = MqttOptions::new("fakewatch-test-sub", "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 64);
    client.subscribe(&topic, QoS::AtLeastOnce).unwrap();
    std::thread::spawn(move || {
        let mut got = vec![];
        while !until.load(std::sync::atomic::Ordering::SeqCst) {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    got.push(serde_json::from_slice(&p.payload).unwrap());
                }
                Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) if !c.session_present => {
                    let _ = client.try_subscribe(&topic, QoS::AtLeastOnce);
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                _ => {}
            }
        }
        got
    })
}

/// A broker on a free port and a persistent subscriber on `topic`, given time
/// to subscribe; setting the flag ends the subscriber.
fn broker_and_subscriber(
    mosquitto: &Path,
    dir: &Path,
    topic: &str,
) -> (
    Broker,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<Value>>,
) {
    let broker = Broker::start(mosquitto, dir, free_port());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sub = subscriber(broker.port, topic, done.clone());
    std::thread::sleep(Duration::from_millis(500));
    (broker, done, sub)
}

#[test]
fn mqtt_events_survive_a_broker_restart() {
    let Some(mosquitto) = tool("mosquitto", "mosquitto") else {
        return;
    };
    let dir = scratch("run-mqtt");
    let clip = make_clip(&photo(), 12, &dir.join("clip.avi"));
    let (mut broker, done, sub) = broker_and_subscriber(&mosquitto, &dir, "fw/events");
    let port = broker.port;
    let events_file = dir.join("events.ndjson");
    // 8 s of paced video (a 1 s clip looped), a stats event every 0.25 s.
    let app = fakewatch()
        .args(["run", "--source"])
        .arg(&clip)
        .args(["--loop", "--max-frames", "96", "--stats-interval", "0.25"])
        .args(["--detect-every", "6", "--flush-timeout", "60"])
        .arg("--events")
        .arg(format!("mqtt://127.0.0.1:{port}/fw/events"))
        .arg("--events")
        .arg(&events_file)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&events_file).is_ok_and(|s| s.contains("\"start\"")) {
        assert!(t.elapsed() < Duration::from_secs(60), "run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    broker.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    broker.restart(&mosquitto);
    let outage = down.elapsed();
    let o = app.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written = ndjson(&std::fs::read(&events_file).unwrap());
    check_summary(&written);
    let want: HashSet<(String, u64)> = written
        .iter()
        .map(|e| {
            (
                e["run"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    // Give the subscriber time to drain what the broker queued for it.
    let t = Instant::now();
    let mut got_ids: HashSet<(String, u64)> = HashSet::new();
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let received = sub.join().unwrap();
    for e in &received {
        got_ids.insert((
            e["run"].as_str().unwrap().to_string(),
            e["seq"].as_u64().unwrap(),
        ));
    }
    let missing: Vec<_> = want.difference(&got_ids).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never arrived (outage {outage:?}, waited {:?}): {missing:?}",
        missing.len(),
        want.len(),
        t.elapsed()
    );
    // Events raised while the broker was down were among them.
    let t0 = written[0]["time_ms"].as_u64().unwrap();
    let during = written
        .iter()
        .filter(|e| {
            let t = e["time_ms"].as_u64().unwrap();
            t > t0 + 1600 && t < t0 + 1500 + outage.as_millis() as u64 - 100
        })
        .count();
    assert!(during >= 3, "only {during} events fell in the outage");
    assert!(received.len() >= want.len());
    assert!(written.iter().any(|e| e["event"] == "verdict_changed"));
}

#[test]
fn a_full_disk_under_the_spool_loses_no_event() {
    let Some(mosquitto) = tool("mosquitto", "mosquitto") else {
        return;
    };
    let dir = scratch("run-diskfull");
    let clip = make_clip(&photo(), 12, &dir.join("clip.avi"));
    let (mut broker, done, sub) = broker_and_subscriber(&mosquitto, &dir, "fw/full");
    let port = broker.port;
    broker.stop();
    // The spool's "disk" holds 4 KiB: the kernel refuses any file write past
    // that (RLIMIT_FSIZE, EFBIG; SIGXFSZ ignored), a few events into the run.
    let mut cmd = fakewatch();
    cmd.args(["run", "--source"])
        .arg(&clip)
        .args(["--loop", "--max-frames", "72", "--stats-interval", "0.1"])
        .args(["--detect-every", "6", "--flush-timeout", "60"])
        .args(["--events", "-", "--events"])
        .arg(format!("mqtt://127.0.0.1:{port}/fw/full"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let app = cmd.spawn().unwrap();
    // The broker returns while the run goes on.
    std::thread::sleep(Duration::from_secs(3));
    broker.restart(&mosquitto);
    let o = app.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("spool write failed"), "{stderr}");
    let written = ndjson(&o.stdout);
    let summary = check_summary(&written);
    assert!(
        summary["mqtt"]["disk_errors"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert_eq!(summary["mqtt"]["dropped"], 0, "{summary}");
    let spool_bytes: u64 = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spool_bytes <= 3 * 4096, "{spool_bytes}");
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let received = sub.join().unwrap();
    let ids =
        |v: &[Value]| -> HashSet<u64> { v.iter().map(|e| e["seq"].as_u64().unwrap()).collect() };
    let want = ids(&written);
    // Bytes of the events written: well past what the disk took.
    let total: usize = written.iter().map(|e| e.to_string().len() + 1).sum();
    assert!(total > 3 * 4096, "only {total} bytes of events");
    let got = ids(&received);
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events lost: {missing:?}",
        missing.len(),
        want.len()
    );
}

fn chromium_dump(chromium: &Path, url: &str, profile: &Path, extra: &[&str]) -> String {
    let o = Command::new("timeout")
        .arg("60")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `/status.json` until `ok` holds (90 s at most).
fn wait_for_status(port: u16, ok: impl Fn(&Value) -> bool) {
    let t = Instant::now();
    loop {
        let status = http_get(port, "/status.json")
            .ok()
            .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok());
        if status.as_ref().is_some_and(&ok) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no verdict served: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `/healthz` answers 200 and `/metrics` has every line start in `want`.
fn healthy_with_metrics(port: u16, want: &[&str]) {
    let (h, _) = http_get(port, "/healthz").unwrap();
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let (_, m) = http_get(port, "/metrics").unwrap();
    let m = String::from_utf8(m).unwrap();
    for k in want {
        assert!(m.contains(k), "metrics lack {k:?}:\n{m}");
    }
}

#[test]
fn status_page_metrics_and_mjpeg_preview_in_a_browser() {
    let Some(chromium) = tool("chromium", "chromium") else {
        return;
    };
    let dir = scratch("run-http");
    let clip = make_clip(&photo(), 12, &dir.join("clip.avi"));
    let port = free_port();
    let mut app = fakewatch()
        .args(["run", "--source"])
        .arg(&clip)
        .args(["--loop", "--detect-every", "6", "--events", "-"])
        .arg("--sink")
        .arg(format!("mjpeg:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for health and a scored face.
    wait_for_status(port, |s| {
        s["tracks"].as_array().is_some_and(|t| !t.is_empty()) && s["label"] != "unknown"
    });
    healthy_with_metrics(
        port,
        &[
            "fakewatch_frames_processed_total ",
            "fakewatch_processed_fps ",
            "fakewatch_tracks 6",
        ],
    );
    // The preview stream: a multipart response whose first part is a JPEG of
    // the source's size.
    {
        use std::io::{BufRead, BufReader, Read};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut len = None;
        let mut line = String::new();
        let mut saw_multipart = false;
        while len.is_none() || line != "\r\n" {
            line.clear();
            r.read_line(&mut line).unwrap();
            saw_multipart |= line.contains("multipart/x-mixed-replace");
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        assert!(saw_multipart);
        let mut jpeg = vec![0; len.unwrap()];
        r.read_exact(&mut jpeg).unwrap();
        let f = Frame::decode(&jpeg).unwrap();
        let src = Frame::load(photo()).unwrap();
        assert_eq!((f.width(), f.height()), (src.width(), src.height()));
    }
    // The status page, rendered by Chromium: its script fills in verdicts.
    let dom = chromium_dump(
        &chromium,
        &format!("http://127.0.0.1:{port}/"),
        &dir.join("profile"),
        &["--dump-dom"],
    );
    assert!(
        dom.contains("<tr class=\"track\">"),
        "no track rows in the DOM:\n{dom}"
    );
    assert!(dom.contains("fps processed"), "{dom}");
    // Each track row has its sparkline of P(fake) over time.
    assert!(dom.contains("<svg class=\"spark\""), "{dom}");
    assert!(dom.contains("<polyline"), "{dom}");
    assert!(dom.contains("not proof"), "{dom}");
    assert!(
        dom.contains("id=\"verdict\" class=\"fake\"")
            || dom.contains("id=\"verdict\" class=\"real\""),
        "{dom}"
    );
    let shot = dir.join("status.png");
    chromium_dump(
        &chromium,
        &format!("http://127.0.0.1:{port}/"),
        &dir.join("profile2"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
    );
    if let Ok(img) = Frame::load(&shot) {
        eprintln!(
            "status page screenshot: {} ({}x{})",
            shot.display(),
            img.width(),
            img.height()
        );
    }
    // SIGTERM ends the run cleanly with a summary.
    unsafe {
        libc::kill(app.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    let status = loop {
        if let Some(s) = app.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "SIGTERM did not stop the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = app.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    let s = check_summary(&events);
    assert_eq!(s["reason"], "signal");
}

/// Live mode with a sequence bundle: once a track has a full window, its
/// status carries the frame and sequence scores beside the fused one (what
/// the status page's sparklines draw).
#[test]
fn live_status_of_a_sequence_bundle_has_frame_and_sequence_scores() {
    let dir = scratch("run-seq");
    let clip = make_clip(&photo(), 12, &dir.join("clip.avi"));
    let port = free_port();
    let mut app = fakewatch()
        .args(["run", "--bundle"])
        .arg(root().join("models/default-temporal"))
        .arg("--source")
        .arg(&clip)
        .args(["--loop", "--detect-every", "1", "--events", "-"])
        .arg("--sink")
        .arg(format!("mjpeg:127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fused = |t: &Value| t["sequence_score"].is_number() && t["frame_score"].is_number();
    wait_for_status(port, |s| {
        s["tracks"].as_array().is_some_and(|t| t.iter().any(fused))
    });
    let (_, body) = http_get(port, "/status.json").unwrap();
    let status: Value = serde_json::from_slice(&body).unwrap();
    for t in status["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| fused(t))
    {
        for k in ["score", "frame_score", "sequence_score"] {
            let v = t[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{k} {v}: {t}");
        }
    }
    unsafe {
        libc::kill(app.id() as i32, libc::SIGTERM);
    }
    let _ = app.wait();
}

#[test]
fn shared_talking_head_is_paced_and_overlaid() {
    let Some(shared) = shared() else { return };
    let clip = shared.join("data/media/talking-heads/hdtf_WDA_KatieHill_000.mp4");
    let dir = scratch("run-shared");
    let out = dir.join("out.mp4");
    let t = Instant::now();
    let o = fakewatch()
        .args(["run", "--source"])
        .arg(&clip)
        .arg("--sink")
        .arg(format!("file:{}", out.display()))
        .args(["--events", "-", "--max-frames", "50"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    let s = check_summary(&events);
    assert_eq!(s["frames_in"], 50);
    // Paced at 25 fps: 50 frames take about two seconds, not less.
    assert!(t.elapsed() >= Duration::from_millis(1900));
    assert!(s["frames_analyzed"].as_u64().unwrap() >= 1);
    assert!(events.iter().any(|e| e["event"] == "track_appeared"));
    let mut r = VideoReader::open(out.to_str().unwrap()).unwrap();
    let mut orig = VideoReader::open(clip.to_str().unwrap()).unwrap();
    let mut n = 0u64;
    let mut boxes = 0u64;
    while let Some(f) = r.next_frame().unwrap() {
        n += 1;
        let o = orig.next_frame().unwrap().unwrap();
        boxes += u64::from(verdict_pixels_near(&f, 60) > verdict_pixels_near(&o, 60) + 500);
    }
    assert_eq!(n, s["frames_processed"].as_u64().unwrap());
    assert!(
        boxes > n / 2,
        "{boxes} of {n} frames overlaid with a verdict box"
    );
}

/// An HTTP MJPEG camera made here: serves `jpeg` at 10 fps until stopped,
/// then drops every connection (a camera that goes away).
struct Camera {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Camera {
    fn start(port: u16, jpeg: std::sync::Arc<Vec<u8>>) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut clients = vec![];
            while !st.load(SeqCst) {
                if let Ok((mut c, _)) = listener.accept() {
                    let (st, jpeg) = (st.clone(), jpeg.clone());
                    clients.push(std::thread::spawn(move || {
                        use std::io::Read;
                        c.set_nonblocking(false).unwrap();
                        let mut req = [0u8; 2048];
                        let _ = c.read(&mut req);
                        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=cam\r\n\r\n");
                        while !st.load(SeqCst) {
                            let head = format!("--cam\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                            if c.write_all(head.as_bytes()).and_then(|_| c.write_all(&jpeg)).and_then(|_| c.write_all(b"\r\n")).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            for c in clients {
                let _ = c.join();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process that is killed when the test ends, passing or failing,
/// so a failed assertion leaves no `fakewatch run --loop` behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An events file a running `fakewatch run` appends to.
struct EventLog(PathBuf);

impl EventLog {
    fn read(&self) -> Vec<Value> {
        std::fs::read(&self.0)
            .map(|b| ndjson(&b))
            .unwrap_or_default()
    }

    /// Waits (90 s at most) until the events so far satisfy `ok`.
    fn wait_for(&self, what: &str, ok: &dyn Fn(&[Value]) -> bool) {
        let t = Instant::now();
        loop {
            if ok(&self.read()) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "waited too long for {what}: {:?}",
                self.read()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_network_source_that_drops_is_reconnected_and_reported() {
    let jpeg = std::sync::Arc::new(std::fs::read(photo()).unwrap());
    let port = free_port();
    let mut cam = Camera::start(port, jpeg.clone());
    let dir = scratch("run-reconnect");
    let events_file = dir.join("events.ndjson");
    let mut app = fakewatch()
        .args(["run", "--source"])
        .arg(format!("http://127.0.0.1:{port}/stream.mjpg"))
        .args(["--detect-every", "5", "--stats-interval", "0.2", "--events"])
        .arg(&events_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = EventLog(events_file.clone());
    let read = || log.read();
    let frames_in = |ev: &[Value]| {
        ev.iter()
            .filter(|e| e["event"] == "stats")
            .filter_map(|e| e["frames_in"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let wait_for = |what: &str, ok: &dyn Fn(&[Value]) -> bool| log.wait_for(what, ok);
    // Frames flow; then the camera goes away for two seconds and returns.
    wait_for("frames", &|ev| frames_in(ev) >= 5);
    cam.stop();
    wait_for("source_lost", &|ev| {
        ev.iter().any(|e| e["event"] == "source_lost")
    });
    std::thread::sleep(Duration::from_secs(2));
    let _cam = Camera::start(port, jpeg);
    wait_for("source_restored", &|ev| {
        ev.iter().any(|e| e["event"] == "source_restored")
    });
    let before = frames_in(&read());
    wait_for("frames after the reconnection", &|ev| {
        frames_in(ev) >= before + 5
    });
    unsafe {
        libc::kill(app.id() as i32, libc::SIGTERM);
    }
    let status = app.wait().unwrap();
    assert!(status.success());
    let events = read();
    let s = check_summary(&events);
    assert_eq!(s["reason"], "signal");
    let pos = |k: &str| events.iter().position(|e| e["event"] == k);
    let (lost, restored) = (pos("source_lost").unwrap(), pos("source_restored").unwrap());
    assert!(lost < restored);
    assert_eq!(s["source_lost"], 1);
    assert!(events[lost]["retry_in_ms"].as_u64().unwrap() > 0);
    assert!(s["frames_in"].as_u64().unwrap() >= before + 5);
}

#[test]
fn a_gstreamer_display_style_sink_takes_frames() {
    let dir = scratch("run-gst-sink");
    let clip = make_clip(&photo(), 6, &dir.join("clip.avi"));
    let o = fakewatch()
        .args(["run", "--source"])
        .arg(&clip)
        .args(["--no-pace", "--detect-every", "6", "--events", "-"])
        .args(["--sink", "gst:fakesink sync=false"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    let s = check_summary(&events);
    assert_eq!(s["frames_processed"], 6);
    assert_eq!(s["errors"], 0);
}

#[test]
fn an_image_directory_is_a_source() {
    let dir = scratch("run-dir");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let photo = Frame::load(photo()).unwrap();
    photo.save(imgs.join("a.png")).unwrap();
    photo.flip_horizontal().save(imgs.join("b.jpg")).unwrap();
    std::fs::write(imgs.join("c.jpg"), b"not a jpeg").unwrap();
    std::fs::write(imgs.join("notes.txt"), b"ignored").unwrap();
    let o = fakewatch()
        .args(["run", "--source"])
        .arg(format!("dir:{}", imgs.display()))
        .args(["--no-pace", "--events", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    let s = check_summary(&events);
    // Two images; the broken one is skipped with a warning, the text file ignored.
    assert_eq!(s["frames_in"], 2);
    assert_eq!(s["frames_analyzed"], 2);
    assert_eq!(
        s["tracks_seen"], 6,
        "the mirrored faces continue the same tracks"
    );
}

/// Events of stream `name`.
fn of_stream<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["stream"] == name).collect()
}

#[test]
fn three_streams_in_one_run_each_get_their_own_verdicts_and_outputs() {
    let dir = scratch("run-streams");
    let faces = make_clip(&photo(), 12, &dir.join("faces.avi"));
    let grey = dir.join("grey.jpg");
    Frame::filled(320, 240, [90, 90, 90])
        .unwrap()
        .save(&grey)
        .unwrap();
    let empty = make_clip(&grey, 12, &dir.join("empty.avi"));
    // Events also go through a real broker where mosquitto is installed.
    let mqtt =
        tool("mosquitto", "mosquitto").map(|m| broker_and_subscriber(&m, &dir, "fw/streams"));
    let mut cmd = fakewatch();
    cmd.args(["run", "--source"])
        .arg(format!("cam1={}", faces.display()))
        .arg("--source")
        .arg(format!("cam2={}", faces.display()))
        .arg("--source")
        .arg(format!("lobby={}", empty.display()))
        .arg("--sink")
        .arg(format!("file:{}/{{stream}}.mp4", dir.display()))
        .arg("--sink")
        .arg(format!("cam2=png-dir:{}", dir.join("cam2-png").display()))
        .args(["--no-pace", "--detect-every", "4", "--events", "-"])
        .args(["--stream-detect-every", "lobby=6"])
        .arg("--spool-dir")
        .arg(dir.join("spool"));
    if let Some((broker, ..)) = &mqtt {
        cmd.arg("--events")
            .arg(format!("mqtt://127.0.0.1:{}/fw/streams", broker.port));
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = ndjson(&o.stdout);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "{e}");
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{summary}");
    // Every event but the run's own stop and summary names its stream.
    for e in &events[..events.len() - 2] {
        assert!(
            ["cam1", "cam2", "lobby"].contains(&e["stream"].as_str().unwrap_or("")),
            "{e}"
        );
    }
    let count = |name: &str, kind: &str| {
        of_stream(&events, name)
            .iter()
            .filter(|e| e["event"] == kind)
            .count()
    };
    for name in ["cam1", "cam2"] {
        assert_eq!(count(name, "start"), 1);
        assert_eq!(count(name, "track_appeared"), 6, "{name}: six faces");
        assert!(of_stream(&events, name)
            .iter()
            .any(|e| e["event"] == "verdict_changed" && e["scope"] == "stream"));
        let s = &summary["streams"][name];
        assert_eq!(s["frames_processed"], 12, "{s}");
        assert_eq!(s["frames_analyzed"], 3, "every 4th of 12: {s}");
        assert_eq!(s["tracks_seen"], 6);
        assert_eq!(s["reason"], "end");
    }
    // The same clip twice: the same tracks and scores, each on its own.
    let verdicts = |name: &str| -> Vec<(u64, String)> {
        of_stream(&events, name)
            .iter()
            .filter(|e| e["event"] == "verdict_changed" && e["scope"] == "track")
            .map(|e| (e["track"].as_u64().unwrap(), e["score"].to_string()))
            .collect()
    };
    assert_eq!(verdicts("cam1"), verdicts("cam2"));
    assert_eq!(count("lobby", "track_appeared"), 0);
    assert_eq!(summary["streams"]["lobby"]["label"], "unknown");
    assert_eq!(summary["streams"]["lobby"]["frames_processed"], 12);
    assert_eq!(
        summary["streams"]["lobby"]["frames_analyzed"], 2,
        "its own --stream-detect-every 6"
    );
    // Each stream its own video; the named sink only for its stream.
    for name in ["cam1", "cam2", "lobby"] {
        let mut r = VideoReader::open(dir.join(format!("{name}.mp4")).to_str().unwrap()).unwrap();
        let mut n = 0;
        while r.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 12, "{name}.mp4");
    }
    assert_eq!(std::fs::read_dir(dir.join("cam2-png")).unwrap().count(), 12);
    assert!(!dir.join("cam1-png").exists());
    if let Some((_broker, done, sub)) = mqtt {
        // The run flushed its spool before it exited; give the subscriber
        // time to drain what the broker holds for it.
        std::thread::sleep(Duration::from_secs(3));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let got = sub.join().unwrap();
        assert_eq!(got.len(), events.len(), "every event through MQTT");
        assert_eq!(
            of_stream(&got, "cam1").len(),
            of_stream(&events, "cam1").len()
        );
    }
}

#[test]
fn a_stream_whose_camera_is_down_is_retried_while_the_others_go_on() {
    let dir = scratch("run-streams-broken");
    let faces = make_clip(&photo(), 24, &dir.join("faces.avi"));
    let port = free_port();
    let events_file = dir.join("events.ndjson");
    let mut app = Running(
        fakewatch()
            .args(["run", "--source"])
            .arg(format!("door=http://127.0.0.1:{port}/stream.mjpg"))
            .arg("--source")
            .arg(format!("desk={}", faces.display()))
            .arg("--source")
            .arg(format!("hall={}", faces.display()))
            // Unpaced: the clips are analysed in order in their own loops (every
            // 4th frame, whatever the machine's load); the camera stream is live.
            .args([
                "--no-pace",
                "--detect-every",
                "4",
                "--stats-interval",
                "0.5",
            ])
            .arg("--events")
            .arg(&events_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = EventLog(events_file.clone());
    let read = || log.read();
    let wait_for = |what: &str, ok: &dyn Fn(&[Value]) -> bool| log.wait_for(what, ok);
    let lost = |ev: &[Value]| {
        ev.iter()
            .filter(|e| e["event"] == "source_lost" && e["stream"] == "door")
            .count()
    };
    // No camera yet: the door stream is reported and retried, more slowly
    // each time; the desk and hall clips run meanwhile.
    wait_for("two retries of the door camera", &|ev| lost(ev) >= 2);
    wait_for("verdicts of the desk", &|ev| {
        ev.iter()
            .any(|e| e["event"] == "verdict_changed" && e["stream"] == "desk")
    });
    // The camera comes up: the door stream starts and gets frames.
    let _cam = Camera::start(port, std::sync::Arc::new(std::fs::read(photo()).unwrap()));
    wait_for("the door stream's verdict", &|ev| {
        ev.iter()
            .any(|e| e["event"] == "verdict_changed" && e["stream"] == "door")
    });
    unsafe {
        libc::kill(app.0.id() as i32, libc::SIGTERM);
    }
    let status = app.0.wait().unwrap();
    assert!(status.success());
    let events = read();
    let retries: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "source_lost" && e["stream"] == "door")
        .map(|e| e["retry_in_ms"].as_u64().unwrap())
        .collect();
    assert!(retries.windows(2).all(|w| w[1] >= w[0]), "{retries:?}");
    let s = &events.last().unwrap();
    assert_eq!(s["event"], "summary");
    for name in ["desk", "hall"] {
        let st = &s["streams"][name];
        assert_eq!(st["frames_processed"], 24, "{name}: {st}");
        assert_eq!(st["dropped"], 0, "{name}: {st}");
        assert_eq!(st["reason"], "end");
        assert_eq!(st["errors"], 0);
        assert_eq!(st["tracks_seen"], 6);
    }
    let door = &s["streams"]["door"];
    assert!(door["frames_processed"].as_u64().unwrap() > 0, "{door}");
    assert_eq!(door["source_lost"].as_u64().unwrap(), retries.len() as u64);
}

#[test]
fn several_streams_refuse_what_they_cannot_do() {
    let run = |args: &[&str]| {
        let o = fakewatch().arg("run").args(args).output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let (a, b) = ("a=tests/fixtures/t1.jpg", "b=tests/fixtures/t1.jpg");
    let two = ["--source", a, "--source", b];
    let with = |more: &[&'static str]| -> Vec<&str> { two.iter().chain(more).copied().collect() };
    let e = run(&with(&["--max-streams", "1"]));
    assert!(e.contains("--max-streams is 1"), "{e}");
    let e = run(&["--source", a, "--source", a]);
    assert!(e.contains("two sources are named \"a\""), "{e}");
    let e = run(&with(&["--sink", "file:o.mp4"]));
    assert!(e.contains("{stream}"), "{e}");
    let e = run(&with(&["--stream-detect-every", "c=2"]));
    assert!(e.contains("no stream is named \"c\""), "{e}");
    let e = run(&with(&["--stream-detect-every", "a=0"]));
    assert!(e.contains("K must be an integer >= 1"), "{e}");
    let e = run(&with(&["--sink", "c=file:o.mp4"]));
    assert!(e.contains("no stream is named \"c\""), "{e}");
    let e = run(&with(&["--sink", "a=mjpeg:127.0.0.1:0"]));
    assert!(e.contains("one server shows every stream"), "{e}");
}

#[test]
fn the_grid_page_shows_every_stream_in_a_browser() {
    let Some(chromium) = tool("chromium", "chromium") else {
        return;
    };
    let dir = scratch("run-grid");
    let clip = make_clip(&photo(), 12, &dir.join("clip.avi"));
    let port = free_port();
    let mut app = Running(
        fakewatch()
            .args(["run", "--source"])
            .arg(format!("cam1={}", clip.display()))
            .arg("--source")
            .arg(format!("cam2={}", clip.display()))
            .args(["--loop", "--detect-every", "6", "--events"])
            .arg(dir.join("events.ndjson"))
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A verdict and tracks on screen in both (a stream that has not started
    // yet reports an empty status).
    wait_for_status(port, |s| {
        ["cam1", "cam2"].iter().all(|n| {
            let st = &s["streams"][n];
            ["fake", "real"].contains(&st["label"].as_str().unwrap_or(""))
                && st["tracks"].as_array().is_some_and(|t| !t.is_empty())
        })
    });
    healthy_with_metrics(
        port,
        &[
            "fakewatch_tracks{stream=\"cam1\"} 6",
            "fakewatch_tracks{stream=\"cam2\"} 6",
        ],
    );
    let (h, jpeg) = http_get(port, "/stream/cam2.jpg").unwrap();
    assert!(h.contains("image/jpeg"), "{h}");
    let f = Frame::decode(&jpeg).unwrap();
    assert_eq!(f.width(), Frame::load(photo()).unwrap().width());
    let dom = chromium_dump(
        &chromium,
        &format!("http://127.0.0.1:{port}/"),
        &dir.join("profile"),
        &["--dump-dom"],
    );
    for name in ["cam1", "cam2"] {
        assert!(
            dom.contains(&format!("data-stream=\"{name}\"")),
            "no card for {name}:\n{dom}"
        );
    }
    assert!(dom.contains("2 streams"), "{dom}");
    assert!(
        dom.contains("class=\"verdict fake\"") || dom.contains("class=\"verdict real\""),
        "{dom}"
    );
    assert!(dom.contains("fps processed"), "{dom}");
    // Each stream's tracks have their sparklines of P(fake) over time.
    assert!(dom.contains("<div class=\"track\">#"), "{dom}");
    assert!(dom.contains("<svg class=\"spark\""), "{dom}");
    let shot = dir.join("grid.png");
    chromium_dump(
        &chromium,
        &format!("http://127.0.0.1:{port}/"),
        &dir.join("profile2"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
    );
    eprintln!("grid page screenshot: {}", shot.display());
    unsafe {
        libc::kill(app.0.id() as i32, libc::SIGTERM);
    }
    let status = app.0.wait().unwrap();
    assert!(status.success());
    let events = ndjson(&std::fs::read(dir.join("events.ndjson")).unwrap());
    let s = events.last().unwrap();
    assert_eq!(s["event"], "summary");
    assert_eq!(s["reason"], "signal");
    assert!(s["streams"]["cam1"]["frames_processed"].as_u64().unwrap() > 12);
}
