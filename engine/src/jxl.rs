//! JPEG XL through `jxl-oxide` (pure Rust), single-threaded, with its allocation tracker set to
//! the job's memory limit so that a file whose header understates what it needs still cannot
//! allocate past it. The image is rendered in sRGB (XYB and enumerated colour encodings are
//! converted by jxl-oxide itself, embedded ICC profiles through `moxcms`), with its orientation
//! applied, so the size the header gives is the displayed one.
//!
//! A thumbnail at most an eighth of the picture's size is made from the frame's LF image instead
//! (see [`lf_image`]): the JPEG XL counterpart of a JPEG decoded at 1/8 from its DC coefficients.
use crate::container::Facts;
use crate::pipeline::{Raster, orient};
use crate::{EngineError, Limits};
use jxl_color::ColorTransform;
use jxl_oxide::frame::Encoding;
use jxl_oxide::{
    AllocTracker, ColorEncodingWithProfile, EnumColourEncoding, InitializeResult, JxlImage, NullCms,
    PixelFormat, RenderingIntent,
};

fn corrupt(err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: "JPEG XL",
        message: err.to_string(),
    }
}

/// Size (oriented), transparency and frame count from the image header, which is all that is
/// parsed (no frame is read).
pub(crate) fn read_header(bytes: &[u8]) -> Result<Facts, EngineError> {
    let mut uninit = JxlImage::builder()
        .alloc_tracker(AllocTracker::with_limit(64 * 1024 * 1024))
        .build_uninit();
    uninit.feed_bytes(bytes).map_err(corrupt)?;
    let image = match uninit.try_init().map_err(corrupt)? {
        InitializeResult::Initialized(image) => image,
        InitializeResult::NeedMoreData(_) => return Err(corrupt("the file ends inside its header")),
    };
    let (width, height) = (image.width(), image.height());
    let metadata = &image.image_header().metadata;
    Ok(Facts {
        width,
        height,
        frames: 1,
        has_alpha: metadata.ec_info.iter().any(|ec| ec.is_alpha()),
        orientation: Some(1),
        bits_per_sample: u8::try_from(metadata.bit_depth.bits_per_sample()).unwrap_or(32),
        max_frame_pixels: u64::from(width) * u64::from(height),
        ..Facts::default()
    })
}

/// Bytes a render of a `w` x `h` image allocates at most: jxl-oxide keeps 32-bit float planes
/// (colour, alpha and the VarDCT working set) and we copy the 8-bit result.
pub(crate) fn memory(w: u64, h: u64) -> u64 {
    w * h * (4 * 4 * 3 + 4)
}

/// Bytes [`decode`] allocates at most when it may use the LF image of a `w` x `h` picture whose
/// file is `input` bytes long: jxl-oxide's copy of the file, and per LF sample the three float
/// planes and their smoothed copy, one LF group's quantised samples and block metadata, and the
/// 8-bit result.
pub(crate) fn lf_memory(w: u64, h: u64, input: u64) -> u64 {
    input + w.div_ceil(8) * h.div_ceil(8) * 64
}

/// Render the first frame in sRGB, 8 bits per sample (grey, grey+alpha, RGB or RGBA). With
/// `eighth`, from the LF image at an eighth of the size per axis when the frame has one that
/// stands for the whole picture; otherwise whole, after checking that the whole render fits the
/// memory limit (the caller planned for the LF image).
pub(crate) fn decode(bytes: &[u8], limits: &Limits, eighth: bool) -> Result<Raster, EngineError> {
    let tracker = AllocTracker::with_limit(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX));
    let mut image = JxlImage::builder()
        .alloc_tracker(tracker)
        .read(bytes)
        .map_err(corrupt)?;
    image.set_cms(jxl_oxide::Moxcms);
    let cmyk = matches!(image.pixel_format(), PixelFormat::Cmyk | PixelFormat::Cmyka);
    if cmyk {
        return Err(corrupt("CMYK JPEG XL images are not supported"));
    }
    if eighth {
        if let Some(raster) = lf_image(&image)? {
            return Ok(raster);
        }
        let needed = memory(u64::from(image.width()), u64::from(image.height()));
        if needed > limits.max_memory_bytes {
            return Err(EngineError::MemoryLimit {
                needed,
                max: limits.max_memory_bytes,
            });
        }
    }
    image.request_color_encoding(EnumColourEncoding::srgb(RenderingIntent::Relative));
    if image.num_loaded_keyframes() == 0 {
        return Err(corrupt("the file has no complete frame"));
    }
    let render = image.render_frame(0).map_err(corrupt)?;
    let mut stream = render.stream();
    let (width, height, channels) = (
        stream.width() as usize,
        stream.height() as usize,
        stream.channels() as usize,
    );
    if !(1..=4).contains(&channels) {
        return Err(corrupt(format!("{channels} channels")));
    }
    let mut data = vec![0u8; width * height * channels];
    let written = stream.write_to_buffer(&mut data);
    if written < data.len() {
        return Err(corrupt(
            "the decoder returned fewer pixels than the header promises",
        ));
    }
    Ok(Raster {
        width,
        height,
        channels,
        data,
    })
}

