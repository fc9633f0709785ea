//! Removing deleted users' events after the users (SQLite).
//!
//! SQLite has one write lock. Deleting a user with 100k events in the
//! user's own transaction holds it for more than a second, and every other
//! write waits. So on SQLite a delete removes the user, its totals and
//! writes its outbox row at once, and lists the user in `deleted_users`;
//! reads hide the events of the users listed there, so the delete is
//! complete for every client as soon as it commits. This task then removes
//! those events in transactions of at most [`CHUNK`] rows each, taking its
//! turn on the writer connection with the other writes, and finally the
//! user's row in `deleted_users`.
//!
//! The list is in the database, so a process that stops halfway resumes
//! after a restart (the store wakes the task once migrated).

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most events one transaction removes: a few milliseconds of the write
/// lock.
pub(crate) const CHUNK: u32 = 500;

/// How long the task waits after a failed round before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The background task, and how to wake and stop it.
pub(crate) struct DeferredDeletes {
    /// Poked after a delete commits, and once the schema is migrated.
    wakeup: Arc<Notify>,
    /// Stops the task between two transactions.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl DeferredDeletes {
    /// Starts the task on `writer` (the single writer pool). It waits for
    /// the first [`DeferredDeletes::wake`].
    pub(crate) fn start(writer: SqlitePool) -> Self {
        let wakeup = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(run(writer, Arc::clone(&wakeup), stop.clone()));
        tasks.close();
        Self {
            wakeup,
            stop,
            tasks,
        }
    }

    /// Asks the task to look for events to remove.
    pub(crate) fn wake(&self) {
        self.wakeup.notify_one();
    }

    /// Stops the task after its current transaction; what is left is
    /// removed after the next start.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

async fn run(writer: SqlitePool, wakeup: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wakeup.notified() => {}
        }
        loop {
            if stop.is_cancelled() {
                return;
            }
            match remove_chunk(&writer).await {
                Ok(0) => break,
                Ok(removed) => tracing::debug!(removed, "events of deleted users removed"),
                Err(err) => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "failed to remove events of deleted users; retrying"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    }
}

/// One transaction: removes up to [`CHUNK`] events of deleted users, and
/// the users whose events are all gone from `deleted_users`. Returns how
/// many rows it removed (0: nothing is left).
pub(crate) async fn remove_chunk(writer: &SqlitePool) -> Result<u64, sqlx::Error> {
    let mut tx = writer.begin().await?;
    let events = sqlx::query(
        "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events \
         WHERE user_id IN (SELECT user_id FROM deleted_users) LIMIT $1)",
    )
    .bind(i64::from(CHUNK))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let mut users = 0;
    if events < u64::from(CHUNK) {
        users = sqlx::query(
            "DELETE FROM deleted_users WHERE NOT EXISTS \
             (SELECT 1 FROM events WHERE events.user_id = deleted_users.user_id)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(events + users)
}
