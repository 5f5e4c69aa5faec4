//! The edge one client cannot take down, against the real server: connections that never finish
//! their headers, idle kept-alive connections, the connection cap, a huge text field, slow
//! bodies, body limits, files in the wrong field, metric labels from fixed sets, start-up checks.
mod common;

use common::{detail, fixture, spawn_app_with};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn address(app: &common::TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Whether the server closed `stream` (a read returns EOF or an error) within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => closed_within_after_data(stream, deadline).await,
        Err(_) => false,
    }
}

async fn closed_within_after_data(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// 300 connections that send half a request head and stop are closed by the server after the
/// header-read timeout, and `/health` answers all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_while_health_answers() {
    let app = spawn_app_with(|c| c.edge.header_read_timeout_seconds = 2).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    // Meanwhile the service answers: every probe within a second, though 300 connections hang.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..10 {
        let response = probe
            .get(app.url("/health"))
            .send()
            .await
            .expect("/health answers");
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        assert!(closed_within(stream, left).await, "connection {i} still open");
    }
    // Not before the timeout: the server waited for the headers that long.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// A connection idle between requests is closed after KEEP_ALIVE_TIMEOUT_SECONDS, not at the
/// header timeout, and a new request on it in time is served.
#[tokio::test]
async fn idle_kept_alive_connections_are_closed_after_the_keep_alive_timeout() {
    let app = spawn_app_with(|c| {
        c.edge.header_read_timeout_seconds = 1;
        c.edge.keep_alive_timeout_seconds = 3;
    })
    .await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "reused"
    );
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(8)).await,
        "idle connection kept"
    );
    assert!(
        idle_from.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        idle_from.elapsed()
    );
}

/// Over MAX_CONNECTIONS a connection is answered 503 with Retry-After and closed; once one closes,
/// connections are served again.
#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503() {
    let app = spawn_app_with(|c| c.edge.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut extra = TcpStream::connect(address(&app)).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("MAX_CONNECTIONS"), "{answer}");
    drop(held.pop());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = app.client.get(app.url("/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < until, "no slot came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// A 400 MiB text field is refused once it passes 1 KiB: the answer comes while the client has
/// sent a sliver of it, and memory does not grow with it. The body is chunked (no declared
/// length, which the route's limit would refuse at once): the cap applies while it streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_text_field_is_refused_after_its_first_kib_with_bounded_memory() {
    let app = spawn_app_with(|_| {}).await;
    let before = resident_mib();
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let boundary = "XyZzY";
    let field_len: u64 = 400 * 1024 * 1024;
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"width\"\r\n\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let request = format!(
        "POST /api/v1/thumbnails/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{head}\r\n",
        head.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let data = vec![b'9'; 64 * 1024];
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(b"\r\n");
        let mut sent: u64 = 0;
        while sent < field_len {
            if writer.write_all(&chunk).await.is_err() {
                return sent;
            }
            sent += data.len() as u64;
        }
        let end = format!("{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len());
        let _ = writer.write_all(end.as_bytes()).await;
        sent
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = reader.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break String::from_utf8_lossy(&answer).into_owned();
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break String::from_utf8_lossy(&answer).into_owned();
            }
        }
    })
    .await
    .expect("an answer before the field was sent");
    drop(reader);
    let sent = sender.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(
        answer.contains("width: value too long (at most 1024 bytes)"),
        "{answer}"
    );
    // The client could only push what the socket buffers held before the server stopped reading.
    assert!(sent < 64 * 1024 * 1024, "{sent} bytes were sent");
    let grown = resident_mib() - before;
    assert!(grown < 64.0, "memory grew by {grown:.0} MiB");
}

/// A file sent in another field than `image` (imaginary's clients send `file`) is answered with
/// what to do, not "value too long".
#[tokio::test]
async fn a_file_in_another_field_is_answered_with_the_right_field() {
    let app = spawn_app_with(|_| {}).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(fixture("photo.jpg")).file_name("photo.jpg"),
    );
    let (status, text) = detail(app.upload_form(form, "").await).await;
    assert_eq!(status, 422);
    assert!(
        text.contains("\"file\"") && text.contains("field 'image'"),
        "{text}"
    );
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(fixture("photo.jpg")).file_name("p.jpg"),
        )
        .text("widht", "400");
    let (status, text) = detail(app.upload_form(form, "").await).await;
    assert_eq!(status, 422);
    assert!(text.contains("\"widht\": unknown field"), "{text}");
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(fixture("photo.jpg")).file_name("p.jpg"),
        )
        .text("width", "40")
        .text("width", "50");
    let (status, text) = detail(app.upload_form(form, "").await).await;
    assert_eq!(status, 422);
    assert!(
        text.contains("width: the field was sent more than once"),
        "{text}"
    );
}

