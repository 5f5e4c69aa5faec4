//! The upload page at `/`: one HTML page and its script and style sheet, embedded in the binary
//! (no CDN, no build step). It is a public page, so it needs no credentials in any AUTH_MODE: the
//! API calls it makes carry the key the user types (kept in the browser's session storage).
//!
//! Assets are served under names carrying their content hash (`/assets/app.<hash>.js`), cached
//! for a year as immutable; the page itself is revalidated every time (`no-cache` with an ETag),
//! so a new binary's assets are picked up at once. Every answer carries a Content-Security-Policy
//! without inline script or style: images may come from this origin, `data:`/`blob:` URLs and the
//! object store's public origin (where S3's presigned download links point).
use crate::error::ApiError;
use crate::extract::Path;
use crate::state::SharedState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One embedded file, under the name the HTML refers to it by.
struct Embedded {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: &str = include_str!("../../assets/index.html");

const ASSETS: [Embedded; 3] = [
    Embedded {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Embedded {
        name: "thumbhash.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/thumbhash.js"),
    },
    Embedded {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
];

/// An asset as served.
struct Asset {
    /// The versioned file name, e.g. `app.1a2b3c4d5e6f.js`.
    file: String,
    content_type: &'static str,
    etag: HeaderValue,
    body: &'static [u8],
}

/// The page, its assets and the headers they share; built once per router.
struct Page {
    html: String,
    html_etag: HeaderValue,
    assets: Vec<Asset>,
    csp: HeaderValue,
}

/// The first 12 hex digits of the SHA-256 of `body`: a version that changes with the content.
pub fn content_version(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))[..12].to_owned()
}

/// `app.js` with version `v` is `app.v.js`.
pub fn versioned_name(name: &str, version: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{version}.{ext}"),
        None => format!("{name}.{version}"),
    }
}

/// The origin (`scheme://host[:port]`) of an http(s) URL, e.g. the object store's endpoint.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    match parsed.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

/// The page's Content-Security-Policy: nothing inline, everything from this origin, images also
/// from `image_origin` (the object store's, when downloads are served from elsewhere).
pub fn content_security_policy(image_origin: Option<&str>) -> String {
    let extra = image_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{extra}; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

/// Whether an `If-None-Match` value names `etag` (or is `*`).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn quoted_etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("hex is a valid header value")
}

impl Page {
    fn new(object_endpoint: &str) -> Self {
        let mut html = INDEX.to_owned();
        let assets: Vec<Asset> = ASSETS
            .iter()
            .map(|embedded| {
                let version = content_version(embedded.body);
                let file = versioned_name(embedded.name, &version);
                // The HTML names each asset as `/assets/NAME`; it is served versioned.
                html = html.replace(
                    &format!("\"/assets/{}\"", embedded.name),
                    &format!("\"/assets/{file}\""),
                );
                Asset {
                    file,
                    content_type: embedded.content_type,
                    etag: quoted_etag(&version),
                    body: embedded.body,
                }
            })
            .collect();
        let html_etag = quoted_etag(&content_version(html.as_bytes()));
        let csp = content_security_policy(origin_of(object_endpoint).as_deref());
        Page {
            html,
            html_etag,
            assets,
            csp: HeaderValue::from_str(&csp).expect("the policy is ASCII"),
        }
    }

    /// The headers of every answer: what a public page must say about itself.
    fn security_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
    }

    /// 200 with `body`, or 304 when the client already has this version.
    fn answer(
        &self,
        request: &HeaderMap,
        etag: &HeaderValue,
        content_type: &'static str,
        cache_control: &'static str,
        body: Vec<u8>,
    ) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| etag_matches(v, etag.to_str().unwrap_or_default()));
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = body.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
        self.security_headers(headers);
        response
    }

    fn index(&self, request: &HeaderMap) -> Response {
        self.answer(
            request,
            &self.html_etag,
            "text/html; charset=utf-8",
            "no-cache",
            self.html.as_bytes().to_vec(),
        )
    }

    fn asset(&self, request: &HeaderMap, file: &str) -> Response {
        match self.assets.iter().find(|a| a.file == file) {
            Some(asset) => self.answer(
                request,
                &asset.etag,
                asset.content_type,
                "public, max-age=31536000, immutable",
                asset.body.to_vec(),
            ),
            None => {
                let mut response =
                    ApiError::NotFound(format!("no asset '{file}' (asset names carry their version)"))
                        .into_response();
                self.security_headers(response.headers_mut());
                response
            }
        }
    }
}

/// The page's routes; `object_endpoint` is where download links point (its origin may serve
/// images).
pub fn router(object_endpoint: &str) -> axum::Router<SharedState> {
    let page = Arc::new(Page::new(object_endpoint));
    let for_assets = page.clone();
    axum::Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let page = page.clone();
                async move { page.index(&headers) }
            }),
        )
        .route(
            "/assets/{file}",
            get(move |headers: HeaderMap, Path(file): Path<String>| {
                let page = for_assets.clone();
                async move { page.asset(&headers, &file) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_named_by_their_content() {
        assert_eq!(versioned_name("app.js", "abc"), "app.abc.js");
        assert_eq!(versioned_name("LICENSE", "abc"), "LICENSE.abc");
        assert_eq!(content_version(b"x").len(), 12);
        assert_ne!(content_version(b"x"), content_version(b"y"));
    }

    #[test]
    fn the_html_names_only_versioned_assets() {
        let page = Page::new("http://127.0.0.1:8080");
        for asset in &page.assets {
            assert!(
                page.html.contains(&format!("\"/assets/{}\"", asset.file)),
                "{}",
                asset.file
            );
        }
        for embedded in &ASSETS {
            assert!(!page.html.contains(&format!("\"/assets/{}\"", embedded.name)));
        }
    }

    #[test]
    fn images_may_come_from_the_object_store() {
        assert_eq!(
            origin_of("https://s3.eu-west-1.amazonaws.com").as_deref(),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            origin_of("http://minio:9000/some/path").as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(
            origin_of("https://cdn.example:443/").as_deref(),
            Some("https://cdn.example")
        );
        assert_eq!(origin_of("file:///tmp"), None);
        assert_eq!(origin_of("not a url"), None);
        let csp = content_security_policy(Some("http://minio:9000"));
        assert!(
            csp.contains("img-src 'self' data: blob: http://minio:9000;"),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"));
        assert!(!csp.contains("unsafe"));
        assert!(content_security_policy(None).contains("img-src 'self' data: blob:;"));
    }

    #[test]
    fn if_none_match_lists_are_understood() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
