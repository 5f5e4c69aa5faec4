//! Format detection from the bytes alone: never from a file name or a Content-Type.
use crate::{EngineError, OutputFormat};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Input formats the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Webp => "WebP",
            ImageFormat::Gif => "GIF",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
        }
    }
    /// The format a thumbnail of this input is written in when the caller does not choose:
    /// the same format where the engine writes it; GIF becomes PNG (lossless, keeps transparency).
    pub fn default_output(self) -> OutputFormat {
        match self {
            ImageFormat::Jpeg => OutputFormat::Jpeg,
            ImageFormat::Png | ImageFormat::Gif => OutputFormat::Png,
            ImageFormat::Webp => OutputFormat::Webp,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub format: ImageFormat,
    /// Stored width and height (before EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// Number of frames where the header says (animated GIF/WebP, APNG), else 1.
    pub frames: u64,
    /// EXIF orientation (1–8; 1 when absent). Outputs are always rotated upright.
    #[serde(default = "upright")]
    pub orientation: u8,
}

fn upright() -> u8 {
    1
}

impl ProbeInfo {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Width and height as displayed, after the EXIF orientation is applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Identify the format from the magic bytes. Anything else is refused with what it looks like.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, EngineError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(ImageFormat::Png);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Ok(ImageFormat::Gif);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(ImageFormat::Webp);
    }
    Err(EngineError::UnsupportedFormat {
        detected: describe_unknown(bytes),
    })
}

/// A human-readable name for bytes that are not an accepted image, e.g. `image/tiff` or
/// `application/pdf`; `text/plain` for text; `empty file`; else `unknown (first bytes …)`.
fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "empty file".to_owned();
    }
    // `infer` wants 10 bytes before it names TIFF; a TIFF header is recognisable from 4.
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        return "image/tiff".to_owned();
    }
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type().to_owned();
    }
    let head = &bytes[..bytes.len().min(512)];
    if std::str::from_utf8(head).is_ok() || head.iter().all(|b| b.is_ascii()) {
        return "text/plain".to_owned();
    }
    let hex: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("unknown (first bytes {})", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_accepted_formats_from_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").unwrap(), ImageFormat::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest").unwrap(), ImageFormat::Png);
        assert_eq!(sniff(b"GIF89a....").unwrap(), ImageFormat::Gif);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), ImageFormat::Webp);
    }

    #[test]
    fn names_what_it_refuses() {
        let pdf = sniff(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n").unwrap_err();
        assert_eq!(
            pdf,
            EngineError::UnsupportedFormat {
                detected: "application/pdf".into()
            }
        );
        let tiff = sniff(b"II*\0\x08\0\0\0").unwrap_err();
        assert_eq!(
            tiff,
            EngineError::UnsupportedFormat {
                detected: "image/tiff".into()
            }
        );
        let text = sniff(b"hello, world").unwrap_err();
        assert_eq!(
            text,
            EngineError::UnsupportedFormat {
                detected: "text/plain".into()
            }
        );
        assert!(sniff(b"").unwrap_err().to_string().contains("empty file"));
    }
}
