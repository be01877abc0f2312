//! Bundle loading: validation and tamper detection.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use std::path::Path;

use fakewatch_sdk::bundle::Bundle;

fn copy_bundle(dst: &Path) {
    std::fs::create_dir_all(dst.join("b")).unwrap();
    for f in ["mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx"] {
        std::fs::copy(common::root().join("models").join(f), dst.join(f)).unwrap();
    }
    // The 90 MB backbone is linked, not copied.
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        common::root().join("models/facenet.onnx"),
        dst.join("facenet.onnx"),
    )
    .unwrap();
    std::fs::copy(
        common::base_bundle().join("bundle.json"),
        dst.join("b/bundle.json"),
    )
    .unwrap();
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fakewatch-bundle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn shipped_base_bundle_loads() {
    let b = Bundle::load(common::base_bundle()).unwrap();
    assert_eq!(b.manifest().backbone.dim, 512);
    assert!(b.manifest().head.is_none());
}

#[test]
fn a_changed_byte_is_refused() {
    let d = tmpdir("tamper");
    copy_bundle(&d);
    assert!(Bundle::load(d.join("b")).is_ok());
    let p = d.join("mtcnn_rnet.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();
    let err = Bundle::load(d.join("b")).unwrap_err().to_string();
    assert!(
        err.contains("sha256") && err.contains("mtcnn_rnet.onnx"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn malformed_manifests_are_refused() {
    let d = tmpdir("malformed");
    copy_bundle(&d);
    let path = d.join("b/bundle.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("format", {
            let mut v = good.clone();
            v["format"] = 2.into();
            v
        }),
        ("unknown", {
            let mut v = good.clone();
            v["detektor"] = 1.into();
            v
        }),
        ("threshold", {
            let mut v = good.clone();
            v["detector"]["thresholds"] = serde_json::json!([0.6, 0.7, 2.0]);
            v
        }),
        ("unlisted", {
            let mut v = good.clone();
            v["files"]
                .as_object_mut()
                .unwrap()
                .remove("../mtcnn_onet.onnx");
            v
        }),
        ("absolute", {
            let mut v = good.clone();
            v["files"]["/etc/passwd"] = "00".into();
            v
        }),
    ];
    for (name, v) in cases {
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        assert!(Bundle::load(d.join("b")).is_err(), "{name} accepted");
    }
    std::fs::write(&path, "{ not json").unwrap();
    assert!(Bundle::load(d.join("b")).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn signatures_are_checked_when_a_key_is_configured() {
    use fakewatch_sdk::bundle::{public_key, sign, PublicKey, SIGNATURE_FILE};
    let d = tmpdir("signed");
    copy_bundle(&d);
    let b = d.join("b");
    let secret = [7u8; 32];
    let key = public_key(&secret);
    // Unsigned: fine without a key, refused with one.
    assert!(Bundle::load(&b).is_ok());
    let err = Bundle::load_signed(&b, &key).unwrap_err().to_string();
    assert!(err.contains("not signed"), "{err}");
    // Signed: accepted with the right key, refused with another.
    assert_eq!(sign(&b, &secret).unwrap(), key);
    assert!(Bundle::load_signed(&b, &key).is_ok());
    let other = public_key(&[8u8; 32]);
    let err = Bundle::load_signed(&b, &other).unwrap_err().to_string();
    assert!(err.contains("not signed by the configured key"), "{err}");
    // Keys round-trip through hex; bad keys are config errors.
    let text = key.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<PublicKey>().unwrap(), key);
    assert!("abc".parse::<PublicKey>().is_err());
    assert!("zz".repeat(32).parse::<PublicKey>().is_err());
    // One changed byte of bundle.json (a threshold) breaks the signature
    // before anything in it is used.
    let manifest = b.join("bundle.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("0.7", "0.1", 1)).unwrap();
    assert!(
        Bundle::load(&b).is_ok(),
        "still a valid bundle without a key"
    );
    let err = Bundle::load_signed(&b, &key).unwrap_err().to_string();
    assert!(err.contains("not signed by the configured key"), "{err}");
    // A garbled signature file.
    std::fs::write(&manifest, text).unwrap();
    assert!(Bundle::load_signed(&b, &key).is_ok());
    std::fs::write(b.join(SIGNATURE_FILE), "not hex").unwrap();
    let err = Bundle::load_signed(&b, &key).unwrap_err().to_string();
    assert!(err.contains("128 hex digits"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn only_regular_files_are_hashed() {
    // A manifest that names /dev/zero (endless) or a directory is refused
    // before hashing instead of hanging the loader.
    let d = tmpdir("devzero");
    copy_bundle(&d);
    let b = d.join("b");
    let manifest = std::fs::read_to_string(b.join("bundle.json")).unwrap();
    let depth = b.components().count();
    let zero = format!("{}dev/zero", "../".repeat(depth));
    let mut v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    v["files"][&zero] = serde_json::json!("00");
    std::fs::write(b.join("bundle.json"), v.to_string()).unwrap();
    let err = Bundle::load(&b).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    v["files"].as_object_mut().unwrap().remove(&zero);
    v["files"]["../b"] = serde_json::json!("00");
    std::fs::write(b.join("bundle.json"), v.to_string()).unwrap();
    let err = Bundle::load(&b).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `models/default-temporal` as a temporary bundle whose manifest a test may
/// change: the models it references are linked, its sequence model copied.
#[cfg(unix)]
fn temporal_copy(d: &Path) -> serde_json::Value {
    let models = common::root().join("models");
    std::fs::create_dir_all(d.join("b")).unwrap();
    for f in [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "faceres.onnx",
        "efficientnet_lite0.onnx",
        "default",
    ] {
        std::os::unix::fs::symlink(models.join(f), d.join(f)).unwrap();
    }
    std::fs::copy(
        models.join("default-temporal/sequence.onnx"),
        d.join("b/sequence.onnx"),
    )
    .unwrap();
    let text = std::fs::read_to_string(models.join("default-temporal/bundle.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[cfg(unix)]
#[test]
fn sequence_sections_are_checked() {
    let shipped = Bundle::load(common::root().join("models/default-temporal")).unwrap();
    let spec = shipped
        .manifest()
        .sequence
        .clone()
        .expect("a sequence section");
    assert_eq!(spec.features, fakewatch_sdk::sequence::FEATURE_SET);
    assert_eq!(shipped.decision().fusion, Some(spec.fusion));
    assert_eq!(
        Bundle::load(common::root().join("models/default"))
            .unwrap()
            .decision()
            .fusion,
        None
    );

    let d = tmpdir("sequence");
    let good = temporal_copy(&d);
    let path = d.join("b/bundle.json");
    std::fs::write(&path, serde_json::to_string(&good).unwrap()).unwrap();
    assert!(Bundle::load(d.join("b")).is_ok());
    let cases: Vec<(&str, &str, serde_json::Value)> = vec![
        ("feature set", "feature set", {
            let mut v = good.clone();
            v["sequence"]["features"] = "track-motion-v9".into();
            v
        }),
        ("one step", "2 to 32", {
            let mut v = good.clone();
            v["sequence"]["steps"] = 1.into();
            v
        }),
        ("too many steps", "2 to 32", {
            let mut v = good.clone();
            v["sequence"]["steps"] = 64.into();
            v
        }),
        ("no classifier", "classifier", {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove("classifier");
            v
        }),
        ("unlisted file", "sha256", {
            let mut v = good.clone();
            v["files"].as_object_mut().unwrap().remove("sequence.onnx");
            v
        }),
        ("crop size on motion features", "crop_size is for", {
            let mut v = good.clone();
            v["sequence"]["crop_size"] = 64.into();
            v
        }),
        ("crop features without a size", "needs crop_size", {
            let mut v = good.clone();
            v["sequence"]["features"] = "face-crops-v1".into();
            v
        }),
        ("crops too large", "needs crop_size", {
            let mut v = good.clone();
            v["sequence"]["features"] = "face-crops-v1".into();
            v["sequence"]["crop_size"] = 512.into();
            v
        }),
        ("unknown key", "unknown field", {
            let mut v = good.clone();
            v["sequence"]["fusion"]["gain"] = 1.into();
            v
        }),
    ];
    for (name, want, v) in cases {
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        let err = Bundle::load(d.join("b")).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    // A changed byte of the sequence model is refused like any model's.
    std::fs::write(&path, serde_json::to_string(&good).unwrap()).unwrap();
    let p = d.join("b/sequence.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();
    let err = Bundle::load(d.join("b")).unwrap_err().to_string();
    assert!(err.contains("sequence.onnx"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
