//! Typed errors of the SDK.

use std::path::PathBuf;

/// Everything that can go wrong in the SDK. No SDK function panics on bad
/// input: each failure is one of these variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame's dimensions, stride or buffer length do not fit its pixel format.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    ImageDecode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A model could not be loaded or run.
    #[error("model {model}: {reason}")]
    Model {
        /// Which model (file name or role).
        model: String,
        /// What the backend said.
        reason: String,
    },
    /// A bundle is malformed, incomplete or has been tampered with.
    #[error("bundle {path}: {reason}")]
    Bundle {
        /// The bundle's directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An inference runtime could not be loaded, or an execution provider
    /// could not be used where that was required.
    #[error("backend {backend}: {reason}")]
    Backend {
        /// Which backend (`ort`, `ort-cuda`, ...).
        backend: String,
        /// What went wrong.
        reason: String,
    },
    /// Video decoding failed or is not available.
    #[error("video {uri}: {reason}")]
    Video {
        /// The file or URI.
        uri: String,
        /// What went wrong.
        reason: String,
    },
    /// One stream of a [`crate::multi::MultiSession`] failed or is unknown;
    /// the other streams are unaffected.
    #[error("stream {stream}: {reason}")]
    Stream {
        /// The stream's name or id.
        stream: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result alias of the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn model(model: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Model {
            model: model.into(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn frame(reason: impl Into<String>) -> Self {
        Error::InvalidFrame(reason.into())
    }
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig(reason.into())
    }
}
