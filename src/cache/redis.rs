//! Redis cache: the configured backend, shared by every replica.
//!
//! One multiplexed, auto-reconnecting connection, served by a thread of its
//! own ([`IoThread`]) so that thousands of busy clients do not delay its
//! answers past their time limit. Every command has a short timeout, and a
//! circuit breaker skips Redis for a moment after a failure, so an
//! unreachable or stalled Redis costs requests one timeout, not one per
//! request: they are served from the store meanwhile.
//!
//! A write that cannot reach Redis leaves the old value there. Those keys
//! are remembered and deleted before this replica reads from Redis again,
//! so no stale value is served once Redis is back. (If more keys failed than
//! are remembered, every user and event key under the prefix is deleted.)
//!
//! With the in-process tier on, every write and every repair also publishes
//! the keys it changed on the invalidations channel, in the same pipeline
//! and after the change (see `invalidation`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Cache;
use super::invalidation::CLEAR_ALL;

/// How long to skip Redis after a failure before trying again.
const COOLDOWN: Duration = Duration::from_secs(1);
/// Failed keys remembered for repair; beyond this, the repair deletes every
/// entry under the prefix instead.
const REPAIRS_KEPT: usize = 1_000_000;
/// Keys deleted per command during a repair.
const REPAIR_CHUNK: usize = 500;

#[derive(Default)]
struct Health {
    /// Skip Redis until then.
    open_until: Option<Instant>,
    /// Keys whose latest write failed.
    stale: HashSet<String>,
    /// More keys failed than `stale` can hold.
    overflowed: bool,
}

pub(crate) struct RedisCache {
    connection: ConnectionManager,
    /// Where the connection's commands are sent and its answers read.
    io: IoThread,
    /// Prefix of this deployment's keys, for the overflow repair.
    prefix: String,
    /// Where changed keys are published, when replicas keep an in-process
    /// tier.
    invalidations: Option<String>,
    health: Mutex<Health>,
}

impl RedisCache {
    /// Creates the client; the connection is made on first use (and
    /// re-made after failures), so a Redis that is down at start-up only
    /// degrades the service.
    pub(crate) fn connect_lazy(
        connection: redis::ConnectionInfo,
        prefix: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(connection)
            .context("invalid Redis settings (REDIS_URL or REDIS_*)")?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(1);
        let connection = client
            .get_connection_manager_lazy(config)
            .context("failed to set up the Redis connection")?;
        Ok(Self {
            connection,
            io: IoThread::start()?,
            prefix,
            invalidations: None,
            health: Mutex::default(),
        })
    }

    /// Publishes every key this cache changes on `channel`.
    pub(crate) fn publishing_invalidations(mut self, channel: String) -> Self {
        self.invalidations = Some(channel);
        self
    }

    /// Adds to `pipeline` the publication of `key` (or [`CLEAR_ALL`]).
    fn publish(&self, pipeline: &mut redis::Pipeline, key: &str) {
        publish(pipeline, self.invalidations.as_deref(), key);
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().expect("BUG: cache health poisoned")
    }

    /// Errors at once while the breaker is open.
    fn check_breaker(&self) -> anyhow::Result<()> {
        let mut health = self.health();
        match health.open_until {
            Some(until) if Instant::now() < until => {
                anyhow::bail!("redis skipped after a recent failure")
            }
            Some(_) => {
                health.open_until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Opens the breaker (logging the first failure of an outage) and
    /// remembers `stale_key`, whose write did not happen.
    fn failed(&self, err: &redis::RedisError, stale_key: Option<&str>) {
        let mut health = self.health();
        if health.open_until.is_none() && health.stale.is_empty() && !health.overflowed {
            tracing::warn!(error = %err, "redis unavailable; serving from the store");
        }
        health.open_until = Some(Instant::now() + COOLDOWN);
        if let Some(key) = stale_key {
            remember(&mut health, key);
        }
    }

    /// Deletes the keys whose writes failed; reading is safe again after.
    async fn repair(&self) -> redis::RedisResult<()> {
        let (keys, overflowed) = {
            let health = self.health();
            if health.stale.is_empty() && !health.overflowed {
                return Ok(());
            }
            (
                health.stale.iter().cloned().collect::<Vec<_>>(),
                health.overflowed,
            )
        };
        let connection = self.connection.clone();
        let prefix = self.prefix.clone();
        let channel = self.invalidations.clone();
        let keys = self
            .io
            .run(async move {
                remove(connection, &prefix, channel.as_deref(), &keys, overflowed).await?;
                Ok(keys)
            })
            .await?;
        let mut health = self.health();
        for key in &keys {
            health.stale.remove(key);
        }
        if overflowed {
            health.overflowed = false;
        }
        tracing::info!(
            repaired = keys.len(),
            flushed = overflowed,
            "redis is back; entries written during the outage were removed"
        );
        Ok(())
    }

    /// Runs `command` unless the breaker is open, repairing first.
    async fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        command: redis::Cmd,
        stale_key_on_failure: Option<&str>,
    ) -> anyhow::Result<T> {
        self.guarded(stale_key_on_failure, |mut connection| async move {
            command.query_async(&mut connection).await
        })
        .await
    }

    /// [`RedisCache::run`] for several commands sent at once.
    async fn run_pipeline(
        &self,
        pipeline: redis::Pipeline,
        stale_key_on_failure: Option<&str>,
    ) -> anyhow::Result<()> {
        self.guarded(stale_key_on_failure, |mut connection| async move {
            pipeline.query_async(&mut connection).await
        })
        .await
    }

    /// Sends what `request` sends unless the breaker is open, repairing
    /// first; a failure opens the breaker.
    async fn guarded<T, Fut>(
        &self,
        stale_key_on_failure: Option<&str>,
        request: impl FnOnce(ConnectionManager) -> Fut,
    ) -> anyhow::Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        if let Err(err) = self.check_breaker() {
            if let Some(key) = stale_key_on_failure {
                remember(&mut self.health(), key);
            }
            return Err(err);
        }
        if let Err(err) = self.repair().await {
            self.failed(&err, stale_key_on_failure);
            return Err(err.into());
        }
        let result = self.io.run(request(self.connection.clone())).await;
        result.map_err(|err| {
            self.failed(&err, stale_key_on_failure);
            anyhow::Error::new(err)
        })
    }
}

/// A thread of its own for the Redis connection: the task that writes the
/// commands and reads the answers, and the commands' time limits, run
/// there. On the application's runtime, that task would wait its turn
/// behind every runnable connection: under thousands of clients, longer
/// than `CACHE_TIMEOUT`, while Redis itself answers in a millisecond.
struct IoThread {
    handle: tokio::runtime::Handle,
    /// Stops the thread when dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl IoThread {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the Redis I/O runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("redis-io".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .context("failed to start the Redis I/O thread")?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `request` on the thread (a client error if it has stopped).
    async fn run<T: Send + 'static>(
        &self,
        request: impl Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> redis::RedisResult<T> {
        self.handle.spawn(request).await.unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the Redis I/O thread stopped",
            )))
        })
    }
}

