//! Every special case on a small committed fixture (see fixtures/make_fixtures.py).
use thumbnail_engine::{Fit, ImageFormat, Limits, OutputFormat, ThumbnailOptions, probe, render};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn opts(w: u32, h: u32, fit: Fit, format: Option<OutputFormat>) -> ThumbnailOptions {
    ThumbnailOptions {
        width: w,
        height: h,
        fit,
        format,
        ..ThumbnailOptions::default()
    }
}

/// Decode a thumbnail to RGBA8.
fn pixels(bytes: &[u8]) -> image::RgbaImage {
    image::load_from_memory(bytes).unwrap().to_rgba8()
}

fn close(a: [u8; 4], b: [u8; 4], tol: i32) -> bool {
    a.iter()
        .zip(b.iter())
        .all(|(&x, &y)| (i32::from(x) - i32::from(y)).abs() <= tol)
}

const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];
const WHITE: [u8; 4] = [255, 255, 255, 255];

/// The quadrant picture, upright: red, green / blue, white (checked at quadrant centres).
fn assert_quad(bytes: &[u8], what: &str, tol: i32) {
    let img = pixels(bytes);
    let (w, h) = img.dimensions();
    assert!(w > h, "{what}: expected landscape, got {w}x{h}");
    for (fx, fy, want) in [(1, 1, RED), (3, 1, GREEN), (1, 3, BLUE), (3, 3, WHITE)] {
        let p = img.get_pixel(w * fx / 4, h * fy / 4).0;
        assert!(
            close(p, want, tol),
            "{what}: at ({fx}/4, {fy}/4) got {p:?}, want {want:?}"
        );
    }
}

/// Both paths: full-size (no shrink) and 1/8 shrink-on-load (DC-only for JPEG).
fn both_sizes() -> [ThumbnailOptions; 2] {
    [
        opts(400, 400, Fit::Contain, Some(OutputFormat::Png)),
        opts(12, 12, Fit::Contain, Some(OutputFormat::Png)),
    ]
}

#[test]
fn jpeg_variants_decode_in_the_right_colours() {
    for name in [
        "quad.jpg",
        "progressive.jpg",
        "baseline_444.jpg",
        "cmyk_adobe.jpg",
        "cmyk_plain.jpg",
    ] {
        for o in both_sizes() {
            let t = render(&fixture(name), &o, &Limits::default()).unwrap();
            assert_quad(&t.bytes, &format!("{name} at {}px", o.width), 40);
        }
    }
}

#[test]
fn greyscale_stays_grey() {
    for o in both_sizes() {
        let t = render(&fixture("gray.jpg"), &o, &Limits::default()).unwrap();
        let img = pixels(&t.bytes);
        let p = img.get_pixel(img.width() * 3 / 4, img.height() * 3 / 4).0;
        assert!(close(p, WHITE, 10), "{p:?}");
        let p = img.get_pixel(img.width() / 4, img.height() / 4).0;
        assert!(
            p[0] == p[1] && p[1] == p[2] && (60..=90).contains(&p[0]),
            "red as grey: {p:?}"
        );
    }
}

#[test]
fn every_exif_orientation_comes_out_upright() {
    for o in 1..=8 {
        let bytes = fixture(&format!("orient{o}.jpg"));
        assert_eq!(probe(&bytes, &Limits::default()).unwrap().orientation, o);
        for opt in both_sizes() {
            let t = render(&bytes, &opt, &Limits::default()).unwrap();
            assert_quad(&t.bytes, &format!("orientation {o} at {}px", opt.width), 40);
            if opt.width == 400 {
                assert_eq!((t.width, t.height), (96, 64), "orientation {o}");
            }
        }
    }
    let t = render(&fixture("orient6.png"), &both_sizes()[0], &Limits::default()).unwrap();
    assert_quad(&t.bytes, "orient6.png", 0);
}

