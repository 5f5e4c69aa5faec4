//! TIFF, BMP and ICO, read by the `image` crate's pure-Rust decoders (`tiff`: strips and tiles,
//! 8/16 bit, CMYK converted to RGB, LZW/Deflate/PackBits/JPEG; BMP with RLE and bit fields; ICO
//! with BMP or PNG entries, the largest and deepest entry chosen). Their constructors read the
//! header only (TIFF: the first IFD; ICO: the directory and the chosen entry's header), which
//! is what the probe needs.
use crate::container::Facts;
use crate::{EngineError, ImageFormat};
use image::ImageDecoder;
use std::io::Cursor;

fn corrupt(format: ImageFormat, err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: format.name(),
        message: err.to_string(),
    }
}

/// Size, transparency, bit depth and (TIFF) orientation from the header.
pub(crate) fn read_header(bytes: &[u8], format: ImageFormat) -> Result<Facts, EngineError> {
    let facts = |d: &dyn ImageDecoder, orientation: u8| {
        let (width, height) = d.dimensions();
        let colour = d.original_color_type();
        let channels = u16::from(d.color_type().channel_count()).max(1);
        Facts {
            width,
            height,
            frames: 1,
            has_alpha: d.color_type().has_alpha(),
            orientation: Some(orientation),
            bits_per_sample: u8::try_from(colour.bits_per_pixel() / channels).unwrap_or(16),
            max_frame_pixels: u64::from(width) * u64::from(height),
            ..Facts::default()
        }
    };
    let cursor = Cursor::new(bytes);
    match format {
        ImageFormat::Tiff => {
            let mut d = image::codecs::tiff::TiffDecoder::new(cursor).map_err(|e| corrupt(format, e))?;
            let orientation = d.orientation().map_or(1, |o| o.to_exif());
            Ok(Facts {
                band_bytes: crate::tiff_strips::band_bytes(bytes),
                ..facts(&d, orientation)
            })
        }
        ImageFormat::Bmp => {
            let d = image::codecs::bmp::BmpDecoder::new(cursor).map_err(|e| corrupt(format, e))?;
            Ok(facts(&d, 1))
        }
        ImageFormat::Ico => {
            let d = image::codecs::ico::IcoDecoder::new(cursor).map_err(|e| corrupt(format, e))?;
            Ok(facts(&d, 1))
        }
        other => Err(EngineError::Internal(format!("{other} is not a bitmap format"))),
    }
}

/// Bytes a decode of a `w` x `h` image allocates at most: the decoder's buffer at its own depth
/// (up to 4 channels of 16 bits, CMYK included), the 8-bit copy, and the decoder's strip or
/// tile buffers (bounded by one row of tiles; counted as a second full image for safety).
pub(crate) fn memory(w: u64, h: u64, bits: u8) -> u64 {
    let sample = if bits > 8 { 2 } else { 1 };
    w * h * (4 * sample * 2 + 4)
}
