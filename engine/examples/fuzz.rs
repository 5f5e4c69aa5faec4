//! A stable-Rust mutation fuzzer for the whole pipeline (cargo-fuzz needs nightly).
//! `fuzz SECONDS SEED_DIR FINDINGS_DIR [EXTENSIONS]`: mutates the seed files (bit flips, byte
//! sets, interesting values in headers, truncation, chunk duplication, splicing), renders each
//! input at several sizes, and saves any input that panics or takes over 2 s. EXTENSIONS (e.g.
//! `heic,avif`) restricts the seeds to those files; seeds over 64 KiB are left out (a 12 MP photo
//! decodes a thousand times slower than the small fixtures and finds nothing they do not). Prints
//! executions and findings, and the executions per seed format.
use std::panic;
use std::time::{Duration, Instant};
use thumbnail_engine::render;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if input.is_empty() {
            return;
        }
        let i = if rng.below(2) == 0 {
            rng.below(input.len().min(512))
        } else {
            rng.below(input.len())
        };
        match rng.below(8) {
            0 => input[i] ^= 1 << rng.below(8),
            1 => input[i] = rng.next() as u8,
            2 => input[i] = [0, 0xFF, 0x7F, 0x80, 1][rng.below(5)],
            3 => input.truncate(i.max(1)),
            4 => {
                let n = rng.below(64).min(input.len() - i);
                let chunk = input[i..i + n].to_vec();
                let at = rng.below(input.len());
                input.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let j = rng.below(other.len());
                input.truncate(i);
                input.extend_from_slice(&other[j..]);
            }
            6 if i + 2 <= input.len() => input[i..i + 2].copy_from_slice(&[0xFF, 0xFF]),
            _ => {
                let n = rng.below(16).min(input.len() - i);
                input.drain(i..i + n);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(60);
    let seed_dir = args.get(2).map_or("engine/tests/fixtures", String::as_str);
    let out_dir = args.get(3).map_or("fuzz/findings", String::as_str);
    let all = "jpg,png,gif,webp,heic,avif,jxl,tif,bmp,ico,svg".to_owned();
    let extensions: Vec<String> = args
        .get(4)
        .unwrap_or(&all)
        .split(',')
        .map(|x| format!(".{}", x.trim()))
        .collect();
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(seed_dir)
        .expect("seed dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            extensions.iter().any(|x| n.ends_with(x.as_str()))
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter(|b| b.len() <= 64 * 1024)
        .collect();
    assert!(!seeds.is_empty(), "no seeds with {extensions:?} in {seed_dir}");
    seeds.sort();
    // What each seed is, for the per-format counts.
    let kinds: Vec<&'static str> = seeds
        .iter()
        .map(|s| thumbnail_engine::sniff(s).map_or("other", |f| f.as_str()))
        .collect();
    let mut per_format: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let limits = thumbnail_engine::fuzzing::limits();
    let sizes = thumbnail_engine::fuzzing::option_sets();
    panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut execs, mut findings, mut ok, mut errs) = (0u64, 0u64, 0u64, 0u64);
    std::fs::create_dir_all(out_dir).ok();
    while Instant::now() < deadline {
        let seed = rng.below(seeds.len());
        *per_format.entry(kinds[seed]).or_default() += 1;
        let mut input = seeds[seed].clone();
        mutate(&mut rng, &seeds, &mut input);
        let opts = sizes[rng.below(sizes.len())];
        let t = Instant::now();
        let result = panic::catch_unwind(|| render(&input, &opts, &limits));
        execs += 1;
        let slow = t.elapsed() > Duration::from_secs(2);
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => errs += 1,
            Err(_) => {}
        }
        if result.is_err() || slow {
            findings += 1;
            let kind = if slow { "slow" } else { "panic" };
            let path = format!("{out_dir}/{kind}-{execs}.bin");
            std::fs::write(&path, &input).ok();
            eprintln!("finding: {path} ({}x{} {:?})", opts.width, opts.height, opts.fit);
        }
    }
    println!("executions={execs} rendered={ok} refused={errs} findings={findings}");
    let counts: Vec<String> = per_format.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!("per seed format: {}", counts.join(" "));
}
