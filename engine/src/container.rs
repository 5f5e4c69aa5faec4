//! Header walkers for PNG, GIF and WebP, and the EXIF orientation tag: the facts a probe needs
//! (size, frame count, transparency, orientation), read without decoding or allocating pixel
//! buffers. Other formats' probes fill in the same [`Facts`].
use std::ops::Range;

pub type Error = String;

/// Header facts of a container.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub exif: Option<Range<usize>>,
    /// The orientation when the format states it itself (TIFF tag, JPEG XL header; 1 for HEIF,
    /// whose decoder applies its transforms); `None`: read from the EXIF block, if any.
    pub orientation: Option<u8>,
    pub interlaced: bool,
    /// Alpha channel, transparent palette entry or colour key.
    pub has_alpha: bool,
    /// Bits per sample where it changes the decoder's memory (HEIF, TIFF); 0 when unknown.
    pub bits_per_sample: u8,
    /// Largest frame rectangle in pixels (GIF frames may be larger than the screen).
    pub max_frame_pixels: u64,
    /// How often an animation plays (GIF NETSCAPE2.0, WebP ANIM; 0: for ever); `None`: once.
    pub loop_count: Option<u16>,
    /// TIFF read strip by strip: the bytes one strip or row of tiles takes (`tiff_strips`);
    /// `None`: the whole picture is decoded.
    pub band_bytes: Option<u64>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

