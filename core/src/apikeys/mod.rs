//! API keys: `thn_{id}_{secret}`, where `id` (12 characters) is public and names the key in
//! listings and `keys revoke ID`, and `secret` is 43 random base62 characters (256 bits).
//!
//! The `thn_` prefix lets secret scanners (GitHub's, gitleaks, trufflehog) recognise leaked keys.
//! Only the SHA-256 of the whole key is stored. A slow password hash (argon2, bcrypt) buys
//! nothing here: it protects low-entropy secrets from guessing, and no amount of guessing finds
//! a 256-bit random secret from its SHA-256; it would only cost CPU on every request. A key is
//! looked up by its id and the hashes are compared in constant time.
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

mod postgres;
mod sqlite;

pub use postgres::PostgresKeyStore;
pub use sqlite::SqliteKeyStore;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "thn_";
/// Length of the public id.
pub const ID_LEN: usize = 12;
/// Length of the secret: 43 base62 characters carry 43 × log2(62) ≈ 256 bits.
pub const SECRET_LEN: usize = 43;
/// Length of a whole key: `thn_` + id + `_` + secret.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

/// What a key (or a token) allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Upload images (`POST /api/v1/thumbnails/`).
    Submit,
    /// Read one's own jobs and their thumbnails.
    Read,
    /// Everything, for every owner: all jobs, uploads on someone's behalf, key management.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Submit, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Submit => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not a scope (submit, read, admin)"))
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    pub fn of(scopes: &[Scope]) -> Self {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// What keys get when no scope is named: upload and read one's own jobs.
    pub fn default_for_keys() -> Self {
        Scopes::of(&[Scope::Submit, Scope::Read])
    }

    /// Whether `scope` is granted; `admin` grants every scope.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    pub fn is_admin(self) -> bool {
        self.0 & Scope::Admin.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.0 & s.bit() != 0)
    }

    /// Parse a list separated by spaces or commas; unknown names are an error.
    pub fn parse_list(text: &str) -> std::result::Result<Self, String> {
        text.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::parse::<Scope>)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(|v| Scopes::of(&v))
    }

    /// Keep the names this service knows and ignore the others (tokens carry scopes of other
    /// services too).
    pub fn from_known<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let known: Vec<Scope> = names.into_iter().filter_map(|n| n.parse().ok()).collect();
        Scopes::of(&known)
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

/// The pattern of an owner name, as the OpenAPI document declares it.
pub const OWNER_PATTERN: &str = "^[!-~]{1,253}$";

/// An owner name: what a key or token acts for, recorded with every job. 1 to 253 printable
/// ASCII characters without spaces ([`OWNER_PATTERN`]): it appears in logs, object listings and
/// (sanitised) Kubernetes labels, and a ThumbnailJob's `spec.owner` takes at most 253. Token
/// subjects (`sub`) are of this form. Pure.
pub fn validate_owner(owner: &str) -> std::result::Result<(), String> {
    if owner.is_empty() {
        return Err("must not be empty".into());
    }
    if owner.len() > 253 {
        return Err(format!(
            "must be at most 253 characters long, got {}",
            owner.len()
        ));
    }
    if let Some(bad) = owner.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("must be printable ASCII without spaces, got {:?}", bad));
    }
    Ok(())
}

/// A key as stored: never the secret itself, only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub secret_hash: [u8; 32],
    pub owner: String,
    pub scopes: Scopes,
    /// A label for people ("ci upload key").
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Where uploads made with this key send their completion event unless they name their own
    /// `webhook_url`.
    pub webhook_url: Option<String>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("scopes", &self.scopes.to_string())
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Whether a key may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

impl ApiKeyRecord {
    /// Whether `presented` is this key: its SHA-256 against the stored one, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        hash_key(presented).ct_eq(&self.secret_hash).into()
    }

    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// A new key: the secret (shown once) and what is stored.
