//! Hostile inputs in the newer formats: bombs refused from the header (or, for SVG, from the
//! document's structure) before anything large is allocated; truncation and corruption give
//! typed errors; memory stays under what the engine plans for.
use std::time::{Duration, Instant};
use thumbnail_engine::{Fit, Limits, OutputFormat, ThumbnailOptions, probe, render};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The reason `probe` and `render` give (they must agree when the probe already refuses), and
/// that it came fast: refusals happen before decoding.
fn reason(bytes: &[u8], limits: &Limits) -> &'static str {
    let started = Instant::now();
    let via_probe = probe(bytes, limits).err().map(|e| e.reason());
    let via_render = render(bytes, &ThumbnailOptions::default(), limits).unwrap_err();
    if let Some(p) = via_probe {
        assert_eq!(p, via_render.reason(), "probe and render disagree: {via_render}");
    }
    assert!(!via_render.to_string().is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {via_render}",
        started.elapsed()
    );
    via_render.reason()
}

/// `bytes` with every `ispe` (image spatial extents) box saying `w` x `h`.
fn with_ispe(mut bytes: Vec<u8>, w: u32, h: u32) -> Vec<u8> {
    let at: Vec<usize> = (0..bytes.len() - 4)
        .filter(|&i| &bytes[i..i + 4] == b"ispe")
        .collect();
    assert!(!at.is_empty());
    for i in at {
        // type, version and flags, width, height
        bytes[i + 8..i + 12].copy_from_slice(&w.to_be_bytes());
        bytes[i + 12..i + 16].copy_from_slice(&h.to_be_bytes());
    }
    bytes
}

/// Bits written least significant first, as JPEG XL reads them.
struct Bits(Vec<u8>, usize);
impl Bits {
    fn put(&mut self, value: u64, n: usize) {
        for i in 0..n {
            if self.1.is_multiple_of(8) {
                self.0.push(0);
            }
            if i < 64 && value >> i & 1 == 1 {
                *self.0.last_mut().unwrap() |= 1 << (self.1 % 8);
            }
            self.1 += 1;
        }
    }
}

/// A JPEG XL codestream header claiming `w` x `h` (all-default metadata), then zeros where a
/// frame would be (the decoder reads its bits in words).
fn jxl_header(w: u32, h: u32) -> Vec<u8> {
    let mut b = Bits(vec![0xFF, 0x0A], 16);
    b.put(0, 1); // not a multiple of 8
    b.put(3, 2); // height: 30 bits follow
    b.put(u64::from(h - 1), 30);
    b.put(0, 3); // no aspect ratio: the width follows
    b.put(3, 2);
    b.put(u64::from(w - 1), 30);
    b.put(1, 1); // all_default metadata
    b.put(0, 64 * 8);
    b.0
}

/// A little-endian TIFF with one uncompressed RGB strip of `data` claiming `w` x `h`.
fn tiff(w: u32, h: u32, data: &[u8]) -> Vec<u8> {
    let mut out = b"II*\0\x08\0\0\0".to_vec();
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 2),
        (273, 4, 8 + 2 + 9 * 12 + 4),
        (277, 3, 3),
        (278, 4, h),
        (279, 4, data.len() as u32),
    ];
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn bmp(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&(54u32 + 12).to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out.extend_from_slice(&[0; 12]);
    out
}

#[test]
fn bombs_in_the_new_formats_are_refused_from_the_header() {
    let l = Limits::default();
    for name in ["quad.heic", "quad_8bit.avif", "phone.heic"] {
        let bomb = with_ispe(fixture(name), 60_000, 60_000);
        assert_eq!(reason(&bomb, &l), "TooManyPixels", "{name}");
    }
    // 16000x16000 is within what JPEG XL's level 5 allows (2^28 pixels), over our limit.
    let jxl = jxl_header(16_000, 16_000);
    assert!(jxl.len() < 100);
    assert_eq!(reason(&jxl, &l), "TooManyPixels");
    assert_eq!(reason(&tiff(100_000, 100_000, &[0; 64]), &l), "TooManyPixels");
    assert_eq!(reason(&bmp(60_000, -60_000), &l), "TooManyPixels");
    // Within the pixel limit but over a tight memory limit: refused before decoding.
    let tight = Limits {
        max_memory_bytes: 20_000,
        ..Limits::default()
    };
    for name in ["phone.heic", "quad.jxl", "quad.tif", "quad.bmp"] {
        let bytes = fixture(name);
        assert!(probe(&bytes, &tight).is_ok(), "{name}");
        let big = ThumbnailOptions {
            width: 1000,
            height: 1000,
            fit: Fit::Contain,
            ..ThumbnailOptions::default()
        };
        let err = render(&bytes, &big, &tight).unwrap_err();
        assert_eq!(err.reason(), "MemoryLimit", "{name}: {err}");
    }
}

