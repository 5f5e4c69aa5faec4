//! The pipeline behind [`render`]: probe → decode with shrink-on-load → resize (Lanczos3, SIMD)
//! → orient → colour-manage → encode.
//!
//! Every step after decoding works on an image that is already close to the thumbnail's size:
//! JPEGs are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, large PNGs are box-shrunk row by
//! row while they are inflated, and EXIF rotation, ICC conversion, CMYK conversion and alpha
//! flattening all run on the small image.
use crate::container::{self, Facts};
use crate::jpeg::{self, JpegHeader};
use crate::options::Anchor;
use crate::preview::{self, Preview};
use crate::{
    EngineError, Fit, Gravity, ImageFormat, Limits, OutputFormat, ProbeInfo, ThumbnailOptions, animation,
    bitmap, box_shrink::BoxShrink, encode as encoders, heif, jxl, smartcrop, sniff, svg, tiff_strips,
};
use fast_image_resize as fir;
use image::ImageDecoder;
use std::io::Cursor;

/// A finished thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    /// The picture at most 32 pixels a side, from the pixels that were encoded (placeholders).
    pub preview: Preview,
}

/// 8-bit interleaved pixels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA channels.
#[derive(Debug, Clone)]
pub(crate) struct Raster {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// A borrowed raster: what the resizer reads, whoever owns the pixels.
pub(crate) struct RasterView<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

impl Raster {
    pub(crate) fn view(&self) -> RasterView<'_> {
        RasterView {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: &self.data,
        }
    }
}

fn corrupt(format: ImageFormat, err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: format.name(),
        message: err.to_string(),
    }
}

/// Everything the header says, for [`probe`] and for planning the decode.
struct Header {
    info: ProbeInfo,
    jpeg: Option<JpegHeader>,
    facts: Facts,
    /// Size of the input.
    bytes: usize,
}

fn read_header(bytes: &[u8], limits: &Limits) -> Result<Header, EngineError> {
    let size = bytes.len() as u64;
    if size > limits.max_input_bytes {
        return Err(EngineError::FileTooLarge {
            size,
            max: limits.max_input_bytes,
        });
    }
    let format = sniff(bytes)?;
    let (jpeg, facts) = match format {
        ImageFormat::Jpeg => {
            let h = jpeg::read_header(bytes, false).map_err(|e| corrupt(format, e))?;
            let facts = Facts {
                width: u32::from(h.width),
                height: u32::from(h.height),
                frames: 1,
                exif: h.exif.clone(),
                ..Facts::default()
            };
            (Some(h), facts)
        }
        ImageFormat::Png => (None, container::png(bytes).map_err(|e| corrupt(format, e))?),
        ImageFormat::Gif => (
            None,
            container::gif(bytes, limits.max_frames).map_err(|e| corrupt(format, e))?,
        ),
        ImageFormat::Webp => (None, container::webp(bytes).map_err(|e| corrupt(format, e))?),
        ImageFormat::Heic | ImageFormat::Avif => (None, heif::read_header(bytes, format)?),
        ImageFormat::Jxl => (None, jxl::read_header(bytes)?),
        ImageFormat::Tiff | ImageFormat::Bmp | ImageFormat::Ico => {
            (None, bitmap::read_header(bytes, format)?)
        }
        ImageFormat::Svg => (None, svg::read_header(bytes)?),
    };
    let orientation = facts.orientation.unwrap_or_else(|| {
        facts
            .exif
            .clone()
            .and_then(|r| bytes.get(r))
            .map_or(1, container::exif_orientation)
    });
    let info = ProbeInfo {
        format,
        width: facts.width,
        height: facts.height,
        frames: facts.frames,
        orientation,
        has_alpha: facts.has_alpha,
    };
    if info.width == 0 || info.height == 0 {
        return Err(corrupt(format, "the header gives a zero width or height"));
    }
    let pixels = info.pixels().max(facts.max_frame_pixels);
    if pixels > limits.max_pixels {
        return Err(EngineError::TooManyPixels {
            width: info.width,
            height: info.height,
            pixels,
            max: limits.max_pixels,
        });
    }
    if info.frames > limits.max_frames {
        return Err(EngineError::TooManyFrames {
            frames: info.frames,
            max: limits.max_frames,
        });
    }
    Ok(Header {
        info,
        jpeg,
        facts,
        bytes: bytes.len(),
    })
}

/// Read the header only and check every limit that can be checked before decoding: file size,
/// pixel count (also of every GIF/WebP frame), frame count; an SVG's structure (see `svg`).
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<ProbeInfo, EngineError> {
    read_header(bytes, limits).map(|h| h.info)
}

/// Where the output comes from and what it is, all in the stored (un-rotated) orientation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Output size (of the resize: with `smart`, the whole image scaled to cover the box).
    pub out_w: u32,
    pub out_h: u32,
    /// The source rectangle (in source pixels, stored orientation) that is scaled onto the output.
    pub crop_x: f64,
    pub crop_y: f64,
    pub crop_w: f64,
    pub crop_h: f64,
    /// `gravity=smart`: the box (displayed orientation) to cut from the upright resized image
    /// where the attention measure says.
    pub smart: Option<(u32, u32)>,
}

impl Plan {
    /// The smallest decoded size that still has at least one source pixel per output pixel.
    fn needed(&self, w: u32, h: u32) -> (u32, u32) {
        let nw = (f64::from(self.out_w) * f64::from(w) / self.crop_w).ceil();
        let nh = (f64::from(self.out_h) * f64::from(h) / self.crop_h).ceil();
        ((nw as u32).clamp(1, w), (nh as u32).clamp(1, h))
    }
}

/// The requested box in the stored orientation: width and height swap when the EXIF orientation
/// turns the image by 90 degrees.
fn stored_box(options: &ThumbnailOptions, orientation: u8) -> (u32, u32) {
    if orientation >= 5 {
        (options.height, options.width)
    } else {
        (options.width, options.height)
    }
}

