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
