//! Placeholders of a thumbnail: a ThumbHash and a BlurHash, tiny strings a client turns into a
//! blurred preview to show while the real thumbnail loads.
//!
//! Computed from the engine's preview of the thumbnail it made (`engine::Preview`: the encoded
//! pixels box-filtered to at most 32 pixels a side, which is all either hash looks at: ThumbHash
//! keeps at most 7x7 terms, BlurHash [`BLURHASH_COMPONENTS`]), so nothing is decoded again and
//! every output format (AVIF too) gets them. Cost: `cargo run --release -p thumbnail-core
//! --example placeholder_cost` (README, "Benchmarks").
use crate::engine::Preview;
use crate::engine::preview::preview_size;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// BlurHash components along the longer and the shorter side (4x3 is the reference default).
pub const BLURHASH_COMPONENTS: (u32, u32) = (4, 3);

/// Both placeholders of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholders {
    /// ThumbHash bytes, standard base64 (with padding), as the reference implementation prints.
    pub thumbhash: String,
    /// BlurHash string (base 83).
    pub blurhash: String,
}

/// Why no placeholder could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    #[error("blurhash: {0}")]
    BlurHash(String),
}

/// Placeholders of a thumbnail, from the engine's preview of it.
pub fn of_preview(preview: &Preview) -> Result<Placeholders, PlaceholderError> {
    of_rgba(preview.width, preview.height, &preview.rgba)
}