/// Adds to `pipeline` the publication of `key` on `channel`, if any.
fn publish(pipeline: &mut redis::Pipeline, channel: Option<&str>, key: &str) {
    if let Some(channel) = channel {
        pipeline.cmd("PUBLISH").arg(channel).arg(key).ignore();
    }
}

/// Deletes `keys`, or with `overflowed` every user and event key under
/// `prefix`, and publishes what it deleted on `channel`.
async fn remove(
    mut connection: ConnectionManager,
    prefix: &str,
    channel: Option<&str>,
    keys: &[String],
    overflowed: bool,
) -> redis::RedisResult<()> {
    if overflowed {
        for pattern in ["user:*", "event:*"] {
            delete_matching(&mut connection, &format!("{prefix}{pattern}")).await?;
        }
        if channel.is_some() {
            let mut pipeline = redis::pipe();
            publish(&mut pipeline, channel, CLEAR_ALL);
            pipeline.query_async::<()>(&mut connection).await?;
        }
    } else {
        for chunk in keys.chunks(REPAIR_CHUNK) {
            let mut pipeline = redis::pipe();
            pipeline.cmd("UNLINK").arg(chunk).ignore();
            for key in chunk {
                publish(&mut pipeline, channel, key);
            }
            pipeline.query_async::<()>(&mut connection).await?;
        }
    }
    Ok(())
}

async fn delete_matching(
    connection: &mut ConnectionManager,
    pattern: &str,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(REPAIR_CHUNK)
            .query_async(connection)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(connection)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn remember(health: &mut Health, key: &str) {
    if health.stale.len() < REPAIRS_KEPT {
        health.stale.insert(key.to_owned());
    } else {
        health.overflowed = true;
    }
}

fn set(key: &str, value: &[u8], ttl: Duration) -> redis::Cmd {
    let mut command = redis::cmd("SET");
    command
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64);
    command
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        let value: Option<Vec<u8>> = self.run(command, None).await?;
        Ok(value.map(Bytes::from))
    }

    async fn fill(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        let mut command = set(key, &value, ttl);
        command.arg("NX");
        // A fill that does not happen leaves nothing stale behind.
        let _: Option<String> = self.run(command, None).await?;
        Ok(())
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        let mut pipeline = redis::pipe();
        pipeline.add_command(set(key, &value, ttl)).ignore();
        // After the SET: a reader that missed the new value is evicted.
        self.publish(&mut pipeline, key);
        self.run_pipeline(pipeline, Some(key)).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        self.io
            .run(async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            })
            .await
            .context("redis did not answer PING")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use redis::IntoConnectionInfo;

    use super::*;

    /// Thousands of clients keep the application's runtime busy: a turn of
    /// its run queue takes longer than `CACHE_TIMEOUT`. Redis, idle, must
    /// still answer in time, and the cache stay healthy.
    #[test]
    #[ignore = "needs Redis (TEST_REDIS_URL); run with --include-ignored"]
    fn commands_are_answered_in_time_while_the_runtime_is_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let url = std::env::var("TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
            let prefix = format!("busy-runtime:{}:", uuid::Uuid::new_v4());
            let cache = RedisCache::connect_lazy(
                url.as_str().into_connection_info().expect("TEST_REDIS_URL"),
                prefix.clone(),
                Duration::from_millis(50),
            )
            .expect("a client");
            let key = format!("{prefix}user:1");
            cache
                .put(&key, Bytes::from_static(b"{}"), Duration::from_secs(60))
                .await
                .expect("Redis reachable (TEST_REDIS_URL)");

            // 200 tasks that each hold the runtime's one worker for 2 ms
            // before they yield: a turn of the run queue takes 400 ms.
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..200 {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(2));
                        tokio::task::yield_now().await;
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(cache.get(&key).await.map_err(|err| format!("{err:#}")));
            }
            let ping = cache.ping().await.map_err(|err| format!("{err:#}"));
            stop.store(true, Ordering::Relaxed);
            assert!(
                answers
                    .iter()
                    .all(|answer| matches!(answer, Ok(Some(value)) if value == "{}")),
                "{answers:?}"
            );
            assert!(ping.is_ok(), "{ping:?}");
        });
    }
}
