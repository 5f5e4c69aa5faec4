//! Decoding at 1/2 and 1/4 scale with reduced-size inverse DCTs.
//!
//! Every 8x8 block becomes 4x4 (1/2) or 2x2 (1/4) pixels by an NxN IDCT of its NxN
//! lowest-frequency coefficients, as IJG libjpeg (v7 and later) does for scaled decoding: a
//! low-pass filter in the DCT domain followed by decimation. Only those coefficients are
//! dequantised and stored, and baseline AC codes past the last one are walked with the same
//! skip table as the DC decoder.
//!
//! Subsampled components are decoded with a larger IDCT where that makes them come out at the
//! output resolution, as libjpeg-turbo does: at 1/2 scale a 4:2:0 file's chroma uses 8x8 IDCTs
//! while its luma uses 4x4, so no upsampling is needed. What remains (4:2:2, 4:4:0) is upsampled
//! with libjpeg's triangle ("fancy") filters; other ratios replicate samples.
//!
//! Progressive files keep, per block, the zone's coefficients plus a 64-bit mask of which
//! coefficients (in zigzag order) are nonzero, which is all that AC refinement scans need to be
//! parsed. Scans that touch neither the zone nor anything a zone-touching refinement scan depends
//! on are skipped without being entropy-decoded.
use super::{
    Bits, DcImage, Error, Huffman, JpegHeader, MAX_SCANS, TABLES_MEMORY, be16, each_huffman_table, is_rgb,
    mcu_counts, next_segment, skip_entropy,
};
use std::borrow::Cow;

/// Natural (row-major) index of the coefficient at each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Zone slot that receives coefficients outside the zone (never read).
const SINK: u8 = 64;

/// A block's zone coefficients in slot order (row-major n x n); 256 entries so that any `u8`
/// slot indexes it without a bounds check.
type Zone = [i32; 256];

/// Bits of lookahead in the AC value table.
const AC_BITS: u32 = 12;
const AC_EOB: i32 = 1 << 9;

/// An AC Huffman table plus a lookup table that decodes a whole (run, value) pair at once when
/// the code and its magnitude bits fit in [`AC_BITS`]: `len | run << 5 | EOB flag | value << 16`
/// (len 0: take the slow path). Zero-run (ZRL) entries have run 15 and value 0.
struct AcTable {
    huff: Huffman,
    fast: Box<[i32; 1 << AC_BITS]>,
}

impl AcTable {
    fn new(counts: &[u8; 16], values: &[u8]) -> Result<AcTable, Error> {
        let huff = Huffman::new(counts, values)?;
        let mut fast = Box::new([0i32; 1 << AC_BITS]);
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16u32 {
            for _ in 0..counts[len as usize - 1] {
                let rs = huff.values.get(k).copied().unwrap_or(0);
                let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
                if s == 0 && len <= AC_BITS && (r == 0 || r == 15) {
                    let shift = AC_BITS - len;
                    let first = (code as usize) << shift;
                    let e = if r == 0 {
                        len as i32 | AC_EOB
                    } else {
                        len as i32 | 15 << 5
                    };
                    for x in fast.iter_mut().skip(first).take(1 << shift) {
                        *x = e;
                    }
                } else if s > 0 && len + s <= AC_BITS {
                    for m in 0..1u32 << s {
                        let v = if m < 1 << (s - 1) {
                            m as i32 - (1 << s) + 1
                        } else {
                            m as i32
                        };
                        let shift = AC_BITS - len - s;
                        let first = (((code << s) | m) as usize) << shift;
                        let e = (len + s) as i32 | (r as i32) << 5 | v << 16;
                        for x in fast.iter_mut().skip(first).take(1 << shift) {
                            *x = e;
                        }
                    }
                }
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        Ok(AcTable { huff, fast })
    }
}

/// One AC symbol: (run, size, value). Size 0 with run < 15 is an end-of-block (run).
#[inline(always)]
fn ac_symbol(bits: &mut Bits, t: &AcTable) -> Result<(u32, u32, i32), Error> {
    if bits.n < 32 {
        bits.refill();
    }
    let e = t.fast[(bits.acc >> (64 - AC_BITS)) as usize];
    if e & 31 != 0 {
        bits.consume((e & 31) as u32);
        if e & AC_EOB != 0 {
            return Ok((0, 0, 0));
        }
        let r = ((e >> 5) & 15) as u32;
        let v = e >> 16;
        return Ok((r, u32::from(v != 0), v));
    }
    let rs = bits.decode(&t.huff)?;
    let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
    Ok((r, s, bits.receive_extend(s)))
}

/// Where one component's samples come from and how big its pieces are.
#[derive(Debug, Clone)]
struct CompGeom {
    h: usize,
    v: usize,
    /// IDCT size: each 8x8 block becomes n x n samples.
    n: usize,
    /// Block grid, padded to whole MCUs.
    bw: usize,
    bh: usize,
    /// Samples that belong to the image (libjpeg's downsampled_width/height at this scale).
    dw: usize,
    dh: usize,
}

impl CompGeom {
    /// The plane is `bw * n` samples wide.
    fn stride(&self) -> usize {
        self.bw * self.n
    }
}

struct Geometry {
    hmax: usize,
    vmax: usize,
    /// Output samples per 8 source samples: 4 (1/2) or 2 (1/4).
    m: usize,
    ow: usize,
    oh: usize,
    comps: Vec<CompGeom>,
}

/// `planar`: every component at its own resolution (IDCT size `8 / scale` throughout), for
/// callers that resample the planes themselves rather than converting them to RGB here.
fn geometry(header: &JpegHeader, scale: u32, planar: bool) -> Geometry {
    let m = 8 / scale.clamp(1, 8) as usize;
    let comps = &header.components;
    let hmax = comps.iter().map(|c| usize::from(c.h)).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| usize::from(c.v)).max().unwrap_or(1);
    let (mcux, mcuy) = mcu_counts(header);
    let (w, h) = (usize::from(header.width), usize::from(header.height));
    let comps = comps
        .iter()
        .map(|c| {
            let (ch, cv) = (usize::from(c.h), usize::from(c.v));
            // libjpeg-turbo's rule: scale subsampled components up by IDCT where the result is
            // still an integral fraction of the output resolution.
            let mut n = m;
            while !planar
                && n < 8
                && (hmax * m).is_multiple_of(ch * n * 2)
                && (vmax * m).is_multiple_of(cv * n * 2)
            {
                n *= 2;
            }
            let (bw, bh) = (mcux * ch, mcuy * cv);
            CompGeom {
                h: ch,
                v: cv,
                n,
                bw,
                bh,
                dw: (w * ch * n).div_ceil(hmax * 8).clamp(1, bw * n),
                dh: (h * cv * n).div_ceil(vmax * 8).clamp(1, bh * n),
            }
        })
        .collect();
    Geometry {
        hmax,
        vmax,
        m,
        ow: (w * m).div_ceil(8),
        oh: (h * m).div_ceil(8),
        comps,
    }
}

/// An upper bound of the bytes [`decode_scaled`] allocates (besides small tables) for this
/// header at `scale` 2 or 4, including the RGB copy the caller makes of CMYK output.
pub fn scaled_memory(header: &JpegHeader, scale: u32) -> u64 {
    let g = geometry(header, scale, false);
    let progressive = header.is_progressive();
    let mut total = 0u64;
    for c in &g.comps {
        let blocks = (c.bw * c.bh) as u64;
        total += blocks * (c.n * c.n) as u64; // plane
        if progressive {
            total += blocks * ((c.n * c.n) as u64 * 2 + 8);
        }
        if !direct(&g, c) {
            total += (g.ow * g.oh) as u64;
        }
    }
    let px = (g.ow * g.oh) as u64;
    total + px * 4 + px * 3 + TABLES_MEMORY
}

/// The component's plane is already at the output resolution.
fn direct(g: &Geometry, c: &CompGeom) -> bool {
    c.h * c.n == g.hmax * g.m && c.v * c.n == g.vmax * g.m
}

/// Per-component decoding state.
struct Comp {
    geom: CompGeom,
    /// Last zigzag index inside the zone.
    kmax: usize,
    /// Zigzag index -> zone slot (row-major n x n), or [`SINK`]; indices 64.. are for overruns.
    slot: [u8; 128],
    /// Zigzag indices inside the zone, as a bit mask.
    zone_mask: u64,
    /// Dequantisation values in slot order, latched at the component's first scan.
    q: [i32; 64],
    has_q: bool,
    plane: Vec<u8>,
    coefs: Vec<i16>,
    masks: Vec<u64>,
}

impl Comp {
    fn new(geom: CompGeom, progressive: bool) -> Comp {
        let n = geom.n;
        let mut slot = [SINK; 128];
        let mut kmax = 0;
        let mut zone_mask = 0u64;
        for (k, &nat) in ZIGZAG.iter().enumerate() {
            let (r, c) = (usize::from(nat) / 8, usize::from(nat) % 8);
            if r < n && c < n {
                slot[k] = (r * n + c) as u8;
                kmax = k;
                zone_mask |= 1 << k;
            }
        }
        let blocks = geom.bw * geom.bh;
        let plane = vec![0u8; blocks * n * n];
        let (coefs, masks) = if progressive {
            (vec![0i16; blocks * n * n], vec![0u64; blocks])
        } else {
            (Vec::new(), Vec::new())
        };
        Comp {
            geom,
            kmax,
            slot,
            zone_mask,
            q: [0; 64],
            has_q: false,
            plane,
            coefs,
            masks,
        }
    }