/// Placeholders of 8-bit RGBA pixels (not premultiplied), `width * height * 4` bytes.
pub fn of_rgba(width: u32, height: u32, rgba: &[u8]) -> Result<Placeholders, PlaceholderError> {
    let image = image::RgbaImage::from_raw(width, height, rgba.to_vec()).ok_or_else(|| {
        PlaceholderError::BlurHash(format!("{} bytes are not {width}x{height} RGBA", rgba.len()))
    })?;
    let (w, h) = preview_size(width, height);
    // `thumbnail` averages every source pixel (a box filter), unlike point sampling.
    let sample = if (w, h) == (width, height) {
        image
    } else {
        image::imageops::thumbnail(&image, w, h)
    };
    let thumbhash = thumbhash::rgba_to_thumb_hash(w as usize, h as usize, sample.as_raw());
    let (long, short) = BLURHASH_COMPONENTS;
    let (cx, cy) = if w >= h { (long, short) } else { (short, long) };
    let blurhash = blurhash::encode(cx, cy, w, h, sample.as_raw())
        .map_err(|e| PlaceholderError::BlurHash(e.to_string()))?;
    Ok(Placeholders {
        thumbhash: base64::engine::general_purpose::STANDARD.encode(thumbhash),
        blurhash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> Vec<u8> {
        let mut rgba = Vec::with_capacity((width * height * 4) as usize);
        for y in 0..height {
            for x in 0..width {
                rgba.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128, 255]);
            }
        }
        rgba
    }

    #[test]
    fn thumbhash_decodes_back_to_the_average_colour_and_aspect() {
        let (w, h) = (200, 100);
        let p = of_rgba(w, h, &gradient(w, h)).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&p.thumbhash)
            .unwrap();
        let (r, g, b, a) = thumbhash::thumb_hash_to_average_rgba(&bytes).unwrap();
        // The gradient averages to about (0.5, 0.5, 0.5) and is opaque.
        assert!(
            (r - 0.5).abs() < 0.08 && (g - 0.5).abs() < 0.08 && (b - 0.5).abs() < 0.08,
            "{r} {g} {b}"
        );
        assert!((a - 1.0).abs() < 0.01);
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&bytes).unwrap();
        assert!((ratio - 2.0).abs() < 0.3, "aspect {ratio}");
    }

    #[test]
    fn blurhash_has_the_components_of_the_orientation() {
        // The first character encodes (components_x - 1) + (components_y - 1) * 9.
        let wide = of_rgba(64, 32, &gradient(64, 32)).unwrap();
        assert_eq!(wide.blurhash.len(), 4 + 2 * 4 * 3);
        assert_eq!(wide.blurhash.as_bytes()[0], b'L'); // 3 + 2 * 9 = 21
        let tall = of_rgba(32, 64, &gradient(32, 64)).unwrap();
        assert_eq!(tall.blurhash.as_bytes()[0], b'T'); // 2 + 3 * 9 = 29
        // A decoded BlurHash of the gradient is dark on the left and bright on the right in red.
        let pixels = blurhash::decode(&wide.blurhash, 8, 4, 1.0).unwrap();
        let red = |x: usize, y: usize| pixels[(y * 8 + x) * 4];
        assert!(red(0, 2) + 60 < red(7, 2), "{} {}", red(0, 2), red(7, 2));
    }

    #[test]
    fn a_solid_colour_has_no_detail() {
        // A uniform image: every AC term is zero, so only the DC (the colour) carries information.
        let rgba: Vec<u8> = std::iter::repeat_n([255u8, 0, 0, 255], 32 * 32)
            .flatten()
            .collect();
        let p = of_rgba(32, 32, &rgba).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&p.thumbhash)
            .unwrap();
        let (r, g, b, _) = thumbhash::thumb_hash_to_average_rgba(&bytes).unwrap();
        assert!(r > 0.95 && g < 0.05 && b < 0.05, "{r} {g} {b}");
        // BlurHash: 4x3 components, and every decoded pixel is red.
        assert!(p.blurhash.starts_with('L'), "{}", p.blurhash);
        let pixels = blurhash::decode(&p.blurhash, 8, 8, 1.0).unwrap();
        for px in pixels.chunks_exact(4) {
            assert!(
                px[0] > 230 && px[1] < 25 && px[2] < 25,
                "{px:?} in {}",
                p.blurhash
            );
        }
    }

    #[test]
    fn every_output_format_gets_the_placeholders_of_its_picture() {
        use crate::engine::{Fit, Limits, OutputFormat, ThumbnailOptions, render};
        // Red on the left, blue on the right: so are the placeholders, whatever the format
        // (AVIF too, which nothing here could decode again), JPEG and YCbCr routes included.
        let img = image::RgbaImage::from_fn(200, 100, |x, _| {
            image::Rgba(if x < 100 {
                [255, 0, 0, 255]
            } else {
                [0, 0, 255, 255]
            })
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgba8(img)
            .to_rgb8()
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let formats = [
            OutputFormat::Jpeg,
            OutputFormat::Png,
            OutputFormat::Webp,
            OutputFormat::Avif,
            OutputFormat::Gif,
        ];
        for (input, format) in formats
            .iter()
            .map(|&f| (&png, f))
            .chain([(&jpeg, OutputFormat::Jpeg), (&jpeg, OutputFormat::Png)])
        {
            let options = ThumbnailOptions {
                width: 80,
                height: 80,
                fit: Fit::Contain,
                format: Some(format),
                ..ThumbnailOptions::default()
            };
            let thumbnail = render(input, &options, &Limits::default()).unwrap();
            assert_eq!(
                (thumbnail.preview.width, thumbnail.preview.height),
                (32, 16),
                "{format:?}"
            );
            // The preview is the picture: red on the left, blue on the right (JPEG and AVIF
            // are lossy, hence the tolerance).
            let px = |x: usize| &thumbnail.preview.rgba[(8 * 32 + x) * 4..(8 * 32 + x) * 4 + 4];
            let near = |a: &[u8], b: [u8; 4]| a.iter().zip(b).all(|(&a, b)| a.abs_diff(b) <= 40);
            assert!(near(px(2), [255, 0, 0, 255]), "{format:?} left {:?}", px(2));
            assert!(near(px(29), [0, 0, 255, 255]), "{format:?} right {:?}", px(29));
            // And so, blurred, are its placeholders.
            let p = of_preview(&thumbnail.preview).unwrap();
            let pixels = blurhash::decode(&p.blurhash, 8, 4, 1.0).unwrap();
            let (left, right) = (
                &pixels[2 * 8 * 4..2 * 8 * 4 + 4],
                &pixels[(2 * 8 + 7) * 4..(2 * 8 + 7) * 4 + 4],
            );
            assert!(left[0] > left[2] + 60, "{format:?} left {left:?}");
            assert!(right[2] > right[0] + 60, "{format:?} right {right:?}");
        }
    }
}
