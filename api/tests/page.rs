//! The upload page over plain HTTP: served without credentials in every mode, with the headers
//! of a public page, nothing inline, and assets cached by their content hash.
mod common;

use common::issuer::TestIssuer;
use common::{Stores, spawn_app_with};
use reqwest::header;
use thumbnail_api::config::AuthMode;

const CSP_SELF: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:";
const CSP_REST: &str = "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn header_of<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The `/assets/...` paths an HTML text refers to.
fn asset_paths(html: &str) -> Vec<String> {
    html.match_indices("\"/assets/")
        .map(|(at, _)| {
            let rest = &html[at + 1..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_page_needs_no_credentials_and_sends_the_headers_of_a_public_page() {
    let issuer = TestIssuer::start().await;
    for mode in [AuthMode::None, AuthMode::ApiKey, AuthMode::Jwt] {
        let app = spawn_app_with(|c| {
            c.auth.auth_mode = mode;
            if mode == AuthMode::Jwt {
                c.auth.jwt_issuer = Some(issuer.url.clone());
                c.auth.jwt_audience = Some("thumbnail".into());
            }
        })
        .await;
        let response = app.client.get(app.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{mode:?}");
        assert_eq!(header_of(&response, "content-type"), "text/html; charset=utf-8");
        let csp = header_of(&response, "content-security-policy").to_owned();
        // The embedded store's links are on this server's PUBLIC_URL (http://localhost:PORT).
        let public = app.state.objects.endpoint_url().to_owned();
        assert!(public.starts_with("http://localhost:"), "{public}");
        assert_eq!(csp, format!("{CSP_SELF} {public}; {CSP_REST}"), "{mode:?}");
        assert_eq!(header_of(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header_of(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header_of(&response, "cache-control"), "no-cache");
        let etag = header_of(&response, "etag").to_owned();
        let html = response.text().await.unwrap();
        assert!(
            html.contains("<input id=\"files\" type=\"file\" multiple>"),
            "{html}"
        );
        if mode != AuthMode::None {
            let api = app.client.get(app.url("/api/v1/jobs/")).send().await.unwrap();
            assert_eq!(
                api.status(),
                401,
                "{mode:?}: the API itself still needs credentials"
            );
        }
        // Unchanged: 304, with the same headers.
        let again = app
            .client
            .get(app.url("/"))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(header_of(&again, "content-security-policy"), csp);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_html_has_no_inline_script_or_style() {
    let app = spawn_app_with(|_| {}).await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lower = html.to_ascii_lowercase();
    let scripts: Vec<&str> = lower
        .match_indices("<script")
        .map(|(at, _)| &lower[at..])
        .collect();
    assert_eq!(scripts.len(), 2, "{html}");
    for script in scripts {
        let tag = &script[..script.find('>').unwrap() + 1];
        assert!(tag.contains(" src=\"/assets/"), "a script without src: {tag}");
        assert!(
            script[tag.len()..].starts_with("</script>"),
            "a script with inline code: {tag}"
        );
    }
    assert!(!lower.contains("<style"), "an inline style sheet");
    assert!(!lower.contains("style="), "an inline style attribute");
    assert!(!lower.contains("javascript:"), "a javascript: URL");
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onchange=",
        " onsubmit=",
        " ondrop=",
    ] {
        assert!(!lower.contains(handler), "an inline event handler: {handler}");
    }
}

#[tokio::test]
async fn assets_are_cached_by_their_content_hash() {
    let app = spawn_app_with(|_| {}).await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let paths = asset_paths(&html);
    assert_eq!(paths.len(), 3, "{paths:?}");
    for path in &paths {
        // `/assets/app.<12 hex digits>.js`
        let version = path.split('.').nth(1).unwrap();
        assert!(
            version.len() == 12 && version.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}"
        );
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let expected_type = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(header_of(&response, "content-type"), expected_type);
        assert_eq!(
            header_of(&response, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header_of(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header_of(&response, "etag"), format!("\"{version}\""));
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty());
        let again = app
            .client
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, format!("\"{version}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    // The unversioned names, and anything else, are not assets.
    for path in [
        "/assets/app.js",
        "/assets/../Cargo.toml",
        "/assets/nothing.000000000000.js",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // The page is not part of the API's description.
    let document: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(!paths.contains_key("/") && !paths.keys().any(|p| p.starts_with("/assets")));
}

/// With S3, download links point at the object store's public endpoint: its origin is where the
/// page's images come from.
#[tokio::test]
async fn images_may_come_from_the_object_stores_public_origin() {
    let app = Stores::PostgresS3
        .spawn(|c| c.store.s3_public_endpoint_url = Some("http://images.example:9000/".into()))
        .await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, "content-security-policy"),
        format!("{CSP_SELF} http://images.example:9000; {CSP_REST}")
    );
}
