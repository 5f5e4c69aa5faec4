//! AUTH_MODE=api-key against the real server, on SQLite + local objects and on PostgreSQL + S3:
//! two owners and an admin on every endpoint, keys and their scopes, expiry and revocation, and
//! the limits (upload rate, unfinished jobs, bytes stored, the service-wide queue).
mod common;

use common::{Stores, TestApp, detail, fixture};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::time::Duration;
use thumbnail_api::config::{ApiConfig, AuthMode};
use thumbnail_core::apikeys::{self, Scope, Scopes};
use thumbnail_core::model::{NewJob, OutputSpec};
use thumbnail_engine::{ImageFormat, ThumbnailOptions};

const DEADLINE: Duration = Duration::from_secs(60);

fn api_key_mode(config: &mut ApiConfig) {
    config.auth.auth_mode = AuthMode::ApiKey;
}

/// A PENDING job of `owner` stored directly, never handed to the runner.
async fn unqueued_job(app: &TestApp, owner: &str, bytes: u64) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    app.state
        .jobs
        .create(&NewJob {
            expires_at: None,
            webhook_url: None,
            id,
            owner: Some(owner.into()),
            source_bucket: "local".into(),
            source_key: format!("images/original/{id}.jpg"),
            source_format: ImageFormat::Jpeg,
            source_width: 10,
            source_height: 10,
            source_bytes: bytes,
            outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
            batch: None,
        })
        .await
        .unwrap();
    id
}

struct Tenants {
    alice: String,
    bob: String,
    admin: String,
}

async fn tenants(app: &TestApp) -> Tenants {
    Tenants {
        alice: app.create_key("alice", &[Scope::Submit, Scope::Read]).await,
        bob: app.create_key("bob", &[Scope::Submit, Scope::Read]).await,
        admin: app.create_key("root", &[Scope::Admin]).await,
    }
}

