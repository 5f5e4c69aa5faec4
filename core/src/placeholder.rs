//! Placeholders of a thumbnail: a ThumbHash and a BlurHash, tiny strings a client turns into a
//! blurred preview to show while the real thumbnail loads.
//!
//! Computed from the thumbnail the engine already encoded (decoded again, it is small), outside
//! the engine's decode pipeline: the thumbnail is shrunk to at most [`SAMPLE_EDGE`] pixels a side
//! with a box filter, which is all either hash looks at (ThumbHash keeps at most 7x7 terms,
//! BlurHash [`BLURHASH_COMPONENTS`]). Cost: `cargo run --release -p thumbnail-core --example
//! placeholder_cost` (README, "Benchmarks").
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Longest side of the image both hashes are computed from (ThumbHash accepts at most 100).
pub const SAMPLE_EDGE: u32 = 32;

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
    #[error("the thumbnail could not be decoded: {0}")]
    Decode(#[from] image::ImageError),
    #[error("blurhash: {0}")]
    BlurHash(String),
}

/// Placeholders of an encoded image (JPEG, PNG, WebP or GIF).
pub fn of_encoded(encoded: &[u8]) -> Result<Placeholders, PlaceholderError> {
    let decoded = image::load_from_memory(encoded)?.into_rgba8();
    of_rgba(decoded.width(), decoded.height(), decoded.as_raw())
}

/// Placeholders of 8-bit RGBA pixels (not premultiplied), `width * height * 4` bytes.
pub fn of_rgba(width: u32, height: u32, rgba: &[u8]) -> Result<Placeholders, PlaceholderError> {
    let image = image::RgbaImage::from_raw(width, height, rgba.to_vec()).ok_or_else(|| {
        PlaceholderError::BlurHash(format!("{} bytes are not {width}x{height} RGBA", rgba.len()))
    })?;
    let (w, h) = sample_size(width, height);
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

/// The sample's size: the image scaled to fit [`SAMPLE_EDGE`], aspect kept, at least 1x1. Pure.
pub fn sample_size(width: u32, height: u32) -> (u32, u32) {
    let (width, height) = (width.max(1), height.max(1));
    let long = width.max(height);
    if long <= SAMPLE_EDGE {
        return (width, height);
    }
    let scale = |side: u32| {
        ((u64::from(side) * u64::from(SAMPLE_EDGE) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(width), scale(height))
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
    fn sample_fits_the_edge_and_keeps_the_aspect() {
        assert_eq!(sample_size(320, 240), (32, 24));
        assert_eq!(sample_size(240, 320), (24, 32));
        assert_eq!(sample_size(20, 10), (20, 10));
        assert_eq!(sample_size(10_000, 1), (32, 1));
        assert_eq!(sample_size(0, 0), (1, 1));
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
    fn encoded_thumbnails_are_decoded() {
        let mut png = Vec::new();
        image::RgbaImage::from_raw(40, 30, gradient(40, 30))
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let from_png = of_encoded(&png).unwrap();
        assert_eq!(from_png, of_rgba(40, 30, &gradient(40, 30)).unwrap());
        assert!(of_encoded(b"not an image").is_err());
    }
}
