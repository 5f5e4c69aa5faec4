//! JPEG: a marker walker (header facts without decoding) and a DC-only decoder for 1/8-scale
//! shrink-on-load.
//!
//! At scale 1/8 every 8x8 block becomes one pixel whose value is its DC coefficient, exactly as
//! libjpeg's `scale 1/8` does. For progressive files the AC scans are not even entropy-decoded:
//! they are skipped by looking for the next marker, which makes large progressive photos an order
//! of magnitude faster than a full decode. Baseline files still need their AC codes walked (the
//! Huffman stream has no index), but the coefficients are never stored or transformed.
//!
//! Scales 1/2 and 1/4 are decoded by [`scaled`] with reduced-size IDCTs. Everything else (full
//! size, arithmetic coding, 12-bit, lossless) goes to `jpeg-decoder`.
use std::ops::Range;

mod scaled;
pub use scaled::{Plane, decode_scaled, decode_scaled_planes, scaled_memory};

/// What the markers before the first scan say.
#[derive(Debug, Clone, Default)]
pub struct JpegHeader {
    pub width: u16,
    pub height: u16,
    /// SOF0/SOF1 (Huffman sequential) or SOF2 (Huffman progressive); other SOFs: `None`.
    pub huffman: Option<bool>,
    pub components: Vec<Component>,
    /// APP14 "Adobe" present, and its transform byte.
    pub adobe: Option<u8>,
    pub exif: Option<Range<usize>>,
    pub icc: Vec<(u8, Range<usize>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Component {
    pub id: u8,
    pub h: u8,
    pub v: u8,
    pub tq: u8,
}

impl JpegHeader {
    pub fn is_progressive(&self) -> bool {
        self.huffman == Some(true)
    }

    /// The ICC profile, reassembled from its APP2 chunks in sequence order.
    pub fn icc_profile(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.icc.is_empty() {
            return None;
        }
        let mut chunks = self.icc.clone();
        chunks.sort_by_key(|c| c.0);
        let mut out = Vec::new();
        for (_, r) in chunks {
            out.extend_from_slice(bytes.get(r)?);
        }
        Some(out)
    }
}

pub type Error = String;

fn be16(b: &[u8], at: usize) -> Result<usize, Error> {
    match b.get(at..at + 2) {
        Some(s) => Ok(usize::from(u16::from_be_bytes([s[0], s[1]]))),
        None => Err("unexpected end of data in a marker segment".into()),
    }
}

/// Each table of a DHT segment, in order: `each(class, id, counts, values)`, class 0 for DC and
/// 1 for AC, id 0-3.
fn each_huffman_table(
    seg: &[u8],
    mut each: impl FnMut(u8, usize, &[u8; 16], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut p = 0;
    while p < seg.len() {
        let class = seg[p] >> 4;
        let id = usize::from(seg[p] & 15);
        let counts: [u8; 16] = seg
            .get(p + 1..p + 17)
            .ok_or("Huffman table too short")?
            .try_into()
            .map_err(|_| "Huffman table too short")?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let values = seg.get(p + 17..p + 17 + total).ok_or("Huffman table too short")?;
        if id > 3 || class > 1 {
            return Err("invalid Huffman table id".into());
        }
        each(class, id, &counts, values)?;
        p += 17 + total;
    }
    Ok(())
}

/// The next marker segment from `*pos` on, skipping fill bytes and the markers that stand alone
/// (SOI, TEM, RSTn); `None` at the end-of-image marker. `*pos` ends after the segment, where a
/// scan's entropy-coded data starts.
pub(crate) fn next_segment<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<Option<(u8, &'a [u8])>, Error> {
    loop {
        while *pos < bytes.len() && bytes[*pos] != 0xFF {
            *pos += 1;
        }
        while *pos < bytes.len() && bytes[*pos] == 0xFF {
            *pos += 1;
        }
        let Some(&marker) = bytes.get(*pos) else {
            return Err("the file ends before the end-of-image marker (truncated)".into());
        };
        *pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Ok(None),
            _ => {}
        }
        let len = be16(bytes, *pos)?;
        let body = *pos + 2..*pos + len.max(2);
        let Some(seg) = bytes.get(body.clone()) else {
            return Err("marker segment runs past the end of the file (truncated)".into());
        };
        *pos = body.end;
        return Ok(Some((marker, seg)));
    }
}

/// Walk the markers from SOI up to the first SOS (or, with `stop_at_sof`, up to the frame header).
pub fn read_header(bytes: &[u8], stop_at_sof: bool) -> Result<JpegHeader, Error> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("missing SOI marker".into());
    }
    let mut h = JpegHeader::default();
    let mut pos = 2;
    let mut saw_sof = false;
    loop {
        // Skip fill bytes and any garbage up to the next marker.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return Err(if saw_sof {
                "no image data (SOS) before the end of the file".into()
            } else {
                "no frame header (SOF) before the end of the file".into()
            });
        };
        pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err("end of image before any image data".into()),
            _ => {}
        }
        let len = be16(bytes, pos)?;
        if len < 2 {
            return Err("marker segment with a length below 2".into());
        }
        let body = pos + 2..pos + len;
        let Some(seg) = bytes.get(body.clone()) else {
            return Err("marker segment runs past the end of the file".into());
        };
        match marker {
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                if saw_sof {
                    return Err("more than one frame header".into());
                }
                saw_sof = true;
                if seg.len() < 6 {
                    return Err("frame header too short".into());
                }
                h.huffman = match marker {
                    0xC0 | 0xC1 => Some(false),
                    0xC2 => Some(true),
                    _ => None,
                };
                if seg[0] != 8 && h.huffman.is_some() {
                    // 12-bit precision: not for the DC path (jpeg-decoder refuses it too).
                    h.huffman = None;
                }
                h.height = be16(seg, 1)? as u16;
                h.width = be16(seg, 3)? as u16;
                let n = usize::from(seg[5]);
                if n == 0 || n == 2 || n > 4 || seg.len() < 6 + 3 * n {
                    return Err(format!("unsupported number of colour components: {n}"));
                }
                for i in 0..n {
                    let c = &seg[6 + 3 * i..9 + 3 * i];
                    let (hs, vs) = (c[1] >> 4, c[1] & 15);
                    if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) || c[2] > 3 {
                        return Err("invalid component sampling factors or table".into());
                    }
                    h.components.push(Component {
                        id: c[0],
                        h: hs,
                        v: vs,
                        tq: c[2],
                    });
                }
                if stop_at_sof {
                    return Ok(h);
                }
            }
            0xE1 if seg.starts_with(b"Exif\0\0") && h.exif.is_none() => {
                h.exif = Some(body.start + 6..body.end);
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") && seg.len() >= 14 => {
                h.icc.push((seg[12], body.start + 14..body.end));
            }
            0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => {
                h.adobe = Some(seg[11]);
            }
            0xDA => {
                if !saw_sof {
                    return Err("image data (SOS) before the frame header".into());
                }
                return Ok(h);
            }
            _ => {}
        }
        pos = body.end;
    }
}