/// PNG: IHDR, acTL (APNG frame count) and eXIf, walking chunks up to the first IDAT.
pub fn png(b: &[u8]) -> Result<Facts, Error> {
    let mut f = Facts {
        frames: 1,
        ..Facts::default()
    };
    let mut pos = 8;
    let mut saw_ihdr = false;
    loop {
        let len = be32(b, pos).ok_or("truncated before the image data")? as usize;
        let kind = b.get(pos + 4..pos + 8).ok_or("truncated chunk header")?;
        let data = pos + 8..pos.saturating_add(8).saturating_add(len);
        match kind {
            b"IHDR" => {
                let d = b.get(data.clone()).ok_or("truncated IHDR chunk")?;
                if d.len() < 13 {
                    return Err("IHDR chunk too short".into());
                }
                f.width = be32(d, 0).unwrap_or(0);
                f.height = be32(d, 4).unwrap_or(0);
                f.interlaced = d[12] != 0;
                // Colour types 4 and 6: grey or RGB with alpha.
                f.has_alpha = d[9] & 4 != 0;
                saw_ihdr = true;
            }
            b"tRNS" => f.has_alpha = true,
            b"acTL" => {
                if let Some(n) = b.get(data.clone()).and_then(|d| be32(d, 0)) {
                    f.frames = u64::from(n).max(1);
                }
            }
            b"eXIf" if b.get(data.clone()).is_some() => f.exif = Some(data.clone()),
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        if !saw_ihdr {
            return Err("the first chunk is not IHDR".into());
        }
        pos = data.end.saturating_add(4);
    }
    if !saw_ihdr {
        return Err("no IHDR chunk".into());
    }
    f.max_frame_pixels = u64::from(f.width) * u64::from(f.height);
    Ok(f)
}

/// GIF: logical screen size and the number of frames, walking blocks without decompressing.
/// Stops counting once `max_frames` is exceeded.
pub fn gif(b: &[u8], max_frames: u64) -> Result<Facts, Error> {
    let trunc = || "truncated GIF header".to_owned();
    let mut f = Facts {
        width: u32::from(le16(b, 6).ok_or_else(trunc)?),
        height: u32::from(le16(b, 8).ok_or_else(trunc)?),
        ..Facts::default()
    };
    let flags = *b.get(10).ok_or_else(trunc)?;
    let mut pos = 13;
    if flags & 0x80 != 0 {
        pos += 3 << ((flags & 7) + 1);
    }
    let skip_sub_blocks = |mut pos: usize| -> Option<usize> {
        loop {
            let n = usize::from(*b.get(pos)?);
            pos += 1;
            if n == 0 {
                return Some(pos);
            }
            pos += n;
        }
    };
    loop {
        match b.get(pos) {
            Some(0x2C) => {
                let w = u64::from(le16(b, pos + 5).ok_or("truncated image descriptor")?);
                let h = u64::from(le16(b, pos + 7).ok_or("truncated image descriptor")?);
                let fl = *b.get(pos + 9).ok_or("truncated image descriptor")?;
                f.frames += 1;
                f.max_frame_pixels = f.max_frame_pixels.max(w * h);
                if f.frames > max_frames {
                    break;
                }
                pos += 10;
                if fl & 0x80 != 0 {
                    pos += 3 << ((fl & 7) + 1);
                }
                pos += 1; // LZW minimum code size
                match skip_sub_blocks(pos) {
                    Some(p) => pos = p,
                    None => break, // truncated image data: the decoder reports what it can
                }
            }
            Some(0x21) => {
                let label = b.get(pos + 1).copied();
                let block = b.get(pos + 2..).unwrap_or(&[]);
                // Graphic control: its first flag says a palette index is transparent.
                if label == Some(0xF9) && block.len() >= 2 && block[1] & 1 != 0 {
                    f.has_alpha = true;
                }
                // Application extension NETSCAPE2.0: sub-block 1 holds the loop count.
                if label == Some(0xFF)
                    && block.get(..12) == Some(b"\x0bNETSCAPE2.0")
                    && let Some(&[3, 1, lo, hi]) = block.get(12..16)
                {
                    f.loop_count = Some(u16::from_le_bytes([lo, hi]));
                }
                match skip_sub_blocks(pos + 2) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            _ => break, // trailer, garbage or end of data
        }
    }
    if f.frames == 0 {
        return Err("no image in the GIF".into());
    }
    Ok(f)
}

/// WebP: canvas size (VP8X) or bitstream size (VP8 / VP8L), ANMF frame count and EXIF chunk.
pub fn webp(b: &[u8]) -> Result<Facts, Error> {
    let mut f = Facts::default();
    let riff_end = (le32(b, 4).ok_or("truncated RIFF header")? as usize)
        .saturating_add(8)
        .min(b.len());
    let mut pos = 12;
    let mut size_known = false;
    while pos + 8 <= riff_end {
        let kind = &b[pos..pos + 4];
        let len = le32(b, pos + 4).unwrap_or(0) as usize;
        let data = pos + 8..(pos + 8).saturating_add(len).min(b.len());
        let d = &b[data.clone()];
        match kind {
            b"VP8X" => {
                f.width = le24(d, 4).ok_or("truncated VP8X chunk")? + 1;
                f.height = le24(d, 7).ok_or("truncated VP8X chunk")? + 1;
                f.has_alpha = d.first().is_some_and(|flags| flags & 0x10 != 0);
                size_known = true;
            }
            b"ANIM" => {
                if let Some(n) = d.get(4..6) {
                    f.loop_count = Some(u16::from_le_bytes([n[0], n[1]]));
                }
            }
            b"VP8 " if !size_known => {
                if d.get(3..6) != Some(&[0x9d, 0x01, 0x2a]) {
                    return Err("bad VP8 frame header".into());
                }
                f.width = u32::from(le16(d, 6).ok_or("truncated VP8 header")? & 0x3FFF);
                f.height = u32::from(le16(d, 8).ok_or("truncated VP8 header")? & 0x3FFF);
                f.frames = 1;
                size_known = true;
            }
            b"VP8L" if !size_known => {
                if d.first() != Some(&0x2F) {
                    return Err("bad VP8L signature".into());
                }
                let v = le32(d, 1).ok_or("truncated VP8L header")?;
                f.width = (v & 0x3FFF) + 1;
                f.height = ((v >> 14) & 0x3FFF) + 1;
                f.has_alpha = v & (1 << 28) != 0;
                f.frames = 1;
                size_known = true;
            }
            b"ANMF" => {
                f.frames += 1;
                if let (Some(w), Some(h)) = (le24(d, 6), le24(d, 9)) {
                    f.max_frame_pixels = f.max_frame_pixels.max(u64::from(w + 1) * u64::from(h + 1));
                }
            }
            b"EXIF" => f.exif = Some(data.clone()),
            _ => {}
        }
        pos = (pos + 8).saturating_add(len).saturating_add(len & 1);
    }
    if !size_known {
        return Err("no VP8, VP8L or VP8X chunk".into());
    }
    f.frames = f.frames.max(1);
    f.max_frame_pixels = f.max_frame_pixels.max(u64::from(f.width) * u64::from(f.height));
    Ok(f)
}

/// The EXIF Orientation tag (1–8) from a TIFF-structured EXIF block; 1 when absent or invalid.
pub fn exif_orientation(tiff: &[u8]) -> u8 {
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    let le = match tiff.get(0..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return 1,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let s: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let s: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let find = || -> Option<u8> {
        let ifd = u32_at(4)? as usize;
        let n = usize::from(u16_at(ifd)?);
        for i in 0..n.min(512) {
            let e = ifd + 2 + 12 * i;
            if u16_at(e)? == 0x0112 {
                let v = u16_at(e + 8)?;
                return (1..=8).contains(&v).then_some(v as u8);
            }
        }
        None
    };
    find().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_orientation_in_both_byte_orders() {
        let mm = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        assert_eq!(exif_orientation(mm), 6);
        let ii = b"II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x08\0\0\0\0\0\0\0";
        assert_eq!(exif_orientation(ii), 8);
        assert_eq!(exif_orientation(b"garbage"), 1);
    }
}
