//! Load generator for `scripts/bench-service.sh`: N concurrent clients, each uploading an image and
//! waiting for its job to reach SUCCESS (long-poll, or polling with `--poll-ms`), then figures: uploads/s, jobs/s, p50/p99 upload latency and
//! upload-to-SUCCESS latency, and the peak RSS of the given processes. `--api-key` sends a key
//! with every request (the authentication-cost comparison of the service benchmark).
//!
//! Also: `blackhole` (a TCP server that accepts and never answers: a stalled S3), `health-probe`
//! (worst `/health` latency while uploads hang on that stall), and `big-uploads` (many concurrent
//! large uploads, for the API's peak memory).
use clap::{Parser, Subcommand};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload-to-SUCCESS load: `clients` concurrent loops until `jobs` jobs are done.
    Run {
        #[arg(long)]
        base: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// Poll interval while waiting for SUCCESS; 0 (the default): long-poll, one
        /// `GET /api/v1/jobs/{id}?wait=30` that answers when the job finishes.
        #[arg(long, default_value_t = 0)]
        poll_ms: u64,
        /// Processes whose peak RSS (VmHWM) to report.
        #[arg(long)]
        pid: Vec<u32>,
        /// NAME=PID: a process whose CPU time (user + system) per completed job to report, e.g.
        /// `--cpu api=123 --cpu s3=456`.
        #[arg(long, value_parser = parse_cpu_watch)]
        cpu: Vec<(String, u32)>,
        /// A label printed with the figures.
        #[arg(long, default_value = "")]
        label: String,
        /// Send `Authorization: Bearer KEY` with every request (AUTH_MODE=api-key or jwt).
        #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Accept TCP connections and never answer (a stalled S3 endpoint).
    Blackhole {
        #[arg(long)]
        port: u16,
    },
    /// Start `uploads` uploads that will hang, and meanwhile probe `/health` for `seconds`.
    HealthProbe {
        #[arg(long)]
        base: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 8)]
        uploads: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// `clients` concurrent uploads of a generated file of `mib` MiB; reports the peak RSS.
    BigUploads {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value_t = 25)]
        mib: usize,
        #[arg(long)]
        pid: Vec<u32>,
    },
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn parse_cpu_watch(v: &str) -> Result<(String, u32), String> {
    let (name, pid) = v.split_once('=').ok_or("expected NAME=PID")?;
    Ok((name.to_owned(), pid.parse().map_err(|e| format!("PID: {e}"))?))
}

/// CPU time (user + system) a process has used so far, in ms: fields 14 and 15 of
/// `/proc/PID/stat`, in clock ticks of 10 ms (Linux's USER_HZ).
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' do not.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// What to watch while a run goes: processes whose peak RSS, and named processes whose CPU time
/// per job, to report.
struct Watched {
    rss: Vec<u32>,
    cpu: Vec<(String, u32)>,
}

