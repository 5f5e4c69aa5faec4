//! The real binary as a user runs it: default port handling, SIGTERM with jobs in flight, restart.
mod common;

use common::fixture;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(["--workers", "1", "--shutdown-grace-seconds", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let until = Instant::now() + Duration::from_secs(30);
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
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "the process did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_with_jobs_in_flight_loses_nothing() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = start(data_dir.path(), port);
    wait_healthy(&client, &base).await;

    // Queue more work than one worker finishes before the signal lands.
    let mut ids = Vec::new();
    for _ in 0..12 {
        let form = Form::new().part("image", Part::bytes(fixture("photo.png")).file_name("p.png"));
        let response = client
            .post(format!("{base}/api/v1/thumbnails/"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The listener is closed: nothing is accepted any more.
    assert!(client.get(format!("{base}/health")).send().await.is_err());

    let mut child = start(data_dir.path(), port);
    wait_healthy(&client, &base).await;
    let until = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let job: Value = client
                .get(format!("{base}/api/v1/jobs/{id}"))
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--host", "0.0.0.0", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut warned = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        warned |= line.contains("AUTH_MODE=none on a non-loopback address");
        if line.contains("thumbnail API ready") {
            break;
        }
    }
    assert!(warned, "no warning before the API was ready");
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}
