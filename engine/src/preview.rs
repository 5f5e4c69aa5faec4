//! A thumbnail's preview: the picture it encodes, box-filtered down to at most [`PREVIEW_EDGE`]
//! pixels a side, as sRGB RGBA. Placeholders (ThumbHash, BlurHash) are computed from it, so the
//! service gets them from pixels the engine already holds instead of decoding the encoded
//! thumbnail again (which cost 3-7 ms a job, and was impossible for AVIF outputs).
use crate::jpeg;
use crate::pipeline::Raster;

/// Longest side of a preview (ThumbHash accepts at most 100; both hashes keep at most 7x7 terms).
pub const PREVIEW_EDGE: u32 = 32;

/// A small copy of a thumbnail, `width * height` pixels of 8-bit sRGB RGBA, not premultiplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Preview {
    /// The preview of the picture flattened on white, as a JPEG output is. Averaging and
    /// flattening commute when the average is alpha-weighted, as [`of_pixels`] takes it.
    pub(crate) fn flattened(mut self) -> Self {
        for px in self.rgba.chunks_exact_mut(4) {
            let a = u32::from(px[3]);
            for v in &mut px[..3] {
                *v = ((u32::from(*v) * a + 255 * (255 - a) + 127) / 255) as u8;
            }
            px[3] = 255;
        }
        self
    }
}

/// A preview's size: the picture scaled to fit [`PREVIEW_EDGE`], aspect kept, at least 1x1,
/// never enlarged. Pure.
pub fn preview_size(width: u32, height: u32) -> (u32, u32) {
    let (width, height) = (width.max(1), height.max(1));
    let long = width.max(height);
    if long <= PREVIEW_EDGE {
        return (width, height);
    }
    let scale = |side: u32| {
        ((u64::from(side) * u64::from(PREVIEW_EDGE) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(width), scale(height))
}

/// The preview of a `width` x `height` picture whose pixel (x, y) is `pixel(x, y)`: RGBA, or
/// (`ycbcr`) JFIF Y, Cb, Cr and an opaque alpha. Each preview pixel is the alpha-weighted mean
/// of its box of source pixels (every source pixel counted once); YCbCr is averaged first and
/// converted once per preview pixel, which the linear conversion allows.
pub(crate) fn of_pixels(
    width: usize,
    height: usize,
    ycbcr: bool,
    pixel: impl Fn(usize, usize) -> [u8; 4],
) -> Preview {
    let (pw, ph) = preview_size(width as u32, height as u32);
    let (pw, ph) = (pw as usize, ph as usize);
    let (width, height) = (width.max(1), height.max(1));
    let bounds = |i: usize, n: usize, of: usize| (i * of / n, ((i + 1) * of / n).max(i * of / n + 1).min(of));
    let mut rgba = Vec::with_capacity(pw * ph * 4);
    for oy in 0..ph {
        let (y0, y1) = bounds(oy, ph, height);
        for ox in 0..pw {
            let (x0, x1) = bounds(ox, pw, width);
            let mut sum = [0u64; 4];
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = pixel(x, y);
                    let a = u64::from(p[3]);
                    for (s, &v) in sum.iter_mut().zip(&p[..3]) {
                        *s += u64::from(v) * a;
                    }
                    sum[3] += a;
                }
            }
            let n = ((x1 - x0) * (y1 - y0)) as u64;
            // A fully transparent box has no colour: black, alpha 0.
            let mean = |s: u64| (s + sum[3] / 2).checked_div(sum[3]).unwrap_or(0) as u8;
            let (c0, c1, c2) = (mean(sum[0]), mean(sum[1]), mean(sum[2]));
            let rgb = if ycbcr {
                jpeg::ycc_to_rgb(c0, c1, c2)
            } else {
                [c0, c1, c2]
            };
            rgba.extend_from_slice(&rgb);
            rgba.push(((sum[3] + n / 2) / n) as u8);
        }
    }
    Preview {
        width: pw as u32,
        height: ph as u32,
        rgba,
    }
}

/// The preview of an interleaved raster (grey, grey+alpha, RGB or RGBA; `ycbcr`: its three
/// channels are JFIF YCbCr).
pub(crate) fn of_raster(img: &Raster, ycbcr: bool) -> Preview {
    let c = img.channels;
    of_pixels(img.width, img.height, ycbcr && c == 3, |x, y| {
        let i = (y * img.width + x) * c;
        match img.data[i..i + c] {
            [g] => [g, g, g, 255],
            [g, a] => [g, g, g, a],
            [r, g, b] => [r, g, b, 255],
            [r, g, b, a, ..] => [r, g, b, a],
            _ => [0, 0, 0, 0],
        }
    })
}

