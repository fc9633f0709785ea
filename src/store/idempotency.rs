//! Idempotency keys: a POST sent again with the same `Idempotency-Key`
//! gets the first response instead of a second effect.
//!
//! The key is written in the same transaction as the effect
//! ([`Write::Idempotent`]), before it: a second transaction with the same
//! key finds the row (on PostgreSQL it waits for the first to end) and
//! changes nothing, so the effect happens once across every replica. A
//! write that is rejected (a taken email, a missing user) removes its key
//! again in its transaction: only successes are replayed, and a retry of a
//! rejected request runs again. Expired keys may be taken anew; the purge
//! ([`Store::purge_idempotency_keys`](super::Store::purge_idempotency_keys))
//! deletes them in the background.

use chrono::{DateTime, Utc};

use super::Write;

/// An idempotency key as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey {
    /// Whose key it is: a hash of the client's credential, or empty for
    /// clients without one. Keys of different clients never meet.
    pub scope: String,
    /// The `Idempotency-Key` header's value.
    pub key: String,
    /// A hash of the request (method, path, body): a key sent again with
    /// another request is refused instead of replayed.
    pub request_hash: String,
    /// When the key may be used for another request.
    pub expires_at: DateTime<Utc>,
}

/// The response recorded for a key, to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    /// [`IdempotencyKey::request_hash`] of the request that made it.
    pub request_hash: String,
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl Write {
    /// `write`, recorded under `key` with the response to replay when it
    /// commits; `write` itself when there is no key.
    pub(crate) fn idempotent(self, key: Option<IdempotencyKey>, status: u16, body: &[u8]) -> Self {
        match key {
            Some(key) => Write::Idempotent {
                key,
                status,
                response: String::from_utf8_lossy(body).into_owned(),
                write: Box::new(self),
            },
            None => self,
        }
    }

    /// The change itself: the write an idempotency key wraps, or this one.
    pub(crate) fn effect(&self) -> &Write {
        match self {
            Write::Idempotent { write, .. } => write,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The key and its effect commit together, on the store itself.

    use std::sync::Arc;

    use super::*;
    use crate::domain::Page;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Store, StoreError, Written};

    fn create_user(email: &str) -> Write {
        let (user, message) = crate::store::new_user(email);
        Write::CreateUser { user, message }
    }

    fn key(name: &str, expires_in: chrono::Duration) -> IdempotencyKey {
        IdempotencyKey {
            scope: String::new(),
            key: name.to_owned(),
            request_hash: format!("hash of {name}"),
            expires_at: Utc::now() + expires_in,
        }
    }

    async fn users(store: &dyn Store) -> u64 {
        store.list_users(Page::default()).await.unwrap().total
    }

    #[tokio::test]
    async fn a_key_records_its_effect_once_and_leaves_the_rest_of_a_batch_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::migrated_in(dir.path(), 2).await);
        let day = chrono::Duration::days(1);
        let k = key("k", day);
        let outcomes = store
            .write(&[
                create_user("a@example.com").idempotent(Some(k.clone()), 201, b"{\"a\":1}"),
                create_user("b@example.com"),
                create_user("c@example.com").idempotent(Some(k.clone()), 201, b"{}"),
            ])
            .await
            .unwrap();
        assert!(matches!(outcomes[0], Ok(Written::Created)), "{outcomes:?}");
        assert!(matches!(outcomes[1], Ok(Written::Created)), "{outcomes:?}");
        assert!(
            matches!(outcomes[2], Err(StoreError::IdempotencyKeyTaken)),
            "{outcomes:?}"
        );
        assert_eq!(users(store.as_ref()).await, 2, "c was not created");
        let stored = store.idempotent_response("", "k").await.unwrap();
        assert_eq!(
            stored,
            Some(StoredResponse {
                request_hash: k.request_hash.clone(),
                status: 201,
                body: "{\"a\":1}".into(),
            })
        );
        assert_eq!(store.idempotent_response("other", "k").await.unwrap(), None);

        // A rejected write records no key.
        let taken = store
            .write_one(create_user("b@example.com").idempotent(Some(key("r", day)), 201, b""))
            .await;
        assert!(matches!(taken, Err(StoreError::EmailTaken)), "{taken:?}");
        assert_eq!(store.idempotent_response("", "r").await.unwrap(), None);

        // An expired key is taken anew, and purged when it expires again.
        let expired = key("e", chrono::Duration::milliseconds(-1));
        let first = store
            .write_one(create_user("d@example.com").idempotent(Some(expired.clone()), 201, b""))
            .await;
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(store.idempotent_response("", "e").await.unwrap(), None);
        let again = store
            .write_one(create_user("e@example.com").idempotent(Some(expired), 201, b""))
            .await;
        assert!(again.is_ok(), "{again:?}");
        assert_eq!(users(store.as_ref()).await, 4);
        assert_eq!(
            store
                .purge_idempotency_keys(Utc::now(), 1000)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .purge_idempotency_keys(Utc::now(), 1000)
                .await
                .unwrap(),
            0
        );
        assert!(store.idempotent_response("", "k").await.unwrap().is_some());
    }
}
