//! Encoders of the newer outputs: AVIF (rav1e through `ravif`, pure Rust), GIF (`gif`, a
//! NeuQuant palette per frame) and animated WebP (each frame encoded by libwebp, the container
//! written here so that every frame's duration is exactly the source's).
use crate::EngineError;
use crate::pipeline::Raster;

/// rav1e's fastest preset: a 400x225 thumbnail in tens of milliseconds on one core (speed 6,
/// the library's default, takes several times as long for a file a few percent smaller).
const AVIF_SPEED: u8 = 10;

/// AVIF at `quality` (1-100), 8-bit, alpha kept; one thread (the service runs one job per core).
pub(crate) fn avif(img: &Raster, quality: u8) -> Result<Vec<u8>, EngineError> {
    let q = f32::from(quality.clamp(1, 100));
    let encoder = ravif::Encoder::new()
        .with_quality(q)
        .with_alpha_quality(q)
        .with_speed(AVIF_SPEED)
        .with_bit_depth(ravif::BitDepth::Eight)
        .with_num_threads(Some(1));
    let (w, h) = (img.width, img.height);
    let encoded = match img.channels {
        4 => {
            let px: Vec<ravif::RGBA8> = img
                .data
                .chunks_exact(4)
                .map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3]))
                .collect();
            encoder.encode_rgba(ravif::Img::new(&px[..], w, h))
        }
        3 => {
            let px: Vec<ravif::RGB8> = img
                .data
                .chunks_exact(3)
                .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
                .collect();
            encoder.encode_rgb(ravif::Img::new(&px[..], w, h))
        }
        n => return Err(EngineError::Internal(format!("AVIF from {n} channels"))),
    }
    .map_err(|e| EngineError::Internal(format!("AVIF encoder: {e}")))?;
    Ok(encoded.avif_file)
}

/// One frame of an animation as it is shown: the whole canvas, straight RGBA.
pub(crate) struct Frame {
    pub rgba: Vec<u8>,
    /// How long it is shown, in milliseconds.
    pub duration_ms: u32,
}

/// GIF frames are whole canvases: each replaces the one before ("restore to background"), so
/// transparent pixels show the page, not the previous frame.
pub(crate) struct GifWriter {
    encoder: gif::Encoder<Vec<u8>>,
    width: u16,
    height: u16,
}

fn gif_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("GIF encoder: {e}"))
}

impl GifWriter {
    /// `loop_count`: how often it plays (0: for ever), `None`: once (no NETSCAPE2.0 block).
    pub(crate) fn new(width: usize, height: usize, loop_count: Option<u16>) -> Result<Self, EngineError> {
        let too_large = || EngineError::Internal(format!("{width}x{height} exceeds GIF's 65535"));
        let (w, h) = (
            u16::try_from(width).map_err(|_| too_large())?,
            u16::try_from(height).map_err(|_| too_large())?,
        );
        let mut encoder = gif::Encoder::new(Vec::new(), w, h, &[]).map_err(gif_error)?;
        if let Some(n) = loop_count {
            let repeat = if n == 0 {
                gif::Repeat::Infinite
            } else {
                gif::Repeat::Finite(n)
            };
            encoder.set_repeat(repeat).map_err(gif_error)?;
        }
        Ok(GifWriter {
            encoder,
            width: w,
            height: h,
        })
    }

    pub(crate) fn add(&mut self, mut frame: Frame) -> Result<(), EngineError> {
        let mut f = gif::Frame::from_rgba_speed(self.width, self.height, &mut frame.rgba, 10);
        // GIF counts in hundredths of a second.
        f.delay = u16::try_from(frame.duration_ms.div_ceil(10)).unwrap_or(u16::MAX);
        f.dispose = gif::DisposalMethod::Background;
        self.encoder.write_frame(&f).map_err(gif_error)
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>, EngineError> {
        self.encoder.into_inner().map_err(gif_error)
    }
}

/// A GIF of one still image.
pub(crate) fn gif_still(img: &Raster) -> Result<Vec<u8>, EngineError> {
    let rgba = to_rgba(img);
    let mut writer = GifWriter::new(img.width, img.height, None)?;
    writer.add(Frame { rgba, duration_ms: 0 })?;
    writer.finish()
}

/// Straight RGBA from 1-4 channels.
pub(crate) fn to_rgba(img: &Raster) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.width * img.height * 4);
    for px in img.data.chunks_exact(img.channels) {
        match *px {
            [v] => out.extend_from_slice(&[v, v, v, 255]),
            [v, a] => out.extend_from_slice(&[v, v, v, a]),
            [r, g, b] => out.extend_from_slice(&[r, g, b, 255]),
            [r, g, b, a] => out.extend_from_slice(&[r, g, b, a]),
            _ => {}
        }
    }
    out
}

