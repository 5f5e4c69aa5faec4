//! What the caller asks for (size, fit, format, quality) and what the engine may spend (limits).
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How the image is fitted into the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Scale to fill the box and centre-crop the overflow (the original service's behaviour).
    #[default]
    Cover,
    /// Scale to fit inside the box, keeping the aspect ratio; output may be smaller on one side.
    Contain,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Fill => "fill",
        }
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cover" => Ok(Fit::Cover),
            "contain" => Ok(Fit::Contain),
            "fill" => Ok(Fit::Fill),
            other => Err(format!("'{other}' is not one of cover, contain, fill")),
        }
    }
}

/// Formats the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "png" => Ok(OutputFormat::Png),
            "webp" => Ok(OutputFormat::Webp),
            other => Err(format!("'{other}' is not one of jpeg, png, webp")),
        }
    }
}

/// The largest side a thumbnail may have.
pub const MAX_DIMENSION: u32 = 4096;

/// What the caller wants. `Default` is the original service's thumbnail: 100x100 cover, q80,
/// in the input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThumbnailOptions {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    /// `None`: the input's format where it can be written (GIF becomes PNG).
    pub format: Option<OutputFormat>,
    pub quality: u8,
    /// Allow the output to be larger than the input. Off by default: a 16x16 icon stays 16x16.
    #[serde(default)]
    pub upscale: bool,
}

impl Default for ThumbnailOptions {
    fn default() -> Self {
        ThumbnailOptions {
            width: 100,
            height: 100,
            fit: Fit::Cover,
            format: None,
            quality: 80,
            upscale: false,
        }
    }
}

/// A request option that is out of range; `field` names it for the API's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionError {
    pub field: &'static str,
    pub message: String,
}

impl ThumbnailOptions {
    pub fn validate(&self) -> Result<(), OptionError> {
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value > MAX_DIMENSION {
                return Err(OptionError {
                    field,
                    message: format!("must be between 1 and {MAX_DIMENSION}, got {value}"),
                });
            }
        }
        if !(1..=100).contains(&self.quality) {
            return Err(OptionError {
                field: "quality",
                message: format!("must be between 1 and 100, got {}", self.quality),
            });
        }
        Ok(())
    }
}

/// What one job may spend. Checked from the header, before decoding allocates anything large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_input_bytes: u64,
    pub max_pixels: u64,
    pub max_frames: u64,
    /// Upper bound on the memory one decode may allocate for pixel buffers.
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 25 * 1024 * 1024,
            max_pixels: 100_000_000,
            max_frames: 1000,
            max_memory_bytes: 1024 * 1024 * 1024,
        }
    }
}
