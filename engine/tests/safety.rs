//! Hostile inputs: bombs refused from the header, typed errors, and a memory bound that holds.
use thumbnail_engine::{EngineError, Fit, Limits, ThumbnailOptions, probe, render};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A few-hundred-byte PNG whose header claims `w` x `h`.
fn png_bomb(w: u32, h: u32, extra: Option<(&[u8; 4], Vec<u8>)>) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    if let Some((kind, data)) = extra {
        png_chunk(&mut out, kind, &data);
    }
    // A valid zlib stream of zeros (stored blocks would be huge; a tiny deflate run is enough).
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00, 0x00, 0x00],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0C, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 63, 0]);
    out.extend_from_slice(&[0u8; 64]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A GIF with the given logical screen, and `frames` frames of `fw` x `fh`.
fn gif(screen: (u16, u16), frame: (u16, u16), frames: usize) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen.0.to_le_bytes());
    out.extend_from_slice(&screen.1.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
    for _ in 0..frames {
        out.push(0x2C);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&frame.0.to_le_bytes());
        out.extend_from_slice(&frame.1.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&[2, 2, 0x4C, 0x01, 0]); // LZW: clear, one pixel, end
    }
    out.push(0x3B);
    out
}

/// A bomb must be refused by `probe()` itself, from the header, before anything is decoded; and
/// `render()` must refuse it for the same reason.
fn refused_by_probe(bytes: &[u8], limits: &Limits) -> &'static str {
    let by_probe = match probe(bytes, limits) {
        Err(e) => e,
        Ok(info) => panic!("probe() let a bomb through: {info:?}"),
    };
    let by_render = render(bytes, &ThumbnailOptions::default(), limits).unwrap_err();
    assert_eq!(
        by_probe.reason(),
        by_render.reason(),
        "probe: {by_probe}; render: {by_render}"
    );
    assert!(!by_probe.to_string().is_empty());
    by_probe.reason()
}

fn reason(bytes: &[u8], limits: &Limits) -> &'static str {
    let via_probe = probe(bytes, limits).err().map(|e| e.reason());
    let via_render = render(bytes, &ThumbnailOptions::default(), limits).unwrap_err();
    if let Some(p) = via_probe {
        assert_eq!(p, via_render.reason(), "probe and render disagree: {via_render}");
    }
    assert!(!via_render.to_string().is_empty());
    via_render.reason()
}

#[test]
fn bombs_are_refused_from_the_header() {
    let l = Limits::default();
    let b = png_bomb(50_000, 50_000, None);
    assert!(b.len() < 4096);
    assert_eq!(refused_by_probe(&b, &l), "TooManyPixels");
    assert_eq!(refused_by_probe(&jpeg_bomb(65_535, 65_535), &l), "TooManyPixels");
    assert_eq!(
        refused_by_probe(&gif((65_535, 65_535), (1, 1), 1), &l),
        "TooManyPixels"
    );
    // A small screen with one huge frame inside.
    assert_eq!(
        refused_by_probe(&gif((10, 10), (65_535, 65_535), 1), &l),
        "TooManyPixels"
    );
    // Thousands of frames.
    let many = gif((10, 10), (1, 1), 5000);
    assert_eq!(refused_by_probe(&many, &l), "TooManyFrames");
    match probe(&many, &l).unwrap_err() {
        EngineError::TooManyFrames { frames, max } => assert!(frames > max && max == 1000),
        e => panic!("{e}"),
    }
    // APNG claiming a million frames.
    let apng = png_bomb(
        10,
        10,
        Some((b"acTL", [1_000_000u32.to_be_bytes(), 0u32.to_be_bytes()].concat())),
    );
    assert_eq!(refused_by_probe(&apng, &l), "TooManyFrames");
    // Positive control: the same small images without the bomb pass the probe.
    assert!(probe(&png_bomb(10, 10, None), &l).is_ok());
    assert!(probe(&gif((10, 10), (1, 1), 3), &l).is_ok());
}

#[test]
fn limits_give_typed_errors() {
    let bytes = fixture("quad.jpg");
    let small = Limits {
        max_input_bytes: 100,
        ..Limits::default()
    };
    assert_eq!(reason(&bytes, &small), "FileTooLarge");
    let mem = Limits {
        max_memory_bytes: 10_000,
        ..Limits::default()
    };
    let err = render(&bytes, &ThumbnailOptions::default(), &mem).unwrap_err();
    assert_eq!(err.reason(), "MemoryLimit", "{err}");
    assert!(err.is_bad_input());
    let frames = Limits {
        max_frames: 2,
        ..Limits::default()
    };
    assert_eq!(reason(&fixture("anim.gif"), &frames), "TooManyFrames");
    assert_eq!(reason(&fixture("anim.webp"), &frames), "TooManyFrames");
}

#[test]
fn unsupported_corrupt_and_truncated_inputs() {
    let l = Limits::default();
    assert_eq!(reason(b"%PDF-1.7 hello", &l), "UnsupportedFormat");
    assert_eq!(reason(b"", &l), "UnsupportedFormat");
    assert_eq!(reason(b"\xFF\xD8\xFF", &l), "CorruptImage");
    for name in [
        "quad.jpg",
        "progressive.jpg",
        "quad.png",
        "interlaced.png",
        "quad.webp",
        "cmyk_adobe.jpg",
    ] {
        // (An animation cut after its first frame still gives that frame: only frame 1 is read.)
        let bytes = fixture(name);
        for cut in [bytes.len() / 2, bytes.len() * 3 / 4] {
            for o in [
                ThumbnailOptions::default(),
                ThumbnailOptions {
                    width: 8,
                    height: 8,
                    ..Default::default()
                },
            ] {
                let err = render(&bytes[..cut], &o, &l).expect_err(&format!("{name} cut at {cut}"));
                assert_eq!(err.reason(), "CorruptImage", "{name} cut at {cut}: {err}");
                assert!(err.to_string().contains("corrupt or truncated"), "{err}");
            }
        }
    }
}

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A 4000x3000 noisy PNG and baseline JPEG, made in the test.
fn big_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let (w, h) = (4000u32, 3000u32);
    let mut seed = 12345u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        image::Rgb([(x / 16) as u8, (y / 12) as u8, (seed >> 24) as u8])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image_to(&img);
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 85)
        .encode_image(&img)
        .unwrap();
    vec![("png", png), ("jpeg", jpg)]
}

