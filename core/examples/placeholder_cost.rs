//! What the placeholders cost per job: the engine renders the default thumbnail of each input,
//! then the time of what the placeholders add to a job is measured over ROUNDS rounds (default
//! 200): the engine's preview of the thumbnail's pixels (box-filtered to 32 pixels a side, which
//! `render` makes as it encodes; timed here on the decoded thumbnail's pixels, the same work) and
//! `placeholder::of_preview` (ThumbHash and BlurHash of it):
//!
//!     cargo run --release -p thumbnail-core --example placeholder_cost -- [ROUNDS] [IMAGES...]
//!
//! Without IMAGES, the API's test photos (JPEG, PNG, WebP) are used. Prints the median and the
//! 99th percentile per thumbnail format; the target is under 1 ms per job.
use std::time::{Duration, Instant};
use thumbnail_core::engine::{Limits, ThumbnailOptions, render};
use thumbnail_core::placeholder;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map_or(200, |n| n.parse().expect("ROUNDS is a number"));
    let mut images: Vec<String> = args.collect();
    if images.is_empty() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures");
        images = ["photo.jpg", "photo.png", "photo.webp"]
            .iter()
            .map(|name| format!("{fixtures}/{name}"))
            .collect();
    }
    println!(
        "{:<24} {:>10} {:>12} {:>12} {:>12}",
        "input", "thumbnail", "bytes", "median", "p99"
    );
    for path in images {
        let original = std::fs::read(&path).expect("readable image");
        let thumbnail =
            render(&original, &ThumbnailOptions::default(), &Limits::default()).expect("renderable image");
        let decoded = image::load_from_memory(&thumbnail.bytes)
            .expect("the thumbnail decodes")
            .into_rgba8();
        let (width, height, pixels) = (decoded.width(), decoded.height(), decoded.into_raw());
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                let preview = thumbnail_core::engine::preview::of_rgba(width, height, &pixels);
                let hashes = placeholder::of_preview(&preview).expect("placeholders");
                std::hint::black_box(hashes);
                start.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
        let name = std::path::Path::new(&path)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        println!(
            "{:<24} {:>10} {:>12} {:>12} {:>12}",
            name,
            format!("{}x{}", thumbnail.width, thumbnail.height),
            thumbnail.bytes.len(),
            ms(times[times.len() / 2]),
            ms(times[(times.len() * 99 / 100).min(times.len() - 1)])
        );
    }
}
