//! API keys in PostgreSQL (table `api_keys`, migration 0002).
use super::{ApiKeyRecord, KeyStore, Scopes};
use crate::jobstore::PostgresJobStore;
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

pub struct PostgresKeyStore {
    pool: PgPool,
}

const COLUMNS: &str = "id, secret_hash, owner, scopes, name, created_at, last_used_at, expires_at, revoked_at, \
    webhook_url";

impl PostgresKeyStore {
    /// A lazily connecting pool on the (already migrated) database at `url`.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Ok(PostgresKeyStore {
            pool: PostgresJobStore::pool(url, max_connections)?,
        })
    }
}

fn row_to_key(row: &PgRow) -> Result<ApiKeyRecord> {
    let hash: Vec<u8> = row.try_get("secret_hash")?;
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        secret_hash: hash
            .try_into()
            .map_err(|_| CoreError::Corrupt("an API key hash is not 32 bytes".into()))?,
        owner: row.try_get("owner")?,
        scopes: Scopes::parse_list(&scopes)
            .map_err(|e| CoreError::Corrupt(format!("API key scopes: {e}")))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        webhook_url: row.try_get("webhook_url")?,
    })
}

impl PostgresKeyStore {
    async fn insert_with(&self, on_conflict: &str, key: &ApiKeyRecord) -> Result<u64> {
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {on_conflict}"
        );
        let done = sqlx::query(&sql)
            .bind(&key.id)
            .bind(key.secret_hash.as_slice())
            .bind(&key.owner)
            .bind(key.scopes.to_string())
            .bind(&key.name)
            .bind(key.created_at)
            .bind(key.last_used_at)
            .bind(key.expires_at)
            .bind(key.revoked_at)
            .bind(&key.webhook_url)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()> {
        self.insert_with("", key).await.map(|_| ())
    }

    async fn insert_if_absent(&self, key: &ApiKeyRecord) -> Result<bool> {
        Ok(self.insert_with("ON CONFLICT (id) DO NOTHING", key).await? == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_key).transpose()
    }

    async fn list(&self, owner: Option<&str>, limit: u32) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ($1::TEXT IS NULL OR owner = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_key).collect()
    }

    async fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKeyRecord>> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(at)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_key).transpose()
    }

    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
