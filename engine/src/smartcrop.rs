//! `gravity=smart`: where the most interesting window of a picture is, by the attention measure
//! of libvips' `vips_smartcrop` (itself after smartcrop.js). On a 32x32 sampling of the image:
//! - edges: 5 x |Laplacian| of the luminance (XYZ Y, 0-100);
//! - skin: 100 - 100 x the distance of the colour's direction in XYZ from a skin tone;
//! - saturation: CIELAB a* (reds and pinks score, greens count against);
//!
//! skin and saturation only where Y > 5 (not in the dark). The sum is blurred with a Gaussian
//! whose sigma grows with the window, and the window is centred on the maximum, clamped to the
//! image.
use crate::pipeline::Raster;

/// The sampling grid, as in libvips.
const GRID: usize = 32;

/// sRGB (0-255) to CIE XYZ (D65, Y in 0-100).
fn xyz(rgb: [f64; 3]) -> [f64; 3] {
    let lin = |v: f64| {
        let v = v / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = rgb.map(lin);
    [
        (0.4124 * r + 0.3576 * g + 0.1805 * b) * 100.0,
        (0.2126 * r + 0.7152 * g + 0.0722 * b) * 100.0,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) * 100.0,
    ]
}

/// CIELAB a* from XYZ (D65 white).
fn lab_a(x: f64, y: f64) -> f64 {
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    500.0 * (f(x / 95.047) - f(y / 100.0))
}

/// Mean colour of each cell of a `GRID` x `GRID` (at most the image's size) sampling, as RGB.
fn sample(img: &Raster, to_rgb: impl Fn(&[u8]) -> [f64; 3]) -> (usize, usize, Vec<[f64; 3]>) {
    let (gw, gh) = (GRID.min(img.width), GRID.min(img.height));
    let mut sums = vec![([0.0f64; 3], 0u32); gw * gh];
    for y in 0..img.height {
        let cy = y * gh / img.height;
        let row = &img.data[y * img.width * img.channels..(y + 1) * img.width * img.channels];
        for (x, px) in row.chunks_exact(img.channels).enumerate() {
            let cell = &mut sums[cy * gw + x * gw / img.width];
            let rgb = to_rgb(px);
            for (sum, value) in cell.0.iter_mut().zip(rgb) {
                *sum += value;
            }
            cell.1 += 1;
        }
    }
    let means = sums
        .into_iter()
        .map(|(s, n)| s.map(|v| v / f64::from(n.max(1))))
        .collect();
    (gw, gh, means)
}

/// A separable Gaussian blur with clamped edges.
fn blur(values: &[f64], w: usize, h: usize, sigma: f64) -> Vec<f64> {
    let radius = (sigma * 3.0).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i as f64).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    let pass = |src: &[f64], stride: usize, len: usize, lines: usize, step: usize| -> Vec<f64> {
        let mut out = vec![0.0; src.len()];
        for line in 0..lines {
            for i in 0..len {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let j = (i as isize + k as isize - radius).clamp(0, len as isize - 1) as usize;
                    acc += weight * src[line * stride + j * step];
                }
                out[line * stride + i * step] = acc / norm;
            }
        }
        out
    };
    let rows = pass(values, w, w, h, 1);
    pass(&rows, 1, h, w, w)
}

