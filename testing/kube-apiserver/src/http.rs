//! The HTTP front end: URL parsing, discovery, the REST verbs and watch streams.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::store::{
    DeleteOptions, ListOptions, PatchType, Propagation, RequestRecord, Selectors, Store, Subresource,
    WriteOptions,
};
use crate::types::ResourceType;

pub(crate) fn router(store: Store) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(store)
}

fn json_response(code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn fault_error(code: u16) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiError::new(code, reason, format!("injected fault ({code})"))
}

/// A parsed resource URL.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
    watch_path: bool,
}

fn parse_resource_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), (*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => ((*g).to_owned(), (*v).to_owned(), rest),
        _ => return None,
    };
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let owned = |s: Option<&&str>| s.map(|x| (*x).to_owned());
    let t = match rest {
        [] => return None,
        ["namespaces", ns, plural, tail @ ..] => Target {
            group,
            version,
            namespace: Some((*ns).to_owned()),
            plural: (*plural).to_owned(),
            name: owned(tail.first()),
            sub: owned(tail.get(1)),
            watch_path,
        },
        [plural, tail @ ..] => Target {
            group,
            version,
            namespace: None,
            plural: (*plural).to_owned(),
            name: owned(tail.first()),
            sub: owned(tail.get(1)),
            watch_path,
        },
    };
    Some(t)
}

fn verb_for(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

async fn handle(
    AxState(store): AxState<Store>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: HashMap<String, String> = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut record = RequestRecord {
        verb: "other".into(),
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_owned(),
        resource: String::new(),
        namespace: None,
        name: None,
        content_type: content_type.clone(),
        status: 0,
    };
    let resp = if let Some(r) = discovery(&store, &path, &headers) {
        record.verb = "discovery".into();
        r
    } else if method == Method::POST && path == SELF_SUBJECT_ACCESS_REVIEWS {
        record.verb = "create".into();
        record.resource = "selfsubjectaccessreviews".into();
        access_review(&store, &body)
    } else if let Some(mut t) = parse_resource_path(&path) {
        // `/api/v1/namespaces/{name}/{status|finalize}` addresses the namespace itself.
        if t.group.is_empty()
            && t.namespace.is_some()
            && t.name.is_none()
            && (t.plural == "status" || t.plural == "finalize")
        {
            t.sub = Some(std::mem::take(&mut t.plural));
            t.name = t.namespace.take();
            t.plural = "namespaces".into();
        }
        let watch = t.watch_path || matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        record.verb = verb_for(&method, &t, watch).into();
        record.resource = match &t.sub {
            Some(s) => format!("{}/{s}", t.plural),
            None => t.plural.clone(),
        };
        record.namespace = t.namespace.clone();
        record.name = t.name.clone();
        match store.take_fault(&record.verb, &record.resource) {
            Some(code) => error_response(&fault_error(code)),
            None => match resource_request(&store, &method, &t, watch, &query, &headers, content_type, &body)
            {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
        }
    } else {
        error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    };
    record.status = resp.status().as_u16();
    tracing::debug!(verb = %record.verb, path = %record.path, status = record.status, "request");
    store.log_request(record);
    resp
}

const SELF_SUBJECT_ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// Answers a `SelfSubjectAccessReview` from the deny list (see [`Store::deny`]): the review is
/// echoed back with `status.allowed`, as a real API server does (nothing is stored).
fn access_review(store: &Store, body: &Bytes) -> Response {
    let mut review = match parse_body(body, false) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let text = |k: &str| attrs[k].as_str().unwrap_or_default().to_owned();
    let mut resource = text("resource");
    if !text("subresource").is_empty() {
        resource = format!("{resource}/{}", text("subresource"));
    }
    let allowed = !store.is_denied(&text("verb"), &text("group"), &resource);
    review["status"] = if allowed {
        serde_json::json!({ "allowed": true, "reason": "kube-test-apiserver allows everything not denied" })
    } else {
        serde_json::json!({ "allowed": false, "reason": "denied by the test" })
    };
    json_response(201, &review)
}

fn discovery(store: &Store, path: &str, headers: &HeaderMap) -> Option<Response> {
    let types = store.resource_types();
    let path = path.trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let v = match path {
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-test-apiserver",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        "/healthz" | "/livez" | "/readyz" => {
            return Some((StatusCode::OK, "ok").into_response());
        }
        "/api" => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }),
        "/apis" => {
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for t in types.iter().filter(|t| !t.group.is_empty()) {
                let vs = groups.entry(t.group.clone()).or_default();
                if !vs.contains(&t.version) {
                    vs.push(t.version.clone());
                }
            }
            let groups: Vec<Value> = groups.iter().map(|(g, vs)| api_group(g, vs)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        _ => {
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["api", v] => resource_list(&types, "", v)?,
                ["apis", g] => {
                    let vs: Vec<String> = types
                        .iter()
                        .filter(|t| t.group == *g)
                        .map(|t| t.version.clone())
                        .fold(Vec::new(), |mut acc, v| {
                            if !acc.contains(&v) {
                                acc.push(v);
                            }
                            acc
                        });
                    if vs.is_empty() {
                        return None;
                    }
                    let mut grp = api_group(g, &vs);
                    grp["apiVersion"] = json!("v1");
                    grp
                }
                ["apis", g, v] => resource_list(&types, g, v)?,
                _ => return None,
            }
        }
    };
    Some(json_response(200, &v))
}