#[test]
fn truncated_and_corrupt_new_formats_give_typed_errors() {
    let l = Limits::default();
    for name in [
        "quad.heic",
        "phone.heic",
        "quad_10bit.avif",
        "quad.jxl",
        "rgba.jxl",
        "quad.tif",
        "quad_tiled.tif",
        "quad.bmp",
        "quad_rle.bmp",
        "quad.ico",
    ] {
        let bytes = fixture(name);
        for cut in [12, bytes.len() / 3, bytes.len() / 2] {
            let err = render(&bytes[..cut], &ThumbnailOptions::default(), &l)
                .expect_err(&format!("{name} cut at {cut} of {}", bytes.len()));
            assert!(
                matches!(err.reason(), "CorruptImage" | "UnsupportedFormat"),
                "{name} cut at {cut}: {err}"
            );
        }
        // A scrambled body after an intact header: an error, never a panic.
        let mut scrambled = bytes.clone();
        for i in (bytes.len() / 2..bytes.len()).step_by(7) {
            scrambled[i] ^= 0x5A;
        }
        let _ = render(&scrambled, &ThumbnailOptions::default(), &l);
    }
}

fn svg_reason(doc: &str) -> (&'static str, String) {
    let l = Limits::default();
    let started = Instant::now();
    let err = render(doc.as_bytes(), &ThumbnailOptions::default(), &l).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}: {err}",
        started.elapsed()
    );
    (err.reason(), err.to_string())
}

const NS: &str = r#"xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink""#;

