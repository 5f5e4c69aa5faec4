//! In-process timing of `render`: `bench FILE ITERATIONS [flags as for render]`.
//! Prints `median_ms peak_job_kib out_w out_h`, where peak_job_kib is the process's peak
//! resident memory (VmHWM) minus the resident memory after the input was loaded: the memory one
//! job needs beyond its input bytes.
use std::time::Instant;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, rest) = thumbnail_engine::cli::parse_options(args).expect("flags");
    let file = &rest[0];
    let n: usize = rest.get(1).and_then(|v| v.parse().ok()).unwrap_or(10);
    let bytes = std::fs::read(file).expect("read input");
    let limits = thumbnail_engine::Limits::default();
    // Reset the peak so that reading the input does not count (Linux: clear_refs 5).
    std::fs::write("/proc/self/clear_refs", "5").ok();
    let base = rss_kib("VmRSS:");
    let mut times = Vec::with_capacity(n);
    let mut dims = (0, 0);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let thumb = thumbnail_engine::render(&bytes, &options, &limits).expect("render");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        dims = (thumb.width, thumb.height);
        std::hint::black_box(thumb);
    }
    times.sort_by(f64::total_cmp);
    let peak = rss_kib("VmHWM:").saturating_sub(base);
    println!("{:.2} {} {} {}", times[times.len() / 2], peak, dims.0, dims.1);
}
