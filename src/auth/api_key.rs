//! API keys: random, shown once, stored as their SHA-256.
//!
//! A key is `hlk_` followed by 32 random bytes in URL-safe base64 (47
//! characters): the prefix lets secret scanners and people recognize one.
//! The database keeps its SHA-256 (a fast hash is enough for 256 random
//! bits: there is nothing to guess), its first characters for display, a
//! name, scopes, and when it was created and revoked (table `api_keys`,
//! migration 0005).
//!
//! Verified keys, and unknown ones, are remembered for `API_KEY_CACHE_TTL`,
//! so a busy client costs one database look-up per interval, not one per
//! request; concurrent first requests with one key share that look-up.
//! Revoking a key therefore takes effect within `API_KEY_CACHE_TTL`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{AuthError, CredentialKind, Principal, Scopes, sha256};
use crate::config::DatabaseConfig;
use crate::store::{self, ApiKeyRow, ApiKeyTable, NewApiKeyRow, Store};

/// What every key starts with.
pub const KEY_PREFIX: &str = "hlk_";

/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// Characters of a key kept in clear, to tell keys apart in a list.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 6;

/// Most keys (known or not) remembered at once.
const CACHE_ENTRIES: u64 = 100_000;

/// A new key: the secret (to show once) and what is stored of it.
pub struct NewKey {
    pub secret: String,
    pub record: KeyRecord,
    hash: String,
}

/// A key as stored, without its secret.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters.
    pub shown: String,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the key stops working, if it was created with an end.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewKey {
    pub fn generate(name: &str, scopes: Scopes) -> anyhow::Result<Self> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|err| anyhow::anyhow!("no randomness for a key: {err}"))?;
        let secret = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        Ok(Self {
            hash: hash_of(&secret),
            record: KeyRecord {
                id: Uuid::now_v7(),
                name: name.to_owned(),
                shown: secret[..SHOWN_CHARS].to_owned(),
                scopes,
                created_at: Utc::now(),
                revoked_at: None,
                expires_at: None,
            },
            secret,
        })
    }
}

/// The stored form of a key: its SHA-256, in hex.
pub fn hash_of(key: &str) -> String {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(64);
    for byte in sha256(key.as_bytes()) {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The `api_keys` table, on the configured database: the store's SQL store
/// holds it, so its statements are written once for both databases.
pub struct KeyStore {
    table: Arc<dyn ApiKeyTable>,
    /// The store opened for this key store alone ([`KeyStore::connect`]),
    /// closed with it.
    own: Option<Arc<dyn Store>>,
}

impl KeyStore {
    /// The table of an open store (the server's: look-ups take its read
    /// connections; the store migrates the database, and until then a
    /// look-up fails and the request gets a 503).
    pub(crate) fn new(table: Arc<dyn ApiKeyTable>) -> Self {
        Self { table, own: None }
    }

    /// A store of its own on one connection, that writes, for the command
    /// line.
    pub async fn connect(database: &DatabaseConfig) -> anyhow::Result<Self> {
        let opened = store::open(database, 1).await?;
        Ok(Self {
            table: opened.api_keys,
            own: Some(opened.store),
        })
    }

    /// The scopes and revocation of the key with this hash.
    async fn find(&self, hash: &str) -> Result<Option<(Uuid, Scopes, bool)>, sqlx::Error> {
        let found = self.table.find_api_key(hash, Utc::now()).await?;
        Ok(found.map(|key| {
            (
                key.id,
                Scopes::from_names(key.scopes.split(',')),
                key.revoked,
            )
        }))
    }

    pub async fn insert(&self, key: &NewKey) -> anyhow::Result<()> {
        let record = &key.record;
        let scopes = record.scopes.to_string();
        self.table
            .insert_api_key(NewApiKeyRow {
                id: record.id,
                name: &record.name,
                key_hash: &key.hash,
                shown: &record.shown,
                scopes: &scopes,
                created_at: record.created_at,
                expires_at: record.expires_at,
            })
            .await
            .context("failed to store the key")
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = self
            .table
            .list_api_keys()
            .await
            .context("failed to list the keys")?;
        Ok(rows
            .into_iter()
            .map(|row: ApiKeyRow| KeyRecord {
                id: row.id,
                name: row.name,
                shown: row.shown,
                scopes: Scopes::from_names(row.scopes.split(',')),
                created_at: row.created_at,
                revoked_at: row.revoked_at,
                expires_at: None,
            })
            .collect())
    }

    /// Revokes the key; `false` when no unrevoked key has this id.
    pub async fn revoke(&self, id: Uuid) -> anyhow::Result<bool> {
        self.table
            .revoke_api_key(id, Utc::now())
            .await
            .context("failed to revoke the key")
    }

    /// Closes the store of [`KeyStore::connect`]; an open store's table
    /// closes with that store.
    pub async fn close(&self) {
        if let Some(store) = &self.own {
            store.close().await;
        }
    }
}

/// What a look-up found, shared by the requests that waited for it.
type Found = Option<Principal>;

/// Verifies API keys, remembering answers for a while.
pub(crate) struct ApiKeys {
    store: KeyStore,
    /// Keyed by the key's SHA-256; `None` when the cache time is zero.
    /// Each entry is filled once, by the first request that needs it.
    cache: Option<Cache<[u8; 32], Arc<OnceCell<Found>>>>,
}

impl ApiKeys {
    pub(crate) fn new(store: KeyStore, ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Self { store, cache }
    }

    pub(crate) async fn verify(&self, key: &str) -> Result<Principal, AuthError> {
        let found = match &self.cache {
            None => self.look_up(key).await?,
            Some(cache) => {
                let cell = cache.get_with(sha256(key.as_bytes()), || Arc::new(OnceCell::new()));
                cell.get_or_try_init(|| self.look_up(key)).await?.clone()
            }
        };
        found.ok_or(AuthError::Invalid("the API key is not valid"))
    }

    async fn look_up(&self, key: &str) -> Result<Found, AuthError> {
        if !key.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let found = self.store.find(&hash_of(key)).await.map_err(|err| {
            AuthError::Unavailable(anyhow::Error::new(err).context("failed to look up an API key"))
        })?;
        Ok(match found {
            Some((id, scopes, false)) => Some(Principal {
                kind: CredentialKind::ApiKey,
                subject: id.to_string(),
                scopes,
                role: None,
                email: None,
            }),
            Some((_, _, true)) | None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_recognizable() {
        let a = NewKey::generate("a", Scopes::default()).unwrap();
        let b = NewKey::generate("b", Scopes::default()).unwrap();
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash_of(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
        assert!(a.secret.starts_with(&a.record.shown));
    }
}