/// The preview of `width` x `height` RGBA pixels (not premultiplied), for callers that hold
/// decoded pixels rather than a render (the cost benchmark, tests).
pub fn of_rgba(width: u32, height: u32, rgba: &[u8]) -> Preview {
    let w = width as usize;
    of_pixels(w, height as usize, false, |x, y| {
        let i = (y * w + x) * 4;
        [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
    })
}

/// The preview of 4:2:0 planes: full-size Y, Cb and Cr at half size in each direction.
pub(crate) fn of_planes_420(y: &Raster, cb: &Raster, cr: &Raster) -> Preview {
    of_pixels(y.width, y.height, true, |x, row| {
        let c =
            (row / 2).min(cb.height.saturating_sub(1)) * cb.width + (x / 2).min(cb.width.saturating_sub(1));
        [y.data[row * y.width + x], cb.data[c], cr.data[c], 255]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(width: usize, height: usize, channels: usize, px: impl Fn(usize, usize) -> Vec<u8>) -> Raster {
        let mut data = Vec::with_capacity(width * height * channels);
        for y in 0..height {
            for x in 0..width {
                data.extend(px(x, y));
            }
        }
        Raster {
            width,
            height,
            channels,
            data,
        }
    }

    #[test]
    fn size_fits_the_edge_keeps_the_aspect_and_never_enlarges() {
        assert_eq!(preview_size(400, 300), (32, 24));
        assert_eq!(preview_size(300, 400), (24, 32));
        assert_eq!(preview_size(20, 10), (20, 10));
        assert_eq!(preview_size(10_000, 1), (32, 1));
        assert_eq!(preview_size(0, 0), (1, 1));
    }

    #[test]
    fn each_preview_pixel_is_the_mean_of_its_box() {
        // 64x32: left half black, right half white; at 32x16 each box is 2x2 of one side.
        let img = raster(64, 32, 3, |x, _| vec![if x < 32 { 0 } else { 255 }; 3]);
        let p = of_raster(&img, false);
        assert_eq!((p.width, p.height), (32, 16));
        assert_eq!(&p.rgba[..4], &[0, 0, 0, 255]);
        assert_eq!(&p.rgba[31 * 4..32 * 4], &[255, 255, 255, 255]);
        // 3 wide into 1 (a 96x3 picture): the mean of a black, a grey 90 and a white column.
        let img = raster(96, 3, 1, |x, _| vec![[0u8, 90, 255][x / 32]]);
        let p = of_raster(&img, false);
        assert_eq!((p.width, p.height), (32, 1));
        assert_eq!(&p.rgba[..4], &[0, 0, 0, 255]);
        assert_eq!(&p.rgba[15 * 4..16 * 4], &[90, 90, 90, 255]);
    }

    #[test]
    fn transparent_pixels_do_not_darken_the_colour_and_flattening_commutes() {
        // Each 2x1 box: an opaque red pixel and a fully transparent black one.
        let img = raster(64, 1, 4, |x, _| {
            if x % 2 == 0 {
                vec![255, 0, 0, 255]
            } else {
                vec![0, 0, 0, 0]
            }
        });
        let p = of_raster(&img, false);
        assert_eq!(&p.rgba[..4], &[255, 0, 0, 128], "red, half covered");
        // Flattened on white: what the mean of the flattened pixels (red and white) is.
        let flat = p.flattened();
        assert_eq!(&flat.rgba[..4], &[255, 127, 127, 255]);
    }

    #[test]
    fn ycbcr_is_converted_to_rgb() {
        let [r, g, b] = jpeg::ycc_to_rgb(81, 90, 240);
        let img = raster(8, 8, 3, |_, _| vec![81, 90, 240]);
        let p = of_raster(&img, true);
        assert_eq!(&p.rgba[..4], &[r, g, b, 255]);
        assert!(r > 200 && g < 40 && b < 40, "pure red: {r} {g} {b}");
        // 4:2:0 planes of the same colour, odd-sized (the chroma planes round up).
        let y = raster(9, 7, 1, |_, _| vec![81]);
        let cb = raster(5, 4, 1, |_, _| vec![90]);
        let cr = raster(5, 4, 1, |_, _| vec![240]);
        let p = of_planes_420(&y, &cb, &cr);
        assert_eq!((p.width, p.height), (9, 7));
        assert!(p.rgba.chunks_exact(4).all(|px| px == [r, g, b, 255]));
    }
}