/// The first frame's LF image in sRGB, upright, when it stands for the whole picture: a single
/// VarDCT frame covering the image, in XYB (what `cjxl` makes of pixels) or YCbCr (a JPEG
/// transcoded without loss, chroma subsampled or not), without alpha or other extra channels,
/// patches, splines, upsampling or a separate LF frame, and not HDR. `None` otherwise.
///
/// In a VarDCT frame every 8x8 block's lowest-frequency coefficient is the block's mean, and the
/// frame carries them first, as an image an eighth of the size: the file's own box-filtered
/// 1/8 picture. Only that part of the file (the LF groups, about a tenth of a photo) is entropy
/// decoded, and the full-size float planes, inverse DCTs and restoration filters of a whole render
/// are never made: f03 (4032x3024) to 100x100 goes from about 900 ms and 330 MiB to tens of
/// milliseconds. The steps are those of the specification (and of jxl-oxide's own LF pass):
/// dequantise, chroma from luma, adaptive LF smoothing, then to sRGB. Noise is left out, as it
/// averages away at an eighth; the restoration filters act within blocks.
fn lf_image(image: &JxlImage) -> Result<Option<Raster>, EngineError> {
    let image_header = image.image_header();
    let metadata = &image_header.metadata;
    let Some(frame) = image.frame_by_keyframe(0) else {
        return Ok(None);
    };
    let header = frame.header();
    let flags = header.flags;
    let whole_image = header.x0 == 0
        && header.y0 == 0
        && header.width == image_header.size.width
        && header.height == image_header.size.height;
    let ycbcr = header.do_ycbcr;
    let subsampled = header.jpeg_upsampling != [0; 3];
    if image.num_loaded_frames() != 1
        || !(metadata.xyb_encoded || ycbcr)
        || !metadata.ec_info.is_empty()
        || image.hdr_type().is_some()
        || header.encoding != Encoding::VarDct
        || flags.patches()
        || flags.splines()
        || flags.use_lf_frame()
        || header.upsampling != 1
        || (subsampled && !flags.skip_adaptive_lf_smoothing())
        || !whole_image
    {
        return Ok(None);
    }
    let lf_global = frame
        .try_parse_lf_global::<i32>()
        .ok_or_else(|| corrupt("the file ends inside its first frame"))?
        .map_err(corrupt)?;
    let Some(vardct) = lf_global.vardct.as_ref() else {
        return Ok(None);
    };
    let (lw, lh) = (
        header.width.div_ceil(8) as usize,
        header.height.div_ceil(8) as usize,
    );
    // X, Y and B (for YCbCr: Cb, Y and Cr), dequantised, each at the LF size (subsampled chroma
    // repeated); LfCoeff's channels are stored Y, X, B.
    let mut planes: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0.0; lw * lh]);
    let dequant = &lf_global.lf_dequant;
    let multipliers = [(1, dequant.m_x_lf), (0, dequant.m_y_lf), (2, dequant.m_b_lf)];
    let scale_inv = f64::from(vardct.quantizer.global_scale) * f64::from(vardct.quantizer.quant_lf);
    let group_dim = header.group_dim() as usize;
    let per_row = header.lf_groups_per_row();
    for idx in 0..header.num_lf_groups() {
        let group = frame
            .try_parse_lf_group::<i32>(Some(vardct), lf_global.gmodular.ma_config(), None, idx)
            .ok_or_else(|| corrupt("the file ends inside an LF group"))?
            .map_err(corrupt)?;
        let Some(channels) = group.lf_coeff.as_ref().and_then(|c| {
            let channels = c.lf_quant.image()?.image_channels();
            (channels.len() == 3).then_some((channels, c.extra_precision))
        }) else {
            return Ok(None);
        };
        let (channels, extra_precision) = channels;
        let left = (idx % per_row) as usize * group_dim;
        let top = (idx / per_row) as usize * group_dim;
        let (group_w, group_h) = header.lf_group_size_for(idx);
        let (group_w, group_h) = (group_w.div_ceil(8) as usize, group_h.div_ceil(8) as usize);
        if left + group_w > lw || top + group_h > lh {
            return Err(corrupt("an LF group is larger than the frame"));
        }
        let precision = f64::from(1u32 << 9u8.saturating_sub(extra_precision));
        for (plane, (channel, m_lf)) in planes.iter_mut().zip(multipliers) {
            let grid = &channels[channel];
            let (gw, gh) = (grid.width(), grid.height());
            // A subsampled channel has half the samples along its subsampled axes.
            let (hs, vs) = (usize::from(gw < group_w), usize::from(gh < group_h));
            if (group_w - 1) >> hs >= gw || (group_h - 1) >> vs >= gh {
                return Err(corrupt("an LF group's channel is smaller than the group"));
            }
            let scale = (f64::from(m_lf) * precision / scale_inv) as f32;
            let buf = grid.buf();
            for y in 0..group_h {
                let row = &buf[(y >> vs) * gw..][..gw];
                let out = &mut plane[(top + y) * lw + left..][..group_w];
                for (x, o) in out.iter_mut().enumerate() {
                    *o = row[x >> hs] as f32 * scale;
                }
            }
        }
    }
    if !subsampled {
        let corr = &vardct.lf_chan_corr;
        let factor = |f: u32| (f64::from(f) - 128.0) / f64::from(corr.colour_factor);
        let kx = corr.base_correlation_x + factor(corr.x_factor_lf) as f32;
        let kb = corr.base_correlation_b + factor(corr.b_factor_lf) as f32;
        chroma_from_luma(&mut planes, kx, kb);
    }
    if !flags.skip_adaptive_lf_smoothing() {
        let lf_scale = multipliers.map(|(_, m)| (512.0 * f64::from(m) / scale_inv) as f32);
        planes = adaptive_lf_smoothing(&planes, lw, lh, lf_scale);
    }
    let srgb = ColorEncodingWithProfile::new(EnumColourEncoding::srgb(RenderingIntent::Relative));
    let transform = if ycbcr {
        let [cb, y, cr] = &mut planes;
        jxl_color::ycbcr_to_rgb([cb.as_mut_slice(), y.as_mut_slice(), cr.as_mut_slice()]);
        // The samples are now in the colour space the header names (an enumerated one or the
        // JPEG's ICC profile).
        let source = match image.original_icc() {
            Some(icc) => ColorEncodingWithProfile::with_icc(icc).map_err(corrupt)?,
            None => match &metadata.colour_encoding {
                jxl_oxide::color::ColourEncoding::Enum(e) => ColorEncodingWithProfile::new(e.clone()),
                jxl_oxide::color::ColourEncoding::IccProfile(_) => return Ok(None),
            },
        };
        ColorTransform::builder().build(
            &source,
            &srgb,
            &metadata.opsin_inverse_matrix,
            &metadata.tone_mapping,
            &jxl_oxide::Moxcms,
        )
    } else {
        ColorTransform::builder().build(
            &ColorEncodingWithProfile::new(EnumColourEncoding::xyb(RenderingIntent::Perceptual)),
            &srgb,
            &metadata.opsin_inverse_matrix,
            &metadata.tone_mapping,
            &NullCms,
        )
    }
    .map_err(corrupt)?;
    let [x, y, b] = &mut planes;
    let channels = transform
        .run(&mut [x.as_mut_slice(), y.as_mut_slice(), b.as_mut_slice()])
        .map_err(corrupt)?;
    if channels != 3 {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(lw * lh * 3);
    for ((&r, &g), &b) in planes[0].iter().zip(&planes[1]).zip(&planes[2]) {
        data.extend([r, g, b].map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8));
    }
    let raster = Raster {
        width: lw,
        height: lh,
        channels: 3,
        data,
    };
    Ok(Some(orient(
        raster,
        u8::try_from(metadata.orientation).unwrap_or(1),
    )))
}