async fn accepted(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

/// Every endpoint as alice, bob and the admin: each owner sees exactly their own jobs, another
/// owner's job answers exactly like one that does not exist, admins see all.
async fn owners_see_only_their_own_jobs(stores: Stores) {
    let app = stores.spawn(api_key_mode).await;
    let t = tenants(&app).await;
    let a = accepted(app.upload_as(&t.alice, "").await).await;
    let b = accepted(app.upload_as(&t.bob, "").await).await;
    let a_job = app.wait_finished_as(&t.alice, &a, DEADLINE).await;
    assert_eq!(a_job["status"], "SUCCESS", "{a_job}");
    assert_eq!(a_job["owner"], "alice");
    let b_job = app.wait_finished_as(&t.bob, &b, DEADLINE).await;
    assert_eq!(b_job["owner"], "bob");

    // Get, long-poll and thumbnail link: another owner's job is a 404 with the very detail of
    // a job that does not exist.
    let missing = uuid::Uuid::new_v4();
    for (path, other) in [
        (format!("/api/v1/jobs/{b}"), format!("/api/v1/jobs/{missing}")),
        (
            format!("/api/v1/jobs/{b}?wait=1"),
            format!("/api/v1/jobs/{missing}?wait=1"),
        ),
        (
            format!("/api/v1/jobs/{b}/thumbnail"),
            format!("/api/v1/jobs/{missing}/thumbnail"),
        ),
    ] {
        let (status, text) = detail(app.get_as(&t.alice, &path).send().await.unwrap()).await;
        let (missing_status, missing_text) = detail(app.get_as(&t.alice, &other).send().await.unwrap()).await;
        assert_eq!((status, missing_status), (404, 404), "{path}");
        assert_eq!(
            text.replace(&b, "ID"),
            missing_text.replace(&missing.to_string(), "ID"),
            "{path}"
        );
    }
    let link = json_of(
        app.get_as(&t.alice, &format!("/api/v1/jobs/{a}/thumbnail"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    // The signed link itself needs no credentials.
    let download = reqwest::get(
        link["thumbnail_url"]
            .as_str()
            .unwrap()
            .replace("localhost", "127.0.0.1"),
    )
    .await
    .unwrap();
    assert_eq!(download.status(), 200);

    // Lists: one's own; another owner's filter is refused; admins see all and may filter.
    let list = json_of(app.get_as(&t.alice, "/api/v1/jobs/").send().await.unwrap(), 200).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    let (status, text) = detail(
        app.get_as(&t.alice, "/api/v1/jobs/?owner=bob")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("owner"), "{text}");
    let own = json_of(
        app.get_as(&t.alice, "/api/v1/jobs/?owner=alice")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(own.as_array().unwrap().len(), 1);
    let all = json_of(app.get_as(&t.admin, "/api/v1/jobs/").send().await.unwrap(), 200).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let bobs = json_of(
        app.get_as(&t.admin, "/api/v1/jobs/?owner=bob")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(bobs[0]["job_id"], b.as_str());
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    let bob_by_admin = json_of(
        app.get_as(&t.admin, &format!("/api/v1/jobs/{b}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(bob_by_admin["owner"], "bob");
    json_of(
        app.get_as(&t.admin, &format!("/api/v1/jobs/{b}/thumbnail"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;

    // Uploads: the owner is the caller; only an admin may name someone else.
    let (status, text) = detail(app.upload_as(&t.alice, "?owner=bob").await).await;
    assert_eq!(status, 403, "{text}");
    let own_named = accepted(app.upload_as(&t.alice, "?owner=alice").await).await;
    let for_bob = accepted(app.upload_as(&t.admin, "?owner=bob").await).await;
    let job = app.wait_finished_as(&t.bob, &for_bob, DEADLINE).await;
    assert_eq!(job["owner"], "bob");
    let admins_own = accepted(app.upload_as(&t.admin, "").await).await;
    let job = app.wait_finished_as(&t.admin, &admins_own, DEADLINE).await;
    assert_eq!(job["owner"], "root");
    app.wait_finished_as(&t.alice, &own_named, DEADLINE).await;

    // Open endpoints need nothing.
    for path in ["/health", "/ready", "/metrics", "/docs/", "/openapi.json"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn owners_see_only_their_own_jobs_on_sqlite() {
    owners_see_only_their_own_jobs(Stores::Embedded).await;
}

#[tokio::test]
async fn owners_see_only_their_own_jobs_on_postgres_and_s3() {
    owners_see_only_their_own_jobs(Stores::PostgresS3).await;
}

/// Credentials: missing, malformed, unknown, revoked, expired; both headers; scopes.
async fn credentials_and_scopes(stores: Stores) {
    let app = stores.spawn(api_key_mode).await;
    let t = tenants(&app).await;
    let paths = [
        ("POST", "/api/v1/thumbnails/"),
        ("GET", "/api/v1/jobs/"),
        ("GET", "/api/v1/jobs/00000000-0000-0000-0000-000000000000"),
        (
            "GET",
            "/api/v1/jobs/00000000-0000-0000-0000-000000000000/thumbnail",
        ),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys/abc"),
        ("POST", "/api/v1/keys/abc/revoke"),
    ];
    let unknown = apikeys::generate("alice", Scopes::default_for_keys(), None, None).key;
    for (method, path) in paths {
        for (credential, expected) in [
            (None, "credentials required"),
            (Some("Bearer not-a-key"), "not an API key"),
            (Some(format!("Bearer {unknown}").as_str()), "unknown API key"),
            (Some("Basic YWxpY2U6c2VjcmV0"), "must be Bearer"),
        ] {
            let mut request = app.client.request(method.parse().unwrap(), app.url(path));
            if let Some(credential) = credential {
                request = request.header("authorization", credential);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let (status, text) = detail(response).await;
            assert_eq!(status, 401, "{method} {path} {credential:?}: {text}");
            assert!(text.contains(expected), "{method} {path}: {text}");
            assert!(challenge.starts_with("Bearer realm=\"thumbnail\""), "{challenge}");
        }
    }

    // X-API-Key works like the Bearer header.
    let response = app
        .client
        .get(app.url("/api/v1/jobs/"))
        .header("x-api-key", &t.alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Scopes: a read-only key cannot upload, a submit-only key cannot read, neither manages keys.
    let reader = app.create_key("alice", &[Scope::Read]).await;
    let submitter = app.create_key("alice", &[Scope::Submit]).await;
    let (status, text) = detail(app.upload_as(&reader, "").await).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("'submit'"), "{text}");
    let id = accepted(app.upload_as(&submitter, "").await).await;
    let (status, _) = detail(
        app.get_as(&submitter, &format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        app.get_as(&reader, &format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, _) = detail(app.get_as(&t.alice, "/api/v1/keys").send().await.unwrap()).await;
    assert_eq!(status, 403);

    // Expired and revoked keys.
    let expired = apikeys::generate(
        "alice",
        Scopes::default_for_keys(),
        None,
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    );
    app.state.key_store.insert(&expired.record).await.unwrap();
    let (status, text) = detail(app.get_as(&expired.key, "/api/v1/jobs/").send().await.unwrap()).await;
    assert_eq!((status, text.as_str()), (401, "the API key has expired"));
    let id_of = |key: &str| apikeys::key_id(key).unwrap().to_owned();
    let revoked = json_of(
        app.post_as(&t.admin, &format!("/api/v1/keys/{}/revoke", id_of(&t.bob)))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(revoked["state"], "revoked");
    let (status, text) = detail(app.get_as(&t.bob, "/api/v1/jobs/").send().await.unwrap()).await;
    assert_eq!((status, text.as_str()), (401, "the API key has been revoked"));
    app.stop().await;
}

#[tokio::test]
async fn credentials_and_scopes_on_sqlite() {
    credentials_and_scopes(Stores::Embedded).await;
}

#[tokio::test]
async fn credentials_and_scopes_on_postgres_and_s3() {
    credentials_and_scopes(Stores::PostgresS3).await;
}

/// `/api/v1/keys`: admins create (the secret once), list (never a secret or hash), show and
/// revoke; a created key works at once and stops at its revocation.
async fn key_management(stores: Stores) {
    let app = stores.spawn(api_key_mode).await;
    let t = tenants(&app).await;
    let created = json_of(
        app.post_as(&t.admin, "/api/v1/keys")
            .json(&json!({"owner": "carol", "scopes": ["submit", "read"], "name": "ci", "expires_in_seconds": 3600}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(apikeys::key_id(&key), Some(id.as_str()));
    assert_eq!(created["owner"], "carol");
    assert_eq!(created["scopes"], json!(["submit", "read"]));
    assert_eq!(created["state"], "active");
    assert!(created["expires_at"].is_string());
    let job = accepted(app.upload_as(&key, "").await).await;
    assert_eq!(app.wait_finished_as(&key, &job, DEADLINE).await["owner"], "carol");

    let listed = json_of(
        app.get_as(&t.admin, "/api/v1/keys?owner=carol")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0]["last_used_at"].is_string() || listed[0]["last_used_at"].is_null());
    let everything = app
        .get_as(&t.admin, "/api/v1/keys?limit=1000")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!everything.contains(&key[20..]), "a secret is listed");
    assert!(!everything.contains("hash"), "{everything}");
    assert_eq!(
        serde_json::from_str::<Value>(&everything)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let shown = json_of(
        app.get_as(&t.admin, &format!("/api/v1/keys/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(shown["name"], "ci");
    let (status, _) = detail(
        app.get_as(&t.admin, "/api/v1/keys/nosuchkey123")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    for (body, field) in [
        (json!({"owner": ""}), "owner"),
        (json!({"owner": "a b"}), "owner"),
        (json!({"owner": "x", "scopes": []}), "scopes"),
        (json!({"owner": "x", "scopes": ["write"]}), "scopes"),
        (
            json!({"owner": "x", "expires_in_seconds": 0}),
            "expires_in_seconds",
        ),
        (json!({"owner": "x", "surprise": 1}), "surprise"),
    ] {
        let (status, text) = detail(
            app.post_as(&t.admin, "/api/v1/keys")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (status, _) = detail(
        app.post_as(&t.admin, "/api/v1/keys")
            .header("content-type", "application/json")
            .body(vec![b' '; 100_000])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    json_of(
        app.post_as(&t.admin, &format!("/api/v1/keys/{id}/revoke"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let (status, _) = detail(app.get_as(&key, "/api/v1/jobs/").send().await.unwrap()).await;
    assert_eq!(status, 401);
    // Revoking again changes nothing.
    let again = json_of(
        app.post_as(&t.admin, &format!("/api/v1/keys/{id}/revoke"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(again["revoked_at"], shown_revoked(&app, &t.admin, &id).await);
    app.stop().await;
}

async fn shown_revoked(app: &TestApp, admin: &str, id: &str) -> Value {
    let shown = json_of(
        app.get_as(admin, &format!("/api/v1/keys/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(shown["state"], "revoked");
    shown["revoked_at"].clone()
}

#[tokio::test]
async fn key_management_on_sqlite() {
    key_management(Stores::Embedded).await;
}

#[tokio::test]
async fn key_management_on_postgres_and_s3() {
    key_management(Stores::PostgresS3).await;
}

/// A revocation made elsewhere (another replica, `thumbnail-api keys revoke`) is seen within the
/// key cache's lifetime.
#[tokio::test]
async fn a_key_revoked_by_another_process_stops_working_within_the_cache_lifetime() {
    let app = Stores::Embedded.spawn(api_key_mode).await;
    let key = app.create_key("alice", &[Scope::Read]).await;
    assert_eq!(
        app.get_as(&key, "/api/v1/jobs/").send().await.unwrap().status(),
        200
    );
    let id = apikeys::key_id(&key).unwrap().to_owned();
    let other = apikeys::connect(&app.database_url, 1).await.unwrap();
    other.revoke(&id, chrono::Utc::now()).await.unwrap();
    let until = std::time::Instant::now() + thumbnail_api::auth::api_key::CACHE_TTL + Duration::from_secs(5);
    loop {
        let status = app.get_as(&key, "/api/v1/jobs/").send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < until, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With METRICS_AUTH and DOCS_AUTH, `/metrics` needs an admin and the docs any valid key.
#[tokio::test]
async fn metrics_and_docs_can_be_put_behind_credentials() {
    let app = Stores::Embedded
        .spawn(|c| {
            api_key_mode(c);
            c.auth.metrics_auth = true;
            c.auth.docs_auth = true;
        })
        .await;
    let t = tenants(&app).await;
    assert_eq!(
        app.client.get(app.url("/metrics")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        app.get_as(&t.alice, "/metrics").send().await.unwrap().status(),
        403
    );
    assert_eq!(
        app.get_as(&t.admin, "/metrics").send().await.unwrap().status(),
        200
    );
    for path in ["/docs/", "/openapi.json"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        assert_eq!(
            app.get_as(&t.alice, path).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    // The document served says what the server does: the metrics need credentials too.
    let doc: Value = app
        .get_as(&t.alice, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/metrics"]["get"]["security"].is_array(),
        "{}",
        doc["paths"]["/metrics"]
    );
    assert!(doc["paths"]["/api/v1/jobs/"]["get"]["responses"]["401"].is_object());
    assert!(doc["paths"]["/health"]["get"].get("security").is_none());
    // Health and readiness stay open.
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        app.client.get(app.url("/ready")).send().await.unwrap().status(),
        200
    );
}

/// ADMIN_API_KEY is registered at start-up (only its hash), also by a second replica.
#[tokio::test]
async fn the_admin_key_from_the_environment_is_registered_and_works() {
    let admin = apikeys::generate("x", Scopes::NONE, None, None).key;
    let app = Stores::Embedded
        .spawn(|c| {
            api_key_mode(c);
            c.auth.admin_api_key = Some(admin.clone());
        })
        .await;
    let listed = json_of(app.get_as(&admin, "/api/v1/keys").send().await.unwrap(), 200).await;
    assert_eq!(listed[0]["owner"], "admin");
    assert_eq!(listed[0]["name"], "ADMIN_API_KEY");
    assert_eq!(listed[0]["scopes"], json!(["submit", "read", "admin"]));
    let data_dir = app.stop().await;
    // A restart (or a second replica on the same database) registers it again without error.
    let app = common::spawn_app_in(data_dir, |c| {
        api_key_mode(c);
        c.auth.admin_api_key = Some(admin.clone());
    })
    .await;
    assert_eq!(
        app.get_as(&admin, "/api/v1/keys").send().await.unwrap().status(),
        200
    );
    // A malformed one stops start-up.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ApiConfig::for_tests(dir.path());
    api_key_mode(&mut config);
    config.auth.admin_api_key = Some("hunter2".into());
    let err = thumbnail_api::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ADMIN_API_KEY"), "{err}");
}

/// Uploads per owner per minute: the burst, then 429 with Retry-After and the RateLimit headers
/// naming the policy; another owner has a bucket of its own.
#[tokio::test]
async fn the_upload_rate_is_limited_per_owner() {
    let app = Stores::Embedded
        .spawn(|c| {
            api_key_mode(c);
            c.quotas.uploads_per_minute = 6;
            c.quotas.upload_burst = 2;
        })
        .await;
    let t = tenants(&app).await;
    for remaining in [1, 0] {
        let response = app.upload_as(&t.alice, "").await;
        assert_eq!(response.headers()["ratelimit-policy"], "\"uploads\";q=6;w=60");
        let limit = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            limit.starts_with(&format!("\"uploads\";r={remaining};")),
            "{limit}"
        );
        accepted(response).await;
    }
    let response = app.upload_as(&t.alice, "").await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert!(
        response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"uploads\";r=0;")
    );
    let (status, text) = detail(response).await;
    assert_eq!(status, 429);
    assert!(text.contains("UPLOADS_PER_MINUTE"), "{text}");
    accepted(app.upload_as(&t.bob, "").await).await;
}

/// Without authentication the rate is per client address.
#[tokio::test]
async fn without_authentication_the_rate_is_per_client_address() {
    let app = Stores::Embedded
        .spawn(|c| {
            c.quotas.uploads_per_minute = 6;
            c.quotas.upload_burst = 1;
            c.quotas.trusted_proxy_hops = 1;
        })
        .await;
    let upload = |client: &'static str| {
        let form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"));
        app.client
            .post(app.url("/api/v1/thumbnails/"))
            .header("x-forwarded-for", client)
            .multipart(form)
            .send()
    };
    accepted(upload("10.0.0.1").await.unwrap()).await;
    let (status, text) = detail(upload("10.0.0.1").await.unwrap()).await;
    assert_eq!(status, 429, "{text}");
    accepted(upload("10.0.0.2").await.unwrap()).await;
}

/// Unfinished jobs per owner, bytes stored per owner, and the service-wide queue: each refused
/// with its status, Retry-After and a detail naming the setting, and nothing stored.
async fn quotas(stores: Stores) {
    let photo_bytes = fixture("photo.jpg").len() as u64;
    let app = stores
        .spawn(|c| {
            api_key_mode(c);
            c.quotas.max_unfinished_jobs_per_owner = 2;
            // Three photos and their thumbnails (a few KiB each) fit; a fourth photo does not.
            c.quotas.max_stored_bytes_per_owner = 3 * photo_bytes + 20_000;
            c.quotas.max_queued_jobs = 4;
        })
        .await;
    let t = tenants(&app).await;
    let carol = app.create_key("carol", &[Scope::Submit, Scope::Read]).await;
    let dave = app.create_key("dave", &[Scope::Submit, Scope::Read]).await;

    // Alice: two unfinished jobs (never run), then a refusal.
    unqueued_job(&app, "alice", 10).await;
    unqueued_job(&app, "alice", 10).await;
    let response = app.upload_as(&t.alice, "").await;
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, text) = detail(response).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("MAX_UNFINISHED_JOBS_PER_OWNER"), "{text}");
    assert_eq!(app.state.jobs.usage("alice").await.unwrap().unfinished_jobs, 2);

    // Bob: three uploads fit in his bytes, the fourth does not.
    for _ in 0..3 {
        let id = accepted(app.upload_as(&t.bob, "").await).await;
        app.wait_finished_as(&t.bob, &id, DEADLINE).await;
    }
    let used = app.state.jobs.usage("bob").await.unwrap();
    assert_eq!(used.unfinished_jobs, 0);
    assert!(
        used.stored_bytes > 3 * photo_bytes,
        "originals and thumbnails: {used:?}"
    );
    let jobs_before = app
        .get_as(&t.admin, "/api/v1/jobs/")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let response = app.upload_as(&t.bob, "").await;
    assert_eq!(response.headers()["retry-after"], "3600");
    let (status, text) = detail(response).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("MAX_STORED_BYTES_PER_OWNER"), "{text}");
    let jobs_after = app
        .get_as(&t.admin, "/api/v1/jobs/")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(jobs_before, jobs_after, "a refused upload leaves no job");

    // The queue: alice's two and two of carol's fill it; dave is refused at once with 503.
    unqueued_job(&app, "carol", 10).await;
    unqueued_job(&app, "carol", 10).await;
    let response = app.upload_as(&dave, "").await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, text) = detail(response).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("MAX_QUEUED_JOBS"), "{text}");
    let _ = carol;
    app.stop().await;
}

#[tokio::test]
async fn quotas_on_sqlite() {
    quotas(Stores::Embedded).await;
}

#[tokio::test]
async fn quotas_on_postgres_and_s3() {
    quotas(Stores::PostgresS3).await;
}
