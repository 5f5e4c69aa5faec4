//! The in-memory object store: objects, the global resourceVersion, the watch history and all write
//! semantics (generation, status subresource, finalizers, garbage collection, apply).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::patch::{self, FieldSet};
use crate::selector::{FieldSelector, LabelSelector};
use crate::types::{ResourceKey, ResourceType};

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
struct HistEntry {
    rv: u64,
    key: ResourceKey,
    ns: String,
    etype: EventType,
    obj: Arc<Value>,
    old: Option<Arc<Value>>,
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself.
    Main,
    /// The `/status` subresource.
    Status,
}

/// Options of a create/update/patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and compute, but do not persist.
    pub dry_run: bool,
    /// `fieldManager` (required for apply).
    pub field_manager: Option<String>,
    /// `force` (apply only): take ownership of conflicting fields.
    pub force: bool,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Dependents are deleted after the owner (the default here for every kind).
    #[default]
    Background,
    /// The owner gets `deletionTimestamp` and the `foregroundDeletion` finalizer, and is removed once
    /// all its dependents are gone.
    Foreground,
    /// Dependents are kept and their ownerReference to the owner is removed.
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy`.
    pub propagation: Propagation,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml`
    Apply,
}

impl PatchType {
    /// From a `Content-Type` (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`
    pub label_selector: Option<String>,
    /// `fieldSelector`
    pub field_selector: Option<String>,
    /// `limit`
    pub limit: Option<usize>,
    /// `continue`
    pub continue_token: Option<String>,
    /// `resourceVersion`
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`
    pub resource_version_match: Option<String>,
}

pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(labels.unwrap_or_default())?,
            fields: FieldSelector::parse(fields.unwrap_or_default())?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

pub(crate) struct State {
    rv: u64,
    floor: u64,
    history: VecDeque<HistEntry>,
    history_limit: usize,
    types: Vec<ResourceType>,
    objects: HashMap<ResourceKey, BTreeMap<(String, String), Value>>,
}

/// One recorded HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// or `discovery` / `other` for non-resource paths.
    pub verb: String,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// `plural` or `plural/subresource` (empty for non-resource paths).
    pub resource: String,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Object name from the URL, if any.
    pub name: Option<String>,
    /// `Content-Type` of the request, if any.
    pub content_type: Option<String>,
    /// HTTP status of the response.
    pub status: u16,
}

#[derive(Debug, Clone)]
pub(crate) struct Fault {
    verb: String,
    resource: String,
    code: u16,
    remaining: usize,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    pub(crate) notify: watch::Sender<u64>,
    pub(crate) shutdown: watch::Sender<bool>,
    faults: Mutex<Vec<Fault>>,
    /// Denied (verb, group, resource[/subresource]) for SelfSubjectAccessReviews.
    denied: Mutex<Vec<(String, String, String)>>,
    log: Mutex<Vec<RequestRecord>>,
    pub(crate) bookmark_interval: Duration,
}

/// A handle on the server's state, for test harnesses to read and write objects without HTTP.
///
/// Writes made here have exactly the same semantics as over HTTP (resourceVersion bump, watch
/// events, generation, finalizers, garbage collection). Namespace arguments are `""` for
/// cluster-scoped kinds.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let obj = v.as_object_mut().expect("object");
    let m = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("object")
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn is_deleting(v: &Value) -> bool {
    meta_str(v, "deletionTimestamp").is_some()
}

fn valid_name(n: &str) -> bool {
    let ok_edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !n.is_empty()
        && n.len() <= 253
        && n.chars().all(|c| ok_edge(c) || c == '-' || c == '.')
        && n.starts_with(ok_edge)
        && n.ends_with(ok_edge)
}

/// Drops nulls and the empty metadata collections a real server never stores.
fn normalize(v: &mut Value) {
    patch::strip_nulls(v);
    let m = meta_mut(v);
    for k in [
        "finalizers",
        "ownerReferences",
        "labels",
        "annotations",
        "managedFields",
    ] {
        let empty = match m.get(k) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(k);
        }
    }
}

/// The part of an object whose changes bump `metadata.generation`.
fn spec_part(v: &Value) -> Value {
    let mut s = v.clone();
    if let Value::Object(m) = &mut s {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    s
}

fn generate_suffix() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

const FOREGROUND: &str = "foregroundDeletion";

fn crd_key() -> ResourceKey {
    ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "ns": ns, "name": name}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        v["ns"].as_str().ok_or_else(bad)?.to_owned(),
        v["name"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}

struct ManagedEntry {
    raw: Value,
    manager: String,
    subresource: String,
    apply: bool,
    fields: FieldSet,
}

fn managed_entries(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    raw: e.clone(),
                    manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_owned(),
                    apply: e["operation"].as_str() == Some("Apply"),
                    fields: patch::decode_fields(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    pub(crate) fn new(types: Vec<ResourceType>, history_limit: usize) -> Self {
        let mut s = Self {
            rv: 0,
            floor: 0,
            history: VecDeque::new(),
            history_limit,
            types: Vec::new(),
            objects: HashMap::new(),
        };
        for t in types {
            s.register(t);
        }
        s
    }

    pub(crate) fn register(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.group == rt.group && t.version == rt.version && t.plural == rt.plural));
        self.types.push(rt);
    }

    pub(crate) fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub(crate) fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn type_for_key(&self, key: &ResourceKey) -> Result<ResourceType, ApiError> {
        self.types
            .iter()
            .find(|t| t.key() == *key)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({key})"),
                )
            })
    }

    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    fn get_obj(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(key)?.get(&(ns.to_owned(), name.to_owned()))
    }

    fn with_type_meta(rt: &ResourceType, mut v: Value) -> Value {
        if let Value::Object(m) = &mut v {
            m.insert("apiVersion".into(), Value::String(rt.api_version()));
            m.insert("kind".into(), Value::String(rt.kind.clone()));
        }
        v
    }

    /// Persists a change: bumps the resourceVersion, stores/removes, records the event, notifies.
    fn commit(&mut self, rt: &ResourceType, ns: &str, name: &str, etype: EventType, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let key = rt.key();
        let map = self.objects.entry(key.clone()).or_default();
        let id = (ns.to_owned(), name.to_owned());
        let old = match etype {
            EventType::Deleted => map.remove(&id),
            _ => map.insert(id, obj.clone()),
        };
        self.history.push_back(HistEntry {
            rv: self.rv,
            key,
            ns: ns.to_owned(),
            etype,
            obj: Arc::new(obj.clone()),
            old: old.map(Arc::new),
        });
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        obj
    }

    pub(crate) fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    pub(crate) fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_obj(&rt.key(), ns, name)
            .map(|o| Self::with_type_meta(rt, o.clone()))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    pub(crate) fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let sel = Selectors::parse(opts.label_selector.as_deref(), opts.field_selector.as_deref())?;
        let mut after: Option<(String, String)> = None;
        let snapshot = if let Some(token) = opts.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let (rv, ns, name) = decode_continue(token)?;
            if rv < self.floor {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ));
            }
            after = Some((ns, name));
            rv
        } else {
            match opts
                .resource_version
                .as_deref()
                .filter(|r| !r.is_empty() && *r != "0")
            {
                Some(r) => {
                    let want: u64 = r
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?;
                    let not_older = opts.resource_version_match.as_deref() == Some("NotOlderThan");
                    if !not_older && want < self.floor {
                        return Err(ApiError::gone(format!(
                            "too old resource version: {want} ({})",
                            self.floor
                        )));
                    }
                    self.rv
                }
                None => self.rv,
            }
        };
        let mut items: Vec<((String, String), Value)> = Vec::new();
        let mut cont: Option<String> = None;
        let mut remaining = 0usize;
        if let Some(map) = self.objects.get(&rt.key()) {
            let iter = map
                .iter()
                .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons.as_str()))
                .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
                .filter(|(_, o)| sel.matches(o));
            for (id, o) in iter {
                if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    if cont.is_none()
                        && let Some(((lns, lname), _)) = items.last()
                    {
                        cont = Some(encode_continue(snapshot, lns, lname));
                    }
                    remaining += 1;
                    continue;
                }
                items.push((id.clone(), Self::with_type_meta(rt, o.clone())));
            }
        }
        let mut meta = json!({"resourceVersion": snapshot.to_string()});
        if let Some(c) = cont {
            meta["continue"] = Value::String(c);
            meta["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": meta,
            "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        }))
    }

    pub(crate) fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        normalize(&mut body);
        let body_ns = meta_str(&body, "namespace").unwrap_or_default().to_owned();
        let ns = if rt.namespaced {
            if !ns.is_empty() && !body_ns.is_empty() && ns != body_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            let ns = if ns.is_empty() { body_ns } else { ns.to_owned() };
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "a namespace is required for namespaced resources",
                ));
            }
            ns
        } else {
            String::new()
        };
        if meta_str(&body, "resourceVersion").is_some_and(|r| !r.is_empty()) {
            let name = meta_str(&body, "name").unwrap_or_default().to_owned();
            return Err(ApiError::invalid(
                &rt.group,
                &rt.plural,
                &name,
                "metadata.resourceVersion: Invalid value: resourceVersion should not be set on objects to be created",
            ));
        }
        let key = rt.key();
        let name = match meta_str(&body, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match meta_str(&body, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let prefix = prefix.to_owned();
                    let mut n = format!("{prefix}{}", generate_suffix());
                    for _ in 0..8 {
                        if self.get_obj(&key, &ns, &n).is_none() {
                            break;
                        }
                        n = format!("{prefix}{}", generate_suffix());
                    }
                    n
                }
                None => {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.plural,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.plural,
                &name,
                format!(
                    "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of \
                     lower case alphanumeric characters, '-' or '.'"
                ),
            ));
        }
        if self.get_obj(&key, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        let mut obj = Self::with_type_meta(rt, body);
        let m = meta_mut(&mut obj);
        m.insert("name".into(), Value::String(name.clone()));
        if rt.namespaced {
            m.insert("namespace".into(), Value::String(ns.clone()));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), Value::String(now()));
        m.insert("generation".into(), json!(1));
        for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(k);
        }
        if rt.status_subresource
            && let Value::Object(o) = &mut obj
        {
            o.remove("status");
        }
        if key == crd_key() {
            self.crd_established(&mut obj);
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let out = self.commit(rt, &ns, &name, EventType::Added, obj);
        Ok(out)
    }

    fn crd_established(&mut self, crd: &mut Value) {
        let types = ResourceType::from_crd_value(crd);
        let versions: Vec<Value> = types.iter().map(|t| Value::String(t.version.clone())).collect();
        for t in types {
            self.register(t);
        }
        let ts = now();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": versions,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": ts},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": ts},
            ],
        });
    }

    /// Normalises a candidate for an update of `cur` and computes the new stored object.
    fn finish_update(
        &self,
        rt: &ResourceType,
        cur: &Value,
        mut cand: Value,
        sub: Subresource,
        keep_managed: bool,
    ) -> Result<Value, ApiError> {
        let name = meta_str(cur, "name").unwrap_or_default().to_owned();
        normalize(&mut cand);
        let cand_managed = cand["metadata"]["managedFields"].clone();
        let mut new = match sub {
            Subresource::Status => {
                let mut n = cur.clone();
                match cand.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().map(|o| o.remove("status"));
                    }
                }
                n
            }
            Subresource::Main => {
                let mut n = cand;
                if rt.status_subresource {
                    match cur.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            n.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
                n
            }
        };
        if sub == Subresource::Main {
            let mut preserved = vec![
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "name",
                "namespace",
            ];
            if keep_managed {
                preserved.push("managedFields");
            }
            let cur_meta = cur["metadata"].as_object().cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for k in preserved {
                match cur_meta.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        } else if !keep_managed {
            meta_mut(&mut new).insert("managedFields".into(), cand_managed);
        }
        if let (Value::Object(n), Value::Object(c)) = (&mut new, cur) {
            for k in ["apiVersion", "kind"] {
                if let Some(v) = c.get(k) {
                    n.insert(k.into(), v.clone());
                }
            }
        }
        if is_deleting(cur) {
            let old = finalizers(cur);
            if finalizers(&new).iter().any(|f| !old.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.plural,
                    &name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        normalize(&mut new);
        if spec_part(cur) != spec_part(&new) {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        Ok(new)
    }

    /// Applies an update computed from the current object.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_with(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Subresource,
        opts: &WriteOptions,
        keep_managed: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let cur = self
            .get_obj(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let cand = f(&cur)?;
        if !cand.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if let Some(n) = meta_str(&cand, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let Some(n) = meta_str(&cand, "namespace").filter(|n| !n.is_empty())
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(rv) = meta_str(&cand, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta_str(&cur, "resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = self.finish_update(rt, &cur, cand, sub, keep_managed)?;
        if new == cur {
            return Ok(Self::with_type_meta(rt, cur));
        }
        if opts.dry_run {
            return Ok(Self::with_type_meta(rt, new));
        }
        let out = if is_deleting(&new) && finalizers(&new).is_empty() {
            self.remove(rt, ns, name, new, Propagation::Background)
        } else {
            let mut new = new;
            if rt.key() == crd_key() {
                self.crd_established(&mut new);
            }
            self.commit(rt, ns, name, EventType::Modified, new)
        };
        Ok(Self::with_type_meta(rt, out))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Subresource,
        ptype: PatchType,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        match ptype {
            PatchType::Apply => self.apply(rt, ns, name, sub, body, opts),
            _ => {
                let (g, p, n) = (rt.group.clone(), rt.plural.clone(), name.to_owned());
                self.update_with(rt, ns, name, sub, opts, true, move |cur| {
                    let mut doc = cur.clone();
                    match ptype {
                        PatchType::Merge => patch::merge_patch(&mut doc, &body),
                        PatchType::Strategic => patch::strategic_merge_patch(&mut doc, &body),
                        _ => patch::json_patch(&mut doc, &body)
                            .map_err(|e| ApiError::invalid(&g, &p, &n, e))?,
                    }
                    Ok(doc)
                })
                .map(|v| (v, false))
            }
        }
    }

    /// Simplified server-side apply. Returns the object and whether it was created.
    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Subresource,
        mut cfg: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let manager = opts.field_manager.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        })?;
        if !cfg.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        patch::strip_nulls(&mut cfg);
        let sub_name = if sub == Subresource::Status { "status" } else { "" };
        let mut fields_new = patch::applied_fields(&cfg);
        if rt.status_subresource {
            let want_status = sub == Subresource::Status;
            fields_new.retain(|p| (p[0] == "status") == want_status);
        }
        let entry = |fields: &FieldSet| {
            let mut e = json!({
                "manager": manager,
                "operation": "Apply",
                "apiVersion": rt.api_version(),
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": patch::encode_fields(fields),
            });
            if !sub_name.is_empty() {
                e["subresource"] = Value::String(sub_name.into());
            }
            e
        };
        let Some(cur) = self.get_obj(&rt.key(), ns, name).cloned() else {
            if sub == Subresource::Status {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            }
            let mut obj = cfg;
            let m = meta_mut(&mut obj);
            m.insert("name".into(), Value::String(name.to_owned()));
            if !fields_new.is_empty() {
                m.insert("managedFields".into(), json!([entry(&fields_new)]));
            }
            return self.create(rt, ns, obj, opts).map(|o| (o, true));
        };
        let mut entries = managed_entries(&cur);
        let mut conflicts = Vec::new();
        for e in entries
            .iter_mut()
            .filter(|e| e.apply && !(e.manager == manager && e.subresource == sub_name))
        {
            let mut lost = Vec::new();
            for q in &e.fields {
                for p in &fields_new {
                    if patch::overlaps(p, q) && patch::get_path(&cfg, p) != patch::get_path(&cur, p) {
                        conflicts.push((e.manager.clone(), p.clone()));
                        lost.push(q.clone());
                    }
                }
            }
            if opts.force {
                for q in lost {
                    e.fields.remove(&q);
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            conflicts.sort();
            conflicts.dedup();
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| {
                    json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""),
                           "field": patch::display_path(p)})
                })
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {}", patch::display_path(p)))
                .collect();
            let n = conflicts.len();
            let plural = if n == 1 { "" } else { "s" };
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Apply failed with {n} conflict{plural}: {}", list.join("\n")),
            )
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes})));
        }
        let (mine, others): (Vec<ManagedEntry>, Vec<ManagedEntry>) = entries
            .into_iter()
            .partition(|e| e.apply && e.manager == manager && e.subresource == sub_name);
        let old_fields: FieldSet = mine.iter().flat_map(|e| e.fields.iter().cloned()).collect();
        let mut doc = cur.clone();
        for r in old_fields.difference(&fields_new) {
            let owned_elsewhere = others
                .iter()
                .any(|e| e.apply && e.fields.iter().any(|q| patch::overlaps(q, r)));
            if !owned_elsewhere {
                patch::remove_path(&mut doc, r);
            }
        }
        patch::deep_merge(&mut doc, &cfg);
        let mut new_entries: Vec<Value> = Vec::new();
        for e in others {
            if e.apply && e.fields.is_empty() {
                continue;
            }
            let mut raw = e.raw;
            if e.apply {
                raw["fieldsV1"] = patch::encode_fields(&e.fields);
            }
            new_entries.push(raw);
        }
        if !fields_new.is_empty() {
            match mine.into_iter().next() {
                Some(e) if old_fields == fields_new => new_entries.push(e.raw),
                _ => new_entries.push(entry(&fields_new)),
            }
        }
        meta_mut(&mut doc).insert("managedFields".into(), Value::Array(new_entries));
        self.update_with(rt, ns, name, sub, opts, false, move |_| Ok(doc))
            .map(|v| (v, false))
    }

    /// Removes an object (finalizers already empty), records DELETED, and garbage-collects dependents.
    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str, obj: Value, prop: Propagation) -> Value {
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_owned();
        let out = self.commit(rt, ns, name, EventType::Deleted, obj);
        if rt.key() == ResourceKey::new("", "namespaces") {
            self.delete_namespace_contents(name);
        }
        if rt.key() == crd_key() {
            self.drop_crd(&out);
        }
        if !uid.is_empty() {
            self.collect_garbage(&uid, prop);
        }
        let owners: Vec<String> = out["metadata"]["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for owner in owners {
            self.finish_foreground(&owner);
        }
        out
    }

    fn dependents_of(&self, owner_uid: &str) -> Vec<(ResourceKey, String, String)> {
        let mut out = Vec::new();
        for (key, map) in &self.objects {
            for ((ns, name), o) in map {
                let owned = o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(owner_uid)));
                if owned {
                    out.push((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Removes the `foregroundDeletion` finalizer of the owner with `owner_uid` once it has no dependents.
    fn finish_foreground(&mut self, owner_uid: &str) {
        if !self.dependents_of(owner_uid).is_empty() {
            return;
        }
        let mut found = None;
        for (key, map) in &self.objects {
            for ((ns, name), o) in map {
                if meta_str(o, "uid") == Some(owner_uid) && finalizers(o).iter().any(|f| f == FOREGROUND) {
                    found = Some((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        let Some((key, ns, name)) = found else { return };
        let Ok(rt) = self.type_for_key(&key) else { return };
        let _ = self.update_with(
            &rt,
            &ns,
            &name,
            Subresource::Main,
            &WriteOptions::default(),
            true,
            |cur| {
                let mut d = cur.clone();
                if let Some(f) = d["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|x| x.as_str() != Some(FOREGROUND));
                }
                Ok(d)
            },
        );
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let mut victims = Vec::new();
        for (key, map) in &self.objects {
            for (ons, oname) in map.keys() {
                if ons == ns {
                    victims.push((key.clone(), oname.clone()));
                }
            }
        }
        for (key, name) in victims {
            if let Ok(rt) = self.type_for_key(&key) {
                let _ = self.delete(&rt, ns, &name, &DeleteOptions::default());
            }
        }
    }

    fn drop_crd(&mut self, crd: &Value) {
        let types = ResourceType::from_crd_value(crd);
        let Some(first) = types.first().cloned() else {
            return;
        };
        let key = first.key();
        let ids: Vec<(String, String)> = self
            .objects
            .get(&key)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in ids {
            if let Some(o) = self.get_obj(&key, &ns, &name).cloned() {
                self.commit(&first, &ns, &name, EventType::Deleted, o);
            }
        }
        self.types.retain(|t| t.key() != key);
    }

    fn collect_garbage(&mut self, owner_uid: &str, prop: Propagation) {
        let dependents = self.dependents_of(owner_uid);
        for (key, ns, name) in dependents {
            let Ok(rt) = self.type_for_key(&key) else { continue };
            if prop == Propagation::Orphan {
                let uid = owner_uid.to_owned();
                let _ = self.update_with(
                    &rt,
                    &ns,
                    &name,
                    Subresource::Main,
                    &WriteOptions::default(),
                    true,
                    |cur| {
                        let mut d = cur.clone();
                        if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                        }
                        Ok(d)
                    },
                );
            } else {
                let _ = self.delete(&rt, &ns, &name, &DeleteOptions::default());
            }
        }
    }

    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let cur = self
            .get_obj(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if let Some(uid) = opts.uid.as_deref()
            && Some(uid) != meta_str(&cur, "uid")
        {
            let have = meta_str(&cur, "uid").unwrap_or_default();
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
            ));
        }
        if let Some(rv) = opts.resource_version.as_deref()
            && Some(rv) != meta_str(&cur, "resourceVersion")
        {
            let have = meta_str(&cur, "resourceVersion").unwrap_or_default();
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                ),
            ));
        }
        let uid = meta_str(&cur, "uid").unwrap_or_default().to_owned();
        if opts.propagation == Propagation::Foreground
            && !is_deleting(&cur)
            && !opts.dry_run
            && !self.dependents_of(&uid).is_empty()
        {
            let mut new = cur.clone();
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
            let mut fins = finalizers(&cur);
            fins.push(FOREGROUND.to_owned());
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), Value::String(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), json!(fins));
            if g > 0 {
                m.insert("generation".into(), json!(g + 1));
            }
            let out = self.commit(rt, ns, name, EventType::Modified, new);
            for (key, dns, dname) in self.dependents_of(&uid) {
                if let Ok(drt) = self.type_for_key(&key) {
                    let _ = self.delete(&drt, &dns, &dname, &DeleteOptions::default());
                }
            }
            self.finish_foreground(&uid);
            let now_obj = self.get_obj(&rt.key(), ns, name).cloned().unwrap_or(out);
            return Ok(Self::with_type_meta(rt, now_obj));
        }
        if !finalizers(&cur).is_empty() {
            if is_deleting(&cur) {
                return Ok(Self::with_type_meta(rt, cur));
            }
            let mut new = cur.clone();
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), Value::String(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if g > 0 {
                m.insert("generation".into(), json!(g + 1));
            }
            if opts.dry_run {
                return Ok(Self::with_type_meta(rt, new));
            }
            let out = self.commit(rt, ns, name, EventType::Modified, new);
            return Ok(Self::with_type_meta(rt, out));
        }
        if opts.dry_run {
            return Ok(Self::with_type_meta(rt, cur));
        }
        let out = self.remove(rt, ns, name, cur, opts.propagation);
        Ok(Self::with_type_meta(rt, out))
    }

    pub(crate) fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        lopts: &ListOptions,
        dopts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let list = self.list(
            rt,
            ns,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..lopts.clone()
            },
        )?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let ins = meta_str(&item, "namespace").unwrap_or_default().to_owned();
            let iname = meta_str(&item, "name").unwrap_or_default().to_owned();
            if let Ok(o) = self.delete(rt, &ins, &iname, dopts) {
                deleted.push(o);
            }
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": deleted,
        }))
    }

    /// Starting position and initial (synthetic ADDED) objects of a watch.
    pub(crate) fn watch_start(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        rv: Option<&str>,
        send_initial: bool,
    ) -> Result<(u64, Vec<Value>), ApiError> {
        let rv = rv.filter(|r| !r.is_empty());
        let initial = send_initial || rv.is_none() || rv == Some("0");
        if !initial {
            let want: u64 = rv
                .unwrap_or_default()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if want < self.floor {
                return Err(ApiError::gone(format!(
                    "too old resource version: {want} ({})",
                    self.floor
                )));
            }
            return Ok((want.min(self.rv), Vec::new()));
        }
        let objs = self
            .objects
            .get(&rt.key())
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), o)| ns.is_none_or(|n| n == ons) && sel.matches(o))
                    .map(|(_, o)| Self::with_type_meta(rt, o.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok((self.rv, objs))
    }

    /// Events after `pos` for a watch, and the new position. `Err` if `pos` has been compacted.
    pub(crate) fn watch_poll(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        pos: u64,
    ) -> Result<(Vec<(EventType, Value)>, u64), ApiError> {
        if pos < self.floor {
            return Err(ApiError::gone(format!(
                "too old resource version: {pos} ({})",
                self.floor
            )));
        }
        let key = rt.key();
        let start = self.history.partition_point(|e| e.rv <= pos);
        let mut out = Vec::new();
        for e in self.history.range(start..) {
            if e.key != key || ns.is_some_and(|n| n != e.ns) {
                continue;
            }
            let now_matches = sel.matches(&e.obj);
            let etype = match e.etype {
                EventType::Modified => {
                    let was = e.old.as_ref().is_some_and(|o| sel.matches(o));
                    match (was, now_matches) {
                        (true, true) => Some(EventType::Modified),
                        (false, true) => Some(EventType::Added),
                        (true, false) => Some(EventType::Deleted),
                        (false, false) => None,
                    }
                }
                other => now_matches.then_some(other),
            };
            if let Some(t) = etype {
                out.push((t, Self::with_type_meta(rt, (*e.obj).clone())));
            }
        }
        Ok((out, self.rv))
    }
}

impl Store {
    pub(crate) fn new(state: State, bookmark_interval: Duration) -> Self {
        let rv = state.rv;
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                notify: watch::channel(rv).0,
                shutdown: watch::channel(false).0,
                faults: Mutex::new(Vec::new()),
                denied: Mutex::new(Vec::new()),
                log: Mutex::new(Vec::new()),
                bookmark_interval,
            }),
        }
    }

    /// Runs `f` with the state locked, then wakes watchers if anything changed.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = lock(&self.inner.state);
        let before = st.rv;
        let out = f(&mut st);
        if st.rv != before {
            self.inner.notify.send_replace(st.rv);
        }
        out
    }

    /// The registered resource types.
    pub fn resource_types(&self) -> Vec<ResourceType> {
        self.with_state(|s| s.types().to_vec())
    }

    /// Registers (or replaces) a resource type at runtime.
    pub fn register(&self, rt: ResourceType) {
        self.with_state(|s| s.register(rt));
    }

    /// The current (latest) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.with_state(|s| s.rv())
    }

    /// Drops all watch history: every open watch gets a `410 Gone` ERROR event, and watches, lists
    /// with an exact resourceVersion and continue tokens from before now get 410.
    pub fn compact(&self) {
        self.with_state(State::compact);
    }

    fn rt(&self, key: &ResourceKey) -> Result<ResourceType, ApiError> {
        self.with_state(|s| s.type_for_key(key))
    }

    /// Gets an object.
    pub fn get(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<Value> {
        let rt = self.rt(key).ok()?;
        self.with_state(|s| s.get(&rt, ns, name).ok())
    }

    /// Lists objects, in one namespace or (with `None`) all.
    pub fn list(&self, key: &ResourceKey, ns: Option<&str>) -> Vec<Value> {
        let Ok(rt) = self.rt(key) else { return Vec::new() };
        self.with_state(|s| s.list(&rt, ns, &ListOptions::default()))
            .ok()
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Creates an object (namespace taken from `ns` or, if empty, from the object).
    pub fn create(&self, key: &ResourceKey, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = self.rt(key)?;
        self.with_state(|s| s.create(&rt, ns, obj, &WriteOptions::default()))
    }

    /// Replaces an object (like PUT; `.status` is ignored for kinds with a status subresource).
    pub fn replace(&self, key: &ResourceKey, ns: &str, name: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = self.rt(key)?;
        self.with_state(|s| {
            s.update_with(
                &rt,
                ns,
                name,
                Subresource::Main,
                &WriteOptions::default(),
                true,
                |_| Ok(obj),
            )
        })
    }

    /// Merge-patches an object (or, with [`Subresource::Status`], its status).
    pub fn patch(
        &self,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        sub: Subresource,
        merge_patch: Value,
    ) -> Result<Value, ApiError> {
        let rt = self.rt(key)?;
        self.with_state(|s| {
            s.patch(
                &rt,
                ns,
                name,
                sub,
                PatchType::Merge,
                merge_patch,
                &WriteOptions::default(),
            )
        })
        .map(|(v, _)| v)
    }

    /// Sets (merge-patches) `.status` through the status subresource, as a kubelet/controller would.
    pub fn patch_status(
        &self,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        self.patch(key, ns, name, Subresource::Status, json!({ "status": status }))
    }

    /// Deletes an object (honouring finalizers and garbage-collecting dependents).
    pub fn delete(&self, key: &ResourceKey, ns: &str, name: &str) -> Result<Value, ApiError> {
        let rt = self.rt(key)?;
        self.with_state(|s| s.delete(&rt, ns, name, &DeleteOptions::default()))
    }

    /// Typed [`Store::get`].
    pub fn get_as<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.get(&ResourceKey::of::<K>(), ns, name)
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// Typed [`Store::list`].
    pub fn list_as<K>(&self, ns: Option<&str>) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.list(&ResourceKey::of::<K>(), ns)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    /// Typed [`Store::create`] (namespace from the object).
    pub fn create_as<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let v = serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let out = self.create(&ResourceKey::of::<K>(), "", v)?;
        serde_json::from_value(out).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Typed [`Store::patch`] of the main resource with a merge patch.
    pub fn patch_as<K>(&self, ns: &str, name: &str, merge_patch: Value) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let out = self.patch(&ResourceKey::of::<K>(), ns, name, Subresource::Main, merge_patch)?;
        serde_json::from_value(out).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Typed [`Store::replace`] (name and namespace from the object).
    pub fn replace_as<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let v = serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        let out = self.replace(&ResourceKey::of::<K>(), &ns, &name, v)?;
        serde_json::from_value(out).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Typed [`Store::patch_status`].
    pub fn patch_status_as<K>(&self, ns: &str, name: &str, status: Value) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let out = self.patch_status(&ResourceKey::of::<K>(), ns, name, status)?;
        serde_json::from_value(out).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Typed [`Store::delete`].
    pub fn delete_as<K>(&self, ns: &str, name: &str) -> Result<(), ApiError>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.delete(&ResourceKey::of::<K>(), ns, name).map(|_| ())
    }

    /// Makes the next `times` requests matching `verb` (`get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection`, or `*`) and `resource` (`plural`, `plural/status`, or `*`)
    /// fail with `code` (a `Status` body with reason `InternalError`, `Conflict`, ... by code).
    pub fn fail_times(&self, verb: &str, resource: &str, code: u16, times: usize) {
        lock(&self.inner.faults).push(Fault {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            code,
            remaining: times,
        });
    }

    /// Makes `SelfSubjectAccessReview`s for `verb` on `resource` (`plural` or `plural/sub`) of
    /// `group` (`""`: core) answer "not allowed" (in every namespace). Everything else is
    /// allowed: the server does not authorize requests themselves.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        lock(&self.inner.denied).push((verb.to_owned(), group.to_owned(), resource.to_owned()));
    }

    pub(crate) fn is_denied(&self, verb: &str, group: &str, resource: &str) -> bool {
        lock(&self.inner.denied)
            .iter()
            .any(|(v, g, r)| v == verb && g == group && r == resource)
    }

    /// Takes a matching injected fault, if any.
    pub(crate) fn take_fault(&self, verb: &str, resource: &str) -> Option<u16> {
        let mut faults = lock(&self.inner.faults);
        let idx = faults.iter().position(|f| {
            (f.verb == "*" || f.verb == verb) && (f.resource == "*" || f.resource == resource)
        })?;
        let code = faults[idx].code;
        faults[idx].remaining -= 1;
        if faults[idx].remaining == 0 {
            faults.remove(idx);
        }
        Some(code)
    }

    pub(crate) fn log_request(&self, r: RequestRecord) {
        lock(&self.inner.log).push(r);
    }

    /// All requests served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }
}
