//! Several streams through one detector: each stream's results are those of
//! its own single session, the round robin serves the stream that waited
//! longest, the stream cap holds, and one stream's failure stays its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use std::sync::Arc;
use std::time::Instant;

use fakewatch_sdk::backend::TractBackend;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::multi::StreamStats;
use fakewatch_sdk::{DeepfakeDetector, Error, Frame, Label, MultiSession, StreamId};

fn detector() -> Arc<DeepfakeDetector> {
    let bundle = Bundle::load(common::root().join("models/default")).unwrap();
    DeepfakeDetector::from_bundle(&bundle, &TractBackend).unwrap()
}

fn t1() -> Frame {
    Frame::load(common::root().join("tests/fixtures/t1.jpg")).unwrap()
}

fn blank() -> Frame {
    Frame::filled(64, 48, [90, 90, 90]).unwrap()
}

#[test]
fn each_stream_gets_what_its_own_session_would() {
    let det = detector();
    let multi = MultiSession::for_files(Arc::clone(&det), 3).unwrap();
    let faces = multi.add_stream("faces").unwrap();
    let empty = multi.add_stream("empty").unwrap();
    let mut alone = det.session();
    let frame = t1();
    for _ in 0..2 {
        let want = alone.step(&frame).unwrap();
        let got = multi.process(faces, &frame).unwrap();
        assert_eq!(got.faces.len(), 6);
        for (g, w) in got.faces.iter().zip(&want.faces) {
            assert_eq!(g.track, w.track);
            assert_eq!(g.p_fake, w.p_fake);
            assert_eq!(g.face.detection.bbox, w.face.detection.bbox);
        }
        // The other stream in between: it must not touch the first's tracks.
        assert!(multi.process(empty, &blank()).unwrap().faces.is_empty());
    }
    let v = multi.with_session(faces, |s| s.verdict()).unwrap();
    assert_eq!(v, alone.verdict());
    assert_eq!(v.tracks.len(), 6);
    let e = multi.with_session(empty, |s| s.verdict()).unwrap();
    assert_eq!(e.label, Label::Unknown);
    assert!(e.tracks.is_empty());
    let stats = multi.stats(faces).unwrap();
    assert_eq!(stats.analyzed, 2);
    assert_eq!(stats.errors, 0);
}

#[test]
fn the_stream_that_waited_longest_is_served_first() {
    let multi = MultiSession::new(detector(), 4).unwrap();
    let ids: Vec<StreamId> = ["a", "b", "c"]
        .iter()
        .map(|n| multi.add_stream(n).unwrap())
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert!(multi.analyze_next().is_none(), "nothing offered yet");
    // A busy stream offers three frames: the newest is kept, two superseded.
    for k in 0..3 {
        let replaced = multi.offer(a, blank(), k, Instant::now()).unwrap();
        assert_eq!(replaced.is_some(), k > 0, "the older frame comes back");
    }
    multi.offer(b, blank(), 0, Instant::now()).unwrap();
    multi.offer(c, blank(), 0, Instant::now()).unwrap();
    let first = multi.analyze_next().unwrap();
    assert_eq!((first.stream, first.seq), (a, 2), "the newest frame of a");
    first.result.unwrap();
    let order = |n: usize| -> Vec<StreamId> {
        (0..n)
            .map(|_| multi.analyze_next().unwrap())
            .map(|r| {
                r.result.unwrap();
                r.stream
            })
            .collect()
    };
    assert_eq!(order(2), [b, c], "never served: id order");
    assert!(multi.analyze_next().is_none(), "one pending frame each");
    // c and a offer again: a was served before c, so a goes first even
    // though c offered first.
    multi.offer(c, blank(), 0, Instant::now()).unwrap();
    multi.offer(a, blank(), 0, Instant::now()).unwrap();
    assert_eq!(order(2), [a, c]);
    // a floods, b offers once: b (served longest ago) is next, then a.
    for _ in 0..5 {
        multi.offer(a, blank(), 0, Instant::now()).unwrap();
    }
    multi.offer(b, blank(), 0, Instant::now()).unwrap();
    assert_eq!(order(2), [b, a]);
    assert_eq!(
        multi.stats(a).unwrap(),
        StreamStats {
            offered: 9,
            analyzed: 3,
            superseded: 6,
            ..StreamStats::default()
        }
    );
}