/// A Huffman table as a lookup table (9-bit fast path) plus the canonical code for longer codes.
struct Huffman {
    /// For each 9-bit prefix: (code length, symbol); length 0 means "longer than 9 bits".
    fast: Box<[(u8, u8); 1 << FAST_BITS]>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
    /// For AC tables: per 12-bit prefix, up to two whole coefficients (code + magnitude bits) to
    /// skip: `bits | first's bits << 4 | advance << 8 | first's advance << 15` (advance 64 = end
    /// of block); 0 = take the slow path. A pair's second code may only be used while the first
    /// one does not end the block (else it belongs to the next block).
    ac_skip2: Box<[u32; 1 << SKIP_BITS]>,
}

const FAST_BITS: u32 = 9;
const SKIP_BITS: u32 = 12;

/// More scans than any encoder writes (libjpeg's progressive scripts use about ten): each scan
/// walks every block, so a file made of tiny scans could otherwise take very long to decode.
const MAX_SCANS: usize = 1000;

/// Bytes the Huffman lookup tables can take at once: eight live tables of up to 40 KiB
/// (value and skip lookups), plus one being built.
const TABLES_MEMORY: u64 = 9 * 40 * 1024;

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Result<Huffman, Error> {
        let mut fast = Box::new([(0u8, 0u8); 1 << FAST_BITS]);
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut mincode = [0i32; 17];
        let mut code: i32 = 0;
        let mut k: usize = 0;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            valptr[len] = k as i32;
            mincode[len] = code;
            for _ in 0..n {
                if code >= (1 << len) {
                    return Err("invalid Huffman table (over-subscribed)".into());
                }
                let sym = *values.get(k).ok_or("Huffman table shorter than its counts")?;
                if len as u32 <= FAST_BITS {
                    let shift = FAST_BITS - len as u32;
                    let first = (code as usize) << shift;
                    for e in &mut fast[first..first + (1 << shift)] {
                        *e = (len as u8, sym);
                    }
                }
                code += 1;
                k += 1;
            }
            maxcode[len] = if n > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        // One coefficient per prefix first: `bits | advance << 5`.
        let mut ac_skip = vec![0u16; 1 << SKIP_BITS];
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16u32 {
            for _ in 0..counts[len as usize - 1] {
                let rs = values[k];
                let (r, sz) = (u32::from(rs >> 4), u32::from(rs & 15));
                let total = len + sz;
                if total <= SKIP_BITS {
                    let adv = match (r, sz) {
                        (_, 0) if r == 15 => 16,
                        (_, 0) => 64,
                        _ => r + 1,
                    };
                    let shift = SKIP_BITS - len;
                    let first = (code as usize) << shift;
                    for e in &mut ac_skip[first..first + (1 << shift)] {
                        *e = (total | adv << 5) as u16;
                    }
                }
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        let mut ac_skip2 = Box::new([0u32; 1 << SKIP_BITS]);
        for (p, e2) in ac_skip2.iter_mut().enumerate() {
            let e = u32::from(ac_skip[p]);
            let (len1, adv1) = (e & 31, e >> 5);
            if e == 0 {
                continue;
            }
            let (mut len, mut adv) = (len1, adv1);
            if adv1 < 64 && len1 < SKIP_BITS {
                // The bits after the first code that are known from this prefix.
                let next = u32::from(ac_skip[(p << len1) & ((1 << SKIP_BITS) - 1)]);
                if next != 0 && (next & 31) <= SKIP_BITS - len1 {
                    len += next & 31;
                    adv += next >> 5;
                }
            }
            *e2 = len | len1 << 4 | adv.min(127) << 8 | adv1 << 15;
        }
        Ok(Huffman {
            ac_skip2,
            fast,
            maxcode,
            valptr,
            mincode,
            values: values[..k].to_vec(),
        })
    }
}

impl Huffman {
    /// Walk an AC table's codes from zigzag index `k` to the end of the block, keeping nothing.
    #[inline(always)]
    fn skip_ac(&self, bits: &mut Bits, mut k: usize) -> Result<(), Error> {
        while k < 64 {
            if bits.n < 32 {
                bits.refill();
            }
            let e = self.ac_skip2[(bits.acc >> (64 - SKIP_BITS)) as usize];
            if e != 0 {
                let adv1 = ((e >> 15) & 127) as usize;
                if k + adv1 < 64 {
                    bits.consume(e & 15);
                    k += ((e >> 8) & 127) as usize;
                } else {
                    bits.consume((e >> 4) & 15);
                    k += adv1;
                }
                continue;
            }
            let rs = bits.decode(self)?;
            let (r, s) = (rs >> 4, u32::from(rs & 15));
            if s == 0 {
                if r != 15 {
                    break;
                }
                k += 16;
            } else {
                k += usize::from(r) + 1;
                bits.consume_n(s);
            }
        }
        Ok(())
    }
}

/// Bit reader over entropy-coded data: removes stuffed zero bytes and stops at markers
/// (feeding zero bits past them, as libjpeg does for corrupt data).
///
/// `Copy`, and its out-of-line paths take and return it by value, so that its address never
/// escapes the decoding loops and the accumulator stays in registers there (a `&mut self` call
/// that is not inlined pins it to the stack: a store and a reload on every symbol).
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    marker_hit: bool,
    /// Zero bits appended because the data ended.
    fake_bits: u32,
    /// No marker starts between `pos` and here (so that a restart interval whose RST marker is
    /// missing does not rescan the same data at every interval).
    no_marker_before: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            acc: 0,
            n: 0,
            marker_hit: false,
            fake_bits: 0,
            no_marker_before: 0,
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        // Fast path: the next 8 bytes hold no 0xFF, so no stuffing and no marker.
        if !self.marker_hit
            && let Some(chunk) = self.data.get(self.pos..self.pos + 8)
        {
            let v = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
            // Bytes equal to 0xFF have all bits set: detect any with the classic zero-byte trick.
            let inv = !v;
            let has_ff = (inv.wrapping_sub(0x0101_0101_0101_0101)) & !inv & 0x8080_8080_8080_8080;
            if has_ff == 0 && self.n < 56 {
                let take = (63 - self.n) / 8;
                self.acc |= (v >> (64 - 8 * take)) << (64 - 8 * take - self.n);
                self.n += 8 * take;
                self.pos += take as usize;
                return;
            }
        }
        *self = self.refill_slow();
    }

    /// Byte-at-a-time refill near a 0xFF (stuffing or a marker) or the end of the data: kept
    /// out of line so that the inlined fast path stays small in the decoders' hot loops.
    #[cold]
    #[inline(never)]
    fn refill_slow(mut self) -> Self {
        while self.n <= 56 {
            let mut byte = 0u8;
            if !self.marker_hit {
                match self.data.get(self.pos) {
                    Some(&0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            byte = 0xFF;
                            self.pos += 2;
                        }
                        None => {
                            self.marker_hit = true;
                            self.fake_bits += 8;
                        }
                        _ => self.marker_hit = true,
                    },
                    Some(&b) => {
                        byte = b;
                        self.pos += 1;
                    }
                    None => {
                        self.marker_hit = true;
                        self.fake_bits += 8;
                    }
                }
            } else if self.pos >= self.data.len().saturating_sub(1) {
                self.fake_bits += 8;
            }
            self.acc |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
        self
    }

    #[inline(always)]
    fn peek(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.refill();
        }
        (self.acc >> (64 - k)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, k: u32) {
        self.acc <<= k;
        self.n -= k;
    }

    #[inline(always)]
    fn get(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        let v = self.peek(k);
        self.consume(k);
        v
    }

    #[inline(always)]
    fn decode(&mut self, t: &Huffman) -> Result<u8, Error> {
        if self.n < 16 {
            self.refill();
        }
        let (len, sym) = t.fast[(self.acc >> (64 - FAST_BITS)) as usize];
        if len > 0 {
            self.consume(u32::from(len));
            return Ok(sym);
        }
        let (bits, symbol) = self.decode_long(t);
        *self = bits;
        symbol
    }

    /// A code longer than the lookup table's [`FAST_BITS`] (rare: out of line).
    #[cold]
    #[inline(never)]
    fn decode_long(mut self, t: &Huffman) -> (Self, Result<u8, Error>) {
        let mut len = FAST_BITS as usize + 1;
        let mut code = (self.acc >> (64 - len)) as i32;
        while code > t.maxcode[len] {
            len += 1;
            if len > 16 {
                return (self, Err("invalid Huffman code".into()));
            }
            code = (self.acc >> (64 - len)) as i32;
        }
        self.consume(len as u32);
        let idx = (t.valptr[len] + code - t.mincode[len]) as usize;
        let symbol = t
            .values
            .get(idx)
            .copied()
            .ok_or_else(|| "invalid Huffman code".into());
        (self, symbol)
    }

    #[inline(always)]
    fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.get(s) as i32;
        if v < (1 << (s - 1)) { v - (1 << s) + 1 } else { v }
    }

    /// Drop the buffered bits and step over an RSTn marker if one is next.
    #[inline(always)]
    fn restart(&mut self) {
        *self = self.restarted();
    }

    #[inline(never)]
    fn restarted(mut self) -> Self {
        self.acc = 0;
        self.n = 0;
        self.marker_hit = false;
        let mut p = self.pos.max(self.no_marker_before);
        while p + 1 < self.data.len()
            && !(self.data[p] == 0xFF && self.data[p + 1] != 0 && self.data[p + 1] != 0xFF)
        {
            p += 1;
        }
        self.no_marker_before = p;
        if p + 1 < self.data.len() && (0xD0..=0xD7).contains(&self.data[p + 1]) {
            self.pos = p + 2;
        }
        self
    }
}

