//! API keys in the embedded default's SQLite file (table `api_keys`, migration 0002).
use super::{ApiKeyRecord, KeyStore, Scopes};
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

pub struct SqliteKeyStore {
    pool: SqlitePool,
}

const COLUMNS: &str = "id, secret_hash, owner, scopes, name, created_at, last_used_at, expires_at, revoked_at, \
    webhook_url";

impl SqliteKeyStore {
    /// Open the (already migrated) database at `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(SqliteKeyStore {
            pool: crate::jobstore::open_sqlite_pool(url, 2).await?,
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .and_then(DateTime::from_timestamp_micros))
}

fn row_to_key(row: &SqliteRow) -> Result<ApiKeyRecord> {
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
        created_at: time(row, "created_at")?
            .ok_or_else(|| CoreError::Corrupt("API key created_at".into()))?,
        last_used_at: time(row, "last_used_at")?,
        expires_at: time(row, "expires_at")?,
        revoked_at: time(row, "revoked_at")?,
        webhook_url: row.try_get("webhook_url")?,
    })
}

impl SqliteKeyStore {
    async fn insert_with(&self, verb: &str, key: &ApiKeyRecord) -> Result<u64> {
        let sql = format!("{verb} INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let done = sqlx::query(&sql)
            .bind(&key.id)
            .bind(key.secret_hash.as_slice())
            .bind(&key.owner)
            .bind(key.scopes.to_string())
            .bind(&key.name)
            .bind(micros(key.created_at))
            .bind(key.last_used_at.map(micros))
            .bind(key.expires_at.map(micros))
            .bind(key.revoked_at.map(micros))
            .bind(&key.webhook_url)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()> {
        self.insert_with("INSERT", key).await.map(|_| ())
    }

    async fn insert_if_absent(&self, key: &ApiKeyRecord) -> Result<bool> {
        Ok(self.insert_with("INSERT OR IGNORE", key).await? == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_key).transpose()
    }

    async fn list(&self, owner: Option<&str>, limit: u32) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE (? IS NULL OR owner = ?) \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(owner)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_key).collect()
    }

    async fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKeyRecord>> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(micros(at))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_key).transpose()
    }

    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(micros(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