fn api_group(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "name": g, "versions": vs, "preferredVersion": vs[0].clone()})
}

fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let matching: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if matching.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for t in matching {
        resources.push(json!({
            "name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced,
            "kind": t.kind, "verbs": verbs,
        }));
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn wants_metadata_only(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn to_partial(v: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"].clone()})
}

fn parse_body(body: &Bytes, yaml_ok: bool) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => serde_yaml::from_slice::<Value>(body)
            .map_err(|ye| ApiError::bad_request(format!("invalid body: {e}; as YAML: {ye}"))),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

fn list_options(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    Ok(ListOptions {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        limit,
        continue_token: query.get("continue").cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query.get("resourceVersionMatch").cloned(),
    })
}

fn delete_options(query: &HashMap<String, String>, body: &Value) -> DeleteOptions {
    let policy = body["propagationPolicy"]
        .as_str()
        .or(query.get("propagationPolicy").map(String::as_str));
    let propagation = match policy {
        Some("Orphan") => Propagation::Orphan,
        Some("Foreground") => Propagation::Foreground,
        _ if body["orphanDependents"].as_bool() == Some(true) => Propagation::Orphan,
        _ => Propagation::Background,
    };
    DeleteOptions {
        dry_run: dry_run(query)
            || body["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("All"))),
        uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
        propagation,
    }
}

#[allow(clippy::too_many_arguments)]
fn resource_request(
    store: &Store,
    method: &Method,
    t: &Target,
    watch: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    content_type: Option<String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let rt = store
        .with_state(|s| s.find_type(&t.group, &t.version, &t.plural))
        .ok_or_else(not_found)?;
    if !rt.namespaced && t.namespace.is_some() {
        return Err(not_found());
    }
    let sub = match t.sub.as_deref() {
        None => Subresource::Main,
        Some("status") if rt.status_subresource => Subresource::Status,
        Some(_) => return Err(not_found()),
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let meta_only = wants_metadata_only(headers);
    let render = |v: Value| if meta_only { to_partial(&v) } else { v };
    let wopts = || WriteOptions {
        dry_run: dry_run(query),
        field_manager: query.get("fieldManager").cloned(),
        force: query.get("force").is_some_and(|f| f == "true"),
    };
    match (method.as_str(), t.name.as_deref()) {
        ("GET", Some(name)) => {
            let v = store.with_state(|s| s.get(&rt, &ns, name))?;
            Ok(json_response(200, &render(v)))
        }
        ("GET", None) if watch => {
            let sel = Selectors::parse(
                query.get("labelSelector").map(String::as_str),
                query.get("fieldSelector").map(String::as_str),
            )?;
            Ok(start_watch(store, rt, t.namespace.clone(), sel, query, meta_only))
        }
        ("GET", None) => {
            let opts = list_options(query)?;
            let mut list = store.with_state(|s| s.list(&rt, t.namespace.as_deref(), &opts))?;
            if meta_only {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .map(|a| a.iter().map(to_partial).collect())
                    .unwrap_or_default();
                list["items"] = Value::Array(items);
                list["kind"] = json!("PartialObjectMetadataList");
                list["apiVersion"] = json!("meta.k8s.io/v1");
            }
            Ok(json_response(200, &list))
        }
        ("POST", None) => {
            let obj = parse_body(body, false)?;
            let v = store.with_state(|s| s.create(&rt, &ns, obj, &wopts()))?;
            Ok(json_response(201, &render(v)))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(body, false)?;
            let v = store.with_state(|s| s.update_with(&rt, &ns, name, sub, &wopts(), true, |_| Ok(obj)))?;
            Ok(json_response(200, &render(v)))
        }
        ("PATCH", Some(name)) => {
            let ptype = content_type
                .as_deref()
                .and_then(PatchType::from_content_type)
                .ok_or_else(|| {
                    ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format: {content_type:?}"),
                    )
                })?;
            let patch = parse_body(body, ptype == PatchType::Apply)?;
            let (v, created) = store.with_state(|s| s.patch(&rt, &ns, name, sub, ptype, patch, &wopts()))?;
            Ok(json_response(if created { 201 } else { 200 }, &render(v)))
        }
        ("DELETE", Some(name)) => {
            let b = parse_body(body, false).unwrap_or(Value::Null);
            let v = store.with_state(|s| s.delete(&rt, &ns, name, &delete_options(query, &b)))?;
            Ok(json_response(200, &render(v)))
        }
        ("DELETE", None) => {
            let b = parse_body(body, false).unwrap_or(Value::Null);
            let lopts = list_options(query)?;
            let v = store.with_state(|s| {
                s.delete_collection(&rt, t.namespace.as_deref(), &lopts, &delete_options(query, &b))
            })?;
            Ok(json_response(200, &v))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}",
            t.plural
        ))),
    }
}