#[test]
fn sixteen_bit_interlaced_and_palette_pngs() {
    for name in [
        "rgb16.png",
        "interlaced.png",
        "quad.png",
        "palette.png",
        "quad.webp",
    ] {
        for o in both_sizes() {
            let t = render(&fixture(name), &o, &Limits::default()).unwrap();
            assert_quad(&t.bytes, name, 40);
        }
    }
}

#[test]
fn alpha_is_kept_for_png_and_webp_and_flattened_on_white_for_jpeg() {
    for name in ["rgba.png", "rgba.webp", "palette_trns.png"] {
        let bytes = fixture(name);
        for format in [OutputFormat::Png, OutputFormat::Webp] {
            let t = render(
                &bytes,
                &opts(400, 400, Fit::Contain, Some(format)),
                &Limits::default(),
            )
            .unwrap();
            let img = pixels(&t.bytes);
            assert_eq!(
                img.get_pixel(10, 10).0[3],
                0,
                "{name} -> {format}: left half transparent"
            );
            let p = img.get_pixel(72, 48).0;
            assert!(close(p, WHITE, 12), "{name} -> {format}: {p:?}");
        }
        let t = render(
            &bytes,
            &opts(400, 400, Fit::Contain, Some(OutputFormat::Jpeg)),
            &Limits::default(),
        )
        .unwrap();
        let img = pixels(&t.bytes);
        for (x, y) in [(10, 10), (10, 50)] {
            let p = img.get_pixel(x, y).0;
            assert!(
                close(p, WHITE, 8),
                "{name} -> JPEG: transparent must become white, got {p:?}"
            );
        }
        let p = img.get_pixel(72, 16).0;
        assert!(close(p, GREEN, 40), "{name} -> JPEG opaque part: {p:?}");
    }
}