/// The part of the source libvips' `thumbnail` samples a JPEG on, in source pixels: its loader
/// shrinks by 2, 4 or 8 whenever that still leaves the resize at least 2x, drops the last partial
/// block of pixels (r03, 1622 wide, is 202 columns at 1/8: its last 6 source columns are not
/// used), and every size after that is computed from the shrunk image.
///
/// Planning on the same grid makes our thumbnails sample the points libvips' do, whatever scale
/// we decode at ourselves. Neither convention is more right than the other (they differ by less
/// than an output pixel); agreeing matters because on texture-heavy photos a drift of a tenth of a
/// pixel between two thumbnails costs more SSIM than any difference of resampling kernel (r03
/// 100x100 cover compared as PNG: 0.960 with our own rounding, above 0.99 on libvips' grid).
fn reference_grid(info: &ProbeInfo, options: &ThumbnailOptions) -> (u32, u32) {
    let (w, h) = (info.width, info.height);
    if info.format != ImageFormat::Jpeg {
        return (w, h);
    }
    let (bw, bh) = stored_box(options, info.orientation);
    let (hs, vs) = (f64::from(w) / f64::from(bw), f64::from(h) / f64::from(bh));
    let shrink = match options.fit {
        Fit::Cover | Fit::Fill => hs.min(vs),
        Fit::Contain => hs.max(vs),
    };
    // libvips' vips_thumbnail_find_jpegshrink.
    let s = if shrink >= 16.0 {
        8
    } else if shrink >= 8.0 {
        4
    } else if shrink >= 4.0 {
        2
    } else {
        1
    };
    ((w / s).max(1) * s, (h / s).max(1) * s)
}

/// What to cut and scale, for a `w` x `h` source sampled on the `grid` (see [`reference_grid`]).
///
/// As in libvips, the scale comes from the grid's size, the output's size is rounded from it, and
/// the scaled image is centred on the grid: an output that is rounded moves every sample by half
/// the difference rather than stretching the image.
fn plan(w: u32, h: u32, grid: (u32, u32), options: &ThumbnailOptions, orientation: u8) -> Plan {
    let (bw, bh) = stored_box(options, orientation);
    let (gw, gh) = (f64::from(grid.0.clamp(1, w)), f64::from(grid.1.clamp(1, h)));
    // Where `scaled` output pixels at `scale` start when they are centred on the grid.
    let origin = |grid: f64, scaled: u32, scale: f64| (grid - f64::from(scaled) / scale) / 2.0;
    let fitted = |out_w: u32, out_h: u32, sx: f64, sy: f64| Plan {
        out_w,
        out_h,
        crop_x: origin(gw, out_w, sx),
        crop_y: origin(gh, out_h, sy),
        crop_w: f64::from(out_w) / sx,
        crop_h: f64::from(out_h) / sy,
        smart: None,
    };
    match options.fit {
        Fit::Cover => {
            let (tw, th) = cover_box(w, h, bw, bh, options.upscale);
            let scale = f64::max(f64::from(tw) / gw, f64::from(th) / gh);
            let covered = |grid: f64, wanted: u32| ((grid * scale).round() as u32).max(wanted);
            let Some((anchor_x, anchor_y)) = stored_anchors(options.gravity, orientation) else {
                // Smart: scale the whole image to cover the box; the window is cut after decoding.
                let (cw, ch) = (covered(gw, tw), covered(gh, th));
                let display = if orientation >= 5 { (th, tw) } else { (tw, th) };
                return Plan {
                    smart: Some(display),
                    ..fitted(cw, ch, scale, scale)
                };
            };
            // Scale the whole image to cover the box, then cut the box out at whole output
            // pixels where the gravity says; the centre rounds towards the top left of the
            // *displayed* image: the framing libvips (thumbnail + centre crop) produces, so the
            // two agree pixel for pixel instead of half a pixel apart.
            let (reverse_x, reverse_y) = reversed_axes(orientation);
            let axis = |grid: f64, wanted: u32, reverse: bool, anchor: Anchor| {
                let covered = covered(grid, wanted);
                let spare = covered - wanted;
                let first = match (anchor, reverse) {
                    (Anchor::Middle, false) => spare / 2,
                    (Anchor::Middle, true) => spare - spare / 2,
                    (Anchor::Start, false) | (Anchor::End, true) => 0,
                    (Anchor::End, false) | (Anchor::Start, true) => spare,
                };
                origin(grid, covered, scale) + f64::from(first) / scale
            };
            Plan {
                out_w: tw,
                out_h: th,
                crop_x: axis(gw, tw, reverse_x, anchor_x),
                crop_y: axis(gh, th, reverse_y, anchor_y),
                crop_w: f64::from(tw) / scale,
                crop_h: f64::from(th) / scale,
                smart: None,
            }
        }
        Fit::Contain => {
            // One scale for both axes; the rounded sizes may differ from it by half a pixel.
            let scale = contain_scale(grid.0.clamp(1, w), grid.1.clamp(1, h), bw, bh, options.upscale);
            let (tw, th) = contain_size(w, h, bw, bh, options.upscale);
            fitted(tw, th, scale, scale)
        }
        Fit::Fill => {
            let (tw, th) = if options.upscale {
                (bw, bh)
            } else {
                (bw.min(w), bh.min(h))
            };
            fitted(tw, th, f64::from(tw) / gw, f64::from(th) / gh)
        }
    }
}

/// The gravity's anchor along each stored axis (x, y): a stored axis is the displayed x or y
/// axis, depending on whether the orientation turns the image by 90 degrees. `None`: smart.
fn stored_anchors(gravity: Gravity, orientation: u8) -> Option<(Anchor, Anchor)> {
    let (x, y) = gravity.anchors()?;
    Some(if orientation >= 5 { (y, x) } else { (x, y) })
}

