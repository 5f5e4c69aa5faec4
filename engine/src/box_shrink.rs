//! Integer box shrinking of a picture that arrives row by row (PNG rows, TIFF strips and tiles),
//! so that a decoder streaming its rows never needs the full-size picture in memory. Each output
//! sample is the mean of a `factor` x `factor` block (colour weighted by alpha when there is
//! alpha); rows and columns past the last whole block are dropped, as libvips' shrink does.
use crate::pipeline::Raster;

pub(crate) struct BoxShrink {
    /// Samples of one source row that are used: the output width times the factor.
    used_row: usize,
    out_w: usize,
    out_h: usize,
    factor: usize,
    channels: usize,
    alpha: bool,
    acc: Vec<u32>,
    out: Vec<u8>,
    rows_in_band: usize,
}

/// Add one row into the accumulators of its blocks: `CH` channels, the last one alpha (by which
/// the others are weighted) when `ALPHA`. Fixed sizes let the compiler keep the sums in registers.
fn accumulate<const CH: usize, const ALPHA: bool>(acc: &mut [u32], row: &[u8], factor: usize) {
    for (a, block) in acc.chunks_exact_mut(CH).zip(row.chunks_exact(factor * CH)) {
        let mut sum = [0u32; CH];
        for px in block.chunks_exact(CH) {
            if ALPHA {
                let alpha = u32::from(px[CH - 1]);
                for c in 0..CH - 1 {
                    sum[c] += u32::from(px[c]) * alpha;
                }
                sum[CH - 1] += alpha;
            } else {
                for c in 0..CH {
                    sum[c] += u32::from(px[c]);
                }
            }
        }
        for (a, s) in a.iter_mut().zip(sum) {
            *a += s;
        }
    }
}

impl BoxShrink {
    /// For a `width` x `height` source of 8-bit samples with `channels` channels (the last one
    /// alpha when there are 2 or 4), shrunk by `factor` (at least 1, at most the smaller side).
    pub(crate) fn new(width: usize, height: usize, factor: usize, channels: usize) -> Self {
        let factor = factor.clamp(1, width.min(height).max(1));
        let (out_w, out_h) = ((width / factor).max(1), (height / factor).max(1));
        BoxShrink {
            used_row: out_w * factor * channels,
            out_w,
            out_h,
            factor,
            channels,
            alpha: channels == 2 || channels == 4,
            acc: vec![0; out_w * channels],
            out: Vec::with_capacity(out_w * out_h * channels),
            rows_in_band: 0,
        }
    }

    /// Samples a row passed to [`Self::push_row`] must have at least.
    pub(crate) fn row_len(&self) -> usize {
        self.used_row
    }

    fn is_complete(&self) -> bool {
        self.out.len() >= self.out_w * self.out_h * self.channels
    }

    /// Add the next source row (at least [`Self::row_len`] samples; rows past the last whole
    /// band are ignored).
    pub(crate) fn push_row(&mut self, row: &[u8]) {
        if self.is_complete() {
            return;
        }
        let (f, ch) = (self.factor, self.channels);
        if f == 1 {
            self.out.extend_from_slice(&row[..self.out_w * ch]);
            return;
        }
        let (acc, row) = (&mut self.acc[..], &row[..self.used_row]);
        // Grey, grey+alpha, RGB or RGBA.
        match ch {
            1 => accumulate::<1, false>(acc, row, f),
            2 => accumulate::<2, true>(acc, row, f),
            3 => accumulate::<3, false>(acc, row, f),
            _ => accumulate::<4, true>(acc, row, f),
        }
        self.rows_in_band += 1;
        if self.rows_in_band == f {
            self.flush_band();
            self.rows_in_band = 0;
        }
    }

    fn flush_band(&mut self) {
        let (f, ch) = (self.factor, self.channels);
        let n = (f * f) as u32;
        for a in self.acc.chunks_exact_mut(ch) {
            if self.alpha {
                let al = a[ch - 1];
                for &v in &a[..ch - 1] {
                    self.out
                        .push((v + al / 2).checked_div(al).map_or(0, |c| c.min(255) as u8));
                }
                self.out.push(((al + n / 2) / n) as u8);
            } else {
                for &v in a.iter() {
                    self.out.push(((v + n / 2) / n) as u8);
                }
            }
            a.fill(0);
        }
    }

    /// The shrunk picture, or `None` when fewer rows arrived than it needs.
    pub(crate) fn finish(self) -> Option<Raster> {
        self.is_complete().then_some(Raster {
            width: self.out_w,
            height: self.out_h,
            channels: self.channels,
            data: self.out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_averaged_and_the_remainder_dropped() {
        // 5x3 grey, factor 2: two output columns and one row; column 4 and row 2 are dropped.
        let rows: [[u8; 5]; 3] = [[0, 2, 10, 20, 99], [4, 6, 30, 40, 99], [99; 5]];
        let mut s = BoxShrink::new(5, 3, 2, 1);
        assert_eq!(s.row_len(), 4);
        for r in &rows {
            s.push_row(r);
        }
        let r = s.finish().unwrap();
        assert_eq!((r.width, r.height, r.data), (2, 1, vec![3, 25]));
    }

    #[test]
    fn colour_is_weighted_by_alpha() {
        // One opaque red pixel and three transparent blue ones: the colour is red, a quarter opaque.
        let mut s = BoxShrink::new(2, 2, 2, 4);
        s.push_row(&[255, 0, 0, 255, 0, 0, 255, 0]);
        s.push_row(&[0, 0, 255, 0, 0, 0, 255, 0]);
        assert_eq!(s.finish().unwrap().data, vec![255, 0, 0, 64]);
    }

    #[test]
    fn too_few_rows_is_no_picture() {
        let mut s = BoxShrink::new(4, 4, 2, 3);
        s.push_row(&[0; 12]);
        s.push_row(&[0; 12]);
        assert!(s.finish().is_none());
    }

    #[test]
    fn factor_one_copies() {
        let mut s = BoxShrink::new(2, 1, 1, 2);
        s.push_row(&[1, 2, 3, 4]);
        assert_eq!(s.finish().unwrap().data, vec![1, 2, 3, 4]);
    }
}
