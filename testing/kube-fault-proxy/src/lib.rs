//! Test-only: a fault-injecting proxy in front of a real Kubernetes API server. See README.md.
#![forbid(unsafe_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One fault: which requests it matches and what happens to them.
#[derive(Debug, Clone)]
struct Fault {
    method: String,
    /// Matches when the request's path (without the query) contains this.
    path: String,
    action: Action,
}

#[derive(Debug, Clone)]
enum Action {
    /// Held until the fault is cleared.
    Hang,
    /// Answered with this status, this many more times.
    Fail { status: u16, times: usize },
    /// The next watch gets a 410 Gone event.
    Gone,
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// `forwarded`, `hung`, `failed` or `gone`.
    pub outcome: &'static str,
}

#[derive(Default)]
struct Faults {
    faults: Vec<Fault>,
    seen: Vec<Seen>,
    /// Cancelled (and replaced) by `clear`: releases hung requests.
    release: CancellationToken,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    faults: Mutex<Faults>,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Proxy to `upstream` (`https://127.0.0.1:6443`), trusting `ca_pem` for its certificate.
    pub async fn start(upstream: &str, ca_pem: &[u8]) -> FaultProxy {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("a PEM CA certificate");
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .build()
            .expect("an HTTPS client");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            faults: Mutex::new(Faults::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let stop = CancellationToken::new();
        let router = axum::Router::new().fallback(forward).with_state(shared.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
        });
        FaultProxy { addr, shared, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn add(&self, method: &str, path: &str, action: Action) {
        self.shared.faults.lock().expect("faults").faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            action,
        });
    }

    /// Hold requests `method` (`*`: any) whose path contains `path` until [`FaultProxy::clear`].
    pub fn hang(&self, method: &str, path: &str) {
        self.add(method, path, Action::Hang);
    }

    /// Answer the next `times` matching requests with `status`, without forwarding them.
    pub fn fail(&self, method: &str, path: &str, status: u16, times: usize) {
        self.add(method, path, Action::Fail { status, times });
    }

    /// Answer the next watch whose path contains `path` with a 410 Gone event.
    pub fn gone_next_watch(&self, path: &str) {
        self.add("GET", path, Action::Gone);
    }

    /// Remove every fault and release the hung requests (they are then forwarded).
    pub fn clear(&self) {
        let mut faults = self.shared.faults.lock().expect("faults");
        faults.faults.clear();
        let release = std::mem::take(&mut faults.release);
        release.cancel();
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.faults.lock().expect("faults").seen.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.clear();
        self.stop.cancel();
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    }))
    .expect("JSON")
}

/// What to do with a request: the first matching fault decides (used-up failures are removed).
fn decide(shared: &Shared, method: &str, path: &str, watch: bool) -> (Option<Action>, CancellationToken) {
    let mut faults = shared.faults.lock().expect("faults");
    let release = faults.release.clone();
    let found = faults.faults.iter().position(|f| {
        (f.method == "*" || f.method == method)
            && path.contains(&f.path)
            && (!matches!(f.action, Action::Gone) || watch)
    });
    let action = found.map(|i| {
        let action = faults.faults[i].action.clone();
        match &mut faults.faults[i].action {
            Action::Fail { times, .. } => {
                *times -= 1;
                if *times == 0 {
                    faults.faults.remove(i);
                }
            }
            Action::Gone => {
                faults.faults.remove(i);
            }
            Action::Hang => {}
        }
        action
    });
    (action, release)
}

fn record(shared: &Shared, method: &str, path_and_query: &str, outcome: &'static str) {
    shared.faults.lock().expect("faults").seen.push(Seen {
        method: method.to_owned(),
        path_and_query: path_and_query.to_owned(),
        outcome,
    });
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let uri = request.uri().clone();
    let path = uri.path().to_owned();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let (action, release) = decide(&shared, &method, &path, watch);
    match action {
        Some(Action::Hang) => {
            record(&shared, &method, &path_and_query, "hung");
            release.cancelled().await;
        }
        Some(Action::Fail { status, .. }) => {
            record(&shared, &method, &path_and_query, "failed");
            let body = status_body(status, "InternalError", "injected by kube-fault-proxy");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [("content-type", "application/json")], body).into_response();
        }
        Some(Action::Gone) => {
            record(&shared, &method, &path_and_query, "gone");
            let status = status_body(
                410,
                "Expired",
                "too old resource version (injected by kube-fault-proxy)",
            );
            let status: serde_json::Value = serde_json::from_slice(&status).expect("JSON");
            let mut event =
                serde_json::to_vec(&serde_json::json!({"type": "ERROR", "object": status})).expect("JSON");
            event.push(b'\n');
            return (StatusCode::OK, [("content-type", "application/json")], event).into_response();
        }
        None => record(&shared, &method, &path_and_query, "forwarded"),
    }
    let url = format!("{}{}", shared.upstream, path_and_query);
    let mut headers = request.headers().clone();
    headers.remove(http::header::HOST);
    let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let upstream = match shared
        .client
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) => {
            let body = status_body(
                502,
                "ServiceUnavailable",
                &format!("kube-fault-proxy: upstream: {e}"),
            );
            return (
                StatusCode::BAD_GATEWAY,
                [("content-type", "application/json")],
                body,
            )
                .into_response();
        }
    };
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if name == http::header::TRANSFER_ENCODING || name == http::header::CONNECTION {
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            out_headers.append(name.clone(), value);
        }
    }
    // Streamed: watches stay open as long as the API server keeps them.
    let stream = upstream.bytes_stream().map_err(std::io::Error::other);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response
}