/// For each stored axis (x, y): whether it runs against the displayed axis it becomes once the
/// EXIF orientation is applied.
fn reversed_axes(orientation: u8) -> (bool, bool) {
    match orientation {
        2 => (true, false),
        3 => (true, true),
        4 => (false, true),
        // Rotated 90° clockwise: stored rows become displayed columns from right to left.
        6 => (false, true),
        7 => (true, true),
        // Rotated 90° anticlockwise: stored columns become displayed rows from bottom to top.
        8 => (true, false),
        _ => (false, false),
    }
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

/// The scale for `contain`: the largest that fits the box, at most 1 unless upscaling.
fn contain_scale(w: u32, h: u32, bw: u32, bh: u32, upscale: bool) -> f64 {
    let scale = f64::min(f64::from(bw) / f64::from(w), f64::from(bh) / f64::from(h));
    if scale > 1.0 && !upscale { 1.0 } else { scale }
}

/// The output size for `contain`: the largest size with the source's aspect ratio inside the box.
fn contain_size(w: u32, h: u32, bw: u32, bh: u32, upscale: bool) -> (u32, u32) {
    let scale = contain_scale(w, h, bw, bh, upscale);
    let tw = ((f64::from(w) * scale).round() as u32).max(1);
    let th = ((f64::from(h) * scale).round() as u32).max(1);
    (tw, th)
}

/// An upper bound of the bytes one render allocates besides the input, from the header alone.
fn memory_needed(hdr: &Header, plan: &Plan, dct_scale: u32, box_factor: u32) -> u64 {
    let (w, h) = (u64::from(hdr.info.width), u64::from(hdr.info.height));
    let decoded = match (hdr.info.format, &hdr.jpeg) {
        (ImageFormat::Jpeg, Some(j)) => {
            let (sw, sh) = (w.div_ceil(u64::from(dct_scale)), h.div_ceil(u64::from(dct_scale)));
            if dct_scale == 8 && j.huffman.is_some() {
                jpeg::dc_memory(j)
            } else if (dct_scale == 2 || dct_scale == 4) && j.huffman.is_some() {
                jpeg::scaled_memory(j, dct_scale)
            } else {
                // jpeg-decoder: whole-image coefficients for progressive files, a few rows of
                // planes otherwise, plus the output and its colour-converted copy.
                let coeffs = if j.is_progressive() {
                    (w + 16) * (h + 16) * 2 * 3
                } else {
                    0
                };
                coeffs + sw * sh * 4 * 3 + (w + 16) * 16 * 4
            }
        }
        (ImageFormat::Png, _) if !hdr.facts.interlaced => {
            let f = u64::from(box_factor.max(1));
            // Two rows of 16-bit RGBA, the box accumulators and the shrunk image.
            w * 8 * 2 + w * 16 + (w / f + 1) * (h / f + 1) * 4
        }
        // Interlaced PNG: the full image at up to 8 bytes per pixel plus a copy.
        (ImageFormat::Png, _) => w * h * 8 + w * h * 4,
        // GIF: the canvas and the largest frame as RGBA, plus the canvas copy.
        (ImageFormat::Gif, _) => w * h * 8 + hdr.facts.max_frame_pixels * 4,
        // WebP: YUV/ARGB working planes and the RGBA output.
        (ImageFormat::Webp, _) => w * h * 4 + hdr.facts.max_frame_pixels * 6,
        (ImageFormat::Heic | ImageFormat::Avif, _) => heif::memory(w, h, hdr.facts.bits_per_sample),
        // At 1/8 a JPEG XL picture comes from its LF image (see `jxl::decode`).
        (ImageFormat::Jxl, _) if dct_scale == 8 => jxl::lf_memory(w, h, hdr.bytes as u64),
        (ImageFormat::Jxl, _) => jxl::memory(w, h),
        // TIFF strip by strip: a band, and the box-shrunk picture; other layouts whole.
        (ImageFormat::Tiff, _) => {
            let f = u64::from(box_factor.max(1));
            hdr.facts.band_bytes.map_or_else(
                || bitmap::memory(w, h, hdr.facts.bits_per_sample),
                |band| band + (w / f + 1) * (h / f + 1) * 4,
            )
        }
        (ImageFormat::Bmp | ImageFormat::Ico, _) => bitmap::memory(w, h, hdr.facts.bits_per_sample),
        // SVG is drawn at the output size: nothing scales with the declared size.
        (ImageFormat::Svg, _) => return svg::memory(hdr.bytes, u64::from(plan.out_w), u64::from(plan.out_h)),
        (ImageFormat::Jpeg, None) => 0,
    };
    let out = u64::from(plan.out_w) * u64::from(plan.out_h) * 4;
    // Resizer: the horizontal pass keeps output width x source height.
    decoded + u64::from(plan.out_w) * h * 4 + out * 4 + 64 * 1024
}

/// How much (at least, per axis) the Lanczos pass has left to shrink after JPEG shrink-on-load at
/// 1/2 or 1/4.
const JPEG_LANCZOS_MARGIN: f64 = 1.25;

/// Turn image bytes into a thumbnail. The one entry point every caller uses.
pub fn render(bytes: &[u8], options: &ThumbnailOptions, limits: &Limits) -> Result<Thumbnail, EngineError> {
    options
        .validate()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    let hdr = read_header(bytes, limits)?;
    let info = hdr.info;
    // A vector image is drawn at the requested size: it loses nothing by being enlarged.
    let planned = ThumbnailOptions {
        upscale: options.upscale || info.format == ImageFormat::Svg,
        ..*options
    };
    let plan = plan(
        info.width,
        info.height,
        reference_grid(&info, options),
        &planned,
        info.orientation,
    );
    let (need_w, need_h) = plan.needed(info.width, info.height);

    // Shrink-on-load: the smallest DCT scale that covers what the output needs. At 1/2 and 1/4
    // (reduced-size IDCTs) the Lanczos pass must also be left at least JPEG_LANCZOS_MARGIN to
    // shrink, because the reduced IDCT alone aliases: r03 (1622 wide) to 400 at 1/4 leaves 1.01x
    // and its SSIM against libvips falls to 0.88; at 1/2 it is 0.97. At 1/8 each pixel is its
    // block's exact mean (a box filter), which needs no margin (r04 to 400 at 1.2x: 0.96).
    let dct_scale = [8u32, 4, 2]
        .into_iter()
        .find(|&n| {
            let margin = if n == 8 { 1.0 } else { JPEG_LANCZOS_MARGIN };
            let covers = |decoded: u32, needed: u32| f64::from(decoded) >= f64::from(needed) * margin;
            covers(info.width.div_ceil(n), need_w) && covers(info.height.div_ceil(n), need_h)
        })
        .unwrap_or(1);
    // Integer box pre-shrink keeps at least twice the needed size for the Lanczos pass.
    let box_factor = (info.width / need_w.saturating_mul(2).max(1))
        .min(info.height / need_h.saturating_mul(2).max(1))
        .max(1);
    let format = options.output_format(info.format);
    let animate = options.animated
        && info.frames > 1
        && format.can_animate()
        && matches!(info.format, ImageFormat::Gif | ImageFormat::Webp);
    let needed = if animate {
        animation::memory(&info, hdr.facts.max_frame_pixels, &plan)
    } else {
        memory_needed(&hdr, &plan, dct_scale, box_factor)
    };
    if needed > limits.max_memory_bytes {
        return Err(EngineError::MemoryLimit {
            needed,
            max: limits.max_memory_bytes,
        });
    }
    if animate {
        let icc = if info.format == ImageFormat::Webp {
            icc_from_webp(bytes)
        } else {
            None
        };
        return animation::render(
            bytes,
            &info,
            &plan,
            hdr.facts.loop_count,
            icc.as_deref(),
            format,
            options.quality,
            limits,
        );
    }

    let (resized, icc, colour) = if info.format == ImageFormat::Webp && info.frames <= 1 {
        // Resized straight from libwebp's buffer: a copy of a full-size decode is what costs most
        // memory here.
        let decoded = decode_webp(bytes)?;
        let raster = webp_pixels(&decoded)?;
        (
            resize(&raster, &plan, info.width, info.height)?,
            icc_from_webp(bytes),
            Colour::Rgb,
        )
    } else if let Some(planes) = decode_jpeg_planes(bytes, hdr.jpeg.as_ref(), dct_scale)? {
        let icc = hdr.jpeg.as_ref().and_then(|h| h.icc_profile(bytes));
        if format == OutputFormat::Jpeg
            && icc.is_none()
            && plan.smart.is_none()
            && halved_chroma_fits(&plan, options, info.orientation)
        {
            return encode_ycc_420(
                resize_planes_420(&planes, &plan)?,
                info.orientation,
                options.quality,
            );
        }
        (resize_planes(&planes, &plan)?, icc, Colour::YCbCr)
    } else if info.format == ImageFormat::Svg {
        let crop = (plan.crop_x, plan.crop_y, plan.crop_w, plan.crop_h);
        let drawn = svg::render(
            bytes,
            (info.width, info.height),
            crop,
            (plan.out_w, plan.out_h),
            limits,
        )?;
        (drawn, None, Colour::Rgb)
    } else {
        let (raster, icc) = match info.format {
            ImageFormat::Jpeg => decode_jpeg(bytes, hdr.jpeg.as_ref(), dct_scale, limits)?,
            ImageFormat::Png if !hdr.facts.interlaced => decode_png_streaming(bytes, box_factor, limits)?,
            ImageFormat::Heic | ImageFormat::Avif => {
                heif::decode(bytes, (need_w, need_h), limits, info.format)?
            }
            ImageFormat::Jxl => (jxl::decode(bytes, limits, dct_scale == 8)?, None),
            ImageFormat::Tiff => match tiff_strips::decode(bytes, box_factor, limits)? {
                Some(decoded) => decoded,
                None => decode_with_image(bytes, info.format, limits)?,
            },
            _ => decode_with_image(bytes, info.format, limits)?,
        };
        let resized = if matches!(info.format, ImageFormat::Jpeg | ImageFormat::Jxl) {
            let (sx, sy) = (
                jpeg_per_source(raster.width, info.width),
                jpeg_per_source(raster.height, info.height),
            );
            resize_scaled(&raster.view(), &plan, sx, sy)?
        } else {
            resize(&raster.view(), &plan, info.width, info.height)?
        };
        (resized, icc, Colour::Rgb)
    };
    let mut out = orient(resized, info.orientation);
    if let Some((w, h)) = plan.smart {
        let (x, y) = smart_window(&out, w, h, colour == Colour::YCbCr);
        out = crop_window(&out, x, y, w as usize, h as usize);
    }
    // A YCbCr JPEG resampled in YCbCr goes back out as JPEG without ever being RGB; anything
    // else (another format, or a profile to convert from) is converted at the output size.
    let colour = if colour == Colour::YCbCr && (format != OutputFormat::Jpeg || icc.is_some()) {
        ycbcr_to_rgb(&mut out);
        Colour::Rgb
    } else {
        colour
    };
    if let Some(icc) = icc {
        to_srgb(&mut out, &icc);
    }
    encode(out, colour, format, options.quality)
}

/// What the samples of a 3-channel [`Raster`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Rgb,
    /// JFIF YCbCr, as a JPEG codes it.
    YCbCr,
}