#[test]
fn svg_bombs_are_refused() {
    // A huge declared size.
    let (r, _) = svg_reason(&format!(r#"<svg {NS} width="100000" height="100000"/>"#));
    assert_eq!(r, "TooManyPixels");
    // Deep nesting.
    let deep = format!("<svg {NS}>{}{}</svg>", "<g>".repeat(300), "</g>".repeat(300));
    let (r, m) = svg_reason(&deep);
    assert_eq!((r, m.contains("nested")), ("RefusedImage", true), "{m}");
    // Many elements.
    let many = format!(
        r#"<svg {NS}>{}</svg>"#,
        r#"<rect width="1" height="1"/>"#.repeat(250_000)
    );
    let (r, m) = svg_reason(&many);
    assert_eq!((r, m.contains("elements")), ("RefusedImage", true), "{m}");
    // Ten levels of ten <use> each: ten billion instances from a few kilobytes.
    let mut bomb = format!(r#"<svg {NS}><defs><rect id="l0" width="1" height="1"/>"#);
    for level in 1..=10 {
        bomb.push_str(&format!(r#"<g id="l{level}">"#));
        for _ in 0..10 {
            bomb.push_str(&format!(r##"<use xlink:href="#l{}"/>"##, level - 1));
        }
        bomb.push_str("</g>");
    }
    bomb.push_str(r##"</defs><use href="#l10"/></svg>"##);
    assert!(bomb.len() < 8192);
    let (r, m) = svg_reason(&bomb);
    assert_eq!((r, m.contains("instantiate")), ("RefusedImage", true), "{m}");
    // A <use> that contains itself.
    let cycle = format!(r##"<svg {NS}><g id="a"><use href="#a"/></g></svg>"##);
    let (r, m) = svg_reason(&cycle);
    assert_eq!((r, m.contains("refers to itself")), ("RefusedImage", true), "{m}");
    // Entities ("billion laughs").
    let laughs = format!(
        r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><svg {NS}><text>&b;</text></svg>"#
    );
    assert_eq!(svg_reason(&laughs).0, "RefusedImage");
    // A filter whose cost grows with its radius.
    let morph = format!(
        r#"<svg {NS} width="400" height="400"><filter id="f"><feMorphology radius="500"/></filter><rect width="400" height="400" filter="url(#f)"/></svg>"#
    );
    let big = ThumbnailOptions {
        width: 400,
        height: 400,
        ..ThumbnailOptions::default()
    };
    let err = render(morph.as_bytes(), &big, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "RefusedImage", "{err}");
}

#[test]
fn svg_external_references_are_refused_and_nothing_is_read() {
    let secret = std::env::temp_dir().join(format!("svg-secret-{}.png", std::process::id()));
    std::fs::write(&secret, fixture("quad.png")).unwrap();
    for doc in [
        format!(
            r#"<svg {NS}><image href="file://{}" width="10" height="10"/></svg>"#,
            secret.display()
        ),
        format!(
            r#"<svg {NS}><image xlink:href="{}" width="10" height="10"/></svg>"#,
            secret.display()
        ),
        format!(r#"<svg {NS}><image href="https://example.com/a.png" width="10" height="10"/></svg>"#),
        format!(r##"<svg {NS}><use href="other.svg#x"/></svg>"##),
        format!(r#"<svg {NS}><rect width="5" height="5" fill="url(https://example.com/p.svg#g)"/></svg>"#),
        format!(r#"<svg {NS}><style>@import url(https://example.com/x.css);</style></svg>"#),
    ] {
        let (r, m) = svg_reason(&doc);
        assert_eq!(r, "RefusedImage", "{doc}: {m}");
    }
    std::fs::remove_file(&secret).unwrap();
    // Hyperlinks and internal references are fine.
    let fine = format!(
        r##"<svg {NS} width="20" height="20"><defs><linearGradient id="g"><stop offset="0" stop-color="red"/></linearGradient></defs><a href="https://example.com"><rect width="20" height="20" fill="url(#g)"/></a></svg>"##
    );
    let t = render(fine.as_bytes(), &ThumbnailOptions::default(), &Limits::default()).unwrap();
    let img = image::load_from_memory(&t.bytes).unwrap().to_rgba8();
    assert_eq!(img.get_pixel(10, 10).0, [255, 0, 0, 255]);
}

#[test]
fn svg_embedded_images_are_drawn_within_the_limits() {
    let png = fixture("quad.png");
    let doc = format!(
        r#"<svg {NS} width="24" height="16" viewBox="0 0 96 64"><image width="96" height="64" href="{}"/></svg>"#,
        data_url("image/png", &png)
    );
    let o = ThumbnailOptions {
        width: 96,
        height: 64,
        format: Some(OutputFormat::Png),
        ..ThumbnailOptions::default()
    };
    let t = render(doc.as_bytes(), &o, &Limits::default()).unwrap();
    let img = image::load_from_memory(&t.bytes).unwrap().to_rgba8();
    assert!(img.get_pixel(24, 16).0[0] > 200, "the embedded quad is drawn");
    // An embedded image over the pixel limit (the SVG itself is within it) refuses the SVG.
    let l = Limits {
        max_pixels: 1000,
        ..Limits::default()
    };
    let err = render(doc.as_bytes(), &ThumbnailOptions::default(), &l).unwrap_err();
    assert_eq!(err.reason(), "RefusedImage", "{err}");
    // An embedded SVG is not drawn (no recursion), and the rest is.
    let inner =
        format!(r#"<svg {NS} width="10" height="10"><rect width="10" height="10" fill="red"/></svg>"#);
    let nested = format!(
        r#"<svg {NS} width="20" height="20"><rect width="20" height="20" fill="blue"/><image width="20" height="20" href="{}"/></svg>"#,
        data_url("image/svg+xml", inner.as_bytes())
    );
    let t = render(
        nested.as_bytes(),
        &ThumbnailOptions::default(),
        &Limits::default(),
    )
    .unwrap();
    let img = image::load_from_memory(&t.bytes).unwrap().to_rgba8();
    assert_eq!(img.get_pixel(10, 10).0, [0, 0, 255, 255]);
}

/// A data URL without a base64 crate: the tests' own small encoder.
fn data_url(mime: &str, data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = format!("data:{mime};base64,");
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn animations_over_the_caps_fail_with_a_reason() {
    let animated = ThumbnailOptions {
        animated: true,
        ..ThumbnailOptions::default()
    };
    for name in ["anim.gif", "anim.webp"] {
        let bytes = fixture(name);
        let frames = Limits {
            max_frames: 2,
            ..Limits::default()
        };
        assert_eq!(
            render(&bytes, &animated, &frames).unwrap_err().reason(),
            "TooManyFrames"
        );
        let memory = Limits {
            max_memory_bytes: 40_000,
            ..Limits::default()
        };
        let err = render(&bytes, &animated, &memory).unwrap_err();
        assert_eq!(err.reason(), "MemoryLimit", "{name}: {err}");
    }
}

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The 12 MP HEICs and a 12 MP TIFF and BMP stay under the memory limit the engine is given
/// (which it checks its plan against before decoding: the plan is an upper bound), measured in a
/// child process.
#[test]
fn new_decoders_stay_under_the_memory_limit_in_a_child_process() {
    const LIMIT: u64 = 256 * 1024 * 1024;
    if let Ok(which) = std::env::var("FORMAT_MEMORY_CHILD") {
        let bytes = match which.as_str() {
            "tiff" | "bmp" => {
                let (w, h) = (4000u32, 3000u32);
                let img =
                    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 16) as u8, (y / 12) as u8, 7]));
                let mut out = std::io::Cursor::new(Vec::new());
                let format = if which == "tiff" {
                    image::ImageFormat::Tiff
                } else {
                    image::ImageFormat::Bmp
                };
                img.write_to(&mut out, format).unwrap();
                out.into_inner()
            }
            name => fixture(name),
        };
        let limits = Limits {
            max_memory_bytes: LIMIT,
            max_input_bytes: 100 * 1024 * 1024,
            ..Limits::default()
        };
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = rss_kib("VmRSS:");
        let o = ThumbnailOptions {
            width: 400,
            height: 400,
            fit: Fit::Contain,
            ..ThumbnailOptions::default()
        };
        render(&bytes, &o, &limits).unwrap();
        println!("JOB_PEAK_KIB={}", rss_kib("VmHWM:").saturating_sub(before));
        return;
    }
    for which in ["phone.heic", "phone_10bit.heic", "tiff", "bmp"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "new_decoders_stay_under_the_memory_limit_in_a_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FORMAT_MEMORY_CHILD", which)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{which}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak: u64 = stdout
            .lines()
            .find_map(|l| l.split("JOB_PEAK_KIB=").nth(1))
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(peak < LIMIT / 1024, "{which}: peak {peak} KiB over the limit");
        eprintln!("{which}: job peak {peak} KiB");
    }
}
