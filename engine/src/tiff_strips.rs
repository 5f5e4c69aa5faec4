//! TIFF read strip by strip (or row of tiles by row of tiles) with the `tiff` crate and
//! box-shrunk on the fly, like a PNG: the full-size picture is never held. The `image` crate's
//! reader, which the rest of TIFF goes through, decodes the whole picture into a buffer of its own
//! and then copies it: twice the decoded size (88-91 MiB for a 5120x2880 RGB TIFF, where this
//! path needs one band of rows).
//!
//! Covered: chunky (interleaved) 8 and 16-bit grey, grey+alpha, RGB, RGBA and CMYK, in strips or
//! tiles, with any compression and predictor the `tiff` crate decodes. Anything else (planar
//! layouts, bilevel and palette images, YCbCr, floats) answers `None` and is read whole.
use crate::box_shrink::BoxShrink;
use crate::pipeline::Raster;
use crate::{EngineError, ImageFormat, Limits};
use std::io::Cursor;
use tiff::ColorType;
use tiff::decoder::{ChunkType, Decoder, DecodingResult};
use tiff::tags::Tag;

fn corrupt(err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: ImageFormat::Tiff.name(),
        message: err.to_string(),
    }
}

/// How the samples of a chunk become 8-bit interleaved samples of the output.
#[derive(Clone, Copy)]
struct Layout {
    /// Samples per pixel in the file, and bytes per sample.
    samples: usize,
    sample_bytes: usize,
    /// Channels per pixel in the output (CMYK becomes RGB).
    channels: usize,
    cmyk: bool,
}

/// CMYK to RGB as the `image` crate converts it (no profile), so both readers agree.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let kf = 1.0 - f32::from(k) / 255.0;
    [c, m, y].map(|v| ((255.0 - f32::from(v)) * kf) as u8)
}

/// A chunk's samples as 8-bit output samples; `None` for sample types this path does not read.
fn to_8bit(chunk: DecodingResult, layout: Layout) -> Option<Vec<u8>> {
    let samples = match chunk {
        DecodingResult::U8(v) => v,
        // As the `image` crate narrows 16-bit samples.
        DecodingResult::U16(v) => v.iter().map(|&s| ((u32::from(s) + 128) / 257) as u8).collect(),
        _ => return None,
    };
    if !layout.cmyk {
        return Some(samples);
    }
    let mut rgb = Vec::with_capacity(samples.len() / 4 * 3);
    for px in samples.chunks_exact(4) {
        rgb.extend(cmyk_to_rgb([px[0], px[1], px[2], px[3]]));
    }
    Some(rgb)
}

type TiffDecoder<'a> = Decoder<Cursor<&'a [u8]>>;

/// A decoded picture and its ICC profile, if it has one.
type WithProfile = (Raster, Option<Vec<u8>>);

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<TiffDecoder<'a>, EngineError> {
    let max = usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX);
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size = max;
    tiff_limits.intermediate_buffer_size = max;
    Ok(Decoder::new(Cursor::new(bytes))
        .map_err(corrupt)?
        .with_limits(tiff_limits))
}

/// The layout of the first page when this path reads it: chunky unsigned 8 or 16-bit samples of
/// a colour type it converts.
fn layout(d: &mut TiffDecoder<'_>) -> Result<Option<Layout>, EngineError> {
    let (samples, channels, cmyk, bits) = match d.colortype().map_err(corrupt)? {
        ColorType::Gray(b) => (1, 1, false, b),
        ColorType::GrayA(b) => (2, 2, false, b),
        ColorType::RGB(b) => (3, 3, false, b),
        ColorType::RGBA(b) => (4, 4, false, b),
        ColorType::CMYK(b) => (4, 3, true, b),
        _ => return Ok(None),
    };
    let chunky = d
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(corrupt)?
        .is_none_or(|p| p == 1);
    // SampleFormat 1: unsigned integers (signed ones and floats decode to other types).
    let unsigned = d
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(corrupt)?
        .is_none_or(|formats| formats.iter().all(|&f| f == 1));
    if !(bits == 8 || bits == 16) || !chunky || !unsigned {
        return Ok(None);
    }
    Ok(Some(Layout {
        samples,
        sample_bytes: usize::from(bits / 8),
        channels,
        cmyk,
    }))
}

/// Bytes [`decode`] needs besides its output when it reads this TIFF (`None`: it does not, the
/// whole picture is read): one chunk as decoded, its compressed bytes and its 8-bit copy, and for
/// tiles a band of rows across the whole width.
pub(crate) fn band_bytes(bytes: &[u8]) -> Option<u64> {
    let mut d = open(bytes, &Limits::default()).ok()?;
    let layout = layout(&mut d).ok()??;
    let (w, _) = d.dimensions().ok()?;
    let (chunk_w, chunk_h) = d.chunk_dimensions();
    let chunk = u64::from(chunk_w) * u64::from(chunk_h);
    let decoded = chunk * (layout.samples * layout.sample_bytes) as u64;
    let copy = chunk * layout.channels as u64;
    let band = match d.get_chunk_type() {
        ChunkType::Strip => 0,
        ChunkType::Tile => u64::from(w) * u64::from(chunk_h) * layout.channels as u64,
    };
    Some(2 * decoded + copy + band)
}

