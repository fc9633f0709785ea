//! The service layer: the API's operations over the Store and the Cache.
//!
//! Reads go through the read-through cache and return the JSON body to send.
//! Writes commit the change and its outbox row in one store transaction,
//! then update the cache and wake the outbox relay. A write runs as its own
//! task: if the client disconnects or the request times out after the
//! commit, the cache update still happens, so the cache never keeps a value
//! the database no longer has.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::{CacheKind, ReadThrough};
use crate::domain::{
    self, Activity, CursorKey, Event, EventFilter, EventMessage, NewEvent, NewUser, Page, PageOf,
    User, UserPatch,
};
use crate::store::{IdempotencyKey, Store, StoreError, Write, Written, retention};
use crate::telemetry::trace_context;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("user not found")]
    UserNotFound,
    #[error("event not found")]
    EventNotFound,
    #[error("email is already taken")]
    EmailTaken,
    /// Another request recorded the idempotency key first.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// The database is down or saturated: the client may retry.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::UserNotFound => Self::UserNotFound,
            StoreError::IdempotencyKeyTaken => Self::IdempotencyKeyTaken,
            StoreError::Unavailable(e) => Self::Unavailable(e.into()),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

pub(crate) type ServiceResult<T> = Result<T, ServiceError>;

pub(crate) struct Service {
    store: Arc<dyn Store>,
    cache: ReadThrough,
    /// Wakes the outbox relay after each committed write.
    relay_wakeup: Arc<Notify>,
    /// Writes in progress; shutdown waits for them before closing the store.
    writes: TaskTracker,
    /// The cursors' MAC key: `CURSOR_SECRET`, else the database's.
    cursor_key: tokio::sync::OnceCell<CursorKey>,
    /// `EVENTS_RETENTION`: older events are not found, whatever a cache
    /// still holds.
    events_retention: Option<Duration>,
}

/// The name of the cursors' key among the database's shared secrets.
const CURSOR_KEY: &str = "cursor_mac_key";

fn to_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("BUG: domain records serialize"))
}

/// The status of a created record's response, replayed for its
/// idempotency key.
const CREATED: u16 = 201;

