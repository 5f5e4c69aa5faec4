//! A test-only, in-memory Kubernetes API server.
//!
//! It serves over plain HTTP the part of the Kubernetes API that kube's `Client`, `Api<K>`,
//! `watcher`, `Controller`, `finalizer` helper and events `Recorder` use, with real semantics:
//! a global resourceVersion, list/watch (bookmarks, replay from a resourceVersion, 410 Gone after
//! compaction), the status subresource, generation, merge/JSON/strategic patches, simplified
//! server-side apply with field ownership, finalizers and deletionTimestamp, ownerReference garbage
//! collection, label/field selectors, pagination, `generateName`, and discovery.
//!
//! Simplifications relative to a real API server:
//! - no authn/authz, admission, defaulting (Jobs/Pods get no defaults) or schema validation
//!   (only names, namespaces and a few metadata rules are checked); namespaces need not exist;
//! - every kind gets `metadata.generation` (starts at 1; bumped by changes outside `metadata` and
//!   `status`, and when `deletionTimestamp` is set);
//! - continue tokens page over the current state (not a snapshot); lists with an explicit
//!   resourceVersion return the current state (410 if it is compacted and the match is not
//!   `NotOlderThan`); watches from a resourceVersion newer than the latest start at the latest;
//! - server-side apply only tracks `Apply` managers (non-apply writes record no managedFields);
//!   lists are atomic; conflicts arise when another applier owns an overlapping field and the value
//!   differs;
//! - strategic merge patch is a merge patch plus merge-by-key for well-known lists;
//! - garbage collection is synchronous, defaults to `Background` for every kind (a real server
//!   orphans for some), and `Foreground` waits for all dependents (not only `blockOwnerDeletion`);
//! - discovery is the legacy (non-aggregated) one; no `/log`, `/scale`, `/exec`, tables.
//!
//! ```no_run
//! # async fn demo() {
//! let server = kube_test_apiserver::TestApiServer::start().await;
//! let client = server.client();
//! // ... run controllers against `client`, inspect `server.store()`, inject faults ...
//! server.shutdown().await;
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
mod http;
mod patch;
mod selector;
mod store;
mod types;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use selector::{FieldSelector, LabelSelector};
pub use store::{
    DeleteOptions, EventType, ListOptions, PatchType, Propagation, RequestRecord, Store, Subresource,
    WriteOptions,
};
pub use types::{ResourceKey, ResourceType};

/// Alias, for code that prefers `ApiServer::builder()`.
pub type ApiServer = TestApiServer;

/// Configures a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct TestApiServerBuilder {
    builtins: bool,
    resources: Vec<ResourceType>,
    history_limit: usize,
    bookmark_interval: Duration,
    addr: SocketAddr,
}

impl Default for TestApiServerBuilder {
    fn default() -> Self {
        Self {
            builtins: true,
            resources: Vec::new(),
            history_limit: 100_000,
            bookmark_interval: Duration::from_secs(1),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl TestApiServerBuilder {
    /// Registers a resource type (in addition to the built-ins, unless [`Self::without_builtins`]).
    pub fn resource(mut self, rt: ResourceType) -> Self {
        self.resources.push(rt);
        self
    }

    /// Registers the kinds declared by a CustomResourceDefinition, e.g. `MyKind::crd()`.
    ///
    /// (Does not create the CRD object itself; POST/apply the CRD for that.)
    pub fn crd(
        mut self,
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Self {
        self.resources.extend(ResourceType::from_crd(crd));
        self
    }

    /// Do not register the built-in kinds ([`ResourceType::builtins`]).
    pub fn without_builtins(mut self) -> Self {
        self.builtins = false;
        self
    }

    /// How many watch events are retained (older ones are compacted; watches behind get 410).
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events.max(1);
        self
    }

    /// How often BOOKMARK events are sent on watches that allow them (default 1s).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, an ephemeral port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Starts serving.
    ///
    /// # Panics
    /// If the address cannot be bound; see [`Self::try_start`].
    pub async fn start(self) -> TestApiServer {
        self.try_start().await.expect("bind the test API server")
    }

    /// Starts serving.
    pub async fn try_start(self) -> std::io::Result<TestApiServer> {
        let mut types = if self.builtins {
            ResourceType::builtins()
        } else {
            Vec::new()
        };
        types.extend(self.resources);
        let state = store::State::new(types, self.history_limit);
        let store = Store::new(state, self.bookmark_interval);
        if self.builtins {
            let ns = ResourceKey::new("", "namespaces");
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let _ = store.create(&ns, "", json!({"metadata": {"name": name}}));
            }
        }
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let app = http::router(store.clone());
        let mut shutdown = store.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("test API server stopped: {e}");
            }
        });
        Ok(TestApiServer {
            addr,
            store,
            task: Some(task),
        })
    }
}

/// A running test API server. Dropping it stops the server.
pub struct TestApiServer {
    addr: SocketAddr,
    store: Store,
    task: Option<JoinHandle<()>>,
}

impl TestApiServer {
    /// Starts a server with the built-in kinds (including `ThumbnailJob`) on an ephemeral port.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for custom configuration.
    pub fn builder() -> TestApiServerBuilder {
        TestApiServerBuilder::default()
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `kube::Config` for this server (no auth, default namespace `default`).
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("valid URL"))
    }

    /// A `kube::Client` talking to this server.
    ///
    /// Installs rustls' `ring` crypto provider as the process default if none is installed yet
    /// (kube builds a TLS connector even for plain-HTTP URLs).
    pub fn client(&self) -> kube::Client {
        install_crypto_provider();
        kube::Client::try_from(self.config()).expect("build kube client")
    }

    /// Direct access to objects and server state.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Drops the watch history (see [`Store::compact`]): open watches receive a 410 ERROR event.
    pub fn compact(&self) {
        self.store.compact();
    }

    /// Makes the next request matching `verb` and `resource` fail with `code` (see [`Store::fail_times`]).
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16) {
        self.store.fail_times(verb, resource, code, 1);
    }

    /// Makes the next `times` matching requests fail with `code`.
    pub fn fail_times(&self, verb: &str, resource: &str, code: u16, times: usize) {
        self.store.fail_times(verb, resource, code, times);
    }

    /// Makes `SelfSubjectAccessReview`s for `verb` on `resource` (`plural` or `plural/sub`) of
    /// `group` answer "not allowed" (see [`Store::deny`]).
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.store.deny(verb, group, resource);
    }

    /// Every request served so far (verb, path, query, status, ...).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.store.requests()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.store.clear_requests();
    }

    /// Stops serving: ends open watches and waits (up to 5s) for the server to stop.
    pub async fn shutdown(mut self) {
        self.store.inner.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.store.inner.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Installs rustls' `ring` provider as the process-wide default unless one is already installed.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Polls `check` every 10ms until it returns `Some`, or `timeout` passes (then `None`).
pub async fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
