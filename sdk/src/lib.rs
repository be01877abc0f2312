//! # fakewatch SDK
//!
//! Deepfake-video detection after *Detecting Deepfakes with Metric Learning*
//! (Kumar & Bhavsar, 2020):
//!
//! ```text
//! Frame (RGB8) → Mtcnn (boxes + 5 landmarks) → Aligner (224×224 or 160×160 crop)
//!   → Embedder (faceres 1024-d or FaceNet 512-d, L2-normalised; plus, when the
//!     bundle names them, intermediate activations pooled into multi-level
//!     features in the same pass: see [`pooling`])
//!   → head (optional) → classifier → verdict (aggregation, calibrated
//!     P(fake), label: [`verdict`])
//! ```
//!
//! The SDK is a library: typed [`Error`]s, no global state, no printing, no
//! panics on bad input. Models run on an [`backend::Backend`]; the default is
//! pure-Rust tract. Models and their parameters come from a [`bundle::Bundle`].

pub mod align;
pub mod avi;
pub mod backend;
pub mod bundle;
pub mod detector;
pub mod draw;
pub mod embed;
pub mod error;
pub mod frame;
pub mod geometry;
pub mod mtcnn;
pub mod multi;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod parallel;
pub mod perception;
pub mod plot;
pub mod pooling;
pub mod resample;
pub mod runtime;
pub mod sampling;
pub mod score;
pub mod sequence;
pub mod track;
pub mod verdict;
#[cfg(feature = "gst")]
pub mod video;

pub use detector::{DeepfakeDetector, ScoredFace, Session};
pub use error::{Error, Result};
pub use frame::{Frame, FrameRef, PixelFormat};
pub use geometry::{BBox, Detection, Landmarks, Point};
pub use multi::{MultiSession, StreamId};
pub use perception::{Face, Perception};
pub use verdict::{Decision, Label, Verdict};
