//! The pipeline behind [`render`]: probe → decode → orient → resize → encode.
use crate::{EngineError, Fit, ImageFormat, Limits, OutputFormat, ProbeInfo, ThumbnailOptions, sniff};
use image::{DynamicImage, ImageDecoder, ImageReader, imageops::FilterType};
use std::io::Cursor;

/// A finished thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
}

fn image_format(format: ImageFormat) -> image::ImageFormat {
    match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Gif => image::ImageFormat::Gif,
    }
}

fn corrupt(format: ImageFormat, err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: format.name(),
        message: err.to_string(),
    }
}

/// Read the header only and check every limit that can be checked before decoding.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<ProbeInfo, EngineError> {
    let size = bytes.len() as u64;
    if size > limits.max_input_bytes {
        return Err(EngineError::FileTooLarge {
            size,
            max: limits.max_input_bytes,
        });
    }
    let format = sniff(bytes)?;
    let reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
    let (width, height) = reader.into_dimensions().map_err(|e| corrupt(format, e))?;
    let info = ProbeInfo {
        format,
        width,
        height,
        frames: 1,
    };
    if width == 0 || height == 0 {
        return Err(corrupt(format, "the header gives a zero width or height"));
    }
    if info.pixels() > limits.max_pixels {
        return Err(EngineError::TooManyPixels {
            width,
            height,
            pixels: info.pixels(),
            max: limits.max_pixels,
        });
    }
    Ok(info)
}