/// Where `gravity=smart` cuts a `w` x `h` window from an upright resized image (YCbCr when
/// it came from a JPEG's planes, else grey, grey+alpha, RGB or RGBA).
pub(crate) fn smart_window(img: &Raster, w: u32, h: u32, ycbcr: bool) -> (usize, usize) {
    let rgb = |px: &[u8]| -> [f64; 3] {
        let v = match *px {
            [y, cb, cr] if ycbcr => jpeg::ycc_to_rgb(y, cb, cr),
            [g] | [g, _] => [g, g, g],
            [r, g, b, ..] => [r, g, b],
            _ => [0, 0, 0],
        };
        v.map(f64::from)
    };
    smartcrop::attention_window(img, w as usize, h as usize, rgb)
}

/// The `w` x `h` window of `img` at (`x`, `y`).
pub(crate) fn crop_window(img: &Raster, x: usize, y: usize, w: usize, h: usize) -> Raster {
    smartcrop::crop(img, x, y, w, h)
}

/// A YCbCr JPEG at 1/2 or 1/4 scale as its three planes, each at its own resolution; `None`
/// when the file or scale takes the RGB route (grey, RGB, CMYK, 1/1, 1/8, arithmetic coding).
///
/// Resampling the planes straight to the output size and converting only there saves the
/// full-size work the RGB route does: chroma upsampling (or larger chroma IDCTs), colour
/// conversion, a three-channel resize, and the JPEG encoder's conversion back to YCbCr.
fn decode_jpeg_planes(
    bytes: &[u8],
    header: Option<&JpegHeader>,
    scale: u32,
) -> Result<Option<Vec<jpeg::Plane>>, EngineError> {
    let Some(header) = header else {
        return Ok(None);
    };
    if !matches!(scale, 2 | 4)
        || header.huffman.is_none()
        || header.components.len() != 3
        || jpeg::is_rgb(header)
    {
        return Ok(None);
    }
    jpeg::decode_scaled_planes(bytes, header, scale)
        .map(Some)
        .map_err(|e| corrupt(ImageFormat::Jpeg, e))
}

/// Resample each plane onto the output grid (the plan's crop maps onto every plane in
/// proportion, which keeps JFIF's centred chroma siting) and interleave them.
fn resize_planes(planes: &[jpeg::Plane], plan: &Plan) -> Result<Raster, EngineError> {
    let (w, h) = (plan.out_w as usize, plan.out_h as usize);
    let channels = planes.len();
    let mut data = vec![0u8; w * h * channels];
    for (i, p) in planes.iter().enumerate() {
        let resized = resize_plane(p, plan)?;
        for (out, &v) in data.iter_mut().skip(i).step_by(channels).zip(&resized.data) {
            *out = v;
        }
    }
    Ok(Raster {
        width: w,
        height: h,
        channels,
        data,
    })
}

/// One plane onto the plan's output; the crop maps onto it by the plane's own resolution.
fn resize_plane(p: &jpeg::Plane, plan: &Plan) -> Result<Raster, EngineError> {
    let view = RasterView {
        width: p.width,
        height: p.height,
        channels: 1,
        data: &p.data,
    };
    resize_scaled(&view, plan, p.x_per_source, p.y_per_source)
}

/// Below this quality the JPEG encoder halves the chroma both ways (4:2:0), as libjpeg does.
const CHROMA_420_BELOW_QUALITY: u8 = 90;

