//! Group commit: writes that arrive while others are committing share the
//! next transaction, so the database commits once for many requests.
//!
//! There is no committer task. A writer queues its write, then either
//! receives its outcome from a commit that took it, or takes one of the
//! commit slots itself, drains the queue (up to `max_batch` writes) and
//! commits that batch for everyone in it. One writer at a time makes
//! batches of one, with no wait added; under load each commit carries the
//! writes that queued while the ones before it ran. `window` can add a
//! short wait for more.
//!
//! Each write still gets its own outcome, and only after the commit: the
//! store answers every write of a batch separately (see
//! [`Store::write`]). A batch commits as a task of its own, so a writer
//! that stops waiting does not cut the others' commit short.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{
    OutboxBacklog, OutboxRow, Outcome, PoolStats, Store, StoreError, StoreResult, StoredResponse,
    Write,
};
use crate::domain::{Activity, Event, EventFilter, Page, PageOf, User};

/// Where group commit reports each batch it commits. The metrics implement
/// it (`db_write_batch_size`): the store reports, and does not import them.
pub(crate) trait CommitObserver: Send + Sync + 'static {
    /// A batch of `writes` writes is about to commit.
    fn batch_committing(&self, writes: usize);
}

/// How writes are gathered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupCommitSettings {
    /// Most writes in one transaction.
    pub(crate) max_batch: usize,
    /// How long a batch waits for more writes before it commits; zero: it
    /// takes what is queued and commits at once.
    pub(crate) window: Duration,
    /// How many batches may commit at once (SQLite: one, its single writer).
    pub(crate) committers: usize,
}

/// A write waiting for a commit, and where its outcome goes.
struct Job {
    write: Write,
    reply: oneshot::Sender<Outcome>,
}

/// A [`Store`] whose writes are gathered into shared transactions; every
/// other call goes straight to the store it wraps.
pub(crate) struct GroupCommit {
    inner: Arc<dyn Store>,
    settings: GroupCommitSettings,
    /// Writes not yet taken by a batch, oldest first.
    queue: Mutex<VecDeque<Job>>,
    /// One permit per batch committing now.
    slots: Arc<Semaphore>,
    /// Batches committing now; `close` waits for them.
    commits: TaskTracker,
    observer: Arc<dyn CommitObserver>,
}

impl GroupCommit {
    pub(crate) fn new(
        inner: Arc<dyn Store>,
        settings: GroupCommitSettings,
        observer: Arc<dyn CommitObserver>,
    ) -> Self {
        Self {
            inner,
            settings,
            queue: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(settings.committers.max(1))),
            commits: TaskTracker::new(),
            observer,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // The queue is consistent after any panic (push and drain only).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `write`; its outcome comes on the receiver.
    fn enqueue(queue: &mut VecDeque<Job>, write: Write) -> oneshot::Receiver<Outcome> {
        let (reply, outcome) = oneshot::channel();
        queue.push_back(Job { write, reply });
        outcome
    }

    /// Queues `write` and waits for its outcome, committing a batch itself
    /// when a slot is free.
    async fn submit(&self, write: Write) -> Outcome {
        let outcome = Self::enqueue(&mut self.queue(), write);
        self.outcome_of(outcome).await
    }

    /// Waits for the outcome of a queued write, committing a batch itself
    /// when a slot is free.
    async fn outcome_of(&self, mut outcome: oneshot::Receiver<Outcome>) -> Outcome {
        loop {
            let slot = tokio::select! {
                biased;
                result = &mut outcome => return result.unwrap_or_else(|_| Err(abandoned())),
                slot = Arc::clone(&self.slots).acquire_owned() => {
                    slot.expect("BUG: the commit slots are never closed")
                }
            };
            if !self.settings.window.is_zero() && self.queue().len() < self.settings.max_batch {
                tokio::time::sleep(self.settings.window).await;
            }
            let batch: Vec<Job> = {
                let mut queue = self.queue();
                let n = queue.len().min(self.settings.max_batch);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Ours was taken by a batch that is committing: wait for it.
                drop(slot);
                return outcome.await.unwrap_or_else(|_| Err(abandoned()));
            }
            let inner = Arc::clone(&self.inner);
            let observer = Arc::clone(&self.observer);
            self.commits.spawn(async move {
                commit(inner.as_ref(), batch, observer.as_ref()).await;
                drop(slot);
            });
        }
    }
}

/// Commits `batch` and answers each of its writers.
async fn commit(store: &dyn Store, batch: Vec<Job>, observer: &dyn CommitObserver) {
    observer.batch_committing(batch.len());
    let (writes, replies): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|job| (job.write, job.reply)).unzip();
    match store.write(&writes).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A writer that stopped waiting needs no answer.
                let _ = reply.send(outcome);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_each_write()));
            }
        }
    }
}