/// What a run is called in the figures, and the key it sends (none: no authentication).
struct RunAs {
    label: String,
    api_key: Option<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn upload(client: &reqwest::Client, base: &str, bytes: Vec<u8>, name: &str) -> Result<String, String> {
    let form = Form::new().part("image", Part::bytes(bytes).file_name(name.to_owned()));
    let response = client
        .post(format!("{base}/api/v1/thumbnails/"))
        .multipart(form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 202 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["job_id"].as_str().unwrap_or_default().to_owned())
}

async fn run(
    base: String,
    file: PathBuf,
    clients: usize,
    jobs: usize,
    poll: Duration,
    watched: Watched,
    run_as: RunAs,
) {
    let RunAs { label, api_key } = run_as;
    let cpu_before: Vec<Option<f64>> = watched.cpu.iter().map(|(_, p)| cpu_ms(*p)).collect();
    let bytes = Arc::new(std::fs::read(&file).expect("reading the image"));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &api_key {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).expect("a header value");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .default_headers(headers)
        .build()
        .unwrap();
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(jobs));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, bytes, name, remaining) = (
            client.clone(),
            base.clone(),
            bytes.clone(),
            name.clone(),
            remaining.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut uploads = Vec::new();
            let mut totals = Vec::new();
            let mut failures = 0usize;
            while remaining
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                let t0 = Instant::now();
                let id = match upload(&client, &base, bytes.to_vec(), &name).await {
                    Ok(id) => id,
                    Err(e) => {
                        eprintln!("upload failed: {e}");
                        failures += 1;
                        continue;
                    }
                };
                uploads.push(t0.elapsed());
                loop {
                    let url = if poll.is_zero() {
                        format!("{base}/api/v1/jobs/{id}?wait=30")
                    } else {
                        format!("{base}/api/v1/jobs/{id}")
                    };
                    let job: Value = match client.get(url).send().await {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    match job["status"].as_str() {
                        Some("SUCCESS") => {
                            totals.push(t0.elapsed());
                            break;
                        }
                        Some("FAILURE") => {
                            eprintln!("job failed: {job}");
                            failures += 1;
                            break;
                        }
                        _ => tokio::time::sleep(poll).await,
                    }
                }
            }
            (uploads, totals, failures)
        }));
    }
    let mut uploads = Vec::new();
    let mut totals = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (u, t, f) = task.await.unwrap();
        uploads.extend(u);
        totals.extend(t);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    uploads.sort();
    totals.sort();
    let rss: Vec<String> = watched
        .rss
        .iter()
        .map(|p| format!("{p}:{:.0}", peak_rss_mib(*p).unwrap_or(f64::NAN)))
        .collect();
    let cpu_per_job: serde_json::Map<String, Value> = watched
        .cpu
        .iter()
        .zip(cpu_before)
        .filter_map(|((name, pid), before)| {
            let used = cpu_ms(*pid)? - before?;
            Some((name.clone(), Value::from(used / totals.len().max(1) as f64)))
        })
        .collect();
    let summary = serde_json::json!({
        "label": label,
        "auth": if api_key.is_some() { "api-key" } else { "none" },
        "image": name,
        "clients": clients,
        "jobs": totals.len(),
        "failures": failures,
        "seconds": elapsed,
        "uploads_per_s": uploads.len() as f64 / elapsed,
        "jobs_per_s": totals.len() as f64 / elapsed,
        "upload_p50_ms": ms(percentile(&uploads, 0.5)),
        "upload_p99_ms": ms(percentile(&uploads, 0.99)),
        "success_p50_ms": ms(percentile(&totals, 0.5)),
        "success_p99_ms": ms(percentile(&totals, 0.99)),
        "peak_rss_mib": rss.join(" "),
        "cpu_ms_per_job": cpu_per_job,
    });
    println!("{summary}");
}

async fn blackhole(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("binding the blackhole port");
    let mut held = Vec::new();
    loop {
        if let Ok((socket, _)) = listener.accept().await {
            // Keep the connection open and never answer.
            held.push(socket);
        }
    }
}

async fn health_probe(base: String, file: PathBuf, uploads: usize, seconds: u64) {
    let bytes = std::fs::read(&file).expect("reading the image");
    let client = reqwest::Client::new();
    for _ in 0..uploads {
        let (client, base, bytes) = (client.clone(), base.clone(), bytes.clone());
        tokio::spawn(async move {
            let _ = upload(&client, &base, bytes, "stall.jpg").await;
        });
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let mut failed = 0;
    while Instant::now() < until {
        let t0 = Instant::now();
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), client.get(format!("{base}/health")).send()).await,
            Ok(Ok(r)) if r.status() == 200
        );
        worst = worst.max(t0.elapsed());
        probes += 1;
        if !ok {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{}",
        serde_json::json!({"health_probes": probes, "failed": failed, "worst_ms": ms(worst)})
    );
}

async fn big_uploads(base: String, clients: usize, mib: usize, pids: Vec<u32>) {
    // A valid PNG of about `mib` MiB: random pixels do not compress.
    let side = ((mib * 1024 * 1024 / 3) as f64).sqrt() as u32;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_with_encoder(image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::NoFilter,
        ))
        .unwrap();
    let bytes = Arc::new(png);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, bytes) = (client.clone(), base.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            upload(&client, &base, bytes.to_vec(), "big.png").await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() {
            ok += 1;
        }
    }
    let rss: Vec<String> = pids
        .iter()
        .map(|p| format!("{p}:{:.0}", peak_rss_mib(*p).unwrap_or(f64::NAN)))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "uploads": clients, "accepted": ok, "upload_mib": bytes.len() as f64 / 1048576.0,
            "seconds": started.elapsed().as_secs_f64(), "peak_rss_mib": rss.join(" ")
        })
    );
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Run {
            base,
            file,
            clients,
            jobs,
            poll_ms,
            pid,
            cpu,
            label,
            api_key,
        } => {
            let watched = Watched { rss: pid, cpu };
            run(
                base,
                file,
                clients,
                jobs,
                Duration::from_millis(poll_ms),
                watched,
                RunAs { label, api_key },
            )
            .await
        }
        Command::Blackhole { port } => blackhole(port).await,
        Command::HealthProbe {
            base,
            file,
            uploads,
            seconds,
        } => health_probe(base, file, uploads, seconds).await,
        Command::BigUploads {
            base,
            clients,
            mib,
            pid,
        } => big_uploads(base, clients, mib, pid).await,
    }
}
