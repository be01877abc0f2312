//! The HTTP side of a live run: an MJPEG preview (`/stream.mjpg`), the
//! latest frame (`/frame.jpg`), a status page (`/`) fed by `/status.json`,
//! Prometheus `/metrics` and `/healthz`. Plain `std::net`, one thread per
//! client, a bounded number of clients.
//!
//! A multi-stream run serves every stream from one server: `/` is a grid
//! page of all streams, `/status.json` holds `{"streams": {NAME: status}}`,
//! each stream has `/stream/NAME.mjpg`, `/stream/NAME.jpg` and
//! `/stream/NAME/status.json`, `/metrics` labels every series with
//! `stream="NAME"`, and `/healthz` is healthy while every stream is.
//!
//! Exposure: an address given as a bare port binds to 127.0.0.1 only; with a
//! bearer token every path but `/healthz` needs `Authorization: Bearer TOKEN`
//! (or `?token=TOKEN`, which the status page passes on to its requests).
//! Request heads are bounded ([`MAX_REQUEST_HEAD`] bytes, [`MAX_HEADERS`]
//! lines); only the fixed paths below exist, nothing is read from disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// Most simultaneous HTTP clients.
pub const MAX_CLIENTS: usize = 16;
/// `/healthz` fails when no frame was processed for this long.
pub const HEALTH_STALE: Duration = Duration::from_secs(5);
/// Longest request head (request line and headers) read, bytes.
pub const MAX_REQUEST_HEAD: u64 = 16 * 1024;
/// Most header lines read.
pub const MAX_HEADERS: usize = 64;

/// An HTTP listen address: `PORT` or `:PORT` (127.0.0.1), `localhost:PORT`,
/// or `HOST:PORT` (e.g. `0.0.0.0:8080` to serve the network).
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("address {s:?}: bad port"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .with_context(|| format!("address {s:?}: expected PORT, localhost:PORT or HOST:PORT"))
}

/// A track as shown on the status page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackStatus {
    /// Track id.
    pub id: u32,
    /// `real`, `fake` or `unknown`.
    pub label: &'static str,
    /// Mean P(fake) over the track's window (fused with the sequence
    /// model's score where the bundle has one).
    pub score: Option<f32>,
    /// The frame model's P(fake) alone, when `score` is fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_score: Option<f32>,
    /// The sequence model's own P(fake), when `score` is fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_score: Option<f32>,
    /// Frames scored.
    pub frames: usize,
}

/// What `/status.json` and `/metrics` report.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Status {
    /// The source.
    pub source: String,
    /// Stream label.
    pub label: &'static str,
    /// Why the stream label is unknown (`no face`, `too few frames`).
    pub unknown: Option<&'static str>,
    /// Stream P(fake) (the raw score for an uncalibrated bundle).
    pub score: Option<f32>,
    /// Tracks on screen.
    pub tracks: Vec<TrackStatus>,
    /// Frames read from the source.
    pub frames_in: u64,
    /// Frames overlaid and written.
    pub frames_processed: u64,
    /// Frames run through detection and scoring.
    pub frames_analyzed: u64,
    /// Frames dropped (pipeline behind the source).
    pub dropped: u64,
    /// Source frames per second (last second).
    pub input_fps: f64,
    /// Output frames per second (last second).
    pub processed_fps: f64,
    /// Latency of the last analysis, capture to result, ms.
    pub analysis_latency_ms: f64,
    /// Events sent.
    pub events: u64,
    /// Whether the source is currently lost.
    pub source_lost: bool,
}

struct Jpeg {
    generation: u64,
    data: Arc<Vec<u8>>,
}

/// One stream's side of the server: its status and preview frames.
pub struct StreamView {
    name: String,
    status: Mutex<Status>,
    jpeg: Mutex<Jpeg>,
    new_jpeg: Condvar,
    viewers: AtomicUsize,
    last_snapshot: Mutex<Option<Instant>>,
    last_frame: Mutex<Option<Instant>>,
}