/// Turn image bytes into a thumbnail. The one entry point every caller uses.
pub fn render(bytes: &[u8], options: &ThumbnailOptions, limits: &Limits) -> Result<Thumbnail, EngineError> {
    options
        .validate()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    let info = probe(bytes, limits)?;
    // Four bytes per pixel at 8 bits, eight at 16: refuse before the decoder allocates.
    let needed = info.pixels() * 8;
    if needed > limits.max_memory_bytes {
        return Err(EngineError::MemoryLimit {
            needed,
            max: limits.max_memory_bytes,
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(info.format));
    let mut decode_limits = image::Limits::default();
    decode_limits.max_alloc = Some(limits.max_memory_bytes);
    reader.limits(decode_limits);
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(info.format, e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(info.format, e))?;
    img.apply_orientation(orientation);

    let (w, h) = (img.width(), img.height());
    let resized = match options.fit {
        Fit::Cover => {
            let (tw, th) = cover_box(w, h, options.width, options.height, options.upscale);
            img.resize_to_fill(tw, th, FilterType::Lanczos3)
        }
        Fit::Contain => {
            let (tw, th) = contain_size(w, h, options.width, options.height, options.upscale);
            img.resize_exact(tw, th, FilterType::Lanczos3)
        }
        Fit::Fill => {
            let (tw, th) = if options.upscale {
                (options.width, options.height)
            } else {
                (options.width.min(w), options.height.min(h))
            };
            img.resize_exact(tw, th, FilterType::Lanczos3)
        }
    };
    let format = options.format.unwrap_or_else(|| info.format.default_output());
    encode(resized, format, options.quality)
}

/// The output box for `cover`: the requested box, shrunk (keeping its aspect ratio) when the
/// source is too small to fill it and upscaling is off. Never smaller than 1x1.
fn cover_box(w: u32, h: u32, bw: u32, bh: u32, upscale: bool) -> (u32, u32) {
    let scale = f64::max(f64::from(bw) / f64::from(w), f64::from(bh) / f64::from(h));
    if scale <= 1.0 || upscale {
        return (bw, bh);
    }
    let tw = ((f64::from(bw) / scale).round() as u32).clamp(1, w);
    let th = ((f64::from(bh) / scale).round() as u32).clamp(1, h);
    (tw, th)
}

/// The output size for `contain`: the largest size with the source's aspect ratio inside the box.
fn contain_size(w: u32, h: u32, bw: u32, bh: u32, upscale: bool) -> (u32, u32) {
    let mut scale = f64::min(f64::from(bw) / f64::from(w), f64::from(bh) / f64::from(h));
    if scale > 1.0 && !upscale {
        scale = 1.0;
    }
    let tw = ((f64::from(w) * scale).round() as u32).max(1);
    let th = ((f64::from(h) * scale).round() as u32).max(1);
    (tw, th)
}

fn encode(img: DynamicImage, format: OutputFormat, quality: u8) -> Result<Thumbnail, EngineError> {
    let internal = |e: image::ImageError| EngineError::Internal(e.to_string());
    let (width, height) = (img.width(), img.height());
    let mut out = Vec::new();
    match format {
        OutputFormat::Jpeg => {
            let img = flatten_for_jpeg(img);
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            img.write_with_encoder(encoder).map_err(internal)?;
        }
        OutputFormat::Png => {
            let img = to_8bit(img);
            img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
                .map_err(internal)?;
        }
        OutputFormat::Webp => {
            let img = if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            img.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
                .map_err(internal)?;
        }
    }
    Ok(Thumbnail {
        bytes: out,
        format,
        width,
        height,
    })
}

fn to_8bit(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(img.to_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// JPEG has no alpha: composite onto white (not black, as some tools do).
fn flatten_for_jpeg(img: DynamicImage) -> DynamicImage {
    let img = to_8bit(img);
    match img {
        DynamicImage::ImageLumaA8(la) => {
            let mut out = image::GrayImage::new(la.width(), la.height());
            for (dst, src) in out.pixels_mut().zip(la.pixels()) {
                let a = u32::from(src[1]);
                dst[0] = ((u32::from(src[0]) * a + 255 * (255 - a) + 127) / 255) as u8;
            }
            DynamicImage::ImageLuma8(out)
        }
        DynamicImage::ImageRgba8(rgba) => {
            let mut out = image::RgbImage::new(rgba.width(), rgba.height());
            for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
                let a = u32::from(src[3]);
                for c in 0..3 {
                    dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
                }
            }
            DynamicImage::ImageRgb8(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
            .unwrap();
        out
    }

    #[test]
    fn default_is_100x100_cover_in_input_format() {
        let thumb = render(&png(640, 480), &ThumbnailOptions::default(), &Limits::default()).unwrap();
        assert_eq!(
            (thumb.width, thumb.height, thumb.format),
            (100, 100, OutputFormat::Png)
        );
        let decoded = image::load_from_memory(&thumb.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (100, 100));
    }

    #[test]
    fn contain_keeps_aspect_ratio() {
        let options = ThumbnailOptions {
            width: 400,
            height: 400,
            fit: Fit::Contain,
            ..Default::default()
        };
        let thumb = render(&png(800, 200), &options, &Limits::default()).unwrap();
        assert_eq!((thumb.width, thumb.height), (400, 100));
    }

    #[test]
    fn small_inputs_are_not_upscaled_and_never_empty() {
        let thumb = render(&png(16, 16), &ThumbnailOptions::default(), &Limits::default()).unwrap();
        assert_eq!((thumb.width, thumb.height), (16, 16));
        assert_eq!(cover_box(50, 200, 100, 100, false), (50, 50));
        assert_eq!(cover_box(1, 1, 100, 100, false), (1, 1));
        assert_eq!(contain_size(12000, 600, 100, 100, false), (100, 5));
        assert_eq!(contain_size(100_000, 1, 100, 100, false), (100, 1));
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let limits = Limits {
            max_pixels: 1000,
            ..Limits::default()
        };
        let err = render(&png(100, 100), &ThumbnailOptions::default(), &limits).unwrap_err();
        assert_eq!(err.reason(), "TooManyPixels");
    }

    #[test]
    fn truncated_input_is_a_typed_error() {
        let bytes = png(300, 300);
        let err = render(
            &bytes[..bytes.len() / 2],
            &ThumbnailOptions::default(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "CorruptImage", "{err}");
    }
}