/// The top-left corner of the `win_w` x `win_h` window of `img` with the most attention.
/// `to_rgb` reads one pixel of the raster as RGB (the raster may be YCbCr or grey).
pub(crate) fn attention_window(
    img: &Raster,
    win_w: usize,
    win_h: usize,
    to_rgb: impl Fn(&[u8]) -> [f64; 3],
) -> (usize, usize) {
    let (spare_x, spare_y) = (img.width.saturating_sub(win_w), img.height.saturating_sub(win_h));
    if spare_x == 0 && spare_y == 0 {
        return (0, 0);
    }
    let (gw, gh, cells) = sample(img, to_rgb);
    let xyzs: Vec<[f64; 3]> = cells.iter().map(|&c| xyz(c)).collect();
    let luma = |x: usize, y: usize| xyzs[y * gw + x][1];
    let skin_direction = [0.78, 0.57, 0.44];
    let mut score = vec![0.0; gw * gh];
    for y in 0..gh {
        for x in 0..gw {
            let at = |dx: isize, dy: isize| {
                let xx = (x as isize + dx).clamp(0, gw as isize - 1) as usize;
                let yy = (y as isize + dy).clamp(0, gh as isize - 1) as usize;
                luma(xx, yy)
            };
            let laplacian = 4.0 * at(0, 0) - at(-1, 0) - at(1, 0) - at(0, -1) - at(0, 1);
            let mut s = 5.0 * laplacian.abs();
            let [cx, cy, cz] = xyzs[y * gw + x];
            if cy > 5.0 {
                let magnitude = (cx * cx + cy * cy + cz * cz).sqrt().max(1e-9);
                let d: f64 = [cx, cy, cz]
                    .iter()
                    .zip(skin_direction)
                    .map(|(v, s)| (v / magnitude - s).powi(2))
                    .sum::<f64>()
                    .sqrt();
                s += 100.0 - 100.0 * d;
                s += lab_a(cx, cy);
            }
            score[y * gw + x] = s;
        }
    }
    // libvips: sigma from the window's size on the grid, at least 1.
    let (hs, vs) = (gw as f64 / img.width as f64, gh as f64 / img.height as f64);
    let sigma = (((win_w as f64 * hs).powi(2) + (win_h as f64 * vs).powi(2)).sqrt() / 10.0).max(1.0);
    let blurred = blur(&score, gw, gh, sigma);
    let best = blurred.iter().enumerate().fold(
        (0, f64::MIN),
        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
    );
    let (mx, my) = (best.0 % gw, best.0 / gw);
    // The cell's centre in image pixels, and the window centred on it.
    let centre =
        |cell: usize, cells: usize, len: usize| ((cell as f64 + 0.5) * len as f64 / cells as f64) as usize;
    let left = centre(mx, gw, img.width).saturating_sub(win_w / 2).min(spare_x);
    let top = centre(my, gh, img.height).saturating_sub(win_h / 2).min(spare_y);
    (left, top)
}

/// The `w` x `h` window of `img` at (`x`, `y`).
pub(crate) fn crop(img: &Raster, x: usize, y: usize, w: usize, h: usize) -> Raster {
    let (w, h) = (w.min(img.width - x), h.min(img.height - y));
    let c = img.channels;
    let mut data = Vec::with_capacity(w * h * c);
    for row in y..y + h {
        let start = (row * img.width + x) * c;
        data.extend_from_slice(&img.data[start..start + w * c]);
    }
    Raster {
        width: w,
        height: h,
        channels: c,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grey 400x100 picture with a red, textured square around `x`.
    fn picture(subject_x: usize) -> Raster {
        let (w, h) = (400, 100);
        let mut data = vec![128u8; w * h * 3];
        for y in 30..70 {
            for x in subject_x - 20..subject_x + 20 {
                let i = (y * w + x) * 3;
                let stripe = if (x + y) % 6 < 3 { 255 } else { 150 };
                data[i..i + 3].copy_from_slice(&[stripe, 40, 60]);
            }
        }
        Raster {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    fn rgb(px: &[u8]) -> [f64; 3] {
        [f64::from(px[0]), f64::from(px[1]), f64::from(px[2])]
    }

    #[test]
    fn the_window_follows_the_subject() {
        for subject in [40, 200, 330, 370] {
            let (x, y) = attention_window(&picture(subject), 100, 100, rgb);
            assert_eq!(y, 0);
            assert!(
                x <= subject - 20 && x + 100 >= subject + 20,
                "subject at {subject}: window at {x}"
            );
        }
        // Nothing to choose: the window is the image.
        assert_eq!(attention_window(&picture(200), 400, 100, rgb), (0, 0));
    }

    #[test]
    fn crops_a_window() {
        let img = picture(200);
        let c = crop(&img, 150, 10, 100, 80);
        assert_eq!((c.width, c.height, c.data.len()), (100, 80, 100 * 80 * 3));
        assert_eq!(
            &c.data[..3],
            &img.data[(10 * 400 + 150) * 3..(10 * 400 + 150) * 3 + 3]
        );
    }
}
