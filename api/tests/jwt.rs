//! AUTH_MODE=jwt against a real JWKS served by the test itself (`common::issuer`): RS256, ES256
//! and EdDSA tokens accepted; expired, wrong-audience, wrong-issuer, unknown-key, tampered and
//! unsigned ones refused with 401 and a precise `detail`; keys fetched again on an unknown key id,
//! no more than the refresh interval allows; owner and scopes from configurable claims.
mod common;

use common::issuer::{SigningKey, TestIssuer};
use common::{TestApp, detail, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;
use thumbnail_api::config::{ApiConfig, AuthMode};

const AUDIENCE: &str = "thumbnail-api";
const DEADLINE: Duration = Duration::from_secs(60);

fn jwt_mode(issuer: &TestIssuer) -> impl FnOnce(&mut ApiConfig) + '_ {
    move |c| {
        c.auth.auth_mode = AuthMode::Jwt;
        c.auth.jwt_issuer = Some(issuer.url.clone());
        c.auth.jwt_audience = Some(AUDIENCE.into());
        c.auth.jwt_jwks_refresh_seconds = 2;
    }
}

/// The list's status, and its `detail` (or body when it has none).
async fn status_and_detail(app: &TestApp, token: &str) -> (u16, String) {
    let response = app.get_as(token, "/api/v1/jobs/").send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let text = body["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    (status, text)
}

#[tokio::test]
async fn tokens_of_each_algorithm_are_accepted_and_act_for_their_subject() {
    let issuer = TestIssuer::start().await;
    let keys = [
        SigningKey::rsa("rsa-1"),
        SigningKey::ec("ec-1"),
        SigningKey::ed("ed-1"),
    ];
    for key in &keys {
        issuer.publish(key);
    }
    // No JWKS URL configured: it is found through the issuer's discovery document.
    let app = spawn_app_with(jwt_mode(&issuer)).await;
    for (key, owner) in keys.iter().zip(["alice", "bob", "carol"]) {
        let token = key.sign(&issuer.claims(AUDIENCE, owner, "submit read", 300));
        let response = app.upload_as(&token, "").await;
        assert_eq!(
            response.status(),
            202,
            "{}: {}",
            key.alg,
            response.text().await.unwrap()
        );
        let list: Value = app
            .get_as(&token, "/api/v1/jobs/")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1, "{}", key.alg);
        assert_eq!(list[0]["owner"], owner);
        let id = list[0]["job_id"].as_str().unwrap().to_owned();
        assert_eq!(
            app.wait_finished_as(&token, &id, DEADLINE).await["status"],
            "SUCCESS"
        );
    }
    // Another subject's job is a 404, as with keys.
    let alice = keys[0].sign(&issuer.claims(AUDIENCE, "alice", "read", 300));
    let bob = keys[1].sign(&issuer.claims(AUDIENCE, "bob", "read", 300));
    let bobs: Value = app
        .get_as(&bob, "/api/v1/jobs/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bobs_job = bobs[0]["job_id"].as_str().unwrap();
    let (status, _) = detail(
        app.get_as(&alice, &format!("/api/v1/jobs/{bobs_job}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    // An admin token sees all three.
    let admin = keys[2].sign(&issuer.claims(AUDIENCE, "ops", "admin", 300));
    let all: Value = app
        .get_as(&admin, "/api/v1/jobs/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_a_reason() {
    let issuer = TestIssuer::start().await;
    let key = SigningKey::ec("ec-1");
    issuer.publish(&key);
    let app = spawn_app_with(|c| {
        jwt_mode(&issuer)(c);
        c.auth.jwt_jwks_url = Some(issuer.jwks_url());
    })
    .await;
    let good = issuer.claims(AUDIENCE, "alice", "read", 300);
    assert_eq!(status_and_detail(&app, &key.sign(&good)).await.0, 200);

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        key.sign(&claims)
    };
    let rogue = SigningKey::ec("rogue");
    let impostor = SigningKey::ec("ec-1");
    let signed = key.sign(&good);
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    // Tampered: the same signature over claims naming someone else.
    {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = json!("root");
        claims["scope"] = json!("admin");
        parts[1] = engine.encode(claims.to_string());
    }
    let tampered = parts.join(".");
    let unsigned = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            engine.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            engine.encode(good.to_string())
        )
    };
    let hmac = key.sign_with_header(&json!({"alg": "HS256", "kid": "ec-1"}), &good);
    for (token, expected) in [
        (
            with(&|c| c["exp"] = json!(chrono::Utc::now().timestamp() - 120)),
            "the token has expired",
        ),
        (
            with(&|c| c["aud"] = json!("another-service")),
            "the token is not for this service (aud)",
        ),
        (
            with(&|c| c["iss"] = json!("https://evil.example")),
            "the token is from another issuer (iss)",
        ),
        (
            with(&|c| c["nbf"] = json!(chrono::Utc::now().timestamp() + 3600)),
            "the token is not valid yet (nbf)",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "the token has no 'exp' claim",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "no string claim 'sub'",
        ),
        (
            with(&|c| c["sub"] = json!("has spaces")),
            "owner claim 'sub' must be printable ASCII",
        ),
        (
            rogue.sign(&good),
            "the token's key 'rogue' is not one of the issuer's keys",
        ),
        (impostor.sign(&good), "the token's signature is invalid"),
        (tampered, "the token's signature is invalid"),
        (unsigned, "the token is not a JWT"),
        (hmac, "is not accepted (JWT_ALGORITHMS)"),
        ("not.a.token".to_owned(), "the token is not a JWT"),
    ] {
        let response = app.get_as(&token, "/api/v1/jobs/").send().await.unwrap();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let (status, text) = detail(response).await;
        assert_eq!(status, 401, "{expected}: {text}");
        assert!(text.contains(expected), "expected '{expected}', got '{text}'");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    // A little clock skew is allowed (JWT_LEEWAY_SECONDS, 30 by default).
    let skewed = with(&|c| c["exp"] = json!(chrono::Utc::now().timestamp() - 5));
    assert_eq!(status_and_detail(&app, &skewed).await.0, 200);
    // Scopes: none, or only another service's, allow nothing here.
    let none = with(&|c| c["scope"] = json!("openid profile"));
    let (status, text) = status_and_detail(&app, &none).await;
    assert_eq!(status, 403, "{text}");
    let read_only = key.sign(&good);
    let (status, text) = detail(app.upload_as(&read_only, "").await).await;
    assert_eq!(status, 403, "{text}");
}

/// The issuer rotates its keys: a token with a new key id makes the JWKS be fetched again, but a
/// stream of made-up key ids does not make this service hammer the issuer.
#[tokio::test]
async fn the_jwks_is_fetched_again_for_a_new_key_but_no_more_than_the_interval_allows() {
    let issuer = TestIssuer::start().await;
    let first = SigningKey::rsa("2026-01");
    issuer.publish(&first);
    let app = spawn_app_with(|c| {
        jwt_mode(&issuer)(c);
        c.auth.jwt_jwks_url = Some(issuer.jwks_url());
        c.auth.jwt_scope_claim = "permissions".into();
        c.auth.jwt_owner_claim = "tenant".into();
    })
    .await;
    let claims = |permissions: Value| {
        let mut claims = issuer.claims(AUDIENCE, "user-1", "", 300);
        claims["permissions"] = permissions;
        claims["tenant"] = json!("acme");
        claims
    };
    let token = first.sign(&claims(json!(["read", "submit"])));
    let list = app.get_as(&token, "/api/v1/jobs/").send().await.unwrap();
    assert_eq!(list.status(), 200);
    let fetched = issuer.jwks_fetches();
    assert_eq!(fetched, 1, "fetched once at start-up");
    // Made-up key ids: at most one more fetch within the interval.
    for i in 0..20 {
        let rogue = SigningKey::ed(&format!("made-up-{i}"));
        let (status, _) = status_and_detail(&app, &rogue.sign(&claims(json!(["read"])))).await;
        assert_eq!(status, 401);
    }
    assert!(
        issuer.jwks_fetches() <= fetched + 1,
        "{} fetches",
        issuer.jwks_fetches()
    );
    // The rotation: a new key published; once the interval has passed a token with it works.
    let second = SigningKey::ed("2026-02");
    issuer.publish(&second);
    let rotated = second.sign(&claims(json!(["read"])));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = status_and_detail(&app, &rotated).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401, "{text}");
        assert!(
            std::time::Instant::now() < until,
            "the new key was never fetched: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The owner came from JWT_OWNER_CLAIM.
    let response = app
        .upload_as(&second.sign(&claims(json!(["submit", "read"]))), "")
        .await;
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = app.wait_finished_as(&rotated, &id, DEADLINE).await;
    assert_eq!(job["owner"], "acme");
}

/// An issuer that cannot be reached: start-up goes on, tokens are answered 503 (not 401: the
/// token may be fine), and it works once the issuer is back.
#[tokio::test]
async fn an_unreachable_issuer_gives_503_until_it_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(|c| {
        c.auth.auth_mode = AuthMode::Jwt;
        c.auth.jwt_issuer = Some(url.clone());
        c.auth.jwt_audience = Some(AUDIENCE.into());
        c.auth.jwt_jwks_refresh_seconds = 0;
    })
    .await;
    let key = SigningKey::rsa("k1");
    let token = |issuer: &str| {
        let now = chrono::Utc::now().timestamp();
        key.sign(&json!({"iss": issuer, "aud": AUDIENCE, "sub": "alice", "scope": "read", "exp": now + 300}))
    };
    let response = app.get_as(&token(&url), "/api/v1/jobs/").send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, text) = detail(response).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("JWKS"), "{text}");
    let issuer = TestIssuer::start_on(port).await;
    issuer.publish(&key);
    assert_eq!(status_and_detail(&app, &token(&issuer.url)).await.0, 200);
}

#[tokio::test]
async fn jwt_mode_needs_an_issuer_and_an_audience_and_refuses_symmetric_algorithms() {
    for (issuer, audience, algorithms, expected) in [
        (None, Some("a"), "RS256", "JWT_ISSUER"),
        (Some("http://127.0.0.1:9"), None, "RS256", "JWT_AUDIENCE"),
        (Some("http://127.0.0.1:9"), Some("a"), "HS256", "symmetric"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ApiConfig::for_tests(dir.path());
        config.auth.auth_mode = AuthMode::Jwt;
        config.auth.jwt_issuer = issuer.map(str::to_owned);
        config.auth.jwt_audience = audience.map(str::to_owned);
        config.auth.jwt_algorithms = algorithms.into();
        let err = thumbnail_api::Application::build(config)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
}
