//! The `api_keys` table (migration 0005), written once for both dialects:
//! what `auth::api_key` stores of a key and looks up. Look-ups read on the
//! reader pool where there is one; changes go to the writer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;

/// A key as the table holds it, without its hash.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeyRow {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    /// The key's first characters.
    pub(crate) shown: String,
    /// Scope names, comma-separated.
    pub(crate) scopes: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// A key to store.
pub(crate) struct NewApiKeyRow<'a> {
    pub(crate) id: Uuid,
    pub(crate) name: &'a str,
    /// The key's SHA-256, in hex.
    pub(crate) key_hash: &'a str,
    pub(crate) shown: &'a str,
    /// Scope names, comma-separated.
    pub(crate) scopes: &'a str,
    pub(crate) created_at: DateTime<Utc>,
    /// When the key stops working (keys created over HTTP may say).
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// What a look-up by hash finds of a key.
pub(crate) struct FoundApiKey {
    pub(crate) id: Uuid,
    /// Scope names, comma-separated.
    pub(crate) scopes: String,
    /// Revoked, or expired at the time of the look-up.
    pub(crate) revoked: bool,
}

/// The `api_keys` table. Errors are the driver's: each caller says what
/// failed.
#[async_trait]
pub(crate) trait ApiKeyTable: Send + Sync + 'static {
    /// The key with this hash, as it stands at `now`.
    async fn find_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<FoundApiKey>, sqlx::Error>;

    async fn insert_api_key(&self, key: NewApiKeyRow<'_>) -> Result<(), sqlx::Error>;

    /// Every key, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, sqlx::Error>;

    /// Marks the key revoked at `at`; `false` when no unrevoked key has
    /// this id.
    async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, sqlx::Error>;
}

/// A row of [`ApiKeyTable::list_api_keys`]'s statement.
type KeyRow = (
    Uuid,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

with_driver_bounds! {
[#[async_trait]
impl<D: Dialect> ApiKeyTable for SqlStore<D>] {
    async fn find_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<FoundApiKey>, sqlx::Error> {
        let pool = self.reader();
        let mut conn = pool.waiting.on(pool.pool.acquire()).await?;
        let found: Option<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT id, scopes, \
             (revoked_at IS NOT NULL OR (expires_at IS NOT NULL AND expires_at <= $2)) AS revoked \
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(key_hash.to_owned())
        .bind(D::time(&now))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(found.map(|(id, scopes, revoked)| FoundApiKey { id, scopes, revoked }))
    }

    async fn insert_api_key(&self, key: NewApiKeyRow<'_>) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, shown, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id)
        .bind(key.name.to_owned())
        .bind(key.key_hash.to_owned())
        .bind(key.shown.to_owned())
        .bind(key.scopes.to_owned())
        .bind(D::time(&key.created_at))
        .bind(key.expires_at.as_ref().map(D::time))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, shown, scopes, created_at, revoked_at \
             FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, shown, scopes, created_at, revoked_at)| ApiKeyRow {
                id,
                name,
                shown,
                scopes,
                created_at,
                revoked_at,
            })
            .collect())
    }

    async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        // RETURNING: the drivers count changed rows each their own way.
        let revoked: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING id",
        )
        .bind(D::time(&at))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(revoked.len() == 1)
    }
}
}