/// The LF part of chroma from luma: X and B gain the multiple of Y the frame sets.
fn chroma_from_luma(planes: &mut [Vec<f32>; 3], kx: f32, kb: f32) {
    let [x, y, b] = planes;
    for ((x, &y), b) in x.iter_mut().zip(y.iter()).zip(b.iter_mut()) {
        *x += kx * y;
        *b += kb * y;
    }
}

/// Adaptive LF smoothing (JPEG XL, G.2.4; jxl-oxide's `adaptive_lf_smoothing_impl`): each
/// interior sample moves towards the weighted mean of its 3x3 neighbourhood, the less the further
/// that mean is from it in units of the channel's quantisation step (`lf_scale`), in all three
/// channels together. The border stays as it is.
fn adaptive_lf_smoothing(planes: &[Vec<f32>; 3], w: usize, h: usize, lf_scale: [f32; 3]) -> [Vec<f32>; 3] {
    const SCALE_SELF: f32 = 0.052262735;
    const SCALE_SIDE: f32 = 0.2034514;
    const SCALE_DIAG: f32 = 0.03348292;
    let mut out = planes.clone();
    if w <= 2 || h <= 2 {
        return out;
    }
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut means = [0f32; 3];
            let mut gap = 0.5f32;
            for (c, p) in planes.iter().enumerate() {
                let at = |dx: usize, dy: usize| p[(y + dy - 1) * w + x + dx - 1];
                let centre = at(1, 1);
                let side = at(0, 1) + at(2, 1) + at(1, 0) + at(1, 2);
                let diag = at(0, 0) + at(2, 0) + at(0, 2) + at(2, 2);
                means[c] = centre * SCALE_SELF + side * SCALE_SIDE + diag * SCALE_DIAG;
                gap = gap.max((means[c] - centre).abs() / lf_scale[c]);
            }
            let gap_scale = (3.0 - 4.0 * gap).max(0.0);
            for (c, p) in out.iter_mut().enumerate() {
                let centre = planes[c][y * w + x];
                p[y * w + x] = (means[c] - centre) * gap_scale + centre;
            }
        }
    }
    out
}
