//! One supervisor for every background task.
//!
//! Each task is a `run(token)` future on the supervisor's `TaskTracker`,
//! watching its own token, a child of the supervisor's. Tasks are stopped
//! one by one with [`Task::stop`], in the order the application drains
//! (see `startup`); [`Supervisor::stop_all`] cancels whatever is left at
//! once, when the drain has run out of time.
//!
//! A task that ends before it was asked to stop (returning, failing or
//! panicking) is a failure: its cause is logged and [`Supervisor::failed`]
//! resolves, so that the application drains the rest and exits non-zero
//! rather than running half-alive.

use std::panic::AssertUnwindSafe;

use anyhow::Context;
use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs background tasks and notices when one ends on its own. Clones
/// share the same tasks.
#[derive(Clone, Default)]
pub(crate) struct Supervisor {
    /// Every task, so that shutdown can wait until none is left.
    tracker: TaskTracker,
    /// Parent of every task's token: cancelled only to give up on an
    /// orderly stop.
    root: CancellationToken,
    /// Cancelled by the first task that ends before it was asked to stop.
    failed: CancellationToken,
}

/// A running task.
#[must_use = "a task is stopped through its handle"]
pub(crate) struct Task {
    name: &'static str,
    /// Cancelled to ask the task to stop.
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Supervisor {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Spawns `run(token)`; the task should return once `token` is
    /// cancelled, and not before.
    pub(crate) fn spawn<F, Fut>(&self, name: &'static str, run: F) -> Task
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.root.child_token();
        let task = run(token.clone());
        let (asked_to_stop, failed) = (token.clone(), self.failed.clone());
        let handle = self.tracker.spawn(async move {
            // A panic is caught here, so that it counts as a failure too.
            let result = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("{name} panicked")),
            };
            if !asked_to_stop.is_cancelled() {
                match &result {
                    Ok(()) => tracing::error!(task = name, "task ended unexpectedly"),
                    Err(err) => {
                        tracing::error!(task = name, error = format!("{err:#}"), "task failed")
                    }
                }
                failed.cancel();
            }
            result
        });
        Task {
            name,
            token,
            handle,
        }
    }

    /// Resolves once a task has ended before it was asked to stop.
    pub(crate) async fn failed(&self) {
        self.failed.cancelled().await;
    }

    /// Whether a task has ended before it was asked to stop.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.is_cancelled()
    }

    /// Waits until every task has ended; call it once they were stopped.
    pub(crate) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Asks every task still running to stop, all at once.
    pub(crate) fn stop_all(&self) {
        self.root.cancel();
    }
}

impl Task {
    /// Asks the task to stop and waits for it; returns how it ended.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.handle
            .await
            .with_context(|| format!("{} was aborted", self.name))?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn until_stopped(token: CancellationToken) -> anyhow::Result<()> {
        token.cancelled().await;
        Ok(())
    }

    async fn fails(_: CancellationToken) -> anyhow::Result<()> {
        anyhow::bail!("broken")
    }

    async fn panics(_: CancellationToken) -> anyhow::Result<()> {
        panic!("boom")
    }

    #[tokio::test]
    async fn tasks_stop_in_the_order_asked_without_failing() {
        let supervisor = Supervisor::new();
        let first = supervisor.spawn("first", until_stopped);
        let second = supervisor.spawn("second", until_stopped);
        first.stop().await.expect("first stops cleanly");
        assert!(
            !second.token.is_cancelled(),
            "stopping one leaves the other"
        );
        second.stop().await.expect("second stops cleanly");
        supervisor.wait().await;
        assert!(!supervisor.has_failed());
    }

    #[tokio::test]
    async fn a_task_that_ends_on_its_own_is_a_failure() {
        let supervisor = Supervisor::new();
        let running = supervisor.spawn("running", until_stopped);
        let failing = supervisor.spawn("failing", fails);
        tokio::time::timeout(Duration::from_secs(5), supervisor.failed())
            .await
            .expect("the failure is noticed");
        let err = failing.stop().await.expect_err("its error is returned");
        assert_eq!(err.to_string(), "broken");
        running.stop().await.expect("the rest stops cleanly");
    }

    #[tokio::test]
    async fn a_panicking_task_is_a_failure() {
        let supervisor = Supervisor::new();
        let panicking = supervisor.spawn("panicking", panics);
        tokio::time::timeout(Duration::from_secs(5), supervisor.failed())
            .await
            .expect("the panic is noticed");
        let err = panicking.stop().await.expect_err("a panic is an error");
        assert_eq!(err.to_string(), "panicking panicked");
    }

    #[tokio::test]
    async fn stop_all_cancels_every_task() {
        let supervisor = Supervisor::new();
        let tasks = [
            supervisor.spawn("one", until_stopped),
            supervisor.spawn("two", until_stopped),
        ];
        supervisor.stop_all();
        tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
            .await
            .expect("every task ended");
        for task in tasks {
            task.stop().await.expect("stopped cleanly");
        }
    }
}