    /// Inverse-transform one block's zone (dequantised here) into the plane. `ac`: the zone
    /// may hold nonzero AC coefficients (else only the DC is looked at).
    #[inline(always)]
    fn idct_block(&mut self, zone: &Zone, ac: bool, bx: usize, by: usize) {
        let q = &self.q;
        let n = self.geom.n;
        let stride = self.geom.stride();
        let off = by * n * stride + bx * n;
        let Some(out) = self.plane.get_mut(off..) else {
            return;
        };
        if !ac || n == 1 {
            let v = sample(zone[0].wrapping_mul(q[0]).wrapping_add(4) >> 3);
            for row in out.chunks_mut(stride).take(n) {
                if let Some(r) = row.get_mut(..n) {
                    r.fill(v);
                }
            }
            return;
        }
        match n {
            2 => idct2(zone, q, out, stride),
            4 => idct4(zone, q, out, stride),
            _ => idct8(zone, q, out, stride),
        }
    }
}

/// Decode a Huffman-coded 8-bit JPEG at `scale` 2 (1/2) or 4 (1/4). Output as [`DcImage`]:
/// ceil(width * k / 8) x ceil(height * k / 8) pixels, grey, RGB, or CMYK as libjpeg returns it.
pub fn decode_scaled(bytes: &[u8], header: &JpegHeader, scale: u32) -> Result<DcImage, Error> {
    let (g, comps) = decode_components(bytes, header, scale, false)?;
    Ok(convert(header, &g, &comps))
}

/// One component's samples, `width` per row, no padding.
pub struct Plane {
    pub width: usize,
    pub height: usize,
    /// Samples per pixel of the full-size image, across and down (exact: `width` and `height`
    /// are rounded up).
    pub x_per_source: f64,
    pub y_per_source: f64,
    pub data: Vec<u8>,
}

/// Decode at `scale` 2 or 4 like [`decode_scaled`], but return the components as they are coded
/// (Y, Cb, Cr; each at its own subsampled resolution, with no upsampling or colour conversion)
/// so that the caller can resample them straight to the output size and convert only there.
pub fn decode_scaled_planes(bytes: &[u8], header: &JpegHeader, scale: u32) -> Result<Vec<Plane>, Error> {
    let (g, comps) = decode_components(bytes, header, scale, true)?;
    Ok(comps
        .into_iter()
        .map(|c| {
            let x_per_source = (c.geom.h * c.geom.n) as f64 / (g.hmax * 8) as f64;
            let y_per_source = (c.geom.v * c.geom.n) as f64 / (g.vmax * 8) as f64;
            let (stride, width, height) = (c.geom.stride(), c.geom.dw, c.geom.dh);
            let mut data = c.plane;
            if stride != width {
                for y in 1..height {
                    data.copy_within(y * stride..y * stride + width, y * width);
                }
            }
            data.truncate(width * height);
            Plane {
                width,
                height,
                x_per_source,
                y_per_source,
                data,
            }
        })
        .collect())
}

fn decode_components(
    bytes: &[u8],
    header: &JpegHeader,
    scale: u32,
    planar: bool,
) -> Result<(Geometry, Vec<Comp>), Error> {
    if scale != 2 && scale != 4 {
        return Err(format!("unsupported reduced-size scale 1/{scale}"));
    }
    if header.width == 0 || header.height == 0 {
        return Err("zero image dimension".into());
    }
    if header.huffman.is_none() {
        return Err("not a Huffman-coded 8-bit JPEG".into());
    }
    let progressive = header.is_progressive();
    let g = geometry(header, scale, planar);
    let (mcux, mcuy) = mcu_counts(header);
    let mut comps: Vec<Comp> = g
        .comps
        .iter()
        .map(|c| Comp::new(c.clone(), progressive))
        .collect();
    let needed_scans = if progressive {
        plan_progressive(bytes, header, &comps)
    } else {
        Vec::new()
    };

    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<AcTable>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut scan_index = 0usize;

    let mut pos = 2;
    while let Some((marker, seg)) = next_segment(bytes, &mut pos)? {
        match marker {
            0xDB => read_dqt(seg, &mut qt)?,
            0xC4 => each_huffman_table(seg, |class, id, counts, values| {
                if class == 0 {
                    dc_tables[id] = Some(Huffman::new(counts, values)?);
                } else {
                    ac_tables[id] = Some(AcTable::new(counts, values)?);
                }
                Ok(())
            })?,
            0xDD => restart_interval = be16(seg, 0)?,
            0xDA => {
                let scan = parse_sos(seg, header)?;
                let this_scan = scan_index;
                scan_index += 1;
                if scan_index > MAX_SCANS {
                    return Err(format!("more than {MAX_SCANS} scans"));
                }
                if progressive && !needed_scans.get(this_scan).copied().unwrap_or(true) {
                    pos = skip_entropy(bytes, pos);
                    if pos >= bytes.len() {
                        return Err("the image data is truncated".into());
                    }
                    continue;
                }
                for &(ci, _, _) in &scan.comps {
                    let c = &mut comps[ci];
                    if !c.has_q {
                        let tq = usize::from(header.components[ci].tq);
                        let table = qt[tq].ok_or("missing quantisation table")?;
                        for (k, &nat) in ZIGZAG.iter().enumerate() {
                            let s = c.slot[k];
                            if s != SINK {
                                c.q[usize::from(s)] = i32::from(table[usize::from(nat)]);
                            }
                        }
                        c.has_q = true;
                    }
                }
                let ctx = ScanCtx {
                    scan: &scan,
                    header,
                    dc_tables: &dc_tables,
                    ac_tables: &ac_tables,
                    restart_interval,
                    mcux,
                    mcuy,
                    hmax: g.hmax,
                    vmax: g.vmax,
                };
                let mut bits = Bits::new(bytes, pos);
                if progressive {
                    decode_progressive_scan(&ctx, &mut bits, &mut comps)?;
                } else {
                    decode_baseline_scan(&ctx, &mut bits, &mut comps)?;
                }
                if bits.fake_bits > bits.n {
                    return Err("the image data is truncated".into());
                }
                pos = skip_entropy(bytes, bits.pos.min(bytes.len()));
            }
            _ => {}
        }
    }
    if scan_index == 0 {
        return Err("no image data".into());
    }
    if progressive {
        for c in &mut comps {
            if !c.has_q {
                continue; // never in a scan: stays black
            }
            let nn = c.geom.n * c.geom.n;
            let mut zone: Zone = [0; 256];
            for by in 0..c.geom.bh {
                for bx in 0..c.geom.bw {
                    let b = by * c.geom.bw + bx;
                    let src = c
                        .coefs
                        .get(b * nn..(b + 1) * nn)
                        .ok_or("coefficient buffer too small")?;
                    for (z, &v) in zone.iter_mut().zip(src) {
                        *z = i32::from(v);
                    }
                    let ac = c.masks.get(b).is_some_and(|&m| m & c.zone_mask & !1 != 0);
                    c.idct_block(&zone, ac, bx, by);
                }
            }
            c.coefs = Vec::new();
            c.masks = Vec::new();
        }
    }
    Ok((g, comps))
}

pub(super) fn read_dqt(seg: &[u8], qt: &mut [Option<[u16; 64]>; 4]) -> Result<(), Error> {
    let mut p = 0;
    while p < seg.len() {
        let (pq, tq) = (seg[p] >> 4, usize::from(seg[p] & 15));
        if tq > 3 || pq > 1 {
            return Err("invalid quantisation table id".into());
        }
        let mut t = [0u16; 64];
        for (k, &nat) in ZIGZAG.iter().enumerate() {
            let v = if pq == 0 {
                seg.get(p + 1 + k).map(|&v| u16::from(v))
            } else {
                be16(seg, p + 1 + 2 * k).ok().map(|v| v as u16)
            };
            t[usize::from(nat)] = v.ok_or("quantisation table too short")?;
        }
        qt[tq] = Some(t);
        p += 1 + 64 * (usize::from(pq) + 1);
    }
    Ok(())
}

struct Scan {
    /// (component index, DC table, AC table)
    comps: Vec<(usize, usize, usize)>,
    ss: usize,
    se: usize,
    ah: u32,
    al: u32,
}

fn parse_sos(seg: &[u8], header: &JpegHeader) -> Result<Scan, Error> {
    let ns = usize::from(*seg.first().ok_or("scan header too short")?);
    if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
        return Err("invalid scan header".into());
    }
    let mut comps = Vec::with_capacity(ns);
    for i in 0..ns {
        let id = seg[1 + 2 * i];
        let ci = header
            .components
            .iter()
            .position(|c| c.id == id)
            .ok_or("scan refers to an unknown component")?;
        let t = seg[2 + 2 * i];
        if t >> 4 > 3 || t & 15 > 3 {
            return Err("scan refers to an invalid Huffman table".into());
        }
        comps.push((ci, usize::from(t >> 4), usize::from(t & 15)));
    }
    let ss = usize::from(seg[1 + 2 * ns]);
    let se = usize::from(seg[2 + 2 * ns]);
    let (ah, al) = (u32::from(seg[3 + 2 * ns] >> 4), u32::from(seg[3 + 2 * ns] & 15));
    if al > 13 || ah > 13 {
        return Err("invalid successive approximation".into());
    }
    if header.is_progressive() {
        if ss > se || se > 63 || (ss == 0 && se != 0) {
            return Err("invalid progressive spectral selection".into());
        }
        if ss > 0 && ns != 1 {
            return Err("progressive AC scan with more than one component".into());
        }
    }
    Ok(Scan {
        comps,
        ss,
        se,
        ah,
        al,
    })
}