impl StreamView {
    fn new(name: String) -> Self {
        Self {
            name,
            // Until its first frame a stream is "unknown", not blank.
            status: Mutex::new(Status {
                label: "unknown",
                ..Status::default()
            }),
            jpeg: Mutex::new(Jpeg {
                generation: 0,
                data: Arc::new(Vec::new()),
            }),
            new_jpeg: Condvar::new(),
            viewers: AtomicUsize::new(0),
            last_snapshot: Mutex::new(None),
            last_frame: Mutex::new(None),
        }
    }

    /// Replaces the status.
    pub fn set_status(&self, s: Status) {
        if let Ok(mut g) = self.status.lock() {
            *g = s;
        }
        if let Ok(mut g) = self.last_frame.lock() {
            *g = Some(Instant::now());
        }
    }

    /// Whether anyone wants preview frames now (a stream viewer, or a
    /// snapshot in the last two seconds).
    pub fn wants_jpeg(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
            || self
                .last_snapshot
                .lock()
                .ok()
                .and_then(|g| *g)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
    }

    /// Publishes a new preview frame.
    pub fn set_jpeg(&self, data: Vec<u8>) {
        if let Ok(mut g) = self.jpeg.lock() {
            g.generation += 1;
            g.data = Arc::new(data);
        }
        self.new_jpeg.notify_all();
    }

    fn fresh(&self) -> bool {
        self.last_frame
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < HEALTH_STALE)
    }

    fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// State shared between the pipeline and the HTTP threads.
pub struct HttpState {
    /// One unnamed stream (a single-stream run) or the named streams.
    streams: Vec<Arc<StreamView>>,
    stop: AtomicBool,
    token: Option<String>,
}

impl HttpState {
    /// Whether this serves a multi-stream run (named streams).
    fn multi(&self) -> bool {
        self.streams.first().is_some_and(|v| !v.name.is_empty())
    }

    fn stream(&self, name: &str) -> Option<&Arc<StreamView>> {
        self.streams.iter().find(|v| v.name == name)
    }
}

/// The running server.
pub struct HttpServer {
    state: Arc<HttpState>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves one stream in the background; with `token`,
    /// every path but `/healthz` needs it.
    pub fn start(addr: SocketAddr, token: Option<String>) -> Result<Self> {
        Self::start_streams(addr, token, &[])
    }