/// The first page, box-shrunk by `factor`, and its ICC profile; `None` when its layout is not one
/// this path covers (see the module's documentation).
pub(crate) fn decode(bytes: &[u8], factor: u32, limits: &Limits) -> Result<Option<WithProfile>, EngineError> {
    let mut d = open(bytes, limits)?;
    let Some(layout) = layout(&mut d)? else {
        return Ok(None);
    };
    let icc = d.get_tag_u8_vec(Tag::IccProfile).ok();
    let (w, h) = d.dimensions().map_err(corrupt)?;
    let (w, h) = (w as usize, h as usize);
    let mut shrink = BoxShrink::new(w, h, factor as usize, layout.channels);
    let row = w * layout.channels;
    let (chunk_w, chunk_h) = d.chunk_dimensions();
    let (chunk_w, chunk_h) = (chunk_w as usize, chunk_h as usize);
    let (across, down) = match d.get_chunk_type() {
        ChunkType::Strip => (1, d.strip_count().map_err(corrupt)? as usize),
        ChunkType::Tile => (w.div_ceil(chunk_w.max(1)), h.div_ceil(chunk_h.max(1))),
    };
    if across * down != chunk_count(&mut d)? {
        return Err(corrupt("the chunk count does not match the image size"));
    }
    // One band: a strip, or a row of tiles, as 8-bit output samples across the whole width.
    let mut band = Vec::new();
    for band_idx in 0..down {
        band.clear();
        let mut band_rows = 0;
        for col in 0..across {
            let idx = u32::try_from(band_idx * across + col).map_err(corrupt)?;
            let (dw, dh) = d.chunk_data_dimensions(idx);
            let (dw, dh) = (dw as usize, dh as usize);
            let chunk = d.read_chunk(idx).map_err(corrupt)?;
            let Some(samples) = to_8bit(chunk, layout) else {
                return Ok(None);
            };
            let chunk_row = dw * layout.channels;
            if dh == 0 || samples.len() < chunk_row * dh {
                return Err(corrupt("a chunk holds fewer samples than its size"));
            }
            if across == 1 && chunk_row == row {
                // A strip: its rows go straight to the shrinker.
                for r in samples.chunks_exact(row).take(dh) {
                    shrink.push_row(r);
                }
                continue;
            }
            if col == 0 {
                band_rows = dh;
                band.resize(row * dh, 0);
            }
            let left = col * chunk_w * layout.channels;
            if dh != band_rows || left + chunk_row > row {
                return Err(corrupt("a tile does not fit its row of tiles"));
            }
            for (y, src) in samples.chunks_exact(chunk_row).take(dh).enumerate() {
                band[y * row + left..][..chunk_row].copy_from_slice(src);
            }
        }
        for r in band.chunks_exact(row.max(1)) {
            shrink.push_row(r);
        }
    }
    let raster = shrink
        .finish()
        .ok_or_else(|| corrupt("the strips hold fewer rows than the image"))?;
    Ok(Some((raster, icc)))
}

fn chunk_count(d: &mut Decoder<Cursor<&[u8]>>) -> Result<usize, EngineError> {
    let n = match d.get_chunk_type() {
        ChunkType::Strip => d.strip_count(),
        ChunkType::Tile => d.tile_count(),
    };
    Ok(n.map_err(corrupt)? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode_with_image;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// The `image` crate's whole decode, box-shrunk afterwards.
    fn whole_then_shrunk(bytes: &[u8], factor: usize) -> (Raster, Option<Vec<u8>>) {
        let (whole, icc) = decode_with_image(bytes, ImageFormat::Tiff, &Limits::default()).unwrap();
        let mut shrink = BoxShrink::new(whole.width, whole.height, factor, whole.channels);
        for row in whole.data.chunks_exact(whole.width * whole.channels) {
            shrink.push_row(row);
        }
        (shrink.finish().unwrap(), icc)
    }

    #[test]
    fn strips_and_tiles_read_as_the_image_crate_reads_the_whole_picture() {
        // One strip, 5-row strips (the last one short), 32x32 tiles, 48x48 tiles (the last row
        // and column partial), 16 bit, CMYK, alpha, an ICC profile, an Orientation tag.
        for name in [
            "quad.tif",
            "quad_strips.tif",
            "quad_tiled.tif",
            "quad_tiles_partial.tif",
            "quad_16bit.tif",
            "quad_cmyk.tif",
            "rgba.tif",
            "icc_swapped.tif",
            "orient6.tif",
        ] {
            let bytes = fixture(name);
            for factor in [1, 3, 8] {
                let (streamed, icc) = decode(&bytes, factor as u32, &Limits::default())
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name}: not read strip by strip"));
                let (want, want_icc) = whole_then_shrunk(&bytes, factor);
                assert_eq!(
                    (streamed.width, streamed.height, streamed.channels),
                    (want.width, want.height, want.channels),
                    "{name} at 1/{factor}"
                );
                assert!(streamed.data == want.data, "{name} at 1/{factor}: samples differ");
                assert_eq!(icc, want_icc, "{name}: ICC profile");
            }
        }
    }

    #[test]
    fn planar_tiffs_are_left_to_the_whole_picture_reader() {
        let bytes = fixture("quad_planar.tif");
        assert!(decode(&bytes, 2, &Limits::default()).unwrap().is_none());
    }

    #[test]
    fn a_truncated_tiff_is_an_error_not_a_short_picture() {
        let bytes = fixture("quad_strips.tif");
        match decode(&bytes[..bytes.len() / 2], 2, &Limits::default()) {
            Err(err) => assert_eq!(err.reason(), "CorruptImage", "{err}"),
            Ok(_) => panic!("half a TIFF decoded"),
        }
    }
}