pub struct GeneratedKey {
    pub key: String,
    pub record: ApiKeyRecord,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("key", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

fn random_base62(len: usize) -> String {
    // Alphanumeric draws uniformly from the 62 characters (rejection sampling) from the OS-seeded
    // CSPRNG.
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// SHA-256 of a whole key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The id of a well-formed key (`thn_{12 base62}_{43 base62}`), without looking it up. Pure.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    if presented.len() != KEY_LEN || !rest.is_char_boundary(ID_LEN) {
        return None;
    }
    let (id, tail) = rest.split_at(ID_LEN);
    let secret = tail.strip_prefix('_')?;
    let base62 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    (base62(id) && base62(secret) && secret.len() == SECRET_LEN).then_some(id)
}

/// Make a new key for `owner`.
pub fn generate(
    owner: &str,
    scopes: Scopes,
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
) -> GeneratedKey {
    let id = random_base62(ID_LEN);
    let key = format!("{KEY_PREFIX}{id}_{}", random_base62(SECRET_LEN));
    let record = ApiKeyRecord {
        id,
        secret_hash: hash_key(&key),
        owner: owner.to_owned(),
        scopes,
        name,
        created_at: crate::model::now(),
        last_used_at: None,
        expires_at,
        revoked_at: None,
        webhook_url: None,
    };
    GeneratedKey { key, record }
}

/// The record of a key made elsewhere (the Helm chart's admin key, `ADMIN_API_KEY`); `None`
/// when it is not a well-formed key.
pub fn record_of(key: &str, owner: &str, scopes: Scopes, name: Option<String>) -> Option<ApiKeyRecord> {
    let id = key_id(key)?.to_owned();
    Some(ApiKeyRecord {
        id,
        secret_hash: hash_key(key),
        owner: owner.to_owned(),
        scopes,
        name,
        created_at: crate::model::now(),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        webhook_url: None,
    })
}

/// Parse a lifetime such as `90d`, `12h`, `30m`, `45s` or `2w`. Pure.
pub fn parse_duration(text: &str) -> std::result::Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: s, m, h, d or w (e.g. 90d)"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown unit '{other}' (s, m, h, d or w)")),
    };
    if n <= 0 {
        return Err(format!("'{text}' must be positive"));
    }
    n.checked_mul(seconds)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(|| format!("'{text}' is longer than 100 years"))
}

/// Where keys are kept: the job store's database (SQLite or PostgreSQL).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Store a new key; an existing id is an error.
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()>;

    /// Store `key` unless its id exists; true when it was stored. For keys made outside the
    /// service (`ADMIN_API_KEY`), which every replica registers at start-up.
    async fn insert_if_absent(&self, key: &ApiKeyRecord) -> Result<bool>;

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Keys, newest first, optionally of one owner; at most `limit`.
    async fn list(&self, owner: Option<&str>, limit: u32) -> Result<Vec<ApiKeyRecord>>;

    /// Revoke a key (keeping the first revocation time); the key after, `None` when unknown.
    async fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKeyRecord>>;

    /// Record that the key was used at `at`.
    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
}

pub type DynKeyStore = Arc<dyn KeyStore>;

/// The key store in the database named by `url` (`sqlite://...` or `postgres://...`), which
/// `jobstore::connect` has migrated.
pub async fn connect(url: &str, max_connections: u32) -> Result<DynKeyStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteKeyStore::connect(url).await?))
    } else {
        Ok(Arc::new(PostgresKeyStore::connect(url, max_connections)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_prefix_and_parse_back_to_their_id() {
        let a = generate("alice", Scopes::default_for_keys(), None, None);
        let b = generate("alice", Scopes::default_for_keys(), None, None);
        assert!(a.key.starts_with("thn_"), "{}", a.key);
        assert_eq!(a.key.len(), KEY_LEN);
        assert_eq!(key_id(&a.key), Some(a.record.id.as_str()));
        assert_ne!(a.key, b.key);
        assert_ne!(a.record.id, b.record.id);
        assert!(a.record.matches(&a.key));
        assert!(!a.record.matches(&b.key));
        // The record's Debug never shows the hash, and the key's never shows the secret.
        assert!(!format!("{a:?}").contains(&a.key[20..]));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let good = generate("alice", Scopes::default_for_keys(), None, None).key;
        for bad in [
            "",
            "thn_",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("thn_", "thx_", 1),
            &good.replacen('_', "-", 2),
            &format!("{}é", &good[..good.len() - 2]),
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn admin_allows_everything_and_unknown_scopes_are_refused_or_ignored() {
        let admin = Scopes::of(&[Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let read = Scopes::parse_list("read").unwrap();
        assert!(read.allows(Scope::Read) && !read.allows(Scope::Submit) && !read.is_admin());
        assert_eq!(
            Scopes::parse_list("submit, read").unwrap(),
            Scopes::default_for_keys()
        );
        assert!(Scopes::parse_list("read write").is_err());
        assert_eq!(Scopes::from_known(["openid", "read", "profile"]), read);
        assert_eq!(Scopes::default_for_keys().to_string(), "submit read");
    }

    #[test]
    fn states_follow_expiry_and_revocation() {
        let mut key = generate("alice", Scopes::default_for_keys(), None, None).record;
        let now = crate::model::now();
        assert_eq!(key.state(now), KeyState::Active);
        key.expires_at = Some(now);
        assert_eq!(key.state(now), KeyState::Expired);
        key.revoked_at = Some(now);
        assert_eq!(key.state(now), KeyState::Revoked);
    }

    #[test]
    fn durations_and_owners() {
        assert_eq!(parse_duration("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(parse_duration("2w").unwrap(), chrono::Duration::days(14));
        assert_eq!(parse_duration("45s").unwrap(), chrono::Duration::seconds(45));
        for bad in ["", "10", "d", "0d", "-1d", "5y", "999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(validate_owner("alice@example.com").is_ok());
        assert!(validate_owner("auth0|5f1c9a").is_ok());
        for bad in ["", " alice", "a b", "a\nb", "josé", &"x".repeat(254)] {
            assert!(validate_owner(bad).is_err(), "{bad:?}");
        }
    }
}