/// Position just past the entropy-coded data starting at `pos`: the next marker that is not an RST.
fn skip_entropy(data: &[u8], mut pos: usize) -> usize {
    loop {
        match memchr_ff(data, pos) {
            None => return data.len(),
            Some(p) => match data.get(p + 1) {
                Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => pos = p + 1,
                Some(_) => return p,
                None => return data.len(),
            },
        }
    }
}

fn memchr_ff(data: &[u8], pos: usize) -> Option<usize> {
    data.get(pos..)?.iter().position(|&b| b == 0xFF).map(|i| i + pos)
}

/// A decoded 1/8-scale image: interleaved 8-bit samples, `channels` of 1 (grey), 3 (RGB) or
/// 4 (the CMYK samples as libjpeg returns them, i.e. before any Adobe inversion).
pub struct DcImage {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Bytes the DC decoder allocates for an image with this header.
pub fn dc_memory(h: &JpegHeader) -> u64 {
    let (mcux, mcuy) = mcu_counts(h);
    let blocks: u64 = h
        .components
        .iter()
        .map(|c| (mcux * usize::from(c.h)) as u64 * (mcuy * usize::from(c.v)) as u64)
        .sum();
    let out = u64::from(h.width.div_ceil(8)) * u64::from(h.height.div_ceil(8)) * 4;
    blocks * 2 + out * 2 + TABLES_MEMORY
}

fn mcu_counts(h: &JpegHeader) -> (usize, usize) {
    let hmax = h.components.iter().map(|c| c.h).max().unwrap_or(1) as usize;
    let vmax = h.components.iter().map(|c| c.v).max().unwrap_or(1) as usize;
    (
        usize::from(h.width).div_ceil(8 * hmax),
        usize::from(h.height).div_ceil(8 * vmax),
    )
}

/// Decode at scale 1/8 using only the DC coefficients. Requires `header.huffman.is_some()`.
pub fn decode_dc(bytes: &[u8], header: &JpegHeader) -> Result<DcImage, Error> {
    let comps = &header.components;
    let ncomp = comps.len();
    let hmax = comps.iter().map(|c| usize::from(c.h)).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| usize::from(c.v)).max().unwrap_or(1);
    let (mcux, mcuy) = mcu_counts(header);
    if header.width == 0 || header.height == 0 {
        return Err("zero image dimension".into());
    }
    // Plane of DC coefficients per component, padded to whole MCUs.
    let pw: Vec<usize> = comps.iter().map(|c| mcux * usize::from(c.h)).collect();
    let ph: Vec<usize> = comps.iter().map(|c| mcuy * usize::from(c.v)).collect();
    let mut planes: Vec<Vec<i16>> = (0..ncomp).map(|i| vec![0i16; pw[i] * ph[i]]).collect();
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut scans = 0usize;

