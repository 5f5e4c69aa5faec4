//! HTTP tests against the real server (embedded default: SQLite + local objects) on a free port.
mod common;

use common::{detail, fixture, gif_fixture, spawn_app, spawn_app_in, spawn_app_with};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::{Duration, Instant};
use thumbnail_core::model::{NewJob, OutputSpec};
use thumbnail_core::signing::LinkSigner;
use thumbnail_engine::{ImageFormat, ThumbnailOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// A PENDING job stored directly, never handed to the runner: it stays as the test leaves it.
async fn never_queued_job(app: &common::TestApp) -> uuid::Uuid {
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
            source_format: ImageFormat::Jpeg,
            source_width: 10,
            source_height: 10,
            source_bytes: 10,
            outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
            batch: None,
        })
        .await
        .unwrap();
    id
}

fn decode(bytes: &[u8]) -> (image::ImageFormat, u32, u32) {
    let format = image::guess_format(bytes).expect("a known image format");
    let img = image::load_from_memory(bytes).expect("the thumbnail decodes");
    (format, img.width(), img.height())
}

#[tokio::test]
async fn health_answers_like_the_original() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "healthy"}));
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["object_store"], "ok");
}

#[tokio::test]
async fn every_accepted_format_becomes_a_100x100_thumbnail_in_its_own_format() {
    let app = spawn_app().await;
    let cases = [
        (fixture("photo.jpg"), "photo.jpg", image::ImageFormat::Jpeg),
        (fixture("photo.png"), "photo.png", image::ImageFormat::Png),
        (fixture("photo.webp"), "photo.webp", image::ImageFormat::WebP),
        // GIF is written as PNG (lossless, keeps transparency).
        (gif_fixture(), "anim.gif", image::ImageFormat::Png),
    ];
    for (bytes, name, expected) in cases {
        let id = app.accepted(app.upload(bytes, name).await).await;
        let job = app.wait_finished(&id, DEADLINE).await;
        assert_eq!(job["status"], "SUCCESS", "{name}: {job}");
        let result = &job["result"];
        assert_eq!(result["job_id"], id.as_str());
        assert_eq!(result["bucket"], "local");
        assert_eq!(
            result["endpoint_url"],
            app.address.replace("127.0.0.1", "localhost")
        );
        let key = result["key"].as_str().unwrap();
        assert!(key.starts_with(&format!("images/thumbnail/{id}.")), "{key}");
        let url = app.thumbnail_url(&id).await;
        let response = app
            .client
            .get(url.replace("localhost", "127.0.0.1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(decode(&bytes), (expected, 100, 100), "{name}");
        assert_eq!(job["outputs"][0]["bytes"], bytes.len() as u64);
    }
}

#[tokio::test]
async fn the_format_is_detected_from_the_bytes_not_the_name() {
    let app = spawn_app().await;
    // A PNG called .jpg is a PNG; a text file called .jpg is refused.
    let id = app
        .accepted(app.upload(fixture("photo.png"), "lies.jpg").await)
        .await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["source"]["format"], "png");
    assert!(job["result"]["key"].as_str().unwrap().ends_with(".png"));
    let (status, detail) = detail(app.upload(b"just some text".to_vec(), "photo.jpg").await).await;
    assert_eq!(status, 415);
    assert!(detail.contains("text/plain"), "{detail}");
}

#[tokio::test]
async fn rejected_uploads_answer_precisely_and_store_nothing() {
    let app = spawn_app_with(|c| {
        c.limits.max_upload_bytes = 50_000;
        c.limits.max_image_pixels = 60_000;
    })
    .await;
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n".to_vec();
    let tiff = b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0".to_vec();
    let mut big = fixture("photo.png");
    big.resize(60_000, 0);
    // 320x256 = 81 920 pixels, over the 60 000 cap.
    let too_many_pixels = fixture("photo.jpg");
    let mut truncated = fixture("photo.png");
    truncated.truncate(20);

    let cases: Vec<(Form, u16, &str)> = vec![
        (
            Form::new().part("image", Part::bytes(pdf).file_name("a.pdf")),
            415,
            "application/pdf",
        ),
        (
            // A TIFF header without its image: read as TIFF (a supported input), found corrupt.
            Form::new().part("image", Part::bytes(tiff).file_name("a.tif")),
            422,
            "corrupt or truncated TIFF",
        ),
        (
            Form::new().part("image", Part::bytes(big).file_name("big.png")),
            413,
            "limit is 50000 bytes",
        ),
        (
            Form::new().part("image", Part::bytes(too_many_pixels).file_name("a.jpg")),
            422,
            "pixels",
        ),
        (
            Form::new().part("image", Part::bytes(truncated).file_name("a.png")),
            422,
            "corrupt",
        ),
        (Form::new().text("width", "50"), 422, "image: field required"),
        (
            Form::new().part("image", Part::bytes(Vec::new()).file_name("empty.jpg")),
            422,
            "image: the file is empty",
        ),
        (
            Form::new()
                .part("image", Part::bytes(fixture("photo.webp")).file_name("a.webp"))
                .part("image", Part::bytes(fixture("photo.webp")).file_name("b.webp")),
            422,
            "more than once",
        ),
    ];
    for (form, expected_status, expected_detail) in cases {
        let (status, detail) = detail(app.upload_form(form, "").await).await;
        assert_eq!(status, expected_status, "{detail}");
        assert!(
            detail.contains(expected_detail),
            "expected '{expected_detail}' in '{detail}'"
        );
    }
    // Not multipart at all.
    let response = app
        .client
        .post(app.url("/api/v1/thumbnails/"))
        .body("image=1")
        .send()
        .await
        .unwrap();
    let (status, detail) = detail(response).await;
    assert_eq!(status, 422);
    assert!(detail.starts_with("image:"), "{detail}");

    assert!(
        app.stored_objects().is_empty(),
        "left behind: {:?}",
        app.stored_objects()
    );
    assert!(app.all_jobs().await.is_empty());
    assert_no_spool_files(&app);
}

fn assert_no_spool_files(app: &common::TestApp) {
    let spooled: Vec<_> = std::fs::read_dir(app.data_dir.join("spool"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(spooled.is_empty(), "spool files left behind: {spooled:?}");
}

/// A file part sent as a stream of unknown length: the request is chunked, without a
/// `Content-Length`, so the API spools it to disk instead of reading it into memory.
fn streamed_part(bytes: Vec<u8>, file_name: &str) -> Part {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
    Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(chunks))).file_name(file_name.to_owned())
}

/// Small requests are read into memory (the other tests); unsized ones take the spool file,
/// which must give the same results and leave no file behind.
#[tokio::test]
async fn uploads_without_a_length_are_spooled() {
    let app = spawn_app_with(|c| c.limits.max_upload_bytes = 50_000).await;
    let photo = fixture("photo.jpg");
    let sized = Part::bytes(photo.clone()).file_name("p.jpg");
    for (how, part) in [
        ("in memory", sized),
        ("spooled", streamed_part(photo.clone(), "p.jpg")),
    ] {
        let id = app
            .accepted(app.upload_form(Form::new().part("image", part), "").await)
            .await;
        let job = app.wait_finished(&id, DEADLINE).await;
        assert_eq!(job["status"], "SUCCESS", "{how}: {job}");
        assert_eq!(job["source"]["bytes"], photo.len() as u64, "{how}: {job}");
        let original = app
            .stored_objects()
            .into_iter()
            .find(|p| p.to_string_lossy().contains(&format!("original/{id}")))
            .expect("original stored");
        assert_eq!(
            std::fs::read(original).unwrap(),
            photo,
            "{how}: stored original is the upload"
        );
    }

    let mut big = fixture("photo.png");
    big.resize(60_000, 0);
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n".to_vec();
    for (bytes, status, expected) in [(big, 413, "limit is 50000 bytes"), (pdf, 415, "application/pdf")] {
        let form = Form::new().part("image", streamed_part(bytes, "x.bin"));
        let (got, detail) = detail(app.upload_form(form, "").await).await;
        assert_eq!(got, status, "{detail}");
        assert!(detail.contains(expected), "expected '{expected}' in '{detail}'");
    }
    assert_eq!(
        app.all_jobs().await.len(),
        2,
        "only the accepted uploads have rows"
    );
    assert_no_spool_files(&app);
    // The sized upload was read into memory and its job took the bytes from there; the chunked
    // one was spooled and its job read the object store.
    let metrics = app.metrics().await;
    for line in [
        r#"thumbnail_uploads_total{buffered="memory"} 1"#,
        r#"thumbnail_uploads_total{buffered="spool"} 1"#,
        r#"thumbnail_job_originals_total{source="handoff"} 1"#,
        r#"thumbnail_job_originals_total{source="store"} 1"#,
    ] {
        assert!(metrics.contains(line), "expected '{line}' in\n{metrics}");
    }
}

#[tokio::test]
async fn in_memory_uploads_and_the_handoff_can_be_turned_off() {
    let app = spawn_app_with(|c| {
        c.in_memory_upload_bytes = 0;
        c.handoff_budget_bytes = 0;
    })
    .await;
    let photo = fixture("photo.jpg");
    let id = app.accepted(app.upload(photo.clone(), "p.jpg").await).await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(job["source"]["bytes"], photo.len() as u64, "{job}");
    let metrics = app.metrics().await;
    for line in [
        r#"thumbnail_uploads_total{buffered="spool"} 1"#,
        r#"thumbnail_job_originals_total{source="store"} 1"#,
    ] {
        assert!(metrics.contains(line), "expected '{line}' in\n{metrics}");
    }
    assert!(!metrics.contains(r#"buffered="memory""#), "{metrics}");
    assert!(!metrics.contains(r#"source="handoff""#), "{metrics}");
    assert_no_spool_files(&app);
}

#[tokio::test]
async fn options_from_form_fields_and_query_parameters() {
    let app = spawn_app().await;
    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
        .text("width", "64")
        .text("height", "64")
        .text("fit", "contain")
        .text("format", "png")
        .text("quality", "50");
    let id = app.accepted(app.upload_form(form, "").await).await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS");
    let url = app.thumbnail_url(&id).await;
    let bytes = app
        .client
        .get(url.replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // 320x256 contained in 64x64 keeps the 5:4 ratio.
    assert_eq!(decode(&bytes), (image::ImageFormat::Png, 64, 51));

    let form = Form::new().part("image", Part::bytes(fixture("photo.png")).file_name("p.png"));
    let id = app
        .accepted(
            app.upload_form(form, "?width=120&height=40&fit=fill&format=jpeg")
                .await,
        )
        .await;
    app.wait_finished(&id, DEADLINE).await;
    let url = app.thumbnail_url(&id).await;
    let bytes = app
        .client
        .get(url.replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(decode(&bytes), (image::ImageFormat::Jpeg, 120, 40));

    for (field, value) in [
        ("width", "0"),
        ("width", "wide"),
        ("height", "100000"),
        ("fit", "squash"),
        ("format", "bmp"),
        ("quality", "0"),
        ("quality", "101"),
    ] {
        let form = Form::new()
            .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
            .text(field, value);
        let (status, text) = detail(app.upload_form(form, "").await).await;
        assert_eq!(status, 422, "{field}={value}: {text}");
        assert!(text.starts_with(&format!("{field}:")), "{field}={value}: {text}");
        let form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"));
        let (status, text) = detail(app.upload_form(form, &format!("?{field}={value}")).await).await;
        assert_eq!(status, 422, "query {field}={value}: {text}");
        assert!(text.starts_with(&format!("{field}:")), "{text}");
    }
    // Only the two good uploads were stored.
    assert_eq!(app.all_jobs().await.len(), 2);
}

#[tokio::test]
async fn the_list_is_newest_first_paged_by_cursor_and_filtered() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            app.accepted(app.upload(fixture("photo.webp"), "p.webp").await)
                .await,
        );
    }
    for id in &ids {
        app.wait_finished(id, DEADLINE).await;
    }
    let mut seen = Vec::new();
    let mut next = Some("/api/v1/jobs/?limit=3".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        next = response.headers().get("link").map(|v| {
            let v = v.to_str().unwrap();
            assert!(v.ends_with("; rel=\"next\""), "{v}");
            v[1..v.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|j| j["job_id"].as_str().unwrap().to_owned()));
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let all: Vec<Value> = app.all_jobs().await;
    for job in &all {
        for key in ["job_id", "status", "result"] {
            assert!(job.get(key).is_some(), "{key} missing in {job}");
        }
    }
    let success: Vec<Value> = app
        .client
        .get(app.url("/api/v1/jobs/?status=SUCCESS"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(success.len(), 7);
    let pending: Vec<Value> = app
        .client
        .get(app.url("/api/v1/jobs/?status=PENDING"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(pending.is_empty());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("status=DONE", "status"),
        ("cursor=garbage", "cursor"),
    ] {
        let (status, detail) = detail(
            app.client
                .get(app.url(&format!("/api/v1/jobs/?{query}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{query}");
        assert!(detail.starts_with(&format!("{field}:")), "{query}: {detail}");
    }
}

#[tokio::test]
async fn thumbnail_link_errors_unknown_unfinished_and_failed() {
    let app = spawn_app().await;
    let (status, _) = detail(
        app.client
            .get(app.url(&format!("/api/v1/jobs/{}/thumbnail", uuid::Uuid::new_v4())))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = detail(
        app.client
            .get(app.url("/api/v1/jobs/not-a-uuid"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);

    // A job that exists but was never queued stays PENDING: its link is refused with its status.
    let id = never_queued_job(&app).await;
    let (status, detail_text) = detail(
        app.client
            .get(app.url(&format!("/api/v1/jobs/{id}/thumbnail")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(detail_text.contains("PENDING"), "{detail_text}");

    // A PNG whose header is fine but whose data is cut short is accepted, then fails with a reason.
    let mut cut = fixture("photo.png");
    cut.truncate(cut.len() / 2);
    let id = app.accepted(app.upload(cut, "cut.png").await).await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["status"], "FAILURE", "{job}");
    assert_eq!(job["result"], Value::Null);
    assert_eq!(job["error"]["reason"], "CorruptImage", "{job}");
    let (status, detail_text) = detail(
        app.client
            .get(app.url(&format!("/api/v1/jobs/{id}/thumbnail")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(detail_text.contains("FAILURE"), "{detail_text}");
}

/// How often a long-poll re-reads the store in the test below: far longer than any bound there,
/// so that only the finish itself (its event) can answer a waiting request in time.
const RECHECK_FOR_LONG_POLL_TEST_MS: u64 = 120_000;
/// How soon after the finish the waiting request must be answered.
const FINISH_ANSWERS_WITHIN: Duration = Duration::from_secs(5);
const _: () = assert!(FINISH_ANSWERS_WITHIN.as_millis() < RECHECK_FOR_LONG_POLL_TEST_MS as u128);

#[tokio::test]
async fn get_job_with_wait_answers_when_the_job_finishes() {
    let app = spawn_app_with(|c| c.long_poll_recheck_milliseconds = RECHECK_FOR_LONG_POLL_TEST_MS).await;
    // Never queued, so it only finishes when this test finishes it.
    let id = never_queued_job(&app).await;
    let get = |query: &str| {
        app.client
            .get(app.url(&format!("/api/v1/jobs/{id}{query}")))
            .send()
    };

    // Unfinished after the wait: the state at the end of it, answered at the deadline (not at
    // the next re-read, which is minutes away).
    let started = Instant::now();
    let job: Value = get("?wait=0.3").await.unwrap().json().await.unwrap();
    assert_eq!(job["status"], "PENDING");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < FINISH_ANSWERS_WITHIN, "{took:?}");

    // A long wait is answered by the finish, not by a re-read or the end of the wait.
    assert_eq!(app.state.job_events.waiters(), 0);
    let waiting = tokio::spawn(get("?wait=30"));
    let until = Instant::now() + DEADLINE;
    while app.state.job_events.waiters() == 0 {
        assert!(Instant::now() < until, "the long-poll never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The waiting request read its job right after subscribing; a whole request of our own
    // after that makes sure it did, and sees the job still unfinished.
    assert_eq!(app.job(&id.to_string()).await["status"], "PENDING");
    assert!(
        !waiting.is_finished(),
        "the long-poll answered before the job finished"
    );
    let attempt = app.state.jobs.start(id).await.unwrap().unwrap().attempts;
    let failure = thumbnail_core::jobstore::Outcome::Failure(thumbnail_core::model::JobError {
        reason: "CorruptImage".into(),
        message: "finished by the test".into(),
    });
    let finished = Instant::now();
    assert!(app.state.jobs.finish(id, attempt, &failure).await.unwrap());
    let job: Value = tokio::time::timeout(FINISH_ANSWERS_WITHIN, waiting)
        .await
        .expect("the finish did not answer the waiting request (finish events broken?)")
        .unwrap()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "FAILURE", "{job}");
    eprintln!("long-poll answered {:?} after the finish", finished.elapsed());

    // Finished jobs answer at once, and a bad wait is a precise 422.
    let started = Instant::now();
    let job: Value = get("?wait=30").await.unwrap().json().await.unwrap();
    assert_eq!(job["status"], "FAILURE");
    assert!(
        started.elapsed() < FINISH_ANSWERS_WITHIN,
        "{:?}",
        started.elapsed()
    );
    for bad in ["abc", "-1", "61", "NaN"] {
        let (status, text) = detail(get(&format!("?wait={bad}")).await.unwrap()).await;
        assert_eq!(status, 422, "wait={bad}");
        assert!(text.contains("wait"), "{text}");
    }
}

#[tokio::test]
async fn tampered_and_expired_links_are_refused() {
    let app = spawn_app().await;
    let id = app
        .accepted(app.upload(fixture("photo.jpg"), "p.jpg").await)
        .await;
    app.wait_finished(&id, DEADLINE).await;
    let url = app.thumbnail_url(&id).await.replace("localhost", "127.0.0.1");
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);

    let tampered_sig = format!("{}0", &url[..url.len() - 1]);
    let tampered_sig = if tampered_sig == url {
        format!("{}1", &url[..url.len() - 1])
    } else {
        tampered_sig
    };
    let other_key = url.replace("images/thumbnail", "images/original");
    let later = {
        let expires: i64 = url
            .split("expires=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        url.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600),
        )
    };
    let unsigned = url.split('?').next().unwrap().to_owned();
    for bad in [tampered_sig, other_key, later, unsigned] {
        let (status, detail) = detail(app.client.get(&bad).send().await.unwrap()).await;
        assert_eq!(status, 403, "{bad}: {detail}");
    }
    // A correctly signed link whose time is up.
    let signer = LinkSigner::load_or_create(None, &app.data_dir).unwrap();
    let key = format!("images/thumbnail/{id}.jpg");
    let past = chrono::Utc::now().timestamp() - 5;
    let expired = format!(
        "{}/files/{key}?expires={past}&signature={}",
        app.address,
        signer.sign(&key, past)
    );
    let (status, detail) = detail(app.client.get(&expired).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(detail.contains("expired"), "{detail}");
}

#[tokio::test]
async fn a_job_in_flight_at_a_crash_completes_after_restart() {
    let app = spawn_app().await;
    // Simulate the crash: the original is stored and the job row says STARTED (attempt 1), but no
    // process is working on it.
    let id = uuid::Uuid::new_v4();
    let key = format!("images/original/{id}.png");
    app.state
        .objects
        .put_bytes(&key, fixture("photo.png").into(), "image/png")
        .await
        .unwrap();
    app.state
        .jobs
        .create(&NewJob {
            expires_at: None,
            webhook_url: None,
            id,
            owner: Some("crash-test".into()),
            source_bucket: "local".into(),
            source_key: key,
            source_format: ImageFormat::Png,
            source_width: 240,
            source_height: 150,
            source_bytes: 1,
            outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
            batch: None,
        })
        .await
        .unwrap();
    let started = app.state.jobs.start(id).await.unwrap().unwrap();
    assert_eq!(started.attempts, 1);
    let data_dir = app.stop().await;

    let app = spawn_app_in(data_dir, |_| {}).await;
    let job = app.wait_finished(&id.to_string(), DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["owner"], "crash-test");
}

#[tokio::test]
async fn openapi_document_is_current_and_docs_are_served_locally() {
    let app = spawn_app().await;
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = thumbnail_api::openapi::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json is stale: regenerate it with `cargo run -p thumbnail-api -- openapi > api/openapi.json` \
         (or run this test with UPDATE_OPENAPI=1)"
    );
    let served: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // This server runs AUTH_MODE=none: its document declares no security; the committed one is
    // the api-key server's.
    let expected: Value = serde_json::from_str(&thumbnail_api::openapi::openapi_json_for(
        thumbnail_api::config::AuthMode::None,
    ))
    .unwrap();
    assert_eq!(served, expected);
    assert!(served["components"].get("securitySchemes").is_none(), "{served}");
    let committed: Value = serde_json::from_str(&committed).unwrap();
    assert!(
        committed["components"]["securitySchemes"]["api_key"].is_object(),
        "the committed document declares the API-key scheme"
    );
    for path in [
        "/api/v1/thumbnails/",
        "/api/v1/jobs/",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/thumbnail",
        "/health",
    ] {
        assert!(
            served["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }

    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    for text in [&page, &initializer] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "external URL in Swagger UI: {text}"
        );
    }
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        let response = app
            .client
            .get(app.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.bytes().await.unwrap().len() > 10_000,
            "{asset} is not the real file"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_uploads_and_jobs() {
    let app = spawn_app().await;
    let id = app
        .accepted(app.upload(fixture("photo.jpg"), "p.jpg").await)
        .await;
    app.wait_finished(&id, DEADLINE).await;
    let text = app.metrics().await;
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/api/v1/thumbnails/",status="202"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "thumbnail_upload_bytes_total {}",
            fixture("photo.jpg").len()
        )),
        "{text}"
    );
    assert!(text.contains(r#"thumbnail_jobs{status="SUCCESS"} 1"#), "{text}");
    assert!(
        text.contains(r#"thumbnail_job_duration_seconds_count{outcome="success"} 1"#),
        "{text}"
    );
    // Job ids never become label values.
    assert!(!text.contains(&id), "{text}");
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let app = spawn_app().await;
    let (status, detail) = detail(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, detail.as_str()), (404, "Not Found"));
}
