//! The perception path on real models: detection facts on insightface's t1.jpg
//! and embedding invariances.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use fakewatch_sdk::backend::ShapePolicy;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::mtcnn::MtcnnConfig;
use fakewatch_sdk::{Frame, Perception};

fn t1() -> Frame {
    Frame::load(common::root().join("tests/fixtures/t1.jpg")).unwrap()
}

fn perception(case: &common::BackendCase, policy: ShapePolicy) -> Perception {
    let bundle = Bundle::load(common::base_bundle()).unwrap();
    Perception::from_bundle_with(&bundle, case.backend.as_ref(), policy).unwrap()
}

#[test]
fn t1_has_six_faces() {
    for case in common::backends() {
        let p = perception(&case, ShapePolicy::PerShape { capacity: 32 });
        let dets = p.detect(&t1()).unwrap();
        assert_eq!(dets.len(), 6, "{dets:#?}");
        for d in &dets {
            assert!(d.score >= 0.98, "score {}", d.score);
            let (w, h) = (d.bbox.width(), d.bbox.height());
            assert!(
                (80.0..160.0).contains(&w) && (100.0..170.0).contains(&h),
                "box {:?}",
                d.bbox
            );
            // Landmarks lie inside the box, eyes above the mouth.
            for lm in d.landmarks.0 {
                assert!(
                    lm.x > d.bbox.x1 && lm.x < d.bbox.x2 && lm.y > d.bbox.y1 && lm.y < d.bbox.y2
                );
            }
            assert!(
                d.landmarks.0[0].y < d.landmarks.0[3].y && d.landmarks.0[1].y < d.landmarks.0[4].y
            );
        }
    }
}

#[test]
fn small_scale_search_rejects_the_hand_at_onet() {
    for case in common::backends() {
        let mut p = perception(&case, ShapePolicy::PerShape { capacity: 32 });
        let base = MtcnnConfig {
            min_face: 20.0,
            ..Default::default()
        };
        p.set_detector_config(base).unwrap();
        let frame = t1();
        let strict = p.detect(&frame).unwrap();
        assert_eq!(
            strict.len(),
            6,
            "default ONet threshold 0.9 keeps only faces: {strict:#?}"
        );
        assert!(strict.iter().all(|d| d.score >= 0.97));
        p.set_detector_config(MtcnnConfig {
            thresholds: [0.6, 0.7, 0.5],
            ..base
        })
        .unwrap();
        let loose = p.detect(&frame).unwrap();
        let extra: Vec<_> = loose.iter().filter(|d| d.score < 0.9).collect();
        assert!(
            !extra.is_empty(),
            "with ONet at 0.5 the hand/chip regions appear"
        );
        // The hand holding a poker chip, below the face of the man in red.
        assert!(
            extra.iter().any(|d| d.bbox.center().x > 650.0
                && d.bbox.center().x < 780.0
                && d.bbox.center().y > 500.0),
            "{extra:#?}"
        );
    }
}

#[test]
fn pnet_plan_policies_agree() {
    for case in common::backends() {
        let frame = t1();
        let a = perception(&case, ShapePolicy::PerShape { capacity: 32 })
            .detect(&frame)
            .unwrap();
        let b = perception(&case, ShapePolicy::Symbolic)
            .detect(&frame)
            .unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x.score - y.score).abs() < 1e-4);
            for (u, v) in x.bbox.to_array().iter().zip(y.bbox.to_array()) {
                assert!((u - v).abs() < 0.5, "{:?} vs {:?}", x.bbox, y.bbox);
            }
        }
    }
}

fn box_blur(f: &Frame, r: i64) -> Frame {
    let (w, h) = (f.width() as i64, f.height() as i64);
    let mut out = f.clone();
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0u32; 3];
            let mut n = 0;
            for dy in -r..=r {
                for dx in -r..=r {
                    if let Some(p) = f.pixel(
                        (x + dx).clamp(0, w - 1) as u32,
                        (y + dy).clamp(0, h - 1) as u32,
                    ) {
                        acc.iter_mut().zip(p).for_each(|(a, v)| *a += u32::from(v));
                        n += 1;
                    }
                }
            }
            out.set_pixel(x as u32, y as u32, acc.map(|a| (a / n) as u8));
        }
    }
    out
}

