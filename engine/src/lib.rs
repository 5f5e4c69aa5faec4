//! The thumbnail engine: a pure function from image bytes and options to thumbnail bytes.
//!
//! Pipeline: sniff (magic bytes) → probe (header only, limits checked before any large
//! allocation) → decode → orient (EXIF) → resize → encode (no metadata copied).
//!
//! Everything here is synchronous, CPU-bound and free of I/O; callers run it on a blocking pool.
#![forbid(unsafe_code)]

pub mod cli;
mod container;
#[doc(hidden)]
pub mod fuzzing;
mod jpeg;
mod options;
mod pipeline;
mod sniff;

pub use options::{Fit, Limits, OptionError, OutputFormat, ThumbnailOptions};
pub use pipeline::{Thumbnail, decode_jpeg_scaled, probe, render};
pub use sniff::{ImageFormat, ProbeInfo, sniff};

/// Why an image could not be turned into a thumbnail.
///
/// Every variant except [`EngineError::Internal`] is the input's fault: retrying cannot help.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error("unsupported image format: detected {detected}; accepted formats are JPEG, PNG, WebP and GIF")]
    UnsupportedFormat { detected: String },
    #[error("file too large: {size} bytes, the limit is {max} bytes")]
    FileTooLarge { size: u64, max: u64 },
    #[error("image too large: {width}x{height} is {pixels} pixels, the limit is {max} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    #[error("too many frames: {frames}, the limit is {max}")]
    TooManyFrames { frames: u64, max: u64 },
    #[error("decoding would need {needed} bytes of memory, the limit is {max} bytes")]
    MemoryLimit { needed: u64, max: u64 },
    #[error("corrupt or truncated {format} image: {message}")]
    Corrupt { format: &'static str, message: String },
    #[error("internal error while encoding the thumbnail: {0}")]
    Internal(String),
}

impl EngineError {
    /// A stable, machine-readable reason (CamelCase, as Kubernetes condition reasons are).
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::UnsupportedFormat { .. } => "UnsupportedFormat",
            EngineError::FileTooLarge { .. } => "FileTooLarge",
            EngineError::TooManyPixels { .. } => "TooManyPixels",
            EngineError::TooManyFrames { .. } => "TooManyFrames",
            EngineError::MemoryLimit { .. } => "MemoryLimit",
            EngineError::Corrupt { .. } => "CorruptImage",
            EngineError::Internal(_) => "InternalError",
        }
    }

    /// True when the input itself is bad: the job must fail at once, without retries.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, EngineError::Internal(_))
    }
}