    /// As [`Self::start`] for the streams `names` of a multi-stream run
    /// (none: one unnamed stream).
    pub fn start_streams(
        addr: SocketAddr,
        token: Option<String>,
        names: &[String],
    ) -> Result<Self> {
        if token
            .as_deref()
            .is_some_and(|t| t.len() < 8 || t.chars().any(char::is_whitespace))
        {
            anyhow::bail!("the HTTP token must be at least 8 characters without spaces");
        }
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let open = token.is_none();
        let names: Vec<String> = if names.is_empty() {
            vec![String::new()]
        } else {
            names.to_vec()
        };
        let state = Arc::new(HttpState {
            streams: names
                .into_iter()
                .map(|n| Arc::new(StreamView::new(n)))
                .collect(),
            stop: AtomicBool::new(false),
            token,
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || accept_loop(&listener, &st))?;
        if open && !addr.ip().is_loopback() {
            log::warn!(
                "serving status and preview on http://{addr}/ to the network without a token \
                 (set --http-token)"
            );
        } else {
            log::info!("serving status and preview on http://{addr}/");
        }
        Ok(Self {
            state,
            addr,
            thread: Some(thread),
        })
    }

    /// Whether requests need no token.
    pub fn is_open(&self) -> bool {
        self.state.token.is_none()
    }

    /// The view of stream `name` (`""`: the stream of a single-stream run).
    pub fn view(&self, name: &str) -> Option<Arc<StreamView>> {
        self.state.stream(name).cloned()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for v in &self.state.streams {
            v.new_jpeg.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<HttpState>) {
    let clients = Arc::new(AtomicUsize::new(0));
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if clients.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    let _ = respond(&stream, "503 Service Unavailable", "text/plain", b"busy\n");
                    continue;
                }
                clients.fetch_add(1, Ordering::SeqCst);
                let (st, c) = (state.clone(), clients.clone());
                let spawned = std::thread::Builder::new()
                    .name("http-client".into())
                    .spawn(move || {
                        let _ = serve(stream, &st);
                        c.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log::warn!("http accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn respond(mut s: &TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    s.flush()
}

/// A request head: the request line and lower-cased header names with values.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

/// Reads a request head of at most [`MAX_REQUEST_HEAD`] bytes and
/// [`MAX_HEADERS`] lines; `None` when it is longer, cut off or not UTF-8.
fn read_head(stream: &TcpStream) -> Option<Head> {
    let mut reader = BufReader::new(stream).take(MAX_REQUEST_HEAD);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 || !line.ends_with('\n') {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || !h.ends_with('\n') {
            return None;
        }
        let t = h.trim_end();
        if t.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return None;
        }
        if let Some((k, v)) = t.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut parts = line.split_whitespace();
    Some(Head {
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        headers,
    })
}

/// Equal strings, compared in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `head` carries `token` (bearer header or `token=` query value).
fn authorized(head: &Head, token: &str) -> bool {
    let bearer = head
        .headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .filter_map(|(_, v)| v.strip_prefix("Bearer "))
        .any(|v| same_secret(v.trim(), token));
    let query = head
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .any(|v| same_secret(v, token));
    bearer || query
}

fn serve(stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let Some(head) = read_head(&stream) else {
        respond(
            &stream,
            "431 Request Header Fields Too Large",
            "text/plain",
            b"request head too large or malformed\n",
        )?;
        // Read (and drop) a little of what the client still sends, so closing
        // with unread data does not reset the connection before it reads the answer.
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let _ = std::io::copy(&mut (&stream).take(1 << 20), &mut std::io::sink());
        return Ok(());
    };
    let (method, path) = (head.method.as_str(), head.target.as_str());
    if method != "GET" {
        return respond(
            &stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        );
    }
    let path = path.split('?').next().unwrap_or("");
    if let Some(token) = &state.token {
        if path != "/healthz" && !authorized(&head, token) {
            let mut s = &stream;
            write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nunauthorized\n"
            )?;
            return s.flush();
        }
    }
    if state.multi() {
        return serve_streams(&stream, state, path);
    }
    let Some(view) = state.streams.first() else {
        return respond(&stream, "404 Not Found", "text/plain", b"not found\n");
    };
    match path {
        "/" | "/index.html" => respond(
            &stream,
            "200 OK",
            "text/html; charset=utf-8",
            STATUS_PAGE.as_bytes(),
        ),
        "/status.json" => {
            let body = serde_json::to_vec(&view.status()).unwrap_or_default();
            respond(&stream, "200 OK", "application/json", &body)
        }
        "/metrics" => respond(
            &stream,
            "200 OK",
            "text/plain; version=0.0.4",
            metrics(&view.status()).as_bytes(),
        ),
        "/healthz" => health(&stream, &[view]),
        "/frame.jpg" => snapshot(&stream, view),
        "/stream.mjpg" => mjpeg(&stream, state, view),
        _ => respond(&stream, "404 Not Found", "text/plain", b"not found\n"),
    }
}

/// The paths of a multi-stream run.
fn serve_streams(stream: &TcpStream, state: &HttpState, path: &str) -> std::io::Result<()> {
    let all: Vec<&Arc<StreamView>> = state.streams.iter().collect();
    match path {
        "/" | "/index.html" => respond(
            stream,
            "200 OK",
            "text/html; charset=utf-8",
            GRID_PAGE.as_bytes(),
        ),
        "/status.json" => {
            let map: serde_json::Map<String, serde_json::Value> = all
                .iter()
                .map(|v| {
                    (
                        v.name.clone(),
                        serde_json::to_value(v.status()).unwrap_or_default(),
                    )
                })
                .collect();
            let body =
                serde_json::to_vec(&serde_json::json!({ "streams": map })).unwrap_or_default();
            respond(stream, "200 OK", "application/json", &body)
        }
        "/metrics" => {
            let statuses: Vec<(String, Status)> =
                all.iter().map(|v| (v.name.clone(), v.status())).collect();
            let refs: Vec<(Option<&str>, &Status)> = statuses
                .iter()
                .map(|(n, s)| (Some(n.as_str()), s))
                .collect();
            respond(
                stream,
                "200 OK",
                "text/plain; version=0.0.4",
                metrics_of(&refs).as_bytes(),
            )
        }
        "/healthz" => health(stream, &all),
        _ => {
            let rest = path.strip_prefix("/stream/").unwrap_or("");
            let (name, what) = if let Some(n) = rest.strip_suffix(".mjpg") {
                (n, "mjpg")
            } else if let Some(n) = rest.strip_suffix(".jpg") {
                (n, "jpg")
            } else if let Some(n) = rest.strip_suffix("/status.json") {
                (n, "status")
            } else {
                ("", "")
            };
            match (state.stream(name).filter(|_| !name.is_empty()), what) {
                (Some(v), "mjpg") => mjpeg(stream, state, v),
                (Some(v), "jpg") => snapshot(stream, v),
                (Some(v), "status") => {
                    let body = serde_json::to_vec(&v.status()).unwrap_or_default();
                    respond(stream, "200 OK", "application/json", &body)
                }
                _ => respond(stream, "404 Not Found", "text/plain", b"not found\n"),
            }
        }
    }
}

/// 200 while every stream processed a frame recently, else 503 naming the
/// stale ones.
fn health(stream: &TcpStream, views: &[&Arc<StreamView>]) -> std::io::Result<()> {
    let stale: Vec<&str> = views
        .iter()
        .filter(|v| !v.fresh())
        .map(|v| v.name.as_str())
        .collect();
    if stale.is_empty() {
        respond(stream, "200 OK", "text/plain", b"ok\n")
    } else if views.len() == 1 && stale == [""] {
        respond(
            stream,
            "503 Service Unavailable",
            "text/plain",
            b"no frame processed recently\n",
        )
    } else {
        let body = format!("no frame processed recently: {}\n", stale.join(", "));
        respond(
            stream,
            "503 Service Unavailable",
            "text/plain",
            body.as_bytes(),
        )
    }
}

/// The latest preview frame (waits up to 3 s for the first).
fn snapshot(stream: &TcpStream, view: &StreamView) -> std::io::Result<()> {
    if let Ok(mut g) = view.last_snapshot.lock() {
        *g = Some(Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let data = view.jpeg.lock().map(|j| j.data.clone()).unwrap_or_default();
        if !data.is_empty() {
            return respond(stream, "200 OK", "image/jpeg", &data);
        }
        if Instant::now() > deadline {
            return respond(
                stream,
                "503 Service Unavailable",
                "text/plain",
                b"no frame yet\n",
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The MJPEG preview of one stream, counted as a viewer while it lasts.
fn mjpeg(stream: &TcpStream, state: &HttpState, view: &StreamView) -> std::io::Result<()> {
    view.viewers.fetch_add(1, Ordering::SeqCst);
    let r = stream_mjpeg(stream, state, view);
    view.viewers.fetch_sub(1, Ordering::SeqCst);
    r
}

fn stream_mjpeg(mut s: &TcpStream, state: &HttpState, view: &StreamView) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=fwframe\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )?;
    let mut seen = 0u64;
    while !state.stop.load(Ordering::SeqCst) {
        let data = {
            let Ok(mut g) = view.jpeg.lock() else {
                return Ok(());
            };
            while g.generation == seen && !state.stop.load(Ordering::SeqCst) {
                g = match view.new_jpeg.wait_timeout(g, Duration::from_millis(500)) {
                    Ok((g, _)) => g,
                    Err(_) => return Ok(()),
                };
            }
            seen = g.generation;
            g.data.clone()
        };
        if data.is_empty() {
            continue;
        }
        write!(
            s,
            "--fwframe\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )?;
        s.write_all(&data)?;
        s.write_all(b"\r\n")?;
        s.flush()?;
    }
    Ok(())
}

/// Prometheus text exposition of `s`.
pub fn metrics(s: &Status) -> String {
    metrics_of(&[(None, s)])
}

/// Prometheus text exposition of several streams: each series once, one
/// sample per stream, labelled `stream="NAME"` where a name is given.
pub fn metrics_of(streams: &[(Option<&str>, &Status)]) -> String {
    type Get = fn(&Status) -> f64;
    let series: [(&str, &str, &str, Get); 12] = [
        (
            "frames_in_total",
            "counter",
            "Frames read from the source.",
            |s| s.frames_in as f64,
        ),
        (
            "frames_processed_total",
            "counter",
            "Frames overlaid and written to the sinks.",
            |s| s.frames_processed as f64,
        ),
        (
            "frames_analyzed_total",
            "counter",
            "Frames run through detection and scoring.",
            |s| s.frames_analyzed as f64,
        ),
        (
            "frames_dropped_total",
            "counter",
            "Frames dropped because the pipeline was behind.",
            |s| s.dropped as f64,
        ),
        ("events_total", "counter", "Events sent.", |s| {
            s.events as f64
        }),
        ("input_fps", "gauge", "Source frames per second.", |s| {
            s.input_fps
        }),
        (
            "processed_fps",
            "gauge",
            "Processed frames per second.",
            |s| s.processed_fps,
        ),
        (
            "analysis_latency_seconds",
            "gauge",
            "Capture to analysis result of the last analysed frame.",
            |s| s.analysis_latency_ms / 1000.0,
        ),
        ("tracks", "gauge", "Face tracks on screen.", |s| {
            s.tracks.len() as f64
        }),
        (
            "stream_score",
            "gauge",
            "Stream P(fake) (-1: no face).",
            |s| s.score.map_or(-1.0, f64::from),
        ),
        (
            "stream_fake",
            "gauge",
            "1 when the stream verdict is fake.",
            |s| f64::from(u8::from(s.label == "fake")),
        ),
        ("source_up", "gauge", "0 while the source is lost.", |s| {
            f64::from(u8::from(!s.source_lost))
        }),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in series {
        out += &format!("# HELP fakewatch_{name} {help}\n# TYPE fakewatch_{name} {kind}\n");
        for (stream, s) in streams {
            match stream {
                Some(n) => out += &format!("fakewatch_{name}{{stream=\"{n}\"}} {}\n", get(s)),
                None => out += &format!("fakewatch_{name} {}\n", get(s)),
            }
        }
    }
    out
}

/// The sparkline script shared by the status and grid pages: `spark(h, now)`
/// draws a track's last minute of `[time, score, frame score, sequence
/// score]` entries as an SVG.
macro_rules! spark_js {
    () => {
        r#"// P(fake) of a track over the last minute, with the 0.5 line dashed; with
// a sequence model, the frame score (blue) and the sequence score (orange)
// under the fused one (white).
function spark(h,now){
  const W=160,H=32,x=t=>W-(now-t)/60000*W,y=p=>H-p*H;
  const line=(k,colour,width)=>{
    const pts=h.filter(e=>e[k]!==null&&e[k]!==undefined).map(e=>`${x(e[0]).toFixed(1)},${y(e[k]).toFixed(1)}`).join(' ');
    return pts?`<polyline fill="none" stroke="${colour}" stroke-width="${width}" points="${pts}"/>`:'';
  };
  return `<svg class="spark" width="${W}" height="${H}"><line x1="0" y1="${H/2}" x2="${W}" y2="${H/2}" stroke="rgb(136,68,68)" stroke-dasharray="4 3"/>`+
    line(2,'rgb(90,150,230)',1)+line(3,'rgb(230,150,60)',1)+line(1,'rgb(238,238,238)',1.5)+`</svg>`;
}
"#
    };
}

const STATUS_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fakewatch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
#verdict{font-size:2rem;font-weight:bold;padding:.3rem .8rem;border-radius:.3rem;display:inline-block}
.fake{background:#c62828}.real{background:#2e7d32}.unknown{background:#555}
table{border-collapse:collapse;margin-top:.5rem}td,th{padding:.2rem .6rem;border-bottom:1px solid #333;text-align:left}
img{max-width:100%;margin-top:.5rem;border:1px solid #333}
svg.spark{background:#1b1b1b}.note{color:#999;font-size:.85rem}
</style></head><body>
<h1>fakewatch</h1>
<div>stream: <span id="verdict" class="unknown">unknown</span> <span id="score"></span></div>
<div id="figures">waiting for the first frame…</div>
<table><thead><tr><th>track</th><th>verdict</th><th>P(fake)</th><th>frames</th><th>P(fake), last minute</th></tr></thead><tbody id="tracks"></tbody></table>
<p class="note">The verdicts are a prompt for review, not proof.</p>
<img id="preview" alt="live preview">
<script>
function fmt(x){return x===null||x===undefined?"–":x.toFixed(3)}
const hist={};
"#,
    spark_js!(),
    r#"async function tick(){
  try{
    const s=await (await fetch('/status.json'+location.search,{cache:'no-store'})).json();
    const v=document.getElementById('verdict');v.className=s.label;
    v.textContent=s.label.toUpperCase()+(s.unknown?' ('+s.unknown+')':'');
    document.getElementById('score').textContent=s.score===null?'':'P(fake) '+fmt(s.score);
    document.getElementById('figures').textContent=
      `source ${s.source} · ${s.input_fps.toFixed(1)} fps in · ${s.processed_fps.toFixed(1)} fps processed · `+
      `${s.frames_processed} frames · ${s.dropped} dropped · analysis ${s.analysis_latency_ms.toFixed(0)} ms`+
      (s.source_lost?' · SOURCE LOST':'');
    const now=Date.now();
    for(const t of s.tracks){
      if(t.score===null||t.score===undefined)continue;
      const h=(hist[t.id]=hist[t.id]||[]);h.push([now,t.score,t.frame_score,t.sequence_score]);
      while(h.length&&now-h[0][0]>60000)h.shift();
    }
    document.getElementById('tracks').innerHTML=s.tracks.map(t=>
      `<tr class="track"><td>#${t.id}</td><td class="${t.label}">${t.label}</td><td>${fmt(t.score)}</td><td>${t.frames}</td>`+
      `<td>${spark(hist[t.id]||[],now)}</td></tr>`).join('');
  }catch(e){document.getElementById('figures').textContent='disconnected'}
}
setInterval(tick,500);tick();
window.addEventListener('load',()=>{document.getElementById('preview').src='/stream.mjpg'+location.search});
</script></body></html>
"#
);

/// The grid page of a multi-stream run: one card per stream (verdict,
/// figures, tracks, live preview), refreshed from `/status.json`.
const GRID_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fakewatch · streams</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:1rem}
.card{border:1px solid #333;border-radius:.4rem;padding:.6rem;background:#181818}
.card h2{margin:0 0 .3rem 0;font-size:1.2rem}
.verdict{font-weight:bold;padding:.1rem .5rem;border-radius:.3rem;display:inline-block}
.fake{background:#c62828}.real{background:#2e7d32}.unknown{background:#555}
.figures{font-size:.85rem;color:#bbb;margin:.3rem 0}
.lost{color:#ff8a80;font-weight:bold}
img{width:100%;border:1px solid #333}
svg.spark{background:#1b1b1b;vertical-align:middle}.track{margin:.1rem 0}
</style></head><body>
<h1>fakewatch <span id="count"></span></h1>
<div id="grid">waiting for the streams…</div>
<script>
function fmt(x){return x===null||x===undefined?"–":x.toFixed(3)}
const cards={},hist={};
"#,
    spark_js!(),
    r#"
function card(name){
  if(cards[name])return cards[name];
  const g=document.getElementById('grid');
  if(!Object.keys(cards).length)g.textContent='';
  const c=document.createElement('div');c.className='card stream';c.dataset.stream=name;
  c.innerHTML=`<h2></h2><div><span class="verdict unknown">unknown</span> <span class="score"></span></div>`+
    `<div class="figures"></div><div class="tracks"></div><img alt="preview">`;
  c.querySelector('h2').textContent=name;
  c.querySelector('img').src='/stream/'+encodeURIComponent(name)+'.mjpg'+location.search;
  g.appendChild(c);cards[name]=c;return c;
}
async function tick(){
  try{
    const all=(await (await fetch('/status.json'+location.search,{cache:'no-store'})).json()).streams;
    const names=Object.keys(all).sort();
    document.getElementById('count').textContent=`· ${names.length} streams`;
    for(const name of names){
      const s=all[name],c=card(name),v=c.querySelector('.verdict');
      v.className='verdict '+s.label;
      v.textContent=s.label.toUpperCase()+(s.unknown?' ('+s.unknown+')':'');
      c.querySelector('.score').textContent=s.score===null?'':'P(fake) '+fmt(s.score);
      const f=c.querySelector('.figures');
      f.textContent=`${s.input_fps.toFixed(1)} fps in · ${s.processed_fps.toFixed(1)} fps processed · `+
        `${s.frames_analyzed} analysed · ${s.dropped} dropped · analysis ${s.analysis_latency_ms.toFixed(0)} ms`;
      f.className='figures'+(s.source_lost?' lost':'');
      if(s.source_lost)f.textContent+=' · SOURCE LOST';
      const now=Date.now();
      for(const t of s.tracks){
        if(t.score===null||t.score===undefined)continue;
        const h=(hist[name+'#'+t.id]=hist[name+'#'+t.id]||[]);h.push([now,t.score,t.frame_score,t.sequence_score]);
        while(h.length&&now-h[0][0]>60000)h.shift();
      }
      c.querySelector('.tracks').innerHTML=s.tracks.map(t=>
        `<div class="track">#${t.id} ${t.label} ${fmt(t.score)} ${spark(hist[name+'#'+t.id]||[],now)}</div>`).join('');
    }
  }catch(e){document.getElementById('count').textContent='· disconnected'}
}
setInterval(tick,500);tick();
</script></body></html>
"#
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    fn raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&buf[..split]).to_string(),
            buf[split + 4..].to_vec(),
        )
    }

    #[test]
    fn serves_status_metrics_health_and_snapshots() {
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(server.is_open());
        let addr = server.addr();
        assert!(get(addr, "/healthz").0.contains("503"));
        server.view("").unwrap().set_status(Status {
            frames_in: 7,
            label: "fake",
            score: Some(0.9),
            ..Status::default()
        });
        assert!(get(addr, "/healthz").0.contains("200"));
        let (_, body) = get(addr, "/status.json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["frames_in"], 7);
        let (_, body) = get(addr, "/metrics");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("fakewatch_frames_in_total 7\n"));
        assert!(text.contains("fakewatch_stream_fake 1\n"));
        assert!(get(addr, "/nope").0.contains("404"));
        assert!(get(addr, "/").1.starts_with(b"<!doctype html>"));
        let st = server.view("").unwrap();
        let t = std::thread::spawn(move || {
            while !st.wants_jpeg() {
                std::thread::sleep(Duration::from_millis(10));
            }
            st.set_jpeg(vec![0xff, 0xd8, 1, 2]);
        });
        let (head, body) = get(addr, "/frame.jpg");
        t.join().unwrap();
        assert!(head.contains("image/jpeg"));
        assert_eq!(body, [0xff, 0xd8, 1, 2]);
    }

    #[test]
    fn several_streams_have_their_own_paths_labels_and_health() {
        let names = ["cam1".to_string(), "cam2".to_string()];
        let server =
            HttpServer::start_streams("127.0.0.1:0".parse().unwrap(), None, &names).unwrap();
        let addr = server.addr();
        assert!(server.view("").is_none());
        let (c1, c2) = (server.view("cam1").unwrap(), server.view("cam2").unwrap());
        c1.set_status(Status {
            frames_in: 5,
            label: "fake",
            ..Status::default()
        });
        // One stream has never processed a frame: unhealthy, and named.
        let (head, body) = get(addr, "/healthz");
        assert!(head.contains("503"), "{head}");
        assert_eq!(body, b"no frame processed recently: cam2\n");
        c2.set_status(Status {
            frames_in: 9,
            label: "real",
            ..Status::default()
        });
        assert!(get(addr, "/healthz").0.contains("200"));
        let v: serde_json::Value = serde_json::from_slice(&get(addr, "/status.json").1).unwrap();
        assert_eq!(v["streams"]["cam1"]["frames_in"], 5);
        assert_eq!(v["streams"]["cam2"]["label"], "real");
        let v: serde_json::Value =
            serde_json::from_slice(&get(addr, "/stream/cam2/status.json").1).unwrap();
        assert_eq!(v["frames_in"], 9);
        let text = String::from_utf8(get(addr, "/metrics").1).unwrap();
        assert!(
            text.contains("fakewatch_frames_in_total{stream=\"cam1\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("fakewatch_frames_in_total{stream=\"cam2\"} 9\n"));
        assert_eq!(text.matches("# TYPE fakewatch_frames_in_total").count(), 1);
        assert!(text.contains("fakewatch_stream_fake{stream=\"cam1\"} 1\n"));
        assert!(get(addr, "/").1.starts_with(b"<!doctype html>"));
        for missing in [
            "/stream/cam3.mjpg",
            "/stream/.mjpg",
            "/stream.mjpg",
            "/frame.jpg",
        ] {
            assert!(get(addr, missing).0.contains("404"), "{missing}");
        }
        let t = std::thread::spawn(move || {
            while !c2.wants_jpeg() {
                std::thread::sleep(Duration::from_millis(10));
            }
            c2.set_jpeg(vec![0xff, 0xd8, 9]);
        });
        let (head, body) = get(addr, "/stream/cam2.jpg");
        t.join().unwrap();
        assert!(head.contains("image/jpeg"));
        assert_eq!(body, [0xff, 0xd8, 9]);
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(
            parse_addr("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr(":8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert!(parse_addr("host").is_err());
        assert!(parse_addr("70000").is_err());
    }

    #[test]
    fn token_guards_everything_but_health_and_heads_are_bounded() {
        assert!(HttpServer::start("127.0.0.1:0".parse().unwrap(), Some("short".into())).is_err());
        let token = "s3cret-token";
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), Some(token.into())).unwrap();
        assert!(!server.is_open());
        let addr = server.addr();
        server.view("").unwrap().set_status(Status {
            frames_in: 3,
            ..Status::default()
        });
        for path in [
            "/",
            "/status.json",
            "/metrics",
            "/frame.jpg",
            "/stream.mjpg",
        ] {
            let (head, body) = get(addr, path);
            assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
            assert!(head.contains("WWW-Authenticate: Bearer"));
            assert_eq!(body, b"unauthorized\n");
            let wrong = raw(
                addr,
                &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer s3cret-tokem\r\n\r\n"),
            );
            assert!(wrong.0.starts_with("HTTP/1.1 401"), "{path}");
        }
        assert!(get(addr, "/healthz").0.contains("200"));
        let (head, body) = raw(
            addr,
            &format!(
                "GET /status.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["frames_in"], 3);
        let (head, body) = get(addr, &format!("/?token={token}"));
        assert!(head.starts_with("HTTP/1.1 200"));
        // The page passes its query on to the JSON and stream requests.
        assert!(String::from_utf8_lossy(&body).contains("'/status.json'+location.search"));
        // No file system behind the paths.
        assert!(get(addr, &format!("/../../etc/passwd?token={token}"))
            .0
            .contains("404"));
        assert!(
            get(addr, &format!("/%2e%2e/%2e%2e/etc/passwd?token={token}"))
                .0
                .contains("404")
        );
        // An endless request line or too many headers: refused, not buffered.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
        assert!(raw(addr, &long).0.starts_with("HTTP/1.1 431"));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100));
        assert!(raw(addr, &many).0.starts_with("HTTP/1.1 431"));
        assert!(raw(addr, "POST / HTTP/1.1\r\n\r\n").0.contains("405"));
    }
}