#[test]
fn embeddings_are_stable_and_discriminative() {
    for case in common::backends() {
        let p = perception(&case, ShapePolicy::PerShape { capacity: 32 });
        let frame = t1();
        let faces = p.analyze(&frame).unwrap();
        assert_eq!(faces.len(), 6);
        for f in &faces {
            assert!((f.embedding.norm() - 1.0).abs() < 1e-3);
        }
        // Different people: low similarity.
        for i in 0..faces.len() {
            for j in i + 1..faces.len() {
                let c = faces[i].embedding.cosine(&faces[j].embedding);
                assert!(c <= 0.55, "faces {i} and {j}: cosine {c}");
            }
        }
        // The same face, perturbed: high similarity. Each perturbed frame is
        // re-detected so the whole path is exercised.
        let variants = [
            ("flip", frame.flip_horizontal()),
            ("blur", box_blur(&frame, 1)),
            ("jpeg q30", frame.jpeg_roundtrip(30).unwrap()),
        ];
        for (name, v) in variants {
            let got = p.analyze(&v).unwrap();
            assert_eq!(got.len(), 6, "{name}");
            for f in &faces {
                let best = got
                    .iter()
                    .map(|g| g.embedding.cosine(&f.embedding))
                    .fold(f32::MIN, f32::max);
                assert!(best >= 0.8, "{name}: best cosine {best}");
            }
        }
    }
}

#[test]
fn threads_change_nothing_but_speed() {
    for case in common::backends() {
        let frame = t1();
        let mut one = perception(&case, ShapePolicy::PerShape { capacity: 32 });
        one.set_threads(1);
        let mut two = perception(&case, ShapePolicy::PerShape { capacity: 32 });
        two.set_threads(2);
        assert_eq!(two.threads(), 2);
        let (a, ta) = one.analyze_timed(&frame).unwrap();
        let (b, tb) = two.analyze_timed(&frame).unwrap();
        assert_eq!((ta.detect.threads, tb.detect.threads), (1, 2));
        assert_eq!(ta.detect.candidates, tb.detect.candidates);
        assert_eq!(a.len(), 6);
        // The same items run through the same plans: identical, in order.
        assert_eq!(a, b);
    }
}

/// Every backend finds what tract finds on t1.jpg: the same faces in the
/// same order, boxes and landmarks within the case's pixel tolerance, scores
/// within its probability tolerance, embeddings within its value tolerance.
#[test]
fn backends_agree_with_tract() {
    let cases = common::backends();
    let frame = t1();
    let policy = ShapePolicy::PerShape { capacity: 32 };
    let reference = perception(&cases[0], policy).analyze(&frame).unwrap();
    assert_eq!(reference.len(), 6);
    for case in &cases[1..] {
        let name = case.backend.name();
        let got = perception(case, policy).analyze(&frame).unwrap();
        assert_eq!(got.len(), reference.len(), "{name}");
        let (mut dbox, mut dscore, mut demb) = (0f32, 0f32, 0f32);
        for (a, b) in reference.iter().zip(&got) {
            let (a_det, b_det) = (&a.detection, &b.detection);
            for (u, v) in a_det.bbox.to_array().iter().zip(b_det.bbox.to_array()) {
                dbox = dbox.max((u - v).abs());
            }
            for (p, q) in a_det.landmarks.0.iter().zip(&b_det.landmarks.0) {
                dbox = dbox.max((p.x - q.x).abs()).max((p.y - q.y).abs());
            }
            dscore = dscore.max((a_det.score - b_det.score).abs());
            for (u, v) in a.embedding.0.iter().zip(&b.embedding.0) {
                demb = demb.max((u - v).abs());
            }
        }
        eprintln!(
            "{name} vs tract on t1.jpg: box/landmark {dbox} px, score {dscore}, embedding {demb}"
        );
        assert!(dbox <= case.box_tol, "{name}: boxes differ by {dbox} px");
        assert!(
            dscore <= case.score_tol,
            "{name}: scores differ by {dscore}"
        );
        assert!(
            demb <= case.value_tol,
            "{name}: embeddings differ by {demb}"
        );
    }
}
