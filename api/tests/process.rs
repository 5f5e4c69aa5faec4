//! The real binary as a user runs it: SIGTERM with jobs in flight, the shutdown grace, restart.
//!
//! The jobs here are slow on purpose (a large PNG that must be inflated whole, one worker), so
//! that the signal always lands while some are unfinished; what each test claims is then read
//! from the job store the process left behind.
mod common;

use chrono::{DateTime, Utc};
use common::http_client;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{self, DynJobStore};
use thumbnail_core::model::{JobRecord, JobStatus};
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the binary with one worker and its data in `root/data`; its JSON log goes to a new
/// `root/api-N.log`.
fn start(root: &Path, port: u16, grace_seconds: u64) -> (Child, PathBuf) {
    let data_dir = root.join("data");
    let log = (0..)
        .map(|n| root.join(format!("api-{n}.log")))
        .find(|p| !p.exists())
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--data-dir"])
        .arg(&data_dir)
        .args([
            "--workers",
            "1",
            "--shutdown-grace-seconds",
            &grace_seconds.to_string(),
        ])
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the binary starts");
    (child, log)
}

/// When the process got the signal, by its own clock: the timestamp of its "SIGTERM received"
/// log line (the job store's timestamps come from the same clock).
fn signal_received_at(log: &Path) -> DateTime<Utc> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("SIGTERM received"))
        })
        .and_then(|l| l["timestamp"].as_str().and_then(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("no SIGTERM line in the log:\n{text}"))
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < until, "the server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "the process did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 5000x5000 PNG (a few hundred KiB: smooth, so it compresses) that takes a large part of a
/// second to render, because PNG must be inflated whole before it can be shrunk.
fn slow_png() -> Vec<u8> {
    let (w, h) = (5000u32, 5000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 20) as u8, (y / 20) as u8, ((x + y) / 40) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn upload(client: &reqwest::Client, base: &str, png: &[u8]) -> Uuid {
    let form = Form::new().part("image", Part::bytes(png.to_vec()).file_name("big.png"));
    let response = client
        .post(format!("{base}/api/v1/thumbnails/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["job_id"].as_str().unwrap().parse().unwrap()
}

/// The jobs as the stopped process left them, read from its SQLite job store.
async fn stored_jobs(root: &Path, ids: &[Uuid]) -> Vec<JobRecord> {
    let url = format!("sqlite://{}", root.join("data/thumbnails.db").display());
    let store: DynJobStore = jobstore::connect(&url, 1).await.unwrap();
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(store.get(*id).await.unwrap().expect("the job is stored"));
    }
    jobs
}

async fn wait_all_succeed(client: &reqwest::Client, base: &str, ids: &[Uuid]) {
    let until = Instant::now() + Duration::from_secs(180);
    for id in ids {
        loop {
            let job: Value = client
                .get(format!("{base}/api/v1/jobs/{id}?wait=10"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if job["status"] == "SUCCESS" {
                break;
            }
            assert_ne!(job["status"], "FAILURE", "{job}");
            assert!(
                Instant::now() < until,
                "job {id} never finished after the restart: {job}"
            );
        }
    }
}

fn count(jobs: &[JobRecord], status: JobStatus) -> usize {
    jobs.iter().filter(|j| j.status == status).count()
}

#[tokio::test]
async fn sigterm_with_jobs_in_flight_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    // No grace: whatever is unfinished at the signal stays unfinished.
    let (mut child, _) = start(root.path(), port, 0);
    wait_healthy(&client, &base).await;

    // Far more work than one worker finishes before the signal lands.
    let png = slow_png();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(upload(&client, &base, &png).await);
    }
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The listener is closed: nothing is accepted any more.
    assert!(client.get(format!("{base}/health")).send().await.is_err());

    // The signal caught jobs in flight: some were not finished when the process stopped.
    let at_exit = stored_jobs(root.path(), &ids).await;
    let unfinished = at_exit.iter().filter(|j| !j.status.is_finished()).count();
    assert!(
        unfinished > 0,
        "every job had finished before the signal; the test proved nothing: {:?}",
        at_exit.iter().map(|j| j.status).collect::<Vec<_>>()
    );
    assert_eq!(count(&at_exit, JobStatus::Failure), 0);
    eprintln!("at the signal: {unfinished} of {} jobs unfinished", ids.len());

    // All of them, and only once each, finish after the restart.
    let (mut child, _) = start(root.path(), port, 0);
    wait_healthy(&client, &base).await;
    wait_all_succeed(&client, &base, &ids).await;
    let listed: Vec<Value> = client
        .get(format!("{base}/api/v1/jobs/?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), ids.len(), "{listed:?}");
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

#[tokio::test]
async fn sigterm_grace_lets_running_jobs_finish() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    let (mut child, log) = start(root.path(), port, 60);
    wait_healthy(&client, &base).await;

    let png = slow_png();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(upload(&client, &base, &png).await);
    }
    // Signal while a job is running.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let started: Vec<Value> = client
            .get(format!("{base}/api/v1/jobs/?status=STARTED"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !started.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "no job ever started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let signalled = signal_received_at(&log);

    let at_exit = stored_jobs(root.path(), &ids).await;
    // The job that was running when the signal came finished within the grace period...
    let finished_in_grace: Vec<&JobRecord> = at_exit
        .iter()
        .filter(|j| {
            j.started_at.is_some_and(|t| t < signalled) && j.finished_at.is_some_and(|t| t > signalled)
        })
        .collect();
    assert_eq!(finished_in_grace.len(), 1, "{at_exit:#?}");
    assert_eq!(finished_in_grace[0].status, JobStatus::Success);
    // ...nothing was left half-done...
    assert_eq!(count(&at_exit, JobStatus::Started), 0, "{at_exit:#?}");
    // ...and no new job was started after the signal: the rest wait for the next start.
    assert!(
        at_exit.iter().all(|j| j.started_at.is_none_or(|t| t < signalled)),
        "{at_exit:#?}"
    );
    assert!(count(&at_exit, JobStatus::Pending) > 0, "{at_exit:#?}");

    let (mut child, _) = start(root.path(), port, 60);
    wait_healthy(&client, &base).await;
    wait_all_succeed(&client, &base, &ids).await;
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

fn keys_cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("keys")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `thumbnail-api keys create` prints a key once (only its hash is stored), the server accepts
/// it, `keys list` shows it without the secret, and `keys revoke` stops it.
#[tokio::test]
async fn keys_made_on_the_command_line_work_until_revoked() {
    let data_dir = tempfile::tempdir().unwrap();
    let (ok, key, stderr) = keys_cli(
        data_dir.path(),
        &[
            "create",
            "--owner",
            "alice",
            "--scope",
            "read",
            "--scope",
            "submit",
            "--expires",
            "30d",
            "--name",
            "laptop",
        ],
    );
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("thn_") && key.len() == 60, "{key}");
    assert!(stderr.contains("shown only now"), "{stderr}");
    let id = &key[4..16];
    let database = std::fs::read(data_dir.path().join("thumbnails.db")).unwrap();
    assert!(
        !database.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key itself is in the database"
    );
    let (ok, listing, _) = keys_cli(data_dir.path(), &["list"]);
    assert!(ok);
    assert!(
        listing.contains(id) && listing.contains("alice") && listing.contains("laptop"),
        "{listing}"
    );
    assert!(
        listing.contains("submit,read") && listing.contains("active"),
        "{listing}"
    );
    assert!(!listing.contains(&key[17..]), "the secret is listed");
    for (args, error) in [
        (vec!["create", "--owner", "a b"], "--owner"),
        (vec!["create", "--owner", "x", "--scope", "write"], "--scope"),
        (vec!["create", "--owner", "x", "--expires", "soon"], "--expires"),
        (vec!["revoke", "nosuchkey000"], "no key"),
    ] {
        let (ok, _, stderr) = keys_cli(data_dir.path(), &args);
        assert!(!ok, "{args:?}");
        assert!(stderr.contains(error), "{args:?}: {stderr}");
    }

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTH_MODE", "api-key")
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;
    let list = |key: String| client.get(format!("{base}/api/v1/jobs/")).bearer_auth(key).send();
    assert_eq!(list(key.clone()).await.unwrap().status(), 200);
    assert_eq!(
        client
            .get(format!("{base}/api/v1/jobs/"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (ok, _, stderr) = keys_cli(data_dir.path(), &["revoke", id]);
    assert!(ok, "{stderr}");
    let until = Instant::now() + Duration::from_secs(15);
    while list(key.clone()).await.unwrap().status() != 401 {
        assert!(Instant::now() < until, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, listing, _) = keys_cli(data_dir.path(), &["list", "--owner", "alice"]);
    assert!(listing.contains("revoked"), "{listing}");
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

/// Without authentication on an address others can reach, start-up says so.
#[tokio::test]
async fn auth_mode_none_on_a_public_address_logs_a_warning() {
    use std::io::{BufRead, BufReader};
    let data_dir = tempfile::tempdir().unwrap();
    // Port 0: the kernel picks a free port when the API binds, so no other test can take it
    // between choosing and binding (a free_port() race once failed this test in CI).
    let mut child = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--host", "0.0.0.0", "--port", "0", "--data-dir"])
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (mut warned, mut ready) = (false, false);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        warned |= line.contains("AUTH_MODE=none on a non-loopback address");
        ready = line.contains("thumbnail API ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    let log = seen.join("\n");
    assert!(ready, "the API never became ready:\n{log}");
    assert!(warned, "no warning before the API was ready:\n{log}");
    sigterm(&child);
    let status = wait_exit(&mut child);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        status.success(),
        "{status} after SIGTERM:\n{log}\n{}",
        rest.join("\n")
    );
}