fn event_line(etype: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": meta}),
    )
}

fn start_watch(
    store: &Store,
    rt: ResourceType,
    ns: Option<String>,
    sel: Selectors,
    query: &HashMap<String, String>,
    meta_only: bool,
) -> Response {
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let rv = query.get("resourceVersion").cloned();
    let start = store.with_state(|s| s.watch_start(&rt, ns.as_deref(), &sel, rv.as_deref(), send_initial));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let store = store.clone();
    tokio::spawn(async move {
        let render = |v: Value| if meta_only { to_partial(&v) } else { v };
        let (mut pos, initial) = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                return;
            }
        };
        for obj in initial {
            if tx.send(event_line("ADDED", &render(obj))).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(bookmark(&rt, pos, true)).await.is_err() {
            return;
        }
        let mut rv_rx = store.inner.notify.subscribe();
        let mut shutdown = store.inner.shutdown.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let interval = store.inner.bookmark_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            rv_rx.borrow_and_update();
            match store.with_state(|s| s.watch_poll(&rt, ns.as_deref(), &sel, pos)) {
                Ok((events, new_pos)) => {
                    for (etype, obj) in events {
                        if tx.send(event_line(etype.as_str(), &render(obj))).await.is_err() {
                            return;
                        }
                    }
                    pos = new_pos;
                }
                Err(e) => {
                    let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                    return;
                }
            }
            tokio::select! {
                changed = rv_rx.changed() => if changed.is_err() { return },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(bookmark(&rt, pos, false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(bookmark(&rt, pos, false)).await;
                    }
                    return;
                }
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(&ApiError::new(500, "InternalError", "response build failed")))
}