/// Whether a 4:2:0 thumbnail can be encoded from chroma planes resampled straight to half the
/// output size: the encoder subsamples at this quality, and no flip or rotation moves an odd
/// edge (where the last chroma sample covers one luma column) to the start of an axis.
fn halved_chroma_fits(plan: &Plan, options: &ThumbnailOptions, orientation: u8) -> bool {
    let (reverse_x, reverse_y) = reversed_axes(orientation);
    options.quality < CHROMA_420_BELOW_QUALITY
        && (!reverse_x || plan.out_w.is_multiple_of(2))
        && (!reverse_y || plan.out_h.is_multiple_of(2))
}

/// A YCbCr thumbnail whose chroma is already at 4:2:0 resolution (half the luma's size, rounded
/// up). Resampling chroma straight to that size spares a full-size chroma resize, interleaving
/// and the encoder's 2x2 averaging of it.
struct Ycc420 {
    y: Raster,
    cb: Raster,
    cr: Raster,
}

/// [`resize_planes`] for a 4:2:0 output: luma onto the plan's output, chroma onto half of it.
fn resize_planes_420(planes: &[jpeg::Plane], plan: &Plan) -> Result<Ycc420, EngineError> {
    let (cw, ch) = (plan.out_w.div_ceil(2), plan.out_h.div_ceil(2));
    // A chroma sample covers two output pixels each way, so an odd output's last one reaches
    // one output pixel past the crop.
    let chroma_plan = Plan {
        out_w: cw,
        out_h: ch,
        crop_w: plan.crop_w * f64::from(2 * cw) / f64::from(plan.out_w),
        crop_h: plan.crop_h * f64::from(2 * ch) / f64::from(plan.out_h),
        ..*plan
    };
    let [y, cb, cr] = planes else {
        return Err(EngineError::Internal("YCbCr JPEG without three planes".into()));
    };
    Ok(Ycc420 {
        y: resize_plane(y, plan)?,
        cb: resize_plane(cb, &chroma_plan)?,
        cr: resize_plane(cr, &chroma_plan)?,
    })
}

/// Hands [`Ycc420`] planes to the JPEG encoder row by row. The encoder takes full-size rows and
/// averages each 2x2 block of chroma itself: every chroma sample is given twice across and (on
/// consecutive rows) twice down, so each block averages to exactly that sample.
struct Ycc420Rows<'a>(&'a Ycc420);

impl jpeg_encoder::ImageBuffer for Ycc420Rows<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.0.y.width as u16
    }

    fn height(&self) -> u16 {
        self.0.y.height as u16
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, row) = (self.0.y.width, usize::from(row));
        buffers[0].extend_from_slice(&self.0.y.data[row * w..(row + 1) * w]);
        for (buffer, plane) in buffers[1..3].iter_mut().zip([&self.0.cb, &self.0.cr]) {
            let cw = plane.width;
            let line = &plane.data[(row / 2) * cw..(row / 2 + 1) * cw];
            buffer.extend(line.iter().flat_map(|&v| [v, v]).take(w));
        }
    }
}

/// A JPEG's width and height, which must fit in 16 bits.
fn jpeg_size(width: u32, height: u32) -> Result<(u16, u16), EngineError> {
    let too_large = || EngineError::Internal(format!("{width}x{height} exceeds JPEG's 65535"));
    Ok((
        u16::try_from(width).map_err(|_| too_large())?,
        u16::try_from(height).map_err(|_| too_large())?,
    ))
}

/// The JPEG encoder at `quality`, averaging each 2x2 block for 4:2:0 chroma as libjpeg does
/// rather than taking its top-left pixel: no colour fringes on thin coloured lines.
fn new_jpeg_encoder(out: &mut Vec<u8>, quality: u8) -> jpeg_encoder::Encoder<&mut Vec<u8>> {
    let mut encoder = jpeg_encoder::Encoder::new(out, quality);
    encoder.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    encoder
}

fn encode_ycc_420(planes: Ycc420, orientation: u8, quality: u8) -> Result<Thumbnail, EngineError> {
    let planes = Ycc420 {
        y: orient(planes.y, orientation),
        cb: orient(planes.cb, orientation),
        cr: orient(planes.cr, orientation),
    };
    let (width, height) = (planes.y.width as u32, planes.y.height as u32);
    jpeg_size(width, height)?;
    let preview = preview::of_planes_420(&planes.y, &planes.cb, &planes.cr);
    let mut out = Vec::new();
    let mut encoder = new_jpeg_encoder(&mut out, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder
        .encode_image(Ycc420Rows(&planes))
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(Thumbnail {
        bytes: out,
        format: OutputFormat::Jpeg,
        width,
        height,
        preview,
    })
}

fn ycbcr_to_rgb(r: &mut Raster) {
    if r.channels != 3 {
        return;
    }
    for px in r.data.chunks_exact_mut(3) {
        let rgb = jpeg::ycc_to_rgb(px[0], px[1], px[2]);
        px.copy_from_slice(&rgb);
    }
}

fn decode_jpeg(
    bytes: &[u8],
    header: Option<&JpegHeader>,
    scale: u32,
    limits: &Limits,
) -> Result<(Raster, Option<Vec<u8>>), EngineError> {
    let f = ImageFormat::Jpeg;
    let header = header.ok_or_else(|| EngineError::Internal("JPEG header missing".into()))?;
    let adobe = header.adobe.is_some();
    let icc = header.icc_profile(bytes);
    if header.huffman.is_some() && matches!(scale, 2 | 4 | 8) {
        let img = if scale == 8 {
            jpeg::decode_dc(bytes, header)
        } else {
            jpeg::decode_scaled(bytes, header, scale)
        }
        .map_err(|e| corrupt(f, e))?;
        let raster = Raster {
            width: img.width,
            height: img.height,
            channels: img.channels,
            data: img.data,
        };
        return Ok((cmyk_to_rgb(raster, adobe, false), icc));
    }
    Ok((decode_with_jpeg_decoder(bytes, header, scale, limits)?, icc))
}

/// The fallback: `jpeg-decoder`, which decodes at full size or scales after a full IDCT.
fn decode_with_jpeg_decoder(
    bytes: &[u8],
    header: &JpegHeader,
    scale: u32,
    limits: &Limits,
) -> Result<Raster, EngineError> {
    let f = ImageFormat::Jpeg;
    let adobe = header.adobe.is_some();
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.set_max_decoding_buffer_size(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX));
    dec.read_info().map_err(|e| corrupt(f, e))?;
    let (w, h) = (u32::from(header.width), u32::from(header.height));
    let k = 8 / scale;
    let (sw, sh) = dec
        .scale((w * k).div_ceil(8) as u16, (h * k).div_ceil(8) as u16)
        .map_err(|e| corrupt(f, e))?;
    let pixels = dec.decode().map_err(|e| corrupt(f, e))?;
    let pf = dec.info().map(|i| i.pixel_format);
    let (channels, inverted) = match pf {
        Some(jpeg_decoder::PixelFormat::L8) => (1, false),
        Some(jpeg_decoder::PixelFormat::RGB24) => (3, false),
        Some(jpeg_decoder::PixelFormat::CMYK32) => (4, true),
        _ => return Err(corrupt(f, "unsupported JPEG sample precision")),
    };
    let raster = Raster {
        width: usize::from(sw),
        height: usize::from(sh),
        channels,
        data: pixels,
    };
    if raster.data.len() < raster.width * raster.height * channels {
        return Err(corrupt(
            f,
            "decoder returned fewer pixels than the header promises",
        ));
    }
    Ok(cmyk_to_rgb(raster, adobe, inverted))
}