/// An animated WebP: VP8X + ANIM + one ANMF per frame. Each frame is a whole canvas encoded by
/// libwebp (lossy at `quality`, its alpha in an ALPH chunk), placed at 0,0 without blending,
/// so that no frame depends on the one before and the duration is written as given.
pub(crate) struct WebpAnimation {
    width: u32,
    height: u32,
    quality: f32,
    loop_count: u16,
    frames: Vec<u8>,
    alpha: bool,
}

fn le24(v: u32) -> [u8; 3] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

/// The frame-data chunks (ALPH, VP8, VP8L) of a still WebP file, without its RIFF header and VP8X.
fn frame_chunks(webp: &[u8]) -> Result<&[u8], EngineError> {
    let bad = || EngineError::Internal("libwebp wrote an unexpected file".into());
    if webp.len() < 20 || &webp[0..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return Err(bad());
    }
    let body = &webp[12..];
    if &body[0..4] == b"VP8X" {
        let len = u32::from_le_bytes(body[4..8].try_into().map_err(|_| bad())?) as usize;
        return body.get(8 + len + (len & 1)..).ok_or_else(bad);
    }
    Ok(body)
}

impl WebpAnimation {
    pub(crate) fn new(
        width: usize,
        height: usize,
        quality: u8,
        loop_count: Option<u16>,
    ) -> Result<Self, EngineError> {
        let fits = |v: usize| v > 0 && v <= 16384;
        if !fits(width) || !fits(height) {
            return Err(EngineError::Internal(format!(
                "{width}x{height} exceeds WebP's 16384"
            )));
        }
        Ok(WebpAnimation {
            width: width as u32,
            height: height as u32,
            quality: f32::from(quality),
            // WebP has no "play once" but a count of plays; GIF's absent loop block is one play.
            loop_count: loop_count.unwrap_or(1),
            frames: Vec::new(),
            alpha: false,
        })
    }

    pub(crate) fn add(&mut self, frame: Frame) -> Result<(), EngineError> {
        let alpha = frame.rgba.chunks_exact(4).any(|p| p[3] != 255);
        let encoded = if alpha {
            webp::Encoder::from_rgba(&frame.rgba, self.width, self.height).encode(self.quality)
        } else {
            let rgb: Vec<u8> = frame
                .rgba
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            webp::Encoder::from_rgb(&rgb, self.width, self.height).encode(self.quality)
        };
        self.alpha |= alpha;
        let mut payload = Vec::with_capacity(encoded.len() + 16);
        payload.extend_from_slice(&le24(0)); // x / 2
        payload.extend_from_slice(&le24(0)); // y / 2
        payload.extend_from_slice(&le24(self.width - 1));
        payload.extend_from_slice(&le24(self.height - 1));
        payload.extend_from_slice(&le24(frame.duration_ms.min(0xFF_FFFF)));
        payload.push(0b10); // do not blend; no disposal needed (the next frame covers all)
        payload.extend_from_slice(frame_chunks(&encoded)?);
        chunk(&mut self.frames, b"ANMF", &payload);
        Ok(())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        let mut vp8x = vec![0x02 | if self.alpha { 0x10 } else { 0 }, 0, 0, 0];
        vp8x.extend_from_slice(&le24(self.width - 1));
        vp8x.extend_from_slice(&le24(self.height - 1));
        chunk(&mut body, b"VP8X", &vp8x);
        let mut anim = vec![0, 0, 0, 0]; // background: transparent
        anim.extend_from_slice(&self.loop_count.to_le_bytes());
        chunk(&mut body, b"ANIM", &anim);
        body.extend_from_slice(&self.frames);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}
