//! The README's SDK example, compiled: `cargo run -p fakewatch-sdk --example
//! readme -- IMAGE...` prints the verdict of the images taken as frames of
//! one video. `sdk/tests/readme.rs` checks that the README shows exactly the
//! lines between the markers.
use fakewatch_sdk::backend::TractBackend;
use fakewatch_sdk::bundle::Bundle;
use fakewatch_sdk::{DeepfakeDetector, Frame};

fn main() -> Result<(), fakewatch_sdk::Error> {
    let frames = std::env::args()
        .skip(1)
        .map(Frame::load)
        .collect::<Result<Vec<_>, _>>()?;
    // README begin
    let bundle = Bundle::load("models/default")?; // sha256 of every file checked
    let detector = DeepfakeDetector::from_bundle(&bundle, &TractBackend)?;
    let mut session = detector.session(); // one video or stream
    for frame in &frames {
        session.process(frame)?; // faces, tracks, scores
    }
    let verdict = session.verdict(); // label, calibrated P(fake), per-track scores
    println!("{}", verdict.describe(detector.decision().is_calibrated())); // FAKE  P(fake) 0.93
                                                                           // README end
    Ok(())
}
