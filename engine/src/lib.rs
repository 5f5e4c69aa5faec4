//! The thumbnail engine: a pure function from image bytes and options to thumbnail bytes.
//!
//! Pipeline: sniff (magic bytes) → probe (header only, limits checked before any large
//! allocation) → decode → resize → orient (EXIF) → crop (gravity) → colour-manage → encode (no
//! metadata copied).
//!
//! Inputs: JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP, ICO, SVG. Outputs: JPEG, PNG,
//! WebP, AVIF, GIF (animated GIF and WebP with `animated`).
//!
//! Everything here is synchronous, CPU-bound and free of I/O; callers run it on a blocking pool.
#![forbid(unsafe_code)]

mod animation;
mod bitmap;
mod box_shrink;
pub mod cli;
mod container;
mod encode;
#[doc(hidden)]
pub mod fuzzing;
mod heif;
mod jpeg;
mod jxl;
mod options;
mod pipeline;
pub mod preview;
mod smartcrop;
mod sniff;
mod svg;
mod tiff_strips;

pub use options::{
    Fit, FormatChoice, Gravity, Limits, OptionError, OutputFormat, ThumbnailOptions, negotiate_format,
};
pub use pipeline::{Thumbnail, decode_jpeg_scaled, probe, render};
pub use preview::Preview;
pub use sniff::{ImageFormat, ProbeInfo, sniff};

/// For tests: the size of the HEIF item (the primary image or a thumbnail) a render that needs
/// `need` (width, height) decodes.
#[doc(hidden)]
pub fn heif_decoded_size(bytes: &[u8], need: (u32, u32)) -> Result<(u32, u32), EngineError> {
    heif::chosen_size(bytes, need, sniff(bytes)?)
}

/// Why an image could not be turned into a thumbnail.
///
/// Every variant except [`EngineError::Internal`] is the input's fault: retrying cannot help.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error(
        "unsupported image format: detected {detected}; accepted formats are JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP, ICO and SVG"
    )]
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
    /// A well-formed input that would be unsafe to render (an SVG bomb, external references).
    #[error("{format} image refused: {message}")]
    Refused { format: &'static str, message: String },
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
            EngineError::Refused { .. } => "RefusedImage",
            EngineError::Internal(_) => "InternalError",
        }
    }

    /// True when the input itself is bad: the job must fail at once, without retries.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, EngineError::Internal(_))
    }
}
