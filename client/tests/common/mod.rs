//! The real API in this process for the client's tests (AUTH_MODE=api-key, SQLite and the local
//! object directory), with a user key and an admin key.
#![allow(dead_code)]

use std::path::Path;
use thumbnail_api::Application;
use thumbnail_api::config::{ApiConfig, AuthMode};
use thumbnail_core::apikeys::{self, Scope, Scopes};
use tokio_util::sync::CancellationToken;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../api/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Service {
    pub url: String,
    pub key: String,
    pub admin_key: String,
    pub stop: CancellationToken,
    /// Holds the data directory for as long as the service runs.
    _data: tempfile::TempDir,
}

pub async fn start_service() -> Service {
    let data = tempfile::tempdir().unwrap();
    let mut config = ApiConfig::for_tests(data.path());
    config.auth.auth_mode = AuthMode::ApiKey;
    let app = Application::build(config).await.expect("the API starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let key_for = |owner: &str, scopes: &[Scope]| apikeys::generate(owner, Scopes::of(scopes), None, None);
    let user = key_for("alice", &[Scope::Submit, Scope::Read]);
    let admin = key_for("ops", &[Scope::Admin, Scope::Read]);
    state.key_store.insert(&user.record).await.unwrap();
    state.key_store.insert(&admin.record).await.unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(app.run_until_stopped(async move { stopped.cancelled().await }));
    Service {
        url,
        key: user.key,
        admin_key: admin.key,
        stop,
        _data: data,
    }
}