#[test]
fn animations_give_their_first_frame() {
    for name in ["anim.gif", "anim.webp"] {
        let bytes = fixture(name);
        assert_eq!(probe(&bytes, &Limits::default()).unwrap().frames, 3, "{name}");
        let t = render(&bytes, &opts(40, 40, Fit::Cover, None), &Limits::default()).unwrap();
        let img = pixels(&t.bytes);
        assert!(
            close(img.get_pixel(20, 20).0, RED, 8),
            "{name}: {:?}",
            img.get_pixel(20, 20)
        );
    }
    let t = render(
        &fixture("anim.gif"),
        &ThumbnailOptions::default(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(t.format, OutputFormat::Png, "GIF becomes PNG");
    assert_eq!(ImageFormat::Gif.default_output(), OutputFormat::Png);
}

#[test]
fn panorama_and_tiny_inputs() {
    let pano = fixture("panorama.jpg");
    let t = render(&pano, &ThumbnailOptions::default(), &Limits::default()).unwrap();
    assert_eq!(
        (t.width, t.height),
        (30, 30),
        "cover without upscaling shrinks the box"
    );
    let t = render(&pano, &opts(100, 100, Fit::Contain, None), &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (100, 3));
    let t = render(&pano, &opts(10, 10, Fit::Cover, None), &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (10, 10));
    let t = render(&pano, &opts(400, 4096, Fit::Contain, None), &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (400, 10));

    let tiny = fixture("tiny.png");
    for fit in [Fit::Cover, Fit::Contain, Fit::Fill] {
        let t = render(&tiny, &opts(100, 100, fit, None), &Limits::default()).unwrap();
        assert!(
            t.width >= 1 && t.height >= 1 && t.width <= 4 && t.height <= 2,
            "{fit}: {}x{}",
            t.width,
            t.height
        );
    }
    let t = render(&tiny, &opts(1, 100, Fit::Cover, None), &Limits::default()).unwrap();
    assert!(t.width >= 1 && t.height >= 1);
    let up = ThumbnailOptions {
        upscale: true,
        ..opts(100, 100, Fit::Cover, None)
    };
    let t = render(&tiny, &up, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (100, 100));
}

#[test]
fn embedded_icc_profiles_are_converted_to_srgb() {
    // The profile swaps the red and green primaries: stored red is sRGB green.
    for name in ["icc_swapped.jpg", "icc_swapped.png"] {
        // Plus 30 px as JPEG: the JPEG's YCbCr planes are resampled at 1/2 scale and must still
        // go through RGB for the profile.
        let half = opts(30, 30, Fit::Contain, Some(OutputFormat::Jpeg));
        for o in both_sizes().into_iter().chain([half]) {
            let t = render(&fixture(name), &o, &Limits::default()).unwrap();
            let img = pixels(&t.bytes);
            let p = img.get_pixel(img.width() / 4, img.height() / 4).0;
            assert!(
                p[1] > 200 && p[0] < 60,
                "{name} at {}px: stored red must come out green, got {p:?}",
                o.width
            );
        }
    }
}

#[test]
fn outputs_carry_no_metadata() {
    let bytes = fixture("orient6.jpg");
    assert!(bytes.windows(6).any(|w| w == b"Secret"), "fixture has XMP");
    for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
        for o in [
            opts(400, 400, Fit::Contain, Some(format)),
            opts(12, 12, Fit::Cover, Some(format)),
        ] {
            let out = render(&bytes, &o, &Limits::default()).unwrap().bytes;
            for needle in [
                &b"Exif"[..],
                b"GPS",
                b"Secret",
                b"secret",
                b"http://ns.adobe.com",
                b"eXIf",
                b"XMP",
                b"ICC",
            ] {
                assert!(
                    !out.windows(needle.len()).any(|w| w == needle),
                    "{format}: output contains {:?}",
                    String::from_utf8_lossy(needle)
                );
            }
            if format == OutputFormat::Jpeg {
                // Only SOI, APP0 (JFIF), DQT, SOF, DHT, SOS…: no APP1..APP15 or COM segments.
                let mut i = 2;
                while i + 4 <= out.len() && out[i] == 0xFF && out[i + 1] != 0xDA {
                    let m = out[i + 1];
                    assert!(!(0xE1..=0xEF).contains(&m) && m != 0xFE, "marker {m:02x}");
                    i += 2 + usize::from(u16::from_be_bytes([out[i + 2], out[i + 3]]));
                }
            }
        }
    }
}

#[test]
fn webp_output_is_lossy_at_the_requested_quality() {
    let bytes = fixture("quad.png");
    let lo = render(
        &bytes,
        &ThumbnailOptions {
            quality: 10,
            ..opts(96, 64, Fit::Cover, Some(OutputFormat::Webp))
        },
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(&lo.bytes[12..16], b"VP8 ", "lossy bitstream");
    assert_quad(&lo.bytes, "webp q10", 60);
}

/// Mean absolute difference and PSNR (dB) of two equally long sample buffers.
fn diff(a: &[u8], b: &[u8]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut sum, mut sq) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let d = u64::from(x.abs_diff(y));
        sum += d;
        sq += d * d;
    }
    let n = a.len() as f64;
    let mse = sq as f64 / n;
    let psnr = if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    };
    (sum as f64 / n, psnr)
}

