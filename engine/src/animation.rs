//! `animated=true`: every frame of an animated GIF or WebP, composited onto the canvas as a
//! viewer shows it (the `image` crate applies GIF disposal and WebP blending), resized with the
//! same plan, and written as a GIF or animated WebP with the source's durations and loop count.
//!
//! Frames stream through: one canvas is decoded, resized and encoded before the next is read,
//! so memory is a few canvases plus the encoded output whatever the frame count; the frame
//! limit is checked from the header and again while decoding (a header may understate it).
use crate::encode::{Frame, GifWriter, WebpAnimation};
use crate::pipeline::{Plan, Raster, crop_window, orient, resize, to_srgb};
use crate::{EngineError, ImageFormat, Limits, OutputFormat, ProbeInfo, Thumbnail};
use image::AnimationDecoder;
use std::io::Cursor;

fn corrupt(format: ImageFormat, err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: format.name(),
        message: err.to_string(),
    }
}

/// Bytes an animated render allocates at most: the decoder's canvas, the previous canvas and a
/// frame buffer (RGBA), our copy of the canvas, the resizer's intermediate, and the encoded
/// frames (at most the raw output size each).
pub(crate) fn memory(info: &ProbeInfo, max_frame_pixels: u64, plan: &Plan) -> u64 {
    let canvas = info.pixels() * 4;
    let out = u64::from(plan.out_w) * u64::from(plan.out_h) * 4;
    canvas * 3
        + max_frame_pixels * 4
        + u64::from(plan.out_w) * u64::from(info.height) * 4
        + out * (info.frames + 4)
}

enum Writer {
    Gif(GifWriter),
    Webp(WebpAnimation),
}

/// Render every frame. `icc`: the source's profile (WebP ICCP), converted per frame.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    bytes: &[u8],
    info: &ProbeInfo,
    plan: &Plan,
    loop_count: Option<u16>,
    icc: Option<&[u8]>,
    format: OutputFormat,
    quality: u8,
    limits: &Limits,
) -> Result<Thumbnail, EngineError> {
    let f = info.format;
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_memory_bytes);
    let frames = match f {
        ImageFormat::Gif => {
            let mut d = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).map_err(|e| corrupt(f, e))?;
            image::ImageDecoder::set_limits(&mut d, image_limits).map_err(|e| corrupt(f, e))?;
            d.into_frames()
        }
        ImageFormat::Webp => {
            let mut d =
                image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(|e| corrupt(f, e))?;
            image::ImageDecoder::set_limits(&mut d, image_limits).map_err(|e| corrupt(f, e))?;
            d.into_frames()
        }
        other => return Err(EngineError::Internal(format!("{other} is not animated"))),
    };
    let mut writer: Option<Writer> = None;
    let mut window: Option<(usize, usize)> = None;
    let mut preview: Option<crate::preview::Preview> = None;
    let (mut count, mut size) = (0u64, (0, 0));
    for frame in frames {
        let frame = match frame {
            Ok(frame) => frame,
            // A truncated animation keeps the frames before the cut, as browsers show them.
            Err(_) if count > 0 => break,
            Err(e) => return Err(corrupt(f, e)),
        };
        count += 1;
        if count > limits.max_frames {
            return Err(EngineError::TooManyFrames {
                frames: count,
                max: limits.max_frames,
            });
        }
        let (numer, denom) = frame.delay().numer_denom_ms();
        let duration_ms = numer / denom.max(1);
        let canvas = frame.into_buffer();
        let (cw, ch) = canvas.dimensions();
        let raster = Raster {
            width: cw as usize,
            height: ch as usize,
            channels: 4,
            data: canvas.into_raw(),
        };
        let mut out = orient(
            resize(&raster.view(), plan, info.width, info.height)?,
            info.orientation,
        );
        drop(raster);
        if let Some((ww, wh)) = plan.smart {
            // The window is found on the first frame and kept: the framing must not jump.
            let (x, y) = *window.get_or_insert_with(|| crate::pipeline::smart_window(&out, ww, wh, false));
            out = crop_window(&out, x, y, ww as usize, wh as usize);
        }
        if let Some(icc) = icc {
            to_srgb(&mut out, icc);
        }
        size = (out.width, out.height);
        // The first frame is what a still viewer shows, so it is what the preview shows.
        if preview.is_none() {
            preview = Some(crate::preview::of_raster(&out, false));
        }
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(match format {
                OutputFormat::Gif => Writer::Gif(GifWriter::new(out.width, out.height, loop_count)?),
                _ => Writer::Webp(WebpAnimation::new(out.width, out.height, quality, loop_count)?),
            }),
        };
        let frame = Frame {
            rgba: out.data,
            duration_ms,
        };
        match w {
            Writer::Gif(g) => g.add(frame)?,
            Writer::Webp(a) => a.add(frame)?,
        }
    }
    let (Some(writer), Some(preview)) = (writer, preview) else {
        return Err(corrupt(f, "no frame could be decoded"));
    };
    let bytes = match writer {
        Writer::Gif(g) => g.finish()?,
        Writer::Webp(a) => a.finish(),
    };
    Ok(Thumbnail {
        bytes,
        format,
        width: size.0 as u32,
        height: size.1 as u32,
        preview,
    })
}
