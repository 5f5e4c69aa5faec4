//! What the fuzzer (`examples/fuzz.rs`, `scripts/fuzz.sh`) renders each input with, shared with
//! the regression test that replays its findings (`tests/fuzz_regressions.rs`), so that a finding
//! is replayed exactly as it was found.
use crate::{Fit, Gravity, Limits, OutputFormat, ThumbnailOptions};

/// Limits small enough that the fuzzer's mutated headers are often refused early, and big
/// enough that the committed fixtures all render.
pub fn limits() -> Limits {
    Limits {
        max_pixels: 4_000_000,
        max_memory_bytes: 256 * 1024 * 1024,
        max_frames: 100,
        ..Limits::default()
    }
}

/// One option set per decoding route, for the 136x100 JPEG fixtures: 100x100 cover (full
/// size), 8x8 (DC-only 1/8), 20x20 as JPEG (1/4: YCbCr planes encoded as they are, chroma
/// resampled to 4:2:0), 30x30 cover as JPEG at quality 95 (1/2: planes interleaved, 4:4:4),
/// 30x20 fill as WebP (1/2: planes converted to RGB at the output size), 60x60 as PNG (full size);
/// and for the later paths: a smart crop, a corner crop, animations kept (GIF and WebP out), a
/// small AVIF (rav1e is slow enough that larger ones would halve the fuzzer's rate) and a GIF.
pub fn option_sets() -> Vec<ThumbnailOptions> {
    let sized = |width, height, fit, format| ThumbnailOptions {
        width,
        height,
        fit,
        format: Some(format),
        ..ThumbnailOptions::default()
    };
    vec![
        ThumbnailOptions::default(),
        sized(8, 8, Fit::Contain, OutputFormat::Jpeg),
        sized(20, 20, Fit::Contain, OutputFormat::Jpeg),
        ThumbnailOptions {
            quality: 95,
            ..sized(30, 30, Fit::Cover, OutputFormat::Jpeg)
        },
        sized(30, 20, Fit::Fill, OutputFormat::Webp),
        sized(60, 60, Fit::Contain, OutputFormat::Png),
        ThumbnailOptions {
            gravity: Gravity::Smart,
            ..sized(40, 40, Fit::Cover, OutputFormat::Jpeg)
        },
        ThumbnailOptions {
            gravity: Gravity::Southeast,
            ..sized(24, 48, Fit::Cover, OutputFormat::Png)
        },
        ThumbnailOptions {
            animated: true,
            ..sized(32, 32, Fit::Cover, OutputFormat::Gif)
        },
        ThumbnailOptions {
            animated: true,
            gravity: Gravity::Smart,
            ..sized(24, 24, Fit::Cover, OutputFormat::Webp)
        },
        sized(12, 12, Fit::Contain, OutputFormat::Avif),
        sized(20, 20, Fit::Contain, OutputFormat::Gif),
    ]
}
