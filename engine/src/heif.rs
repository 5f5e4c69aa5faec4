//! HEIC and AVIF through libheif (C, with libde265 for HEVC and dav1d for AV1), by the safe
//! `libheif-rs` binding. libheif parses the container without decoding; the primary image's
//! size there is already the displayed one (its irot/imir/clap transforms are applied by the
//! decoder, so EXIF orientation, which HEIF says to ignore, is not applied again).
//!
//! Shrink-on-load, HEIF style: a photo from a phone carries a small thumbnail item (iPhone:
//! 320x240 beside the 4032x3024 primary), and when it is large enough for the output it is
//! decoded instead of the primary, as libvips does.
use crate::container::Facts;
use crate::pipeline::Raster;
use crate::{EngineError, ImageFormat, Limits};
use libheif_rs::{
    ColorPrimaries, ColorSpace, DecodingOptions, HeifContext, ImageHandle, ItemId, LibHeif, RgbChroma,
    SecurityLimits, TransferCharacteristics,
};
use std::sync::OnceLock;

fn corrupt(format: ImageFormat, err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: format.name(),
        message: err.to_string(),
    }
}

/// A context over `bytes` whose own limits are ours (`None` while probing, so that our probe
/// reports the size it reads as too many pixels rather than libheif's refusal as a corrupt
/// file): libheif refuses larger images, more tiles and items, and more memory, before it
/// allocates (a second line behind our probe).
fn context<'a>(
    bytes: &'a [u8],
    limits: Option<&Limits>,
    format: ImageFormat,
) -> Result<HeifContext<'a>, EngineError> {
    let mut ctx = HeifContext::new().map_err(|e| corrupt(format, e))?;
    let mut sl = SecurityLimits::new();
    if let Some(limits) = limits {
        sl.set_max_image_size_pixels(limits.max_pixels);
        sl.set_max_total_memory(limits.max_memory_bytes);
        sl.set_max_memory_block_size(limits.max_memory_bytes.min(sl.max_memory_block_size().max(1)));
    } else {
        sl.set_max_image_size_pixels(0);
    }
    // A 4032x3024 iPhone grid has 48 tiles of 512x512; 100 MP at 256x256 would be ~1500.
    sl.set_max_number_of_tiles(4096);
    ctx.set_security_limits(&sl).map_err(|e| corrupt(format, e))?;
    // One thread per job: the service runs one job per core.
    ctx.set_max_decoding_threads(1);
    ctx.read_bytes(bytes).map_err(|e| corrupt(format, e))?;
    Ok(ctx)
}

/// The process's libheif handle. libheif initialises itself (registers its decoders, looks for
/// plugins) whenever its reference count goes from 0 to 1, and tears everything down at 0; a
/// handle per call paid that on every job: 5.2 of the 5.6 ms a 96x64 HEIC took, 5.8 of AVIF's 7.2.
/// One handle that lives as long as the process keeps the count above 0. A static because it is
/// the C library's own process-wide state, not ours.
fn libheif() -> &'static LibHeif {
    static LIBHEIF: OnceLock<LibHeif> = OnceLock::new();
    LIBHEIF.get_or_init(LibHeif::new)
}

/// Header facts: the primary image's displayed size, alpha, bit depth; the thumbnails' sizes.
pub(crate) fn read_header(bytes: &[u8], format: ImageFormat) -> Result<Facts, EngineError> {
    libheif();
    let ctx = context(bytes, None, format)?;
    let primary = ctx.primary_image_handle().map_err(|e| corrupt(format, e))?;
    let (width, height) = (primary.width(), primary.height());
    let bits = primary.luma_bits_per_pixel();
    Ok(Facts {
        width,
        height,
        frames: 1,
        has_alpha: primary.has_alpha_channel(),
        orientation: Some(1),
        bits_per_sample: bits,
        max_frame_pixels: u64::from(width) * u64::from(height),
        ..Facts::default()
    })
}

/// Bytes one decode of a `w` x `h` item allocates at most: libheif's YCbCr planes (1 or 2 bytes
/// per sample, 4:4:4 at worst) and tiles, its RGB(A) output, and our copy of that.
pub(crate) fn memory(w: u64, h: u64, bits: u8) -> u64 {
    let sample = if bits > 8 { 2 } else { 1 };
    w * h * (3 * sample + 4 + 4)
}