/// For tests and tools: decode a JPEG at 1/`scale` (1, 2, 4 or 8) as the pipeline does, or
/// with `jpeg-decoder` when `reference` is set. Returns (width, height, channels, pixels) after
/// CMYK conversion, so grey (1) or RGB (3).
#[doc(hidden)]
pub fn decode_jpeg_scaled(
    bytes: &[u8],
    scale: u32,
    reference: bool,
) -> Result<(usize, usize, usize, Vec<u8>), EngineError> {
    let limits = Limits::default();
    let hdr = read_header(bytes, &limits)?;
    let header = hdr
        .jpeg
        .as_ref()
        .ok_or_else(|| corrupt(hdr.info.format, "not a JPEG"))?;
    let raster = if reference {
        decode_with_jpeg_decoder(bytes, header, scale, &limits)?
    } else {
        decode_jpeg(bytes, Some(header), scale, &limits)?.0
    };
    Ok((raster.width, raster.height, raster.channels, raster.data))
}

/// CMYK to RGB on the (already small) decoded image. `samples_inverted`: the samples are
/// 255 − libjpeg's (jpeg-decoder's convention). Files with an Adobe APP14 marker store inverted
/// CMYK (Photoshop's and ImageMagick's convention, honoured by libjpeg-based tools).
fn cmyk_to_rgb(r: Raster, adobe: bool, samples_inverted: bool) -> Raster {
    if r.channels != 4 {
        return r;
    }
    // `ink` true: the sample is the ink amount (0 = no ink).
    let ink = adobe == samples_inverted;
    let mut data = Vec::with_capacity(r.width * r.height * 3);
    for px in r.data.chunks_exact(4) {
        let paper = |v: u8| u32::from(if ink { 255 - v } else { v });
        let k = paper(px[3]);
        for &c in &px[..3] {
            data.push(((paper(c) * k + 127) / 255) as u8);
        }
    }
    Raster {
        width: r.width,
        height: r.height,
        channels: 3,
        data,
    }
}

/// Non-interlaced PNG: inflate row by row and box-shrink on the fly, so a full-size image is
/// never held in memory.
fn decode_png_streaming(
    bytes: &[u8],
    factor: u32,
    limits: &Limits,
) -> Result<(Raster, Option<Vec<u8>>), EngineError> {
    let f = ImageFormat::Png;
    let mut dec = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX),
        },
    );
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    dec.set_ignore_text_chunk(true);
    let mut reader = dec.read_info().map_err(|e| corrupt(f, e))?;
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    let channels = match reader.output_color_type().0 {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(corrupt(f, "palette was not expanded")),
    };
    let mut shrink = BoxShrink::new(w, h, factor as usize, channels);
    let row_len = (w * channels).max(shrink.row_len());
    let mut read = 0;
    for y in 0..h {
        let row = match reader.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) if y == 0 => return Err(corrupt(f, e)),
            Err(e) => return Err(corrupt(f, format!("{e} (after {y} of {h} rows)"))),
        };
        let data = row.data();
        if data.len() < row_len {
            return Err(corrupt(f, "short row"));
        }
        shrink.push_row(data);
        read += 1;
    }
    let raster = shrink
        .finish()
        .ok_or_else(|| corrupt(f, format!("image data ends after {read} of {h} rows")))?;
    Ok((raster, icc))
}

/// Still WebP through libwebp (the `webp` crate): several times faster than the pure-Rust
/// decoder on large lossy images. Animated WebP goes to the `image` crate (first frame).
fn decode_webp(bytes: &[u8]) -> Result<webp::WebPImage, EngineError> {
    webp::Decoder::new(bytes)
        .decode()
        .ok_or_else(|| corrupt(ImageFormat::Webp, "libwebp could not decode the image"))
}

/// The pixels of a libwebp decode, borrowed (RGB, or RGBA when the image has alpha).
fn webp_pixels(img: &webp::WebPImage) -> Result<RasterView<'_>, EngineError> {
    let channels = if img.is_alpha() { 4 } else { 3 };
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: &[u8] = img;
    let data = data.get(..width * height * channels).ok_or_else(|| {
        corrupt(
            ImageFormat::Webp,
            "decoder returned fewer pixels than the header promises",
        )
    })?;
    Ok(RasterView {
        width,
        height,
        channels,
        data,
    })
}

fn icc_from_webp(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        if &bytes[pos..pos + 4] == b"ICCP" {
            return bytes.get(pos + 8..pos + 8 + len).map(<[u8]>::to_vec);
        }
        pos = pos.checked_add(8 + len + (len & 1))?;
    }
    None
}

/// Animated WebP, GIF, interlaced PNG, TIFF, BMP and ICO through the `image` crate (first
/// frame of animations; TIFF's first page).
pub(crate) fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    limits: &Limits,
) -> Result<(Raster, Option<Vec<u8>>), EngineError> {
    let fmt = match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Ico => image::ImageFormat::Ico,
        other => {
            return Err(EngineError::Internal(format!(
                "{other} is not read by the image crate"
            )));
        }
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_memory_bytes);
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(format, e))?;
    let icc = decoder.icc_profile().ok().flatten();
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| corrupt(format, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let color = img.color();
    let (channels, data) = match (color.has_color(), color.has_alpha()) {
        (false, false) => (1, img.into_luma8().into_raw()),
        (false, true) => (2, img.into_luma_alpha8().into_raw()),
        (true, false) => (3, img.into_rgb8().into_raw()),
        (true, true) => (4, img.into_rgba8().into_raw()),
    };
    Ok((
        Raster {
            width,
            height,
            channels,
            data,
        },
        icc,
    ))
}