#[test]
fn the_stream_cap_names_are_checked() {
    let multi = MultiSession::new(detector(), 2).unwrap();
    let a = multi.add_stream("cam1").unwrap();
    multi.add_stream("cam2").unwrap();
    let e = multi.add_stream("cam3").unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)));
    assert!(e.to_string().contains("max_streams 2"), "{e}");
    assert!(multi.add_stream("").is_err(), "empty name");
    multi.remove_stream(a).unwrap();
    assert!(multi.add_stream("cam2").is_err(), "duplicate name");
    let c = multi.add_stream("cam3").unwrap();
    assert_ne!(c, a, "ids are not reused");
    assert_eq!(multi.find("cam3"), Some(c));
    assert_eq!(
        multi
            .streams()
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
        ["cam2", "cam3"]
    );
    // The removed stream is an error of its own, not a panic.
    for r in [
        multi.process(a, &blank()).map(|_| ()),
        multi.offer(a, blank(), 0, Instant::now()).map(|_| ()),
        multi.stats(a).map(|_| ()),
        multi.remove_stream(a),
    ] {
        assert!(matches!(r, Err(Error::Stream { .. })), "{r:?}");
    }
    assert!(MultiSession::new(detector(), 0).is_err());
}

#[test]
fn workers_and_capture_threads_share_it_without_losing_frames() {
    let multi = Arc::new(MultiSession::new(detector(), 3).unwrap());
    let ids: Vec<StreamId> = (0..3)
        .map(|i| multi.add_stream(&format!("s{i}")).unwrap())
        .collect();
    let per_stream = 20;
    std::thread::scope(|scope| {
        for &id in &ids {
            let m = Arc::clone(&multi);
            scope.spawn(move || {
                for k in 0..per_stream {
                    m.offer(id, blank(), k, Instant::now()).unwrap();
                    std::thread::yield_now();
                }
            });
        }
        for _ in 0..2 {
            let m = Arc::clone(&multi);
            scope.spawn(move || {
                for _ in 0..200 {
                    match m.analyze_next() {
                        Some(r) => {
                            assert!(r.seq < per_stream);
                            r.result.unwrap();
                        }
                        None => std::thread::yield_now(),
                    }
                }
            });
        }
    });
    // Drain what is left.
    while let Some(r) = multi.analyze_next() {
        r.result.unwrap();
    }
    for id in ids {
        let s = multi.stats(id).unwrap();
        assert_eq!(s.offered, per_stream);
        assert_eq!(s.analyzed + s.superseded, s.offered, "{s:?}");
        assert!(s.analyzed >= 1);
        assert_eq!(s.errors, 0);
    }
}

/// Every track of a session keeps its sequence of steps; the sequence ends
/// with the track.
#[test]
fn tracks_keep_their_sequences_while_on_screen() {
    let det = detector();
    let mut s = det.live_session();
    let frame = t1();
    let mut scores = std::collections::BTreeMap::new();
    for _ in 0..3 {
        for f in s.step(&frame).unwrap().faces {
            scores
                .entry(f.track.unwrap())
                .or_insert_with(Vec::new)
                .push(f.p_fake);
        }
    }
    assert_eq!(scores.len(), 6);
    for (id, ps) in &scores {
        let seq = s.sequence(*id).unwrap();
        assert_eq!(seq.len(), 3);
        let frames: Vec<u64> = seq.steps().map(|st| st.frame).collect();
        assert_eq!(frames, [0, 1, 2]);
        for (st, p) in seq.steps().zip(ps) {
            assert!((st.features[0] - fakewatch_sdk::sequence::logit(*p)).abs() < 1e-5);
        }
        // The same still frame: no motion, no change of appearance.
        for st in seq.steps().skip(1) {
            assert!(st.features[1..].iter().all(|v| v.abs() < 1e-4), "{st:?}");
        }
        assert_eq!(
            seq.window(3).unwrap().len(),
            3 * fakewatch_sdk::sequence::FEATURES
        );
    }
    // Frames without faces end the tracks, and their sequences with them.
    for _ in 0..40 {
        s.step(&blank()).unwrap();
    }
    assert!(scores.keys().all(|id| s.sequence(*id).is_none()));
}