/// The item to decode: the smallest thumbnail at least `need` in both directions with the
/// primary's aspect ratio (within 1%), else the primary.
fn pick(primary: ImageHandle, need: (u32, u32)) -> ImageHandle {
    let (pw, ph) = (f64::from(primary.width()), f64::from(primary.height()));
    let mut ids: Vec<ItemId> = vec![0; primary.number_of_thumbnails()];
    let n = primary.thumbnail_ids(&mut ids);
    ids.truncate(n);
    let best = ids
        .into_iter()
        .filter_map(|id| primary.thumbnail(id).ok())
        .filter(|t| {
            let (tw, th) = (f64::from(t.width()), f64::from(t.height()));
            t.width() >= need.0
                && t.height() >= need.1
                && th > 0.0
                && ((tw / th) / (pw / ph) - 1.0).abs() < 0.01
        })
        .min_by_key(|t| u64::from(t.width()) * u64::from(t.height()));
    best.unwrap_or(primary)
}

/// Decode the primary image (or a thumbnail item that covers `need`) to 8-bit RGB(A), with its
/// colour profile: the ICC profile, or one made from the nclx primaries when they are not sRGB's.
pub(crate) fn decode(
    bytes: &[u8],
    need: (u32, u32),
    limits: &Limits,
    format: ImageFormat,
) -> Result<(Raster, Option<Vec<u8>>), EngineError> {
    let lib = libheif();
    let ctx = context(bytes, Some(limits), format)?;
    let primary = ctx.primary_image_handle().map_err(|e| corrupt(format, e))?;
    let item = pick(primary, need);
    let alpha = item.has_alpha_channel();
    let chroma = if alpha { RgbChroma::Rgba } else { RgbChroma::Rgb };
    let mut options =
        DecodingOptions::new().ok_or_else(|| EngineError::Internal("libheif: no memory".into()))?;
    options.set_convert_hdr_to_8bit(true);
    options.set_num_library_threads(1);
    options.set_num_codec_threads(1);
    let image = lib
        .decode(&item, ColorSpace::Rgb(chroma), Some(options))
        .map_err(|e| corrupt(format, e))?;
    let planes = image.planes();
    let plane = planes
        .interleaved
        .ok_or_else(|| corrupt(format, "the decoder returned no interleaved RGB plane"))?;
    let channels = if alpha { 4 } else { 3 };
    let (w, h) = (plane.width as usize, plane.height as usize);
    let row = w * channels;
    if plane.storage_bits_per_pixel as usize != 8 * channels || plane.stride < row {
        return Err(corrupt(format, "unexpected decoded pixel layout"));
    }
    let mut data = Vec::with_capacity(row * h);
    for y in 0..h {
        let line = plane
            .data
            .get(y * plane.stride..y * plane.stride + row)
            .ok_or_else(|| corrupt(format, "decoded image is shorter than its size"))?;
        data.extend_from_slice(line);
    }
    let icc = item
        .color_profile_raw()
        .map(|p| p.data)
        .filter(|d| !d.is_empty())
        .or_else(|| nclx_profile(&item));
    Ok((
        Raster {
            width: w,
            height: h,
            channels,
            data,
        },
        icc,
    ))
}

/// An ICC profile for nclx colour primaries other than sRGB's (BT.709): Display P3 (iPhones,
/// when they write nclx) and BT.2020 (AVIF from HDR sources).
fn nclx_profile(item: &ImageHandle) -> Option<Vec<u8>> {
    let nclx = item.color_profile_nclx()?;
    let profile = match nclx.color_primaries() {
        ColorPrimaries::SMPTE_EG_432_1 | ColorPrimaries::SMPTE_RP_431_2 => {
            moxcms::ColorProfile::new_display_p3()
        }
        ColorPrimaries::ITU_R_BT_2020_2_and_2100_0 => match nclx.transfer_characteristics() {
            TransferCharacteristics::ITU_R_BT_2100_0_PQ => moxcms::ColorProfile::new_bt2020_pq(),
            TransferCharacteristics::ITU_R_BT_2100_0_HLG => moxcms::ColorProfile::new_bt2020_hlg(),
            _ => moxcms::ColorProfile::new_bt2020(),
        },
        _ => return None,
    };
    profile.encode().ok()
}

/// The size of the item [`decode`] would decode for `need`, without decoding it.
pub(crate) fn chosen_size(
    bytes: &[u8],
    need: (u32, u32),
    format: ImageFormat,
) -> Result<(u32, u32), EngineError> {
    libheif();
    let ctx = context(bytes, None, format)?;
    let primary = ctx.primary_image_handle().map_err(|e| corrupt(format, e))?;
    let item = pick(primary, need);
    Ok((item.width(), item.height()))
}