/// The reduced-size decoder (scales 1/2, 1/4) against what libjpeg-turbo's `djpeg -scale 1/N`
/// made of the same file (tests/fixtures/djpeg/, see make_fixtures.py) and against
/// jpeg-decoder's scaled decode. The luma differs slightly from djpeg's by design (we transform
/// the low-frequency zone, djpeg averages the full IDCT's pixels); jpeg-decoder uses the same
/// transform and must agree closely, except with 4:2:0 chroma, which it decodes at the reduced
/// size and upsamples where we (like libjpeg-turbo) use a larger IDCT.
#[test]
fn reduced_size_jpeg_decodes_match_djpeg_and_jpeg_decoder() {
    for (name, reference, channels, same_chroma) in [
        ("jpeg_420.jpg", "jpeg_420", 3, false),
        ("jpeg_422.jpg", "jpeg_422", 3, true),
        ("jpeg_440.jpg", "jpeg_440", 3, true),
        ("jpeg_444.jpg", "jpeg_444", 3, true),
        ("jpeg_411.jpg", "jpeg_411", 3, true),
        ("jpeg_420_prog.jpg", "jpeg_420", 3, false),
        ("jpeg_420_restart.jpg", "jpeg_420", 3, false),
        ("jpeg_420_prog_restart.jpg", "jpeg_420", 3, false),
        ("jpeg_444_separate_scans.jpg", "jpeg_444", 3, true),
        ("jpeg_gray.jpg", "jpeg_gray", 1, true),
        ("jpeg_gray_prog.jpg", "jpeg_gray", 1, true),
        ("jpeg_rgb.jpg", "jpeg_rgb", 3, true),
        ("jpeg_cmyk_adobe.jpg", "jpeg_cmyk_adobe", 3, true),
        ("jpeg_cmyk_adobe_prog.jpg", "jpeg_cmyk_adobe", 3, true),
        ("jpeg_cmyk_pillow.jpg", "jpeg_rgb", 3, true),
        ("quad.jpg", "quad", 3, false),
        ("progressive.jpg", "quad", 3, false),
        ("panorama.jpg", "panorama", 3, false),
        ("cmyk_plain.jpg", "", 3, true),
    ] {
        let bytes = fixture(name);
        for scale in [2u32, 4] {
            let ours = thumbnail_engine::decode_jpeg_scaled(&bytes, scale, false).unwrap();
            let what = format!("{name} at 1/{scale}");
            let scaled = thumbnail_engine::decode_jpeg_scaled(&bytes, scale, true).unwrap();
            assert_eq!((ours.0, ours.1, ours.2), (scaled.0, scaled.1, channels), "{what}");
            assert_eq!(ours.3.len(), ours.0 * ours.1 * channels, "{what}");
            if !reference.is_empty() {
                let img =
                    image::load_from_memory(&fixture(&format!("djpeg/{reference}_{scale}.png"))).unwrap();
                let want = if channels == 1 {
                    img.into_luma8().into_raw()
                } else {
                    img.into_rgb8().into_raw()
                };
                let (mean, psnr) = diff(&ours.3, &want);
                eprintln!("{what}: vs djpeg: mean abs diff {mean:.3}, PSNR {psnr:.2} dB");
                assert!(
                    mean < 3.0 && psnr > 34.0,
                    "{what} vs djpeg: mean abs diff {mean:.3}, PSNR {psnr:.2} dB"
                );
            }
            let (mean, psnr) = diff(&ours.3, &scaled.3);
            eprintln!("{what}: vs jpeg-decoder: mean abs diff {mean:.3}, PSNR {psnr:.2} dB");
            if same_chroma {
                assert!(
                    mean < 0.5 && psnr > 50.0,
                    "{what} vs jpeg-decoder: mean abs diff {mean:.3}, PSNR {psnr:.2} dB"
                );
            }
        }
    }
}

/// Files that hold the same coefficients in another layout (progressive, restart intervals,
/// one scan per component, skippable scans) must decode to exactly the same pixels.
#[test]
fn reduced_size_decodes_are_layout_independent() {
    for (base, variants) in [
        (
            "jpeg_420.jpg",
            &[
                "jpeg_420_prog.jpg",
                "jpeg_420_restart.jpg",
                "jpeg_420_prog_restart.jpg",
                "jpeg_420_prog_skippable.jpg",
                "jpeg_420_prog_refined.jpg",
            ][..],
        ),
        ("jpeg_444.jpg", &["jpeg_444_separate_scans.jpg"][..]),
        ("jpeg_gray.jpg", &["jpeg_gray_prog.jpg"][..]),
        ("jpeg_cmyk_adobe.jpg", &["jpeg_cmyk_adobe_prog.jpg"][..]),
    ] {
        for scale in [2u32, 4] {
            let want = thumbnail_engine::decode_jpeg_scaled(&fixture(base), scale, false).unwrap();
            for v in variants {
                let got = thumbnail_engine::decode_jpeg_scaled(&fixture(v), scale, false).unwrap();
                assert_eq!(
                    (got.0, got.1, got.2),
                    (want.0, want.1, want.2),
                    "{v} at 1/{scale}"
                );
                assert!(got.3 == want.3, "{v} at 1/{scale} differs from {base}");
            }
        }
    }
}