impl Service {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        cache: ReadThrough,
        relay_wakeup: Arc<Notify>,
        cursor_secret: Option<&[u8]>,
    ) -> Self {
        Self {
            store,
            cache,
            relay_wakeup,
            writes: TaskTracker::new(),
            cursor_key: tokio::sync::OnceCell::new_with(cursor_secret.map(CursorKey::new)),
            events_retention: None,
        }
    }

    /// Hides events older than `keep` (`EVENTS_RETENTION`).
    pub(crate) fn with_events_retention(mut self, keep: Option<Duration>) -> Self {
        self.events_retention = keep;
        self
    }

    /// The key of the list cursors' MAC: `CURSOR_SECRET`, else the one
    /// the replicas of this database share (made by the first that asks).
    pub(crate) async fn cursor_key(&self) -> ServiceResult<&CursorKey> {
        self.cursor_key
            .get_or_try_init(|| async {
                // Two version 4 UUIDs: 244 random bits.
                let fresh = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
                let secret = self.store.shared_secret(CURSOR_KEY, &fresh).await?;
                Ok(CursorKey::new(secret.as_bytes()))
            })
            .await
    }

    /// Runs a write to completion even if the caller stops waiting.
    async fn complete<T: Send + 'static>(
        &self,
        write: impl Future<Output = ServiceResult<T>> + Send + 'static,
    ) -> ServiceResult<T> {
        // The task logs inside the request's span, like the handler would.
        let write = write.instrument(tracing::Span::current());
        self.writes.spawn(write).await.map_err(|err| {
            ServiceError::Internal(anyhow::Error::new(err).context("write task failed"))
        })?
    }

    /// Waits for writes in progress (after the HTTP server has stopped).
    pub(crate) async fn finish_writes(&self) {
        self.writes.close();
        self.writes.wait().await;
    }

    /// Creates the user; with `idempotency`, records the key and the
    /// response in the same transaction.
    pub(crate) async fn create_user(
        self: &Arc<Self>,
        new: NewUser,
        idempotency: Option<IdempotencyKey>,
    ) -> ServiceResult<Bytes> {
        let this = Arc::clone(self);
        self.complete(async move {
            let now = domain::now();
            let user = User {
                id: Uuid::now_v7(),
                email: new.email.as_str().to_owned(),
                first_name: new.first_name.as_str().to_owned(),
                last_name: new.last_name.as_str().to_owned(),
                created_at: now,
                updated_at: now,
            };
            let message = EventMessage::for_user(EventMessage::USER_CREATED, &user, now)
                .with_trace(trace_context::current());
            let json = to_json(&user);
            let write = Write::CreateUser {
                user: user.clone(),
                message,
            };
            this.store
                .write_one(write.idempotent(idempotency, CREATED, &json))
                .await?;
            this.relay_wakeup.notify_one();
            this.cache.put(CacheKind::User, user.id, json.clone()).await;
            tracing::debug!(user_id = %user.id, "user created");
            Ok(json)
        })
        .await
    }

    pub(crate) async fn get_user(&self, id: Uuid) -> ServiceResult<Bytes> {
        self.cache
            .get_or_load(CacheKind::User, id, || async {
                Ok(self.store.get_user(id).await?.as_ref().map(to_json))
            })
            .await?
            .ok_or(ServiceError::UserNotFound)
    }

    pub(crate) async fn update_user(
        self: &Arc<Self>,
        id: Uuid,
        patch: UserPatch,
    ) -> ServiceResult<Bytes> {
        if patch.is_empty() {
            return self.get_user(id).await;
        }
        let this = Arc::clone(self);
        self.complete(async move {
            let update = Write::UpdateUser {
                id,
                patch,
                at: domain::now(),
                trace: trace_context::current(),
            };
            let Written::Updated(user) = this.store.write_one(update).await? else {
                unreachable!("BUG: an update answers with the user");
            };
            this.relay_wakeup.notify_one();
            let json = to_json(&user);
            this.cache.put(CacheKind::User, id, json.clone()).await;
            tracing::debug!(user_id = %id, "user updated");
            Ok(json)
        })
        .await
    }

    pub(crate) async fn delete_user(self: &Arc<Self>, id: Uuid) -> ServiceResult<()> {
        let this = Arc::clone(self);
        self.complete(async move {
            let message =
                EventMessage::user_deleted(id, domain::now()).with_trace(trace_context::current());
            let Written::Deleted { event_ids } = this
                .store
                .write_one(Write::DeleteUser { id, message })
                .await?
            else {
                unreachable!("BUG: a delete answers with the event ids");
            };
            this.relay_wakeup.notify_one();
            this.cache.forget(CacheKind::User, &[id]).await;
            this.cache.forget(CacheKind::Event, &event_ids).await;
            tracing::info!(user_id = %id, events = event_ids.len(), "user deleted");
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_users(&self, page: Page) -> ServiceResult<PageOf<User>> {
        Ok(self.store.list_users(page).await?)
    }

    /// Creates the event; with `idempotency`, records the key and the
    /// response in the same transaction.
    pub(crate) async fn create_event(
        self: &Arc<Self>,
        new: NewEvent,
        idempotency: Option<IdempotencyKey>,
    ) -> ServiceResult<Bytes> {
        let this = Arc::clone(self);
        self.complete(async move {
            let event = Event {
                id: Uuid::now_v7(),
                user_id: new.user_id,
                event_type: new.event_type.as_str().to_owned(),
                data: new.data.as_str().to_owned(),
                created_at: domain::now(),
            };
            let json = to_json(&event);
            let write = Write::CreateEvent {
                message: EventMessage::for_event(&event).with_trace(trace_context::current()),
                event: event.clone(),
            };
            this.store
                .write_one(write.idempotent(idempotency, CREATED, &json))
                .await?;
            this.relay_wakeup.notify_one();
            this.cache
                .put(CacheKind::Event, event.id, json.clone())
                .await;
            tracing::debug!(event_id = %event.id, user_id = %event.user_id, "event created");
            Ok(json)
        })
        .await
    }

    pub(crate) async fn get_event(&self, id: Uuid) -> ServiceResult<Bytes> {
        let now = domain::now();
        let expired = |created_at| {
            self.events_retention
                .is_some_and(|keep| retention::expired(id, created_at, keep, now))
        };
        if expired(None) {
            return Err(ServiceError::EventNotFound);
        }
        let event = self
            .cache
            .get_or_load(CacheKind::Event, id, || async {
                Ok(self.store.get_event(id).await?.as_ref().map(to_json))
            })
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        if self.events_retention.is_some() && id.get_version_num() != 7 {
            // An id that tells no time (an event the Go service made):
            // the time is in the record.
            #[derive(serde::Deserialize)]
            struct Created {
                created_at: chrono::DateTime<chrono::Utc>,
            }
            let created = serde_json::from_slice::<Created>(&event).ok();
            if expired(created.map(|c| c.created_at)) {
                return Err(ServiceError::EventNotFound);
            }
        }
        Ok(event)
    }

    pub(crate) async fn list_events(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> ServiceResult<PageOf<Event>> {
        Ok(self.store.list_events(filter, page).await?)
    }

    /// The user's derived activity; 404 when the user does not exist.
    pub(crate) async fn activity(&self, user_id: Uuid) -> ServiceResult<Activity> {
        self.get_user(user_id).await?;
        Ok(self.store.get_activity(user_id).await?)
    }
}
