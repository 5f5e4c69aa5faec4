//! The newer inputs (HEIC, AVIF, JPEG XL, TIFF, BMP, ICO, SVG) and outputs (AVIF, GIF), on small
//! committed fixtures made by the usual tools (fixtures/make_format_fixtures.py).
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

/// Decode an output to RGBA8 (AVIF, which the `image` crate here does not read, through the
/// engine's own reader as a lossless PNG).
fn pixels(bytes: &[u8]) -> image::RgbaImage {
    if bytes.get(4..12) == Some(b"ftypavif") {
        let info = probe(bytes, &Limits::default()).unwrap();
        let png = render(
            bytes,
            &opts(info.width, info.height, Fit::Fill, Some(OutputFormat::Png)),
            &Limits::default(),
        )
        .unwrap();
        return pixels(&png.bytes);
    }
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

/// Red, green / blue, white at the quadrants' centres.
fn assert_quad(bytes: &[u8], what: &str, tol: i32) {
    let img = pixels(bytes);
    let (w, h) = img.dimensions();
    for (fx, fy, want) in [(1, 1, RED), (3, 1, GREEN), (1, 3, BLUE), (3, 3, WHITE)] {
        let p = img.get_pixel(w * fx / 4, h * fy / 4).0;
        assert!(
            close(p, want, tol),
            "{what}: at ({fx}/4, {fy}/4) got {p:?}, want {want:?}"
        );
    }
}

/// Full size and a small size (through each decoder's shrinking or a thumbnail item, if any).
fn both_sizes() -> [ThumbnailOptions; 2] {
    [
        opts(400, 400, Fit::Contain, Some(OutputFormat::Png)),
        opts(12, 12, Fit::Contain, Some(OutputFormat::Png)),
    ]
}

/// A 96x64 quad as SVG (a viewBox only, so the size comes from it).
const QUAD_SVG: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 96 64">
  <rect width="48" height="32" fill="#f00"/><rect x="48" width="48" height="32" fill="#0f0"/>
  <rect y="32" width="48" height="32" fill="#00f"/><rect x="48" y="32" width="48" height="32" fill="#fff"/>
</svg>"##;

#[test]
fn every_new_format_is_detected_probed_and_decoded_in_the_right_colours() {
    let cases: &[(&str, ImageFormat, (u32, u32), i32)] = &[
        ("quad.heic", ImageFormat::Heic, (96, 64), 40),
        ("quad_10bit.heic", ImageFormat::Heic, (96, 64), 40),
        ("quad_8bit.avif", ImageFormat::Avif, (96, 64), 40),
        ("quad_10bit.avif", ImageFormat::Avif, (96, 64), 40),
        ("quad_12bit.avif", ImageFormat::Avif, (96, 64), 40),
        ("quad.jxl", ImageFormat::Jxl, (96, 64), 40),
        ("quad.tif", ImageFormat::Tiff, (96, 64), 8),
        ("quad_tiled.tif", ImageFormat::Tiff, (96, 64), 8),
        ("quad_16bit.tif", ImageFormat::Tiff, (96, 64), 8),
        ("quad_cmyk.tif", ImageFormat::Tiff, (96, 64), 40),
        ("quad.bmp", ImageFormat::Bmp, (48, 32), 8),
        ("quad_rle.bmp", ImageFormat::Bmp, (96, 64), 8),
        ("quad.ico", ImageFormat::Ico, (32, 32), 8),
    ];
    for &(name, format, size, tol) in cases {
        let bytes = fixture(name);
        let info = probe(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (info.format, info.width, info.height),
            (format, size.0, size.1),
            "{name}"
        );
        // Icons are written with an alpha channel (here an opaque one); the rest have none.
        assert_eq!(info.has_alpha, format == ImageFormat::Ico, "{name}: alpha");
        for o in both_sizes() {
            let t = render(&bytes, &o, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_quad(&t.bytes, &format!("{name} at {}px", o.width), tol);
        }
    }
    let svg = QUAD_SVG.as_bytes();
    let info = probe(svg, &Limits::default()).unwrap();
    assert_eq!(
        (info.format, info.width, info.height, info.has_alpha),
        (ImageFormat::Svg, 96, 64, true)
    );
    for o in both_sizes() {
        let t = render(svg, &o, &Limits::default()).unwrap();
        assert_quad(&t.bytes, &format!("SVG at {}px", o.width), 2);
    }
}

#[test]
fn default_outputs_of_the_new_formats() {
    for (name, want) in [
        ("quad.heic", OutputFormat::Jpeg),
        ("quad_8bit.avif", OutputFormat::Avif),
        ("quad.jxl", OutputFormat::Jpeg),
        ("quad.tif", OutputFormat::Png),
        ("quad.bmp", OutputFormat::Png),
        ("quad.ico", OutputFormat::Png),
    ] {
        let t = render(&fixture(name), &ThumbnailOptions::default(), &Limits::default()).unwrap();
        assert_eq!(t.format, want, "{name}");
        assert_eq!(
            image::guess_format(&t.bytes).ok(),
            Some(match want {
                OutputFormat::Jpeg => image::ImageFormat::Jpeg,
                OutputFormat::Png => image::ImageFormat::Png,
                _ => image::ImageFormat::Avif,
            }),
            "{name}"
        );
    }
}

/// The iPhone-style HEIC: a 4032x3024 landscape primary with a 320x240 thumbnail item, both
/// turned upright by `irot` (a quarter turn clockwise); the EXIF block says Orientation 6 too.
#[test]
fn iphone_style_heic_comes_out_upright_once() {
    for name in ["phone.heic", "phone_10bit.heic"] {
        let bytes = fixture(name);
        let info = probe(&bytes, &Limits::default()).unwrap();
        // The size is the displayed one, and the EXIF orientation is not applied again.
        assert_eq!(
            (info.format, info.width, info.height, info.orientation),
            (ImageFormat::Heic, 3024, 4032, 1),
            "{name}"
        );
        for (o, size) in [
            (opts(300, 400, Fit::Contain, Some(OutputFormat::Png)), (300, 400)),
            // Small enough for the thumbnail item.
            (opts(60, 80, Fit::Cover, Some(OutputFormat::Png)), (60, 80)),
            (
                opts(1000, 1000, Fit::Contain, Some(OutputFormat::Png)),
                (750, 1000),
            ),
        ] {
            let t = render(&bytes, &o, &Limits::default()).unwrap();
            assert_eq!((t.width, t.height), size, "{name}");
            assert_quad(&t.bytes, &format!("{name} at {}x{}", o.width, o.height), 40);
        }
        // The thumbnail item is used when it covers the output, the primary otherwise.
        assert_eq!(
            thumbnail_engine::heif_decoded_size(&bytes, (240, 320)).unwrap(),
            (240, 320)
        );
        assert_eq!(
            thumbnail_engine::heif_decoded_size(&bytes, (241, 100)).unwrap(),
            (3024, 4032)
        );
    }
}

/// A `w` x `h` RGB TIFF in strips (the `tiff` crate's default of about 8 KiB each), the quad's
/// colours in its quadrants.
fn quad_tiff(w: u32, h: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let px = match (x < w / 2, y < h / 2) {
                (true, true) => RED,
                (false, true) => GREEN,
                (true, false) => BLUE,
                (false, false) => WHITE,
            };
            data.extend_from_slice(&px[..3]);
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut out)
        .unwrap()
        .write_image::<tiff::encoder::colortype::RGB8>(w, h, &data)
        .unwrap();
    out.into_inner()
}

#[test]
fn a_tiff_larger_than_the_memory_limit_is_read_strip_by_strip() {
    // 3000x2000 RGB is 18 MB decoded, and a whole decode is planned at 72 MB (the `image`
    // crate's reader holds it twice, plus working buffers); strip by strip the thumbnail needs
    // a band of rows and the box-shrunk picture (1500x1000 for 400x400 cover).
    let bytes = quad_tiff(3000, 2000);
    let limits = Limits {
        max_memory_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    for o in [
        opts(100, 100, Fit::Contain, Some(OutputFormat::Png)),
        opts(400, 400, Fit::Cover, Some(OutputFormat::Png)),
    ] {
        let t = render(&bytes, &o, &limits).unwrap_or_else(|e| panic!("{}px: {e}", o.width));
        assert_quad(&t.bytes, &format!("3000x2000 TIFF at {}px", o.width), 8);
    }
    // Planar TIFFs are read whole, and their estimate says so: refused under the same limit.
    let planar = fixture("quad_planar.tif");
    let tiny = Limits {
        max_memory_bytes: 100 * 1024,
        ..Limits::default()
    };
    let err = render(&planar, &opts(12, 12, Fit::Contain, None), &tiny).unwrap_err();
    assert_eq!(err.reason(), "MemoryLimit", "{err}");
    let strips = fixture("quad_strips.tif");
    render(&strips, &opts(12, 12, Fit::Contain, None), &tiny).unwrap();
}

#[test]
fn tiff_and_jpeg_xl_orientation_is_honoured() {
    // orient6_xyb.jxl at 12px comes from its LF image, which is oriented by the engine itself.
    for name in ["orient6.tif", "orient6.jxl", "orient6_xyb.jxl"] {
        let bytes = fixture(name);
        let info = probe(&bytes, &Limits::default()).unwrap();
        let (w, h) = info.display_size();
        assert_eq!((w, h), (96, 64), "{name}: {info:?}");
        for o in both_sizes() {
            let t = render(&bytes, &o, &Limits::default()).unwrap();
            assert!(t.width > t.height, "{name}: {}x{}", t.width, t.height);
            assert_quad(&t.bytes, &format!("{name} at {}px", o.width), 40);
        }
    }
}

/// Mean absolute difference per sample of two same-sized images, and the largest.
fn difference(a: &image::RgbaImage, b: &image::RgbaImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| x.abs_diff(y))
        .collect();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    (mean, diffs.iter().copied().max().unwrap_or(0))
}

#[test]
fn jpeg_xl_thumbnails_of_an_eighth_come_from_the_lf_image() {
    // lf.jxl: 512x384, lossy (XYB VarDCT). Its LF image is 64x48.
    let bytes = fixture("lf.jxl");
    // Enough for the LF image, far from the 10 MB a whole 512x384 render takes.
    let small = Limits {
        max_memory_bytes: 2 * 1024 * 1024,
        ..Limits::default()
    };
    let eighth = opts(64, 48, Fit::Contain, Some(OutputFormat::Png));
    let quarter = opts(128, 96, Fit::Contain, Some(OutputFormat::Png));
    let from_lf = render(&bytes, &eighth, &small).unwrap();
    assert_eq!((from_lf.width, from_lf.height), (64, 48));
    // A quarter needs the whole render: refused under the same limit, before any decoding.
    let err = render(&bytes, &quarter, &small).unwrap_err();
    assert_eq!(err.reason(), "MemoryLimit", "{err}");

    // It looks like the whole render: that render at a quarter, halved by 2x2 means.
    let whole = pixels(&render(&bytes, &quarter, &Limits::default()).unwrap().bytes);
    let halved = image::RgbaImage::from_fn(64, 48, |x, y| {
        let px = |dx, dy| whole.get_pixel(2 * x + dx, 2 * y + dy).0;
        let quad = [px(0, 0), px(1, 0), px(0, 1), px(1, 1)];
        image::Rgba(std::array::from_fn(|c| {
            (quad.iter().map(|p| u32::from(p[c])).sum::<u32>().div_ceil(4)) as u8
        }))
    });
    let (mean, max) = difference(&pixels(&from_lf.bytes), &halved);
    assert!(mean < 1.5, "mean difference {mean:.2} from the whole render");
    assert!(
        max < 48,
        "largest difference {max} from the whole render (edges of the shapes)"
    );
    // The shapes are where they were drawn: red disc, white triangle, blue square.
    let img = pixels(&from_lf.bytes);
    for ((x, y), want) in [
        ((16, 15), [230, 32, 28]),
        ((31, 12), [255, 255, 255]),
        ((48, 34), [20, 40, 220]),
    ] {
        let p = img.get_pixel(x, y).0;
        assert!(
            close(p, [want[0], want[1], want[2], 255], 24),
            "at ({x}, {y}) got {p:?}, want {want:?}"
        );
    }
}

#[test]
fn a_transcoded_jpeg_at_an_eighth_matches_the_jpeg_at_an_eighth() {
    // `cjxl --lossless_jpeg=1` keeps the JPEG's DCT coefficients: the LF image of the JPEG XL is
    // the JPEG's DC, which is what the JPEG route decodes at 1/8. Chroma 4:2:0 and 4:4:4.
    for name in ["jpeg_420", "jpeg_444"] {
        let (jxl, jpeg) = (fixture(&format!("{name}.jxl")), fixture(&format!("{name}.jpg")));
        let eighth = opts(17, 13, Fit::Contain, Some(OutputFormat::Png));
        let small = Limits {
            max_memory_bytes: 256 * 1024,
            ..Limits::default()
        };
        let from_jxl = render(&jxl, &eighth, &small).unwrap_or_else(|e| panic!("{name}: {e}"));
        let from_jpeg = render(&jpeg, &eighth, &Limits::default()).unwrap();
        assert_eq!((from_jxl.width, from_jxl.height), (17, 13), "{name}");
        let (mean, max) = difference(&pixels(&from_jxl.bytes), &pixels(&from_jpeg.bytes));
        assert!(mean < 1.0 && max < 8, "{name}: mean {mean:.2}, largest {max}");
    }
}

#[test]
fn jpeg_xl_without_a_usable_lf_image_is_rendered_whole_within_the_memory_limit() {
    // rgba.jxl (lossless, Modular, with alpha) has no LF image to shrink from; at an eighth the
    // engine plans for one, then renders the frame whole, after checking it fits the limit.
    let bytes = fixture("rgba.jxl");
    let eighth = opts(12, 8, Fit::Contain, Some(OutputFormat::Png));
    let t = render(&bytes, &eighth, &Limits::default()).unwrap();
    let img = pixels(&t.bytes);
    assert!(img.get_pixel(1, 4).0[3] < 8, "transparent left");
    assert!(close(img.get_pixel(10, 6).0, WHITE, 40), "opaque right");
    // 96x64 whole takes about 320 KB; the LF plan about 100 KB.
    let small = Limits {
        max_memory_bytes: 200 * 1024,
        ..Limits::default()
    };
    let err = render(&bytes, &eighth, &small).unwrap_err();
    assert_eq!(err.reason(), "MemoryLimit", "{err}");
}

#[test]
fn alpha_of_the_new_formats_is_kept() {
    // rgba.png: the left half is transparent, the right half opaque (green over white).
    for name in ["rgba.avif", "rgba.jxl", "rgba.tif", "rgba.bmp"] {
        let bytes = fixture(name);
        assert!(probe(&bytes, &Limits::default()).unwrap().has_alpha, "{name}");
        for format in [OutputFormat::Png, OutputFormat::Webp, OutputFormat::Avif] {
            let t = render(
                &bytes,
                &opts(96, 64, Fit::Contain, Some(format)),
                &Limits::default(),
            )
            .unwrap();
            let img = pixels(&t.bytes);
            let (w, h) = img.dimensions();
            assert!(
                img.get_pixel(w / 8, h / 4).0[3] < 8,
                "{name} -> {format}: transparent left"
            );
            let p = img.get_pixel(w * 7 / 8, h * 3 / 4).0;
            assert!(close(p, WHITE, 40), "{name} -> {format}: opaque right {p:?}");
        }
    }
}

#[test]
fn embedded_icc_profiles_of_the_new_formats_are_converted() {
    // The profile swaps the red and green primaries: stored red is sRGB green.
    for name in ["icc_swapped.heic", "icc_swapped.avif", "icc_swapped.tif"] {
        for o in both_sizes() {
            let t = render(&fixture(name), &o, &Limits::default()).unwrap();
            let img = pixels(&t.bytes);
            let p = img.get_pixel(img.width() / 4, img.height() / 4).0;
            assert!(
                p[1] > 200 && p[0] < 60,
                "{name}: stored red must come out green, got {p:?}"
            );
        }
    }
}

#[test]
fn no_metadata_leaves_with_the_thumbnail() {
    // phone.heic carries EXIF (camera make and model, orientation).
    let bytes = fixture("phone.heic");
    for format in OutputFormat::ALL {
        let t = render(
            &bytes,
            &opts(60, 80, Fit::Cover, Some(format)),
            &Limits::default(),
        )
        .unwrap();
        for needle in [&b"Exif"[..], b"Apple", b"iPhone", b"ICC_PROFILE", b"iCCP"] {
            assert!(
                !t.bytes.windows(needle.len()).any(|w| w == needle),
                "{format} output carries {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn avif_and_gif_outputs() {
    let bytes = fixture("quad.png");
    let avif = render(
        &bytes,
        &opts(96, 64, Fit::Contain, Some(OutputFormat::Avif)),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(avif.format.content_type(), "image/avif");
    assert_eq!(&avif.bytes[4..12], b"ftypavif");
    // Decoded with the engine's own AVIF reader (libheif + dav1d).
    let back = render(
        &avif.bytes,
        &opts(96, 64, Fit::Contain, Some(OutputFormat::Png)),
        &Limits::default(),
    )
    .unwrap();
    assert_quad(&back.bytes, "AVIF round trip", 40);
    let gif = render(
        &bytes,
        &opts(96, 64, Fit::Contain, Some(OutputFormat::Gif)),
        &Limits::default(),
    )
    .unwrap();
    assert!(gif.bytes.starts_with(b"GIF89a"));
    assert_quad(&gif.bytes, "GIF output", 16);
}