/// An upload that trickles in is cut off: 408 with the setting named.
#[tokio::test]
async fn an_upload_slower_than_the_deadline_gets_408() {
    let app = spawn_app_with(|c| c.edge.upload_timeout_seconds = 1).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let request = "POST /api/v1/thumbnails/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
                   boundary=B\r\nContent-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; \
                   name=\"image\"; filename=\"a.jpg\"\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut answer)).await;
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("UPLOAD_TIMEOUT_SECONDS"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Every route has a body limit: a declared length over it is refused before anything is read.
#[tokio::test]
async fn declared_bodies_over_a_routes_limit_are_refused_with_413() {
    let app = spawn_app_with(|c| c.limits.max_upload_bytes = 1024 * 1024).await;
    for (path, length) in [
        ("/api/v1/jobs/", 65 * 1024),
        ("/health", 65 * 1024),
        ("/ready", 65 * 1024),
        ("/api/v1/thumbnails/", 2 * 1024 * 1024),
    ] {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n\
             Content-Length: {length}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("request body too large"), "{path}: {answer}");
    }
}

/// Arbitrary methods and paths cannot create metric series: their labels are `other` and
/// `unmatched`.
#[tokio::test]
async fn metric_labels_come_from_fixed_sets() {
    let app = spawn_app_with(|_| {}).await;
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        app.client
            .request(method, app.url(&format!("/no/such/path/{i}")))
            .send()
            .await
            .unwrap();
        app.client
            .get(app.url(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4())))
            .send()
            .await
            .unwrap();
    }
    let metrics = app.metrics().await;
    assert!(!metrics.contains("BREW"), "a method became a label");
    assert!(!metrics.contains("/no/such/path"), "a path became a label");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    assert!(metrics.contains("route=\"unmatched\""), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/jobs/{job_id}\""), "{metrics}");
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .count();
    assert!(series < 10, "{series} series:\n{metrics}");
}

/// A configured SIGNING_KEY shorter than 32 bytes stops start-up; the generated key file is
/// readable by its owner only.
#[tokio::test]
async fn short_signing_keys_are_refused_and_the_generated_one_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = thumbnail_api::config::ApiConfig::for_tests(dir.path());
    config.signing_key = Some("short".into());
    let err = thumbnail_api::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("SIGNING_KEY must be at least 32 bytes"),
        "{err}"
    );
    let app = spawn_app_with(|_| {}).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(app.data_dir.join("signing.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// One caller cannot hold the server's connections in long-polls: beyond 32 at once, `wait` is
/// answered at once with the job as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_per_caller() {
    use thumbnail_core::model::{NewJob, OutputSpec};
    let app = spawn_app_with(|_| {}).await;
    let id = uuid::Uuid::new_v4();
    app.state
        .jobs
        .create(&NewJob {
            expires_at: None,
            webhook_url: None,
            id,
            owner: None,
            source_bucket: "local".into(),
            source_key: format!("images/original/{id}.jpg"),
            source_format: thumbnail_engine::ImageFormat::Jpeg,
            source_width: 10,
            source_height: 10,
            source_bytes: 10,
            outputs: vec![OutputSpec::default_output(
                thumbnail_engine::ThumbnailOptions::default(),
            )],
            batch: None,
        })
        .await
        .unwrap();
    let url = app.url(&format!("/api/v1/jobs/{id}?wait=30"));
    let listening_before = app.state.job_events.waiters();
    let holders: Vec<_> = (0..thumbnail_api::limits::MAX_WAITS_PER_CALLER)
        .map(|_| tokio::spawn(reqwest::Client::new().get(url.clone()).send()))
        .collect();
    // Each waiting request subscribes to the finish events: wait until all of them do.
    let until = Instant::now() + Duration::from_secs(60);
    while app.state.job_events.waiters() < listening_before + thumbnail_api::limits::MAX_WAITS_PER_CALLER {
        assert!(
            Instant::now() < until,
            "the {} long-polls never all waited",
            thumbnail_api::limits::MAX_WAITS_PER_CALLER
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more is answered at once with the job as it is, not after its 30 s.
    let started = Instant::now();
    let job: serde_json::Value = app.client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["status"], "PENDING");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the extra long-poll waited {:?}",
        started.elapsed()
    );
    for holder in holders {
        holder.abort();
    }
}