fn pixel_type(channels: usize) -> fir::PixelType {
    match channels {
        1 => fir::PixelType::U8,
        2 => fir::PixelType::U8x2,
        3 => fir::PixelType::U8x3,
        _ => fir::PixelType::U8x4,
    }
}

/// Lanczos3 from the decoded (possibly pre-shrunk) image to the output, cropping the `plan`
/// rectangle. `src_w`/`src_h` are the full source dimensions the plan was made for.
pub(crate) fn resize(r: &RasterView<'_>, plan: &Plan, src_w: u32, src_h: u32) -> Result<Raster, EngineError> {
    let (sx, sy) = (
        r.width as f64 / f64::from(src_w),
        r.height as f64 / f64::from(src_h),
    );
    resize_scaled(r, plan, sx, sy)
}

/// Samples per source pixel of a JPEG axis `source` pixels long decoded to `decoded` samples. At
/// 1/2, 1/4 and 1/8 libjpeg rounds the count up and every sample stands for exactly 2, 4 or 8
/// source pixels, the last one included (the grid libvips samples on, see [`reference_grid`]).
/// A JPEG XL LF image is the same at 1/8.
fn jpeg_per_source(decoded: usize, source: u32) -> f64 {
    [2u32, 4, 8]
        .into_iter()
        .find(|&s| s < source && source.div_ceil(s) as usize == decoded)
        .map_or(decoded as f64 / f64::from(source), |s| 1.0 / f64::from(s))
}

/// [`resize`] of a raster that has `sx` x `sy` samples per source pixel (exact for subsampled
/// planes, whose sizes are rounded up).
fn resize_scaled(r: &RasterView<'_>, plan: &Plan, sx: f64, sy: f64) -> Result<Raster, EngineError> {
    let internal = |e: &dyn std::fmt::Display| EngineError::Internal(format!("resize: {e}"));
    let pt = pixel_type(r.channels);
    let src =
        fir::images::ImageRef::new(r.width as u32, r.height as u32, r.data, pt).map_err(|e| internal(&e))?;
    // The plan's grid can reach a fraction of a sample past the decoded image (see
    // `reference_grid`): keep where the crop starts and trim its far end.
    let (w, h) = (r.width as f64, r.height as f64);
    let left = (plan.crop_x * sx).clamp(0.0, w - 1.0);
    let top = (plan.crop_y * sy).clamp(0.0, h - 1.0);
    let cw = (plan.crop_w * sx).min(w - left);
    let ch = (plan.crop_h * sy).min(h - top);
    let mut dst = fir::images::Image::new(plan.out_w, plan.out_h, pt);
    let opts = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
        .crop(left, top, cw, ch);
    fir::Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| internal(&e))?;
    Ok(Raster {
        width: plan.out_w as usize,
        height: plan.out_h as usize,
        channels: r.channels,
        data: dst.into_vec(),
    })
}

/// Apply the EXIF orientation (1–8) so the result is upright.
pub(crate) fn orient(r: Raster, orientation: u8) -> Raster {
    if !(2..=8).contains(&orientation) {
        return r;
    }
    let (w, h, c) = (r.width, r.height, r.channels);
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut data = vec![0u8; r.data.len()];
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let s = (sy * w + sx) * c;
            let d = (y * ow + x) * c;
            data[d..d + c].copy_from_slice(&r.data[s..s + c]);
        }
    }
    Raster {
        width: ow,
        height: oh,
        channels: c,
        data,
    }
}

/// Convert RGB(A) pixels from an embedded ICC profile to sRGB. Profiles that cannot be used
/// (CMYK, grey, broken) are ignored: the pixels are then taken as sRGB, as browsers do.
pub(crate) fn to_srgb(r: &mut Raster, icc: &[u8]) {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let layout = match r.channels {
        3 => Layout::Rgb,
        4 => Layout::Rgba,
        _ => return,
    };
    let Ok(src) = ColorProfile::new_from_slice(icc) else {
        return;
    };
    if src.color_space != moxcms::DataColorSpace::Rgb {
        return;
    }
    let srgb = ColorProfile::new_srgb();
    let Ok(t) = src.create_transform_8bit(layout, &srgb, layout, TransformOptions::default()) else {
        return;
    };
    let mut out = vec![0u8; r.data.len()];
    if t.transform(&r.data, &mut out).is_ok() {
        r.data = out;
    }
}