/// Band of zigzag indices ss..=se as a bit mask.
fn band_mask(ss: usize, se: usize) -> u64 {
    if ss > se || se > 63 {
        return 0;
    }
    let hi = if se == 63 {
        u64::MAX
    } else {
        (1u64 << (se + 1)) - 1
    };
    hi & !((1u64 << ss) - 1)
}

/// Which scans of a progressive file must be decoded. A scan is needed when its band meets the
/// zone, or meets the band of a needed refinement scan of the same component (a refinement scan
/// can only be parsed knowing which of its band's coefficients are already nonzero). Scans that
/// cannot be listed (corrupt layout) count as needed.
fn plan_progressive(bytes: &[u8], header: &JpegHeader, comps: &[Comp]) -> Vec<bool> {
    // (component, band, refinement) per scan; DC scans as band bit 0.
    let mut scans: Vec<(usize, u64, bool)> = Vec::new();
    let mut pos = 2;
    // A damaged file ends the plan early; decoding reports the damage.
    while let Ok(Some((marker, seg))) = next_segment(bytes, &mut pos) {
        if marker == 0xDA {
            let Ok(scan) = parse_sos(seg, header) else {
                break;
            };
            let band = band_mask(scan.ss, scan.se);
            // A multi-component scan is a DC scan: always needed.
            let ci = if scan.comps.len() == 1 {
                scan.comps[0].0
            } else {
                usize::MAX
            };
            scans.push((ci, band, scan.ah > 0));
            if scans.len() > MAX_SCANS {
                break;
            }
            pos = skip_entropy(bytes, pos);
        }
    }
    let mut needed: Vec<u64> = comps.iter().map(|c| c.zone_mask | 1).collect();
    loop {
        let mut changed = false;
        for &(ci, band, refine) in &scans {
            if let Some(n) = needed.get_mut(ci)
                && refine
                && band & *n != 0
                && band & !*n != 0
            {
                *n |= band;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    scans
        .iter()
        .map(|&(ci, band, _)| needed.get(ci).is_none_or(|n| band & n != 0))
        .collect()
}

struct ScanCtx<'a> {
    scan: &'a Scan,
    header: &'a JpegHeader,
    dc_tables: &'a [Option<Huffman>; 4],
    ac_tables: &'a [Option<AcTable>; 4],
    restart_interval: usize,
    mcux: usize,
    mcuy: usize,
    hmax: usize,
    vmax: usize,
}

impl ScanCtx<'_> {
    /// Units (MCUs, or blocks of a single-component scan) across and down.
    fn units(&self) -> (usize, usize) {
        if self.scan.comps.len() == 1 {
            let c = self.header.components[self.scan.comps[0].0];
            let cw = (usize::from(self.header.width) * usize::from(c.h)).div_ceil(self.hmax);
            let ch = (usize::from(self.header.height) * usize::from(c.v)).div_ceil(self.vmax);
            (cw.div_ceil(8), ch.div_ceil(8))
        } else {
            (self.mcux, self.mcuy)
        }
    }

    /// Blocks per unit of a scan component: its sampling factors, or 1x1 in a one-component scan.
    fn blocks_per_unit(&self, c: &CompGeom) -> (usize, usize) {
        if self.scan.comps.len() == 1 {
            (1, 1)
        } else {
            (c.h, c.v)
        }
    }
}

// Inlined into decode_components so that its `Bits` never leaves registers (see `Bits`).
#[inline(always)]
fn decode_baseline_scan(ctx: &ScanCtx, bits: &mut Bits, comps: &mut [Comp]) -> Result<(), Error> {
    let scan = ctx.scan;
    let mut tables = Vec::with_capacity(scan.comps.len());
    for &(_, td, ta) in &scan.comps {
        tables.push((
            ctx.dc_tables[td].as_ref().ok_or("missing DC Huffman table")?,
            ctx.ac_tables[ta].as_ref().ok_or("missing AC Huffman table")?,
        ));
    }
    let (ux, uy) = ctx.units();
    let mut preds = [0i32; 4];
    let mut since_restart = 0usize;
    let mut zone: Zone = [0; 256];
    for uyi in 0..uy {
        for uxi in 0..ux {
            if ctx.restart_interval > 0 && since_restart == ctx.restart_interval {
                bits.restart();
                preds = [0; 4];
                since_restart = 0;
            }
            since_restart += 1;
            for (si, &(ci, _, _)) in scan.comps.iter().enumerate() {
                let (dc, ac) = tables[si];
                let c = &mut comps[ci];
                let (bh, bv) = ctx.blocks_per_unit(&c.geom);
                let nn = c.geom.n * c.geom.n;
                for by in 0..bv {
                    for bx in 0..bh {
                        // Constant lengths, so that this is a few stores rather than a memset call.
                        match nn {
                            1 => zone[0] = 0,
                            4 => zone[..4].fill(0),
                            16 => zone[..16].fill(0),
                            _ => zone[..64].fill(0),
                        }
                        let has_ac = decode_block(bits, dc, ac, &mut preds[si], &mut zone, &c.slot, c.kmax)?;
                        let (x, y) = (uxi * bh + bx, uyi * bv + by);
                        if x < c.geom.bw && y < c.geom.bh {
                            c.idct_block(&zone, has_ac, x, y);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// One baseline block: the DC and the zone's AC coefficients into `zone` (slot order, not yet
/// dequantised); the AC codes past the zone are only walked. Returns whether any AC coefficient
/// up to the zone's last zigzag index was coded.
#[inline(always)]
fn decode_block(
    bits: &mut Bits,
    dc: &Huffman,
    ac: &AcTable,
    pred: &mut i32,
    zone: &mut Zone,
    slot: &[u8; 128],
    kmax: usize,
) -> Result<bool, Error> {
    let s = u32::from(bits.decode(dc)?);
    if s > 16 {
        return Err("invalid DC coefficient size".into());
    }
    *pred = pred.wrapping_add(bits.receive_extend(s));
    zone[0] = (*pred).clamp(-32768, 32767);
    let mut k = 1usize;
    while k <= kmax {
        if bits.n < 32 {
            bits.refill();
        }
        let e = ac.fast[(bits.acc >> (64 - AC_BITS)) as usize];
        if e & 31 != 0 {
            bits.consume((e & 31) as u32);
            if e & AC_EOB != 0 {
                return Ok(k > 1);
            }
            k += ((e >> 5) & 15) as usize;
            zone[usize::from(slot[k & 127])] = e >> 16;
            k += 1;
            continue;
        }
        let rs = bits.decode(&ac.huff)?;
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s == 0 {
            if r != 15 {
                return Ok(k > 1);
            }
            k += 16;
            continue;
        }
        k += r;
        zone[usize::from(slot[k & 127])] = bits.receive_extend(s);
        k += 1;
    }
    ac.huff.skip_ac(bits, k)?;
    Ok(true)
}

// Inlined into decode_components so that its `Bits` never leaves registers (see `Bits`).
#[inline(always)]
fn decode_progressive_scan(ctx: &ScanCtx, bits: &mut Bits, comps: &mut [Comp]) -> Result<(), Error> {
    let scan = ctx.scan;
    if scan.ss > 0 {
        let ac = ctx.ac_tables[scan.comps[0].2]
            .as_ref()
            .ok_or("missing AC Huffman table")?;
        let c = comps
            .get_mut(scan.comps[0].0)
            .ok_or("scan refers to an unknown component")?;
        return decode_ac_scan(ctx, bits, c, ac);
    }
    let (ux, uy) = ctx.units();
    let mut preds = [0i32; 4];
    let mut since_restart = 0usize;
    let mut dc_tabs = Vec::with_capacity(scan.comps.len());
    if scan.ah == 0 {
        for &(_, td, _) in &scan.comps {
            dc_tabs.push(ctx.dc_tables[td].as_ref().ok_or("missing DC Huffman table")?);
        }
    }
    let al = scan.al;
    for uyi in 0..uy {
        for uxi in 0..ux {
            if ctx.restart_interval > 0 && since_restart == ctx.restart_interval {
                bits.restart();
                preds = [0; 4];
                since_restart = 0;
            }
            since_restart += 1;
            for (si, &(ci, _, _)) in scan.comps.iter().enumerate() {
                let c = &mut comps[ci];
                let (bh, bv) = ctx.blocks_per_unit(&c.geom);
                let nn = c.geom.n * c.geom.n;
                for by in 0..bv {
                    for bx in 0..bh {
                        let (x, y) = (uxi * bh + bx, uyi * bv + by);
                        let inside = x < c.geom.bw && y < c.geom.bh;
                        let mut sink = 0i16;
                        let dc = match c.coefs.get_mut((y * c.geom.bw + x) * nn) {
                            Some(v) if inside => v,
                            _ => &mut sink,
                        };
                        if scan.ah == 0 {
                            let s = u32::from(bits.decode(dc_tabs[si])?);
                            if s > 16 {
                                return Err("invalid DC coefficient size".into());
                            }
                            preds[si] = preds[si].wrapping_add(bits.receive_extend(s));
                            *dc = (preds[si].clamp(-32768, 32767) << al).clamp(-32768, 32767) as i16;
                        } else if bits.get(1) == 1 {
                            *dc |= 1 << al;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// An AC scan of a progressive file (always a single component, block by block).
// Inlined into decode_components so that its `Bits` never leaves registers (see `Bits`).
#[inline(always)]
fn decode_ac_scan(ctx: &ScanCtx, bits: &mut Bits, c: &mut Comp, ac: &AcTable) -> Result<(), Error> {
    let scan = ctx.scan;
    let (ux, uy) = ctx.units();
    let nn = c.geom.n * c.geom.n;
    let bw = c.geom.bw;
    let (ss, se, al) = (scan.ss, scan.se, scan.al);
    let refine = scan.ah != 0;
    let zone_mask = c.zone_mask;
    let Comp {
        coefs, masks, slot, ..
    } = c;
    let mut eobrun = 0u32;
    let mut since_restart = 0usize;
    // Where a block outside the coefficient buffer (none, for a consistent header) would go.
    let (mut sink_c, mut sink_m) = ([0i16; 64], 0u64);
    for y in 0..uy {
        for x in 0..ux {
            if ctx.restart_interval > 0 && since_restart == ctx.restart_interval {
                bits.restart();
                eobrun = 0;
                since_restart = 0;
            }
            since_restart += 1;
            if !refine && eobrun > 0 {
                eobrun -= 1;
                continue;
            }
            let b = y * bw + x;
            let (cf, m) = match (coefs.get_mut(b * nn..(b + 1) * nn), masks.get_mut(b)) {
                (Some(cf), Some(m)) if x < bw => (cf, m),
                _ => (&mut sink_c[..], &mut sink_m),
            };
            if refine {
                ac_refine(bits, ac, (ss, se), al, &mut eobrun, cf, m, slot, zone_mask)?;
            } else {
                ac_first(bits, ac, (ss, se), al, &mut eobrun, cf, m, slot)?;
            }
        }
    }
    Ok(())
}

/// One block of a first AC scan (successive-approximation bit `al`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ac_first(
    bits: &mut Bits,
    ac: &AcTable,
    (ss, se): (usize, usize),
    al: u32,
    eobrun: &mut u32,
    coefs: &mut [i16],
    mask: &mut u64,
    slot: &[u8; 128],
) -> Result<(), Error> {
    let mut k = ss;
    while k <= se {
        let (r, s, v) = ac_symbol(bits, ac)?;
        if s == 0 {
            if r < 15 {
                *eobrun = (1 << r) - 1;
                if r > 0 {
                    *eobrun += bits.get(r);
                }
                break;
            }
            k += 16;
            continue;
        }
        k += r as usize;
        if k > 63 {
            break;
        }
        *mask |= 1 << k;
        if let Some(z) = coefs.get_mut(usize::from(slot[k])) {
            *z = ((v << al).clamp(-32768, 32767)) as i16;
        }
        k += 1;
    }
    Ok(())
}

/// Bits `a..=b` of a mask (empty when `a > b`).
#[inline(always)]
fn span(a: usize, b: usize) -> u64 {
    if a > b || a > 63 {
        return 0;
    }
    let hi = if b >= 63 { u64::MAX } else { (2u64 << b) - 1 };
    hi & (u64::MAX << a)
}

/// Read one correction bit for each coefficient in `nz` (in zigzag order) and apply those that
/// fall in the zone; the others' bits are only skipped. Up to 32 bits are taken at once.
#[inline(always)]
fn correct(bits: &mut Bits, coefs: &mut [i16], slot: &[u8; 128], zone_mask: u64, nz: u64, p1: i16) {
    let mut rest = nz;
    while rest != 0 {
        let count = rest.count_ones();
        let chunk = if count <= 32 {
            rest
        } else {
            let mut later = rest;
            for _ in 0..32 {
                later &= later - 1;
            }
            rest & !later
        };
        let take = count.min(32);
        let v = bits.peek(take);
        bits.consume(take);
        let mut in_zone = chunk & zone_mask;
        while in_zone != 0 {
            let p = in_zone.trailing_zeros() as usize;
            // This coefficient's bit is the j-th of the chunk, j counted from the first.
            let j = (chunk & ((1u64 << p) - 1)).count_ones();
            if (v >> (take - 1 - j)) & 1 == 1
                && let Some(z) = coefs.get_mut(usize::from(slot[p]))
                && *z & p1 == 0
            {
                *z = if *z >= 0 {
                    z.saturating_add(p1)
                } else {
                    z.saturating_sub(p1)
                };
            }
            in_zone &= in_zone - 1;
        }
        rest &= !chunk;
    }
}

/// One block of an AC refinement scan: new coefficients of magnitude `1 << al` and one
/// correction bit per coefficient that already has history (libjpeg's decode_mcu_AC_refine).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ac_refine(
    bits: &mut Bits,
    ac: &AcTable,
    (ss, se): (usize, usize),
    al: u32,
    eobrun: &mut u32,
    coefs: &mut [i16],
    mask: &mut u64,
    slot: &[u8; 128],
    zone_mask: u64,
) -> Result<(), Error> {
    let p1 = 1i16 << al;
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = bits.decode(&ac.huff)?;
            let (r, s) = (u32::from(rs >> 4), rs & 15);
            let mut val = 0i16;
            if s != 0 {
                val = if bits.get(1) == 1 { p1 } else { -p1 };
            } else if r != 15 {
                *eobrun = 1 << r;
                if r > 0 {
                    *eobrun += bits.get(r);
                }
                break;
            }
            // The new coefficient goes to the (r + 1)-th position from k on without history
            // (past the band when there are not that many); those with history in between get
            // a correction bit each.
            let mut zeros = !*mask & span(k, se);
            for _ in 0..r {
                zeros &= zeros.wrapping_sub(1);
            }
            let target = if zeros == 0 {
                se + 1
            } else {
                zeros.trailing_zeros() as usize
            };
            correct(
                bits,
                coefs,
                slot,
                zone_mask,
                *mask & span(k, target.wrapping_sub(1)),
                p1,
            );
            k = target;
            if val != 0 && k < 64 {
                *mask |= 1 << k;
                if let Some(z) = coefs.get_mut(usize::from(slot[k])) {
                    *z = val;
                }
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        correct(bits, coefs, slot, zone_mask, *mask & span(k, se), p1);
        *eobrun -= 1;
    }
    Ok(())
}

// Reduced-size inverse DCTs. Input: the zone in slot order (row-major n x n), not yet
// dequantised. 32-bit fixed point as in libjpeg, whose scaling keeps every intermediate of a valid
// stream within 32 bits; the arithmetic wraps so that corrupt coefficients only give wrong
// pixels. Each pass transforms all columns (then all rows) at once, lane by lane, so that the
// compiler can vectorise it.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

/// Lane-wise i32 arithmetic on N lanes (wrapping).
#[derive(Clone, Copy)]
struct V<const N: usize>([i32; N]);

impl<const N: usize> V<N> {
    #[inline(always)]
    fn map2(self, o: V<N>, f: impl Fn(i32, i32) -> i32) -> V<N> {
        V(std::array::from_fn(|i| f(self.0[i], o.0[i])))
    }
    #[inline(always)]
    fn add(self, o: V<N>) -> V<N> {
        self.map2(o, i32::wrapping_add)
    }
    #[inline(always)]
    fn sub(self, o: V<N>) -> V<N> {
        self.map2(o, i32::wrapping_sub)
    }
    #[inline(always)]
    fn mul(self, k: i32) -> V<N> {
        V(self.0.map(|v| v.wrapping_mul(k)))
    }
    #[inline(always)]
    fn shl(self, n: u32) -> V<N> {
        V(self.0.map(|v| v << n))
    }
    /// Round and shift right by `n`.
    #[inline(always)]
    fn descale(self, n: u32) -> V<N> {
        V(self.0.map(|v| v.wrapping_add(1 << (n - 1)) >> n))
    }
}

#[inline(always)]
fn sample(x: i32) -> u8 {
    x.wrapping_add(128).clamp(0, 255) as u8
}

/// Dequantised coefficients as rows of lanes: `rows[r].0[c]` is coefficient (r, c).
#[inline(always)]
fn dequantise<const N: usize>(z: &Zone, q: &[i32; 64]) -> [V<N>; N] {
    std::array::from_fn(|r| V(std::array::from_fn(|c| z[r * N + c].wrapping_mul(q[r * N + c]))))
}

/// Transpose so that lanes become rows.
#[inline(always)]
fn transpose<const N: usize>(m: [V<N>; N]) -> [V<N>; N] {
    std::array::from_fn(|r| V(std::array::from_fn(|c| m[c].0[r])))
}

#[inline(always)]
fn store<const N: usize>(cols: [V<N>; N], shift: u32, out: &mut [u8], stride: usize) {
    // `cols[c].0[r]` is the pixel at row r, column c.
    for r in 0..N {
        if let Some(o) = out.get_mut(r * stride..r * stride + N) {
            for (c, px) in o.iter_mut().enumerate() {
                *px = sample(cols[c].0[r].wrapping_add(1 << (shift - 1)) >> shift);
            }
        }
    }
}

#[cfg(test)]
fn idct1(z: &Zone, q: &[i32; 64], out: &mut [u8]) {
    if let Some(o) = out.first_mut() {
        *o = sample(z[0].wrapping_mul(q[0]).wrapping_add(4) >> 3);
    }
}

fn idct2(z: &Zone, q: &[i32; 64], out: &mut [u8], stride: usize) {
    let [r0, r1] = dequantise::<2>(z, q);
    // Columns, then rows: [a + b, a - b] each way.
    let cols = transpose([r0.add(r1), r0.sub(r1)]);
    let [a, b] = cols;
    store([a.add(b), a.sub(b)], 3, out, stride);
}

/// One 4-point pass (IJG libjpeg's jpeg_idct_4x4): even part scaled by `even_shift`, odd part
/// descaled by `odd_descale` (0: kept at CONST_BITS).
#[inline(always)]
fn idct4_pass(x: [V<4>; 4], even_shift: u32, odd_descale: u32) -> [V<4>; 4] {
    let tmp10 = x[0].add(x[2]).shl(even_shift);
    let tmp12 = x[0].sub(x[2]).shl(even_shift);
    let z1 = x[1].add(x[3]).mul(FIX_0_541196100);
    let mut tmp0 = z1.add(x[1].mul(FIX_0_765366865));
    let mut tmp2 = z1.sub(x[3].mul(FIX_1_847759065));
    if odd_descale > 0 {
        tmp0 = tmp0.descale(odd_descale);
        tmp2 = tmp2.descale(odd_descale);
    }
    [tmp10.add(tmp0), tmp12.add(tmp2), tmp12.sub(tmp2), tmp10.sub(tmp0)]
}

/// 4-point IDCT of the 4x4 zone (IJG libjpeg's jpeg_idct_4x4 arithmetic).
fn idct4(z: &Zone, q: &[i32; 64], out: &mut [u8], stride: usize) {
    let x = dequantise::<4>(z, q);
    let ws = idct4_pass(x, PASS1_BITS, CONST_BITS - PASS1_BITS);
    let cols = idct4_pass(transpose(ws), CONST_BITS, 0);
    store(cols, CONST_BITS + PASS1_BITS + 3, out, stride);
}

/// One 8-point IDCT (Loeffler-Ligtenberg-Moschytz, as libjpeg's jpeg_idct_islow), outputs
/// before descaling, scaled by 2^CONST_BITS.
#[inline(always)]
fn idct8_1d(x: [i32; 8]) -> [i32; 8] {
    let mul = i32::wrapping_mul;
    let z1 = mul(x[2].wrapping_add(x[6]), FIX_0_541196100);
    let tmp2 = z1.wrapping_sub(mul(x[6], FIX_1_847759065));
    let tmp3 = z1.wrapping_add(mul(x[2], FIX_0_765366865));
    let tmp0 = x[0].wrapping_add(x[4]) << CONST_BITS;
    let tmp1 = x[0].wrapping_sub(x[4]) << CONST_BITS;
    let (tmp10, tmp13) = (tmp0.wrapping_add(tmp3), tmp0.wrapping_sub(tmp3));
    let (tmp11, tmp12) = (tmp1.wrapping_add(tmp2), tmp1.wrapping_sub(tmp2));

    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z1 = t0.wrapping_add(t3);
    let z2 = t1.wrapping_add(t2);
    let z3 = t0.wrapping_add(t2);
    let z4 = t1.wrapping_add(t3);
    let z5 = mul(z3.wrapping_add(z4), FIX_1_175875602);
    let z1 = mul(z1, -FIX_0_899976223);
    let z2 = mul(z2, -FIX_2_562915447);
    let z3 = mul(z3, -FIX_1_961570560).wrapping_add(z5);
    let z4 = mul(z4, -FIX_0_390180644).wrapping_add(z5);
    let t0 = mul(t0, FIX_0_298631336).wrapping_add(z1).wrapping_add(z3);
    let t1 = mul(t1, FIX_2_053119869).wrapping_add(z2).wrapping_add(z4);
    let t2 = mul(t2, FIX_3_072711026).wrapping_add(z2).wrapping_add(z3);
    let t3 = mul(t3, FIX_1_501321110).wrapping_add(z1).wrapping_add(z4);
    [
        tmp10.wrapping_add(t3),
        tmp11.wrapping_add(t2),
        tmp12.wrapping_add(t1),
        tmp13.wrapping_add(t0),
        tmp13.wrapping_sub(t0),
        tmp12.wrapping_sub(t1),
        tmp11.wrapping_sub(t2),
        tmp10.wrapping_sub(t3),
    ]
}

/// Full 8x8 IDCT (libjpeg's accurate integer method), for chroma decoded at twice luma's size.
/// Columns and rows without AC coefficients (most of them, in chroma) take a shortcut.
fn idct8(z: &Zone, q: &[i32; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for col in 0..8 {
        let x: [i32; 8] = std::array::from_fn(|r| z[r * 8 + col].wrapping_mul(q[r * 8 + col]));
        if x[1..].iter().all(|&v| v == 0) {
            for r in 0..8 {
                ws[r * 8 + col] = x[0] << PASS1_BITS;
            }
            continue;
        }
        let y = idct8_1d(x);
        for (r, &v) in y.iter().enumerate() {
            ws[r * 8 + col] = v.wrapping_add(1 << (CONST_BITS - PASS1_BITS - 1)) >> (CONST_BITS - PASS1_BITS);
        }
    }
    const SHIFT: u32 = CONST_BITS + PASS1_BITS + 3;
    for (r, w) in ws.chunks_exact(8).enumerate() {
        let Some(o) = out.get_mut(r * stride..r * stride + 8) else {
            continue;
        };
        let w: [i32; 8] = std::array::from_fn(|i| w[i]);
        if w[1..].iter().all(|&v| v == 0) {
            o.fill(sample(
                w[0].wrapping_add(1 << (PASS1_BITS + 2)) >> (PASS1_BITS + 3),
            ));
            continue;
        }
        for (px, v) in o.iter_mut().zip(idct8_1d(w)) {
            *px = sample(v.wrapping_add(1 << (SHIFT - 1)) >> SHIFT);
        }
    }
}

/// Upsample (if needed), colour-convert and interleave the component planes.
fn convert(header: &JpegHeader, g: &Geometry, comps: &[Comp]) -> DcImage {
    let (ow, oh) = (g.ow, g.oh);
    let planes: Vec<(Cow<[u8]>, usize)> = comps.iter().map(|c| upsample(g, c)).collect();
    let ncomp = planes.len();
    let channels = if ncomp == 4 { 4 } else { ncomp.min(3) };
    let mut data = vec![0u8; ow * oh * channels];
    let row = |i: usize, y: usize| -> &[u8] {
        let (p, stride) = &planes[i];
        p.get(y * stride..y * stride + ow).unwrap_or(&[])
    };
    let ycc = YccTables::new();
    for (y, out) in data.chunks_exact_mut(ow * channels).enumerate() {
        match ncomp {
            1 => out.copy_from_slice(row(0, y)),
            3 => {
                let (a, b, c) = (row(0, y), row(1, y), row(2, y));
                let px = out.chunks_exact_mut(3).zip(a.iter().zip(b.iter().zip(c)));
                if is_rgb(header) {
                    for (o, (&a, (&b, &c))) in px {
                        o.copy_from_slice(&[a, b, c]);
                    }
                } else {
                    for (o, (&a, (&b, &c))) in px {
                        o.copy_from_slice(&ycc.rgb(a, b, c));
                    }
                }
            }
            _ => {
                let (a, b, c, k) = (row(0, y), row(1, y), row(2, y), row(3, y));
                let px = out
                    .chunks_exact_mut(4)
                    .zip(a.iter().zip(b.iter().zip(c.iter().zip(k))));
                if header.adobe == Some(2) {
                    for (o, (&a, (&b, (&c, &k)))) in px {
                        let [r, g, bl] = ycc.rgb(a, b, c);
                        o.copy_from_slice(&[255 - r, 255 - g, 255 - bl, k]);
                    }
                } else {
                    for (o, (&a, (&b, (&c, &k)))) in px {
                        o.copy_from_slice(&[a, b, c, k]);
                    }
                }
            }
        }
    }
    DcImage {
        width: ow,
        height: oh,
        channels,
        data,
    }
}

/// libjpeg's YCbCr->RGB tables (jdcolor.c): exact integer results of the JFIF equations.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> YccTables {
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (91881 * x + 32768) >> 16;
            t.cb_b[i] = (116130 * x + 32768) >> 16;
            t.cr_g[i] = -46802 * x;
            t.cb_g[i] = -22554 * x + 32768;
        }
        t
    }

    #[inline(always)]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        [
            (y + self.cr_r[cr]).clamp(0, 255) as u8,
            (y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)).clamp(0, 255) as u8,
            (y + self.cb_b[cb]).clamp(0, 255) as u8,
        ]
    }
}

/// The component at the output resolution: its plane (with the plane's stride) when it already
/// is, else an upsampled copy.
fn upsample<'a>(g: &Geometry, c: &'a Comp) -> (Cow<'a, [u8]>, usize) {
    let cg = &c.geom;
    let stride = cg.stride();
    if direct(g, cg) {
        return (Cow::Borrowed(&c.plane[..]), stride);
    }
    let (ow, oh) = (g.ow, g.oh);
    let (num_x, num_y) = (cg.h * cg.n, cg.v * cg.n);
    let (den_x, den_y) = (g.hmax * g.m, g.vmax * g.m);
    let (dw, dh) = (cg.dw, cg.dh);
    let at = |x: usize, y: usize| -> i32 {
        i32::from(
            c.plane
                .get(y.min(dh - 1) * stride + x.min(dw - 1))
                .copied()
                .unwrap_or(128),
        )
    };
    let mut out = vec![0u8; ow * oh];
    let fancy_x = den_x == 2 * num_x;
    let fancy_y = den_y == 2 * num_y;
    let same_x = den_x == num_x;
    let same_y = den_y == num_y;
    if (fancy_x || same_x) && (fancy_y || same_y) {
        // libjpeg's triangle filters: each output sample is 3/4 the nearer input sample and
        // 1/4 the next one out, in each upsampled direction.
        let mut colsum = vec![0i32; dw + 2];
        for (y, orow) in out.chunks_exact_mut(ow).enumerate() {
            let (iy, ny, bias_v) = if fancy_y {
                let iy = y / 2;
                let ny = if y % 2 == 0 { iy.saturating_sub(1) } else { iy + 1 };
                (iy, ny, y % 2 == 0)
            } else {
                (y, y, true)
            };
            for (x, cs) in colsum.iter_mut().enumerate() {
                let xi = x.saturating_sub(1);
                *cs = if fancy_y {
                    3 * at(xi, iy) + at(xi, ny)
                } else {
                    at(xi, iy)
                };
            }
            // colsum[i + 1] is input column i; colsum[0] and colsum[dw + 1] replicate the edges.
            for (x, o) in orow.iter_mut().enumerate() {
                let v = if fancy_x {
                    let i = x / 2 + 1;
                    let (nb, even) = if x % 2 == 0 { (i - 1, true) } else { (i + 1, false) };
                    let this = colsum.get(i).copied().unwrap_or(0);
                    let other = colsum.get(nb).copied().unwrap_or(this);
                    match (fancy_y, even) {
                        (true, true) => (3 * this + other + 8) >> 4,
                        (true, false) => (3 * this + other + 7) >> 4,
                        (false, true) => (3 * this + other + 1) >> 2,
                        (false, false) => (3 * this + other + 2) >> 2,
                    }
                } else {
                    let this = colsum.get(x + 1).copied().unwrap_or(0);
                    match (fancy_y, bias_v) {
                        (true, true) => (this + 1) >> 2,
                        (true, false) => (this + 2) >> 2,
                        _ => this,
                    }
                };
                *o = v.clamp(0, 255) as u8;
            }
        }
    } else {
        // Any other ratio: replicate.
        for (y, orow) in out.chunks_exact_mut(ow).enumerate() {
            let sy = y * num_y / den_y;
            for (x, o) in orow.iter_mut().enumerate() {
                *o = at(x * num_x / den_x, sy) as u8;
            }
        }
    }
    (Cow::Owned(out), ow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the NxN IDCT of the zone in floating point, 8-point normalisation.
    fn float_idct(n: usize, z: &Zone, q: &[i32; 64]) -> Vec<u8> {
        let a = |u: usize| if u == 0 { 1.0 } else { std::f64::consts::SQRT_2 };
        let mut out = vec![0u8; n * n];
        for y in 0..n {
            for x in 0..n {
                let mut s = 0.0;
                for v in 0..n {
                    for u in 0..n {
                        let c = f64::from(z[v * n + u]) * f64::from(q[v * n + u]);
                        let cx =
                            ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * n) as f64).cos();
                        let cy =
                            ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / (2 * n) as f64).cos();
                        s += a(u) * a(v) * c * cx * cy;
                    }
                }
                out[y * n + x] = (s / 8.0 + 128.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }

    #[test]
    fn integer_idcts_match_the_float_definition() {
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for n in [1usize, 2, 4, 8] {
            let mut worst = 0;
            for trial in 0..2000 {
                let mut z: Zone = [0; 256];
                let mut q = [0i32; 64];
                for i in 0..n * n {
                    // Mostly small coefficients, as in photos; some blocks DC-only.
                    let mag = if i == 0 {
                        120
                    } else if trial % 5 == 0 {
                        0
                    } else {
                        30 >> (i / n).min(4)
                    };
                    z[i] = (rnd() % (2 * mag as u32 + 1)) as i32 - mag;
                    q[i] = 1 + (rnd() % 16) as i32;
                }
                let mut out = vec![0u8; n * n];
                match n {
                    1 => idct1(&z, &q, &mut out),
                    2 => idct2(&z, &q, &mut out, 2),
                    4 => idct4(&z, &q, &mut out, 4),
                    _ => idct8(&z, &q, &mut out, 8),
                }
                let want = float_idct(n, &z, &q);
                for (a, b) in out.iter().zip(&want) {
                    worst = worst.max((i32::from(*a) - i32::from(*b)).abs());
                }
            }
            assert!(worst <= 1, "{n}x{n} IDCT off by {worst}");
        }
    }

    fn run_idct(n: usize, z: &Zone, q: &[i32; 64]) -> Vec<u8> {
        let mut out = vec![0u8; n * n];
        match n {
            1 => idct1(z, q, &mut out),
            2 => idct2(z, q, &mut out, 2),
            4 => idct4(z, q, &mut out, 4),
            _ => idct8(z, q, &mut out, 8),
        }
        out
    }

    /// The forward DCT of an 8x8 block of samples, in the normalisation `float_idct` inverts:
    /// the coefficients an encoder at quality 100 (all quantisers 1) writes for these samples.
    fn float_fdct(samples: &[u8; 64]) -> Zone {
        let a = |u: usize| if u == 0 { 1.0 } else { std::f64::consts::SQRT_2 };
        let mut z: Zone = [0; 256];
        for v in 0..8 {
            for u in 0..8 {
                let mut s = 0.0;
                for y in 0..8 {
                    for x in 0..8 {
                        let cx = ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos();
                        let cy = ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
                        s += (f64::from(samples[y * 8 + x]) - 128.0) * cx * cy;
                    }
                }
                z[v * 8 + u] = (a(u) * a(v) * s / 8.0).round() as i32;
            }
        }
        z
    }

    #[test]
    fn extreme_coefficients_do_not_overflow() {
        // The largest coefficients real 8-bit images produce: blocks of full-scale black/white
        // patterns (the highest frequencies at full amplitude), at quality 100, and again with
        // every coefficient 1.5x larger (the overshoot of coarse quantisation rounding up). No
        // intermediate may wrap: the output must be the exact transform's, clamped to 0-255.
        /// Whether the sample at (x, y) is white (else black).
        type Pattern = fn(usize, usize) -> bool;
        let patterns: [(&str, Pattern); 6] = [
            ("white", |_, _| true),
            ("black", |_, _| false),
            ("checkerboard", |x, y| (x + y) % 2 == 0),
            ("columns", |x, _| x % 2 == 0),
            ("one bright pixel", |x, y| x == 3 && y == 4),
            ("diagonal halves", |x, y| x > y),
        ];
        let q = [1i32; 64];
        for (name, white) in patterns {
            let samples: [u8; 64] = std::array::from_fn(|i| if white(i % 8, i / 8) { 255 } else { 0 });
            let coefficients = float_fdct(&samples);
            for overshoot in [1.0, 1.5] {
                let block: Zone =
                    std::array::from_fn(|i| (f64::from(coefficients[i]) * overshoot).round() as i32);
                for n in [1usize, 2, 4, 8] {
                    // The zone holds the n x n low frequencies, row by row.
                    let mut zone: Zone = [0; 256];
                    for v in 0..n {
                        for u in 0..n {
                            zone[v * n + u] = block[v * 8 + u];
                        }
                    }
                    let got = run_idct(n, &zone, &q);
                    let want = float_idct(n, &zone, &q);
                    for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (i32::from(*a) - i32::from(*w)).abs() <= 1,
                            "{name} x{overshoot}, {n}x{n}, pixel {i}: {a}, exact {w} (an intermediate wrapped)"
                        );
                    }
                }
                if overshoot == 1.0 {
                    // And at full size the samples come back.
                    let got = run_idct(8, &block, &q);
                    for (a, w) in got.iter().zip(&samples) {
                        assert!((i32::from(*a) - i32::from(*w)).abs() <= 1, "{name}: {got:?}");
                    }
                }
            }
        }
        // A saturated DC (beyond anything real) still gives a flat white or black block.
        for n in [1usize, 2, 4, 8] {
            let mut z: Zone = [0; 256];
            z[0] = 2047;
            assert!(run_idct(n, &z, &q).iter().all(|&p| p == 255), "{n}x{n}");
            z[0] = -2048;
            assert!(run_idct(n, &z, &q).iter().all(|&p| p == 0), "{n}x{n}");
        }
        // Corrupt files can carry any 16-bit coefficient for any 16-bit quantiser: there the
        // arithmetic wraps by design, as libjpeg's does, instead of panicking (tests run with
        // overflow checks on), and the pixels are still a function of the input.
        let z: Zone = [i32::from(i16::MIN); 256];
        let q = [65535i32; 64];
        for n in [1usize, 2, 4, 8] {
            assert_eq!(run_idct(n, &z, &q), run_idct(n, &z, &q), "{n}x{n}");
        }
    }

    #[test]
    fn zone_slots_follow_the_zigzag_order() {
        let g = CompGeom {
            h: 1,
            v: 1,
            n: 4,
            bw: 1,
            bh: 1,
            dw: 4,
            dh: 4,
        };
        let c = Comp::new(g, false);
        assert_eq!(c.kmax, 24);
        assert_eq!(c.zone_mask.count_ones(), 16);
        assert_eq!(c.slot[0], 0);
        assert_eq!(c.slot[1], 1); // (0,1)
        assert_eq!(c.slot[2], 4); // (1,0)
        assert_eq!(c.slot[10], SINK); // (4,0)
        assert_eq!(c.slot[24], 15); // (3,3)
        assert_eq!(band_mask(1, 5), 0b11_1110);
        assert_eq!(band_mask(0, 63), u64::MAX);
    }

    fn planned(bytes: &[u8], scale: u32) -> Vec<bool> {
        let header = super::super::read_header(bytes, false).unwrap();
        let g = geometry(&header, scale, false);
        let comps: Vec<Comp> = g.comps.iter().map(|c| Comp::new(c.clone(), true)).collect();
        plan_progressive(bytes, &header, &comps)
    }

    #[test]
    fn progressive_scans_outside_the_zone_are_skipped_only_when_nothing_needs_them() {
        // DC; Y 1-4; Y 5-63 (al 1); Cb; Cr; Y 5-63 refinement; DC refinement.
        let skippable = include_bytes!("../../tests/fixtures/jpeg_420_prog_skippable.jpg");
        assert_eq!(
            planned(skippable, 4),
            [true, true, false, true, true, false, true]
        );
        assert_eq!(planned(skippable, 2), [true; 7]);
        // DC; Y 1-4; Y 5-63; Cb; Cr; Y 1-63 refinement, which needs 5-63's nonzero history.
        let refined = include_bytes!("../../tests/fixtures/jpeg_420_prog_refined.jpg");
        assert_eq!(planned(refined, 4), [true; 6]);
    }
}