/// The outcome of a write whose batch ended without answering it (its
/// commit task panicked).
fn abandoned() -> StoreError {
    StoreError::Other(anyhow::anyhow!(
        "the write's batch ended without an outcome"
    ))
}

#[async_trait]
impl Store for GroupCommit {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.inner.pool_stats()
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    /// The writes are queued together, so that they share a batch as far
    /// as `max_batch` allows; each has its own outcome.
    async fn write(&self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
        let pending: Vec<_> = {
            let mut queue = self.queue();
            writes
                .iter()
                .map(|write| Self::enqueue(&mut queue, write.clone()))
                .collect()
        };
        let outcomes = pending.into_iter().map(|outcome| self.outcome_of(outcome));
        Ok(futures_util::future::join_all(outcomes).await)
    }

    /// Joins a batch with the write itself, without a copy.
    async fn write_one(&self, write: Write) -> Outcome {
        self.submit(write).await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.inner.get_user(id).await
    }

    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>> {
        self.inner.list_users(page).await
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        self.inner.get_event(id).await
    }

    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        self.inner.list_events(filter, page).await
    }

    async fn claim_outbox(
        &self,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.inner.claim_outbox(holder, limit, lease).await
    }

    async fn renew_outbox(
        &self,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        self.inner.renew_outbox(holder, ids, lease).await
    }

    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        self.inner.complete_outbox(ids).await
    }

    async fn release_outbox(&self, holder: Uuid, ids: &[i64]) -> StoreResult<()> {
        self.inner.release_outbox(holder, ids).await
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        self.inner.outbox_backlog().await
    }

    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity> {
        self.inner.get_activity(user_id).await
    }

    async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<StoredResponse>> {
        self.inner.idempotent_response(scope, key).await
    }

    async fn purge_idempotency_keys(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<usize> {
        self.inner.purge_idempotency_keys(now, limit).await
    }

    async fn prune_processed_messages(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<usize> {
        self.inner.prune_processed_messages(before, limit).await
    }

    async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        self.inner.shared_secret(name, fresh).await
    }

    fn replica_lag(&self) -> Option<Option<std::time::Duration>> {
        self.inner.replica_lag()
    }

    async fn prepare_events(&self, now: chrono::DateTime<chrono::Utc>) -> StoreResult<usize> {
        self.inner.prepare_events(now).await
    }

    async fn drop_expired_partitions(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<usize> {
        self.inner.drop_expired_partitions(before).await
    }

    async fn expire_events(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<usize> {
        self.inner.expire_events(before, limit).await
    }

    async fn close(&self) {
        self.commits.close();
        self.commits.wait().await;
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventMessage;
    use crate::metrics::Metrics;
    use crate::store::Written;
    use crate::store::sqlite::SqliteStore;

    /// `db_write_batch_size`'s count (commits) and sum (writes).
    fn batches(metrics: &Metrics) -> (u64, u64) {
        let text = metrics.render();
        let read = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} is missing from {text}")) as u64
        };
        (
            read("db_write_batch_size_count"),
            read("db_write_batch_size_sum"),
        )
    }

    #[tokio::test]
    async fn the_writes_of_one_call_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 1).await;
        let metrics = Arc::new(Metrics::new());
        let settings = GroupCommitSettings {
            max_batch: 128,
            window: Duration::ZERO,
            committers: 2,
        };
        let group = GroupCommit::new(Arc::new(store), settings, Arc::<Metrics>::clone(&metrics));
        let user_id = Uuid::now_v7();
        let writes: Vec<Write> = (0..5)
            .map(|_| {
                Write::ApplyMessage(EventMessage {
                    id: Uuid::now_v7(),
                    user_id,
                    event_type: "login".into(),
                    data: String::new(),
                    timestamp: chrono::Utc::now(),
                    trace: None,
                })
            })
            .collect();

        let outcomes = group.write(&writes).await.unwrap();

        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Ok(Written::Applied(true)))),
            "{outcomes:?}"
        );
        assert_eq!(batches(&metrics), (1, 5), "one commit for the five");
        assert_eq!(group.get_activity(user_id).await.unwrap().total_events, 5);
    }
}