    let mut pos = 2;
    while let Some((marker, seg)) = next_segment(bytes, &mut pos)? {
        match marker {
            0xDB => scaled::read_dqt(seg, &mut qt)?,
            0xC4 => each_huffman_table(seg, |class, id, counts, values| {
                let table = Some(Huffman::new(counts, values)?);
                if class == 0 {
                    dc_tables[id] = table;
                } else {
                    ac_tables[id] = table;
                }
                Ok(())
            })?,
            0xDD => restart_interval = be16(seg, 0)?,
            0xDA => {
                scans += 1;
                if scans > MAX_SCANS {
                    return Err(format!("more than {MAX_SCANS} scans"));
                }
                let ns = usize::from(*seg.first().ok_or("scan header too short")?);
                if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
                    return Err("invalid scan header".into());
                }
                let mut scomp = Vec::with_capacity(ns);
                for i in 0..ns {
                    let id = seg[1 + 2 * i];
                    let ci = comps
                        .iter()
                        .position(|c| c.id == id)
                        .ok_or("scan refers to an unknown component")?;
                    let t = seg[2 + 2 * i];
                    if t >> 4 > 3 || t & 15 > 3 {
                        return Err("scan refers to an invalid Huffman table".into());
                    }
                    scomp.push((ci, usize::from(t >> 4), usize::from(t & 15)));
                }
                let ss = seg[1 + 2 * ns];
                let se = seg[2 + 2 * ns];
                let (ah, al) = (seg[3 + 2 * ns] >> 4, u32::from(seg[3 + 2 * ns] & 15));
                let progressive = header.is_progressive();
                if progressive && ss != 0 {
                    pos = skip_entropy(bytes, pos);
                    if pos >= bytes.len() {
                        return Err("the image data is truncated".into());
                    }
                    continue;
                }
                if progressive && se != 0 {
                    return Err("progressive DC scan with AC coefficients".into());
                }
                if al > 13 {
                    return Err("invalid successive approximation".into());
                }
                let mut bits = Bits::new(bytes, pos);
                let mut preds = [0i32; 4];
                // One "unit" = an MCU (interleaved) or a block (single component).
                let units: Vec<(usize, usize)> = if ns == 1 {
                    let (ci, _, _) = scomp[0];
                    let c = comps[ci];
                    let cw = (usize::from(header.width) * usize::from(c.h)).div_ceil(hmax);
                    let ch = (usize::from(header.height) * usize::from(c.v)).div_ceil(vmax);
                    vec![(cw.div_ceil(8), ch.div_ceil(8))]
                } else {
                    vec![(mcux, mcuy)]
                };
                let (ux, uy) = units[0];
                let mut since_restart = 0usize;
                for uyi in 0..uy {
                    for uxi in 0..ux {
                        if restart_interval > 0 && since_restart == restart_interval {
                            bits.restart();
                            preds = [0; 4];
                            since_restart = 0;
                        }
                        since_restart += 1;
                        for (si, &(ci, td, ta)) in scomp.iter().enumerate() {
                            let c = comps[ci];
                            let (bh, bv) = if ns == 1 {
                                (1, 1)
                            } else {
                                (usize::from(c.h), usize::from(c.v))
                            };
                            for by in 0..bv {
                                for bx in 0..bh {
                                    let (x, y) = (uxi * bh + bx, uyi * bv + by);
                                    let idx = y * pw[ci] + x;
                                    if ah == 0 || !progressive {
                                        let t = dc_tables[td].as_ref().ok_or("missing DC Huffman table")?;
                                        let s = u32::from(bits.decode(t)?);
                                        if s > 16 {
                                            return Err("invalid DC coefficient size".into());
                                        }
                                        let diff = bits.receive_extend(s);
                                        preds[si] = preds[si].wrapping_add(diff);
                                        let v = (preds[si].clamp(-32768, 32767) << al).clamp(-32768, 32767);
                                        if let Some(p) = planes[ci].get_mut(idx) {
                                            *p = v as i16;
                                        }
                                    } else if bits.get(1) == 1
                                        && let Some(p) = planes[ci].get_mut(idx)
                                    {
                                        *p |= 1 << al;
                                    }
                                    if !progressive {
                                        let t = ac_tables[ta].as_ref().ok_or("missing AC Huffman table")?;
                                        t.skip_ac(&mut bits, 1)?;
                                    }
                                }
                            }
                        }
                    }
                }
                if bits.fake_bits > bits.n {
                    return Err("the image data is truncated".into());
                }
                pos = skip_entropy(bytes, bits.pos.min(bytes.len()));
            }
            _ => {}
        }
    }
    if scans == 0 {
        return Err("no image data".into());
    }

    // Dequantise, level-shift and upsample to the 1/8-scale frame.
    let ow = usize::from(header.width).div_ceil(8);
    let oh = usize::from(header.height).div_ceil(8);
    let mut samples: Vec<Vec<u8>> = Vec::with_capacity(ncomp);
    for (ci, c) in comps.iter().enumerate() {
        let q = i32::from(qt[usize::from(c.tq)].ok_or("missing quantisation table")?[0]);
        let (fx, fy) = (hmax / usize::from(c.h), vmax / usize::from(c.v));
        let mut out = vec![0u8; ow * oh];
        for y in 0..oh {
            let row = &planes[ci][(y / fy).min(ph[ci] - 1) * pw[ci]..];
            for (x, o) in out[y * ow..(y + 1) * ow].iter_mut().enumerate() {
                let dc = i32::from(row[(x / fx).min(pw[ci] - 1)]) * q;
                *o = ((dc + 4).div_euclid(8) + 128).clamp(0, 255) as u8;
            }
        }
        samples.push(out);
    }
    let channels = if ncomp == 4 { 4 } else { ncomp };
    let mut data = vec![0u8; ow * oh * channels];
    match ncomp {
        1 => data.copy_from_slice(&samples[0]),
        3 => {
            let rgb = is_rgb(header);
            for (i, px) in data.chunks_exact_mut(3).enumerate() {
                let (a, b, c) = (samples[0][i], samples[1][i], samples[2][i]);
                px.copy_from_slice(&if rgb { [a, b, c] } else { ycc_to_rgb(a, b, c) });
            }
        }
        _ => {
            let ycck = header.adobe == Some(2);
            for (i, px) in data.chunks_exact_mut(4).enumerate() {
                let (a, b, c, k) = (samples[0][i], samples[1][i], samples[2][i], samples[3][i]);
                if ycck {
                    let [r, g, bl] = ycc_to_rgb(a, b, c);
                    px.copy_from_slice(&[255 - r, 255 - g, 255 - bl, k]);
                } else {
                    px.copy_from_slice(&[a, b, c, k]);
                }
            }
        }
    }
    Ok(DcImage {
        width: ow,
        height: oh,
        channels,
        data,
    })
}

impl Bits<'_> {
    #[inline(always)]
    fn consume_n(&mut self, s: u32) {
        if self.n < s {
            self.refill();
        }
        self.consume(s);
    }
}

/// The three components are R, G and B rather than YCbCr (Adobe transform 0, or ids 'R' 'G' 'B').
pub fn is_rgb(h: &JpegHeader) -> bool {
    match h.adobe {
        Some(t) => t == 0,
        None => h.components.iter().map(|c| c.id).eq([b'R', b'G', b'B']),
    }
}

/// JFIF YCbCr to RGB (ITU-R BT.601, full range), as libjpeg does it.
pub fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let y = i32::from(y) << 16;
    let cb = i32::from(cb) - 128;
    let cr = i32::from(cr) - 128;
    let r = (y + 91881 * cr + 32768) >> 16;
    let g = (y - 22554 * cb - 46802 * cr + 32768) >> 16;
    let b = (y + 116130 * cb + 32768) >> 16;
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}