fn encode(img: Raster, colour: Colour, format: OutputFormat, quality: u8) -> Result<Thumbnail, EngineError> {
    use image::{ExtendedColorType, ImageEncoder};
    let internal = |e: image::ImageError| EngineError::Internal(e.to_string());
    let (width, height) = (img.width as u32, img.height as u32);
    let preview = preview::of_raster(&img, colour == Colour::YCbCr);
    // A JPEG has no alpha: its picture is the one flattened on white.
    let preview = if format == OutputFormat::Jpeg {
        preview.flattened()
    } else {
        preview
    };
    let mut out = Vec::new();
    let color = |c: usize| match c {
        1 => ExtendedColorType::L8,
        2 => ExtendedColorType::La8,
        3 => ExtendedColorType::Rgb8,
        _ => ExtendedColorType::Rgba8,
    };
    match format {
        OutputFormat::Jpeg => {
            let img = flatten_on_white(img);
            let (w, h) = jpeg_size(width, height)?;
            let encoder = new_jpeg_encoder(&mut out, quality);
            let color = match (img.channels, colour) {
                (1, _) => jpeg_encoder::ColorType::Luma,
                (_, Colour::YCbCr) => jpeg_encoder::ColorType::Ycbcr,
                _ => jpeg_encoder::ColorType::Rgb,
            };
            encoder
                .encode(&img.data, w, h, color)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        OutputFormat::Png => {
            image::codecs::png::PngEncoder::new(&mut out)
                .write_image(&img.data, width, height, color(img.channels))
                .map_err(internal)?;
        }
        OutputFormat::Webp => {
            // Lossy WebP at the requested quality (libwebp), alpha kept. libwebp takes RGB(A) only.
            let img = to_rgb(img);
            let enc = if img.channels == 4 {
                webp::Encoder::from_rgba(&img.data, width, height)
            } else {
                webp::Encoder::from_rgb(&img.data, width, height)
            };
            out = enc.encode(f32::from(quality)).to_vec();
        }
        OutputFormat::Avif => out = encoders::avif(&to_rgb(img), quality)?,
        OutputFormat::Gif => out = encoders::gif_still(&img)?,
    }
    Ok(Thumbnail {
        bytes: out,
        format,
        width,
        height,
        preview,
    })
}

fn to_rgb(r: Raster) -> Raster {
    if r.channels > 2 {
        return r;
    }
    let alpha = r.channels == 2;
    let mut data = Vec::with_capacity(r.width * r.height * if alpha { 4 } else { 3 });
    for px in r.data.chunks_exact(r.channels) {
        data.extend_from_slice(&[px[0], px[0], px[0]]);
        if alpha {
            data.push(px[1]);
        }
    }
    Raster {
        channels: if alpha { 4 } else { 3 },
        data,
        ..r
    }
}

/// JPEG has no alpha: composite onto white (not black, as some tools do).
fn flatten_on_white(r: Raster) -> Raster {
    if r.channels != 2 && r.channels != 4 {
        return r;
    }
    let c = r.channels;
    let mut data = Vec::with_capacity(r.width * r.height * (c - 1));
    for px in r.data.chunks_exact(c) {
        let a = u32::from(px[c - 1]);
        for &v in &px[..c - 1] {
            data.push(((u32::from(v) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    Raster {
        channels: c - 1,
        data,
        ..r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
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
    fn cover_crops_at_whole_output_pixels_like_libvips() {
        let cover = ThumbnailOptions::default();
        // 1280x1024 covers 100x100 at 125x100: 25 spare columns, 12 cut on the left.
        let p = plan(1280, 1024, (1280, 1024), &cover, 1);
        assert_eq!((p.out_w, p.out_h), (100, 100));
        assert!((p.crop_x - 12.0 * 10.24).abs() < 1e-9, "{p:?}");
        assert_eq!((p.crop_y, p.crop_w, p.crop_h), (0.0, 1024.0, 1024.0));
        // Mirrored: the 12 columns are cut on the displayed left, which is the stored right.
        let p = plan(1280, 1024, (1280, 1024), &cover, 2);
        assert!((p.crop_x - 13.0 * 10.24).abs() < 1e-9, "{p:?}");
        // Rotated 90° clockwise (a portrait phone photo): stored rows are displayed columns, right
        // to left, so the displayed left cut comes from the stored bottom.
        let p = plan(1024, 1280, (1024, 1280), &cover, 6);
        assert!((p.crop_y - 13.0 * 10.24).abs() < 1e-9, "{p:?}");
        let p = plan(1024, 1280, (1024, 1280), &cover, 8);
        assert!((p.crop_y - 12.0 * 10.24).abs() < 1e-9, "{p:?}");
        // No spare pixels: nothing is cut, and contain never crops.
        let p = plan(1000, 1000, (1000, 1000), &cover, 1);
        assert_eq!((p.crop_x, p.crop_y), (0.0, 0.0));
        let contain = ThumbnailOptions {
            fit: Fit::Contain,
            ..cover
        };
        assert_eq!(plan(1280, 1024, (1280, 1024), &contain, 6).crop_x, 0.0);
    }

    #[test]
    fn jpegs_are_planned_on_the_grid_libvips_samples() {
        let jpeg = |width, height, orientation| ProbeInfo {
            format: ImageFormat::Jpeg,
            width,
            height,
            frames: 1,
            orientation,
            has_alpha: false,
        };
        let cover = ThumbnailOptions::default();
        // r03: 16.2x to 100 wide, so libvips loads at 1/8 and keeps 202 of the 202.75 columns.
        let r03 = jpeg(1622, 2880, 1);
        assert_eq!(reference_grid(&r03, &cover), (1616, 2880));
        let p = plan(1622, 2880, reference_grid(&r03, &cover), &cover, 1);
        let step = 16.16; // 202 loaded columns onto 100
        assert!(
            (p.crop_w - 100.0 * step).abs() < 1e-9 && p.crop_x.abs() < 1e-9,
            "{p:?}"
        );
        // 2880 rows make 178.2, rounded to 178 (not the 177.6 of 1622 columns): 78 spare rows, 39
        // cut at the top, and the 178 rows centred on the 2880.
        let origin = (2880.0 - 178.0 * step) / 2.0;
        assert!((p.crop_y - (origin + 39.0 * step)).abs() < 1e-9, "{p:?}");
        // Below a 4x shrink libvips loads at full size; other formats always are.
        let big = ThumbnailOptions {
            width: 800,
            height: 800,
            ..cover
        };
        assert_eq!(reference_grid(&r03, &big), (1622, 2880));
        let png = ProbeInfo {
            format: ImageFormat::Png,
            ..r03
        };
        assert_eq!(reference_grid(&png, &cover), (1622, 2880));
        // The shrink is worked out on the displayed orientation: 4032x3024 rotated to 3024x4032
        // covers 100x100 at 30.24x, so 1/8 (504x378, exact here).
        assert_eq!(reference_grid(&jpeg(4032, 3024, 6), &cover), (4032, 3024));
        assert_eq!(reference_grid(&jpeg(4039, 3027, 6), &cover), (4032, 3024));
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

    #[test]
    fn orientation_maps_corners() {
        // A 3x2 image with every pixel distinct, and what each EXIF orientation displays
        // (EXIF 2.32, 4.6.4 A "Orientation": where the stored 0th row and column end up).
        //   1 2 3
        //   4 5 6
        let r = Raster {
            width: 3,
            height: 2,
            channels: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let cases: [(u8, (usize, usize), [u8; 6]); 8] = [
            (1, (3, 2), [1, 2, 3, 4, 5, 6]), // as stored
            (2, (3, 2), [3, 2, 1, 6, 5, 4]), // mirrored left-right
            (3, (3, 2), [6, 5, 4, 3, 2, 1]), // rotated 180
            (4, (3, 2), [4, 5, 6, 1, 2, 3]), // mirrored top-bottom
            (5, (2, 3), [1, 4, 2, 5, 3, 6]), // transposed
            (6, (2, 3), [4, 1, 5, 2, 6, 3]), // rotated 90 clockwise
            (7, (2, 3), [6, 3, 5, 2, 4, 1]), // transversed
            (8, (2, 3), [3, 6, 2, 5, 1, 4]), // rotated 90 counter-clockwise
        ];
        for (orientation, (w, h), want) in cases {
            let o = orient(r.clone(), orientation);
            assert_eq!((o.width, o.height), (w, h), "orientation {orientation}");
            assert_eq!(o.data, want, "orientation {orientation}");
        }
        // Values outside 1-8 (a broken tag) leave the image as stored.
        assert_eq!(orient(r.clone(), 0).data, r.data);
        assert_eq!(orient(r.clone(), 9).data, r.data);
        // Channels move together.
        let rgb = Raster {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let o = orient(rgb, 6);
        assert_eq!((o.width, o.height, o.data), (1, 2, vec![1, 2, 3, 4, 5, 6]));
    }
}