/// The luma sampling factors (h, v) in a baseline JPEG's frame header.
fn luma_sampling(jpeg: &[u8]) -> (u8, u8) {
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    // Marker, length (2), precision, height (2), width (2), component count, then id, HV.
    let hv = jpeg[sof + 11];
    (hv >> 4, hv & 15)
}

/// JPEG output below quality 90 is 4:2:0, its chroma resampled straight to half size on the
/// planar route (odd sizes, flips and rotations included); from 90 up it is 4:4:4.
#[test]
fn jpeg_output_chroma_follows_the_quality() {
    for (quality, sampling) in [(80, (2, 2)), (95, (1, 1))] {
        for (name, w) in [
            ("quad.jpg", 30),
            ("quad.jpg", 31),
            ("orient6.jpg", 31),
            ("orient3.jpg", 31),
        ] {
            let options = ThumbnailOptions {
                quality,
                ..opts(w, w, Fit::Contain, Some(OutputFormat::Jpeg))
            };
            let t = render(&fixture(name), &options, &Limits::default()).unwrap();
            let what = format!("{name} at {w}px, quality {quality}");
            assert_eq!(luma_sampling(&t.bytes), sampling, "{what}");
            assert_quad(&t.bytes, &what, 40);
        }
    }
}

/// Sizes that make the pipeline decode at 1/2 and 1/4 give the right colours and sizes.
#[test]
fn jpeg_shrink_on_load_at_half_and_quarter_scale() {
    for name in [
        "quad.jpg",
        "progressive.jpg",
        "baseline_444.jpg",
        "cmyk_adobe.jpg",
        "cmyk_plain.jpg",
    ] {
        // 96x64, with the Lanczos pass left at least 1.25x: 30 px wide decodes at 1/2 (48 px),
        // 16 px at 1/4 (24 px). YCbCr files are resampled as planes: PNG output converts them to
        // RGB at the end, JPEG output never does.
        for (w, h) in [(30, 20), (16, 11)] {
            for format in [OutputFormat::Png, OutputFormat::Jpeg] {
                let t = render(
                    &fixture(name),
                    &opts(w, w, Fit::Contain, Some(format)),
                    &Limits::default(),
                )
                .unwrap();
                assert_eq!((t.width, t.height), (w, h), "{name}");
                assert_quad(&t.bytes, &format!("{name} at {w}px as {format:?}"), 40);
            }
        }
    }
    // Orientation on the planar route, both output formats, both scales.
    for o in [3, 5, 6, 8] {
        for w in [30, 16] {
            for format in [OutputFormat::Png, OutputFormat::Jpeg] {
                let bytes = fixture(&format!("orient{o}.jpg"));
                let t = render(
                    &bytes,
                    &opts(w, w, Fit::Contain, Some(format)),
                    &Limits::default(),
                )
                .unwrap();
                assert_quad(&t.bytes, &format!("orientation {o} at {w}px as {format:?}"), 40);
            }
        }
    }
    for (scale, size) in [(2, (68, 50)), (4, (34, 25))] {
        let img = thumbnail_engine::decode_jpeg_scaled(&fixture("jpeg_420.jpg"), scale, false).unwrap();
        assert_eq!((img.0, img.1), size, "136x100 at 1/{scale}: ceil(w / {scale})");
    }
}