trait WriteTo {
    fn write_image_to(self, img: &image::RgbImage);
}
impl<W: std::io::Write> WriteTo for image::codecs::png::PngEncoder<W> {
    fn write_image_to(self, img: &image::RgbImage) {
        use image::ImageEncoder;
        self.write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }
}

/// The inputs below are 4000x3000: decoding one at full size takes 4000 x 3000 x 3 bytes.
const FULL_DECODE_BYTES: u64 = 4000 * 3000 * 3;
/// The memory the engine may use for them: well below a full-size decode, so that a pipeline
/// that decoded the whole image first could not stay under it.
const MEMORY_BOUND: u64 = 16 * 1024 * 1024;
const _: () = assert!(MEMORY_BOUND < FULL_DECODE_BYTES / 2);

/// Run in a child process (re-executing this test binary) so that the peak resident memory
/// (VmHWM) belongs to one job alone.
#[test]
fn memory_bound_holds_in_a_child_process() {
    if let Ok(which) = std::env::var("ENGINE_MEMORY_CHILD") {
        let (_, bytes) = big_inputs().into_iter().find(|(n, _)| *n == which).unwrap();
        let limits = Limits {
            max_memory_bytes: MEMORY_BOUND,
            max_input_bytes: 100 * 1024 * 1024,
            ..Limits::default()
        };
        // Reset the peak (VmHWM) so that making the input does not count.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = rss_kib("VmRSS:");
        for fit in [Fit::Cover, Fit::Contain] {
            let o = ThumbnailOptions {
                width: 400,
                height: 400,
                fit,
                ..Default::default()
            };
            render(&bytes, &o, &limits).unwrap();
        }
        // A limit below what the plan needs is refused before decoding.
        let tight = Limits {
            max_memory_bytes: 1024 * 1024,
            ..limits
        };
        assert_eq!(
            render(&bytes, &ThumbnailOptions::default(), &tight)
                .unwrap_err()
                .reason(),
            "MemoryLimit"
        );
        println!("JOB_PEAK_KIB={}", rss_kib("VmHWM:").saturating_sub(before));
        return;
    }
    for which in ["png", "jpeg"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "memory_bound_holds_in_a_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ENGINE_MEMORY_CHILD", which)
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
        // Full-size RGB would be 36 MB; the bound given to the engine is 16 MiB.
        assert!(
            peak < MEMORY_BOUND / 1024,
            "{which}: peak {peak} KiB over the {} KiB limit",
            MEMORY_BOUND / 1024
        );
        eprintln!("{which}: job peak {peak} KiB");
    }
}

/// Every scan walks all blocks, so a file of thousands of tiny scans is refused rather than
/// decoded for minutes; truncated files at the reduced-size scales are typed errors.
#[test]
fn jpeg_scan_flood_and_truncation_at_reduced_scales() {
    let bytes = fixture("jpeg_420_prog.jpg");
    // The DC refinement scan (three components, Ss 0, Ah 1: one bit per block, so it parses the
    // same however often it comes), from its SOS marker to the next one; repeat it 1200 times.
    let sos: Vec<usize> = (0..bytes.len() - 1)
        .filter(|&i| bytes[i] == 0xFF && bytes[i + 1] == 0xDA)
        .collect();
    let i = sos
        .iter()
        .position(|&p| bytes[p + 4] == 3 && bytes[p + 11] == 0 && bytes[p + 13] == 0x10)
        .unwrap();
    let scan = &bytes[sos[i]..sos[i + 1]];
    let eoi = bytes.len() - 2;
    assert_eq!(&bytes[eoi..], &[0xFF, 0xD9]);
    let mut flood = bytes[..eoi].to_vec();
    for _ in 0..1200 {
        flood.extend_from_slice(scan);
    }
    flood.extend_from_slice(&[0xFF, 0xD9]);
    for scale in [2, 4, 8] {
        let err = thumbnail_engine::decode_jpeg_scaled(&flood, scale, false).unwrap_err();
        assert_eq!(err.reason(), "CorruptImage", "1/{scale}: {err}");
        assert!(err.to_string().contains("scans"), "1/{scale}: {err}");
    }
    // 20 repeats are fine (the refinement bits are only OR-ed in again).
    let mut some = bytes[..eoi].to_vec();
    for _ in 0..20 {
        some.extend_from_slice(scan);
    }
    some.extend_from_slice(&[0xFF, 0xD9]);
    thumbnail_engine::decode_jpeg_scaled(&some, 2, false).unwrap();

    for name in [
        "jpeg_420.jpg",
        "jpeg_420_prog.jpg",
        "jpeg_422.jpg",
        "jpeg_gray_prog.jpg",
    ] {
        let bytes = fixture(name);
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
            for scale in [2, 4] {
                let err = thumbnail_engine::decode_jpeg_scaled(&bytes[..cut], scale, false)
                    .expect_err(&format!("{name} cut at {cut}, 1/{scale}"));
                assert_eq!(err.reason(), "CorruptImage", "{name} cut at {cut}: {err}");
            }
        }
    }
}
