//! Compare the engine's reduced-size JPEG decode with `jpeg-decoder` and, optionally, a PPM/PGM
//! written by `djpeg -scale 1/N`: `jpegdiff FILE N [REFERENCE.ppm]`. Prints mean and max absolute
//! difference and PSNR per reference, and the in-process decode times (fastest of 7, which is
//! the most stable figure on a busy machine). With
//! `JPEGDIFF_OUT=PATH` set, also writes the engine's decode there as PPM/PGM.
use std::time::Instant;
use thumbnail_engine::decode_jpeg_scaled;

fn stats(a: &[u8], b: &[u8]) -> (f64, u8, f64) {
    let (mut sum, mut sq, mut max) = (0u64, 0u64, 0u8);
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        sum += u64::from(d);
        sq += u64::from(d) * u64::from(d);
        max = max.max(d);
    }
    let n = a.len().max(1) as f64;
    let mse = sq as f64 / n;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    };
    (sum as f64 / n, max, psnr)
}

/// A binary PNM (P5/P6) file: (width, height, channels, pixels).
fn read_pnm(bytes: &[u8]) -> Option<(usize, usize, usize, Vec<u8>)> {
    let channels = match bytes.get(..2)? {
        b"P5" => 1,
        b"P6" => 3,
        _ => return None,
    };
    let mut fields = Vec::new();
    let mut pos = 2;
    while fields.len() < 3 {
        while bytes.get(pos)?.is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !bytes.get(pos)?.is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(
            std::str::from_utf8(&bytes[start..pos])
                .ok()?
                .parse::<usize>()
                .ok()?,
        );
    }
    pos += 1;
    Some((fields[0], fields[1], channels, bytes.get(pos..)?.to_vec()))
}

fn timed(bytes: &[u8], scale: u32, reference: bool) -> (f64, (usize, usize, usize, Vec<u8>)) {
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..7 {
        let t = Instant::now();
        let r = decode_jpeg_scaled(bytes, scale, reference).expect("decode");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        out = Some(r);
    }
    times.sort_by(f64::total_cmp);
    (times[0], out.expect("decoded"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bytes = std::fs::read(&args[0]).expect("read input");
    let scale: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let (t_ours, ours) = timed(&bytes, scale, false);
    let (t_ref, reference) = timed(&bytes, scale, true);
    println!(
        "ours {}x{}x{} in {t_ours:.2} ms; jpeg-decoder {}x{}x{} in {t_ref:.2} ms",
        ours.0, ours.1, ours.2, reference.0, reference.1, reference.2
    );
    if let Ok(path) = std::env::var("JPEGDIFF_OUT") {
        let magic = if ours.2 == 1 { "P5" } else { "P6" };
        let mut out = format!("{magic}\n{} {}\n255\n", ours.0, ours.1).into_bytes();
        out.extend_from_slice(&ours.3);
        std::fs::write(path, out).expect("write output");
    }
    let (mean, max, psnr) = stats(&ours.3, &reference.3);
    println!("vs jpeg-decoder: mean {mean:.3} max {max} PSNR {psnr:.2} dB");
    if let Some(path) = args.get(2) {
        let pnm = read_pnm(&std::fs::read(path).expect("read reference")).expect("PNM");
        println!("reference {}x{}x{}", pnm.0, pnm.1, pnm.2);
        let (mean, max, psnr) = stats(&ours.3, &pnm.3);
        println!("vs {path}: mean {mean:.3} max {max} PSNR {psnr:.2} dB");
    }
}
