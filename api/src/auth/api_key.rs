//! `AUTH_MODE=api-key`: keys of `thumbnail_core::apikeys`, looked up by their public id and
//! compared by hash in constant time.
//!
//! Looked-up keys are cached for [`CACHE_TTL`], so that a busy client costs one database read
//! per few seconds rather than one per request. A key revoked through this process stops working
//! at once; revoked through another replica (or `thumbnail-api keys revoke`), within
//! [`CACHE_TTL`]. `last_used_at` is written at most every [`TOUCH_EVERY`] per key.
use super::{AuthError, Credential, Principal};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thumbnail_core::apikeys::{self, ApiKeyRecord, DynKeyStore, KeyState, Scope, Scopes};
use thumbnail_core::{CoreError, Result};
use tracing::{info, warn};

/// How long a looked-up key (or its absence) is trusted without reading the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often `last_used_at` is written per key.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Cached ids at most; the cache starts over when full (unknown ids cannot grow it for ever).
const CACHE_MAX: usize = 10_000;
/// The owner of the key given as ADMIN_API_KEY.
pub const ADMIN_OWNER: &str = "admin";

struct Cached {
    key: Option<ApiKeyRecord>,
    fetched: Instant,
}

pub struct ApiKeyAuth {
    store: DynKeyStore,
    cache: Mutex<HashMap<String, Cached>>,
    /// When each key's use was last written.
    touched: Mutex<HashMap<String, Instant>>,
}

impl ApiKeyAuth {
    /// Authenticate against `store`; `admin_key` (ADMIN_API_KEY) is registered first.
    pub async fn new(store: DynKeyStore, admin_key: Option<&str>) -> Result<Self> {
        if let Some(key) = admin_key.map(str::trim).filter(|k| !k.is_empty()) {
            let all = Scopes::of(&[Scope::Admin, Scope::Submit, Scope::Read]);
            let record = apikeys::record_of(key, ADMIN_OWNER, all, Some("ADMIN_API_KEY".into())).ok_or_else(|| {
                CoreError::Config(format!(
                    "ADMIN_API_KEY is not an API key of this service (thn_ + 12 + _ + 43 letters and digits, \
                     {} characters); make one with `thumbnail-api keys create --owner admin --scope admin`",
                    apikeys::KEY_LEN
                ))
            })?;
            if store.insert_if_absent(&record).await? {
                info!(key_id = %record.id, "registered ADMIN_API_KEY");
            } else {
                match store.get(&record.id).await? {
                    Some(stored) if stored.secret_hash == record.secret_hash => {}
                    _ => {
                        return Err(CoreError::Config(format!(
                            "ADMIN_API_KEY's id {} belongs to a different stored key",
                            record.id
                        )));
                    }
                }
            }
        }
        Ok(ApiKeyAuth {
            store,
            cache: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        })
    }

    /// Drop what is cached of key `id` (after revoking it here).
    pub fn forget(&self, id: &str) {
        self.cache.lock().expect("key cache").remove(id);
    }

    async fn lookup(&self, id: &str) -> std::result::Result<Option<ApiKeyRecord>, AuthError> {
        if let Some(cached) = self.cache.lock().expect("key cache").get(id)
            && cached.fetched.elapsed() < CACHE_TTL
        {
            return Ok(cached.key.clone());
        }
        let key = self.store.get(id).await.map_err(|e| {
            warn!(error = %e, "could not read an API key");
            AuthError::Unavailable("the key store (database)")
        })?;
        let mut cache = self.cache.lock().expect("key cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            id.to_owned(),
            Cached {
                key: key.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(key)
    }

    /// The principal of a presented key.
    pub async fn verify(&self, presented: &str) -> std::result::Result<Principal, AuthError> {
        let unknown = || AuthError::Invalid("unknown API key".into());
        let Some(id) = apikeys::key_id(presented) else {
            return Err(AuthError::Invalid(
                "not an API key of this service (they start with thn_)".into(),
            ));
        };
        let key = self.lookup(id).await?.ok_or_else(unknown)?;
        if !key.matches(presented) {
            return Err(unknown());
        }
        match key.state(Utc::now()) {
            KeyState::Active => {}
            KeyState::Revoked => return Err(AuthError::Invalid("the API key has been revoked".into())),
            KeyState::Expired => return Err(AuthError::Invalid("the API key has expired".into())),
        }
        self.note_use(&key.id);
        Ok(Principal {
            owner: Some(key.owner),
            scopes: key.scopes,
            credential: Credential::ApiKey { id: key.id },
            default_webhook_url: key.webhook_url,
        })
    }

    /// Write `last_used_at` in the background, at most every [`TOUCH_EVERY`].
    fn note_use(&self, id: &str) {
        {
            let mut touched = self.touched.lock().expect("touch map");
            if touched.get(id).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            if touched.len() >= CACHE_MAX {
                touched.clear();
            }
            touched.insert(id.to_owned(), Instant::now());
        }
        let (store, id) = (self.store.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.touch(&id, Utc::now()).await {
                warn!(key_id = %id, error = %e, "could not record an API key's use");
            }
        });
    }
}
