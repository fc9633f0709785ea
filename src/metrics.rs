//! Prometheus metrics, served at `GET /metrics` in the Prometheus text
//! format.
//!
//! Each [`Application`](crate::startup::Application) owns its registry (no
//! process-wide recorder), so that several instances in one process, as in
//! the tests, count separately. Labels are bounded: route templates, never
//! ids; standard methods, others folded into `OTHER`; event kinds;
//! partitions. Most values are updated where things
//! happen; pool sizes, the outbox backlog (`StoreCollector`) and the
//! process's own figures are sampled at scrape time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{CommitObserver, Store};

/// `Content-Type` of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Writes per transaction: one (no concurrency) up to the largest batch.
const BATCH_SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Request latency buckets, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// A standard method, or `OTHER`.
    pub(crate) method: &'static str,
    /// The route template (`/api/v1/users/{id}`), or `unmatched`.
    pub(crate) route: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// A standard method, or `OTHER`.
    pub(crate) method: &'static str,
    pub(crate) route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabels {
    /// `user` or `event`.
    pub(crate) kind: &'static str,
    /// `hit`, `miss` or `error`.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// `applied` or `duplicate`.
    pub(crate) result: &'static str,
}

/// Age of an event at each stage of the pipeline, in seconds: 1 ms to 60 s.
const DELAY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabels {
    /// `relayed` (the bus has the message), `consumed` (a worker took it
    /// from the bus) or `applied` (the activity counts it).
    pub(crate) stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DependencyLabels {
    /// `database`, `cache`, `producer` or `consumer`.
    pub(crate) dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolLabels {
    /// `main` (PostgreSQL), or `writer` / `reader` (SQLite).
    pub(crate) pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabels {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AdmissionLabels {
    /// `read` or `write`.
    pub(crate) class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ShedLabels {
    /// `read` or `write`.
    pub(crate) class: &'static str,
    /// `queue_full` or `queue_timeout`.
    pub(crate) reason: &'static str,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) http_requests: Family<RequestLabels, Counter>,
    pub(crate) http_duration: LatencyFamily,
    pub http_in_flight: Gauge,
    /// `cache_requests_total`'s series, every kind by every result, made at
    /// start: a cached read (the hottest path) counts without a lookup by
    /// label, and each series shows 0 until it counts.
    cache_reads: Vec<(CacheLabels, Counter)>,
    pub(crate) events_published: Counter,
    pub(crate) events_consumed: Counter,
    pub(crate) events_failed: Counter,
    pub(crate) events_dead_lettered: Counter,
    pub(crate) events_processed: Family<ResultLabels, Counter>,
    /// How old an event is (since the time of its change) at each stage:
    /// [`StageLabels`].
    pub(crate) events_delay: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub(crate) outbox_backlog: Gauge,
    pub(crate) outbox_oldest_age: Gauge<f64, AtomicU64>,
    /// How long processed messages' ids are kept (-1: forever).
    pub(crate) processed_ids_kept: Gauge,
    /// Events removed past `EVENTS_RETENTION`.
    pub(crate) events_expired: Counter,
    /// Deliveries taken from the bus that no worker has started.
    pub worker_queue_depth: Gauge,
    pub worker_in_flight: Gauge,
    pub(crate) worker_queue_capacity: Gauge,
    pub(crate) kafka_lag: Family<PartitionLabels, Gauge>,
    /// Partitions the consumer holds (0 on a replica the group left out).
    pub(crate) kafka_partitions: Gauge,
    pub(crate) db_pool_connections: Family<PoolLabels, Gauge>,
    pub(crate) db_pool_idle: Family<PoolLabels, Gauge>,
    pub(crate) db_pool_max: Family<PoolLabels, Gauge>,
    pub(crate) db_pool_waiting: Family<PoolLabels, Gauge>,
    /// How far behind the read replica is (+Inf: not seen caught up yet).
    pub(crate) db_replica_lag: Gauge<f64, AtomicU64>,
    /// Writes per committed transaction (group commit).
    pub(crate) db_write_batch_size: Histogram,
    /// Dependency checks made, each round of the health task.
    pub(crate) health_checks: Family<DependencyLabels, Counter>,
    /// API requests answered 503 by admission control.
    pub(crate) http_shed: Family<ShedLabels, Counter>,
    /// The adaptive concurrency limit of each request class.
    pub(crate) admission_limit: Family<AdmissionLabels, Gauge>,
    pub(crate) admission_in_flight: Family<AdmissionLabels, Gauge>,
    pub(crate) admission_waiting: Family<AdmissionLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to sending its response headers",
            http_duration.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled now",
            http_in_flight.clone(),
        );
        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Cache reads by kind (user, event) and result (hit, miss, error)",
            cache_requests.clone(),
        );
        let cache_reads = ["user", "event"]
            .into_iter()
            .flat_map(|kind| ["hit", "miss", "error"].map(|result| CacheLabels { kind, result }))
            .map(|labels| {
                let counter = cache_requests.get_or_create(&labels).clone();
                (labels, counter)
            })
            .collect();
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Outbox messages the bus acknowledged",
            events_published.clone(),
        );
        let events_consumed = Counter::default();
        registry.register(
            "events_consumed",
            "Messages taken from the bus for the workers",
            events_consumed.clone(),
        );
        let events_failed = Counter::default();
        registry.register(
            "events_failed",
            "Processing attempts that failed (each retry counts)",
            events_failed.clone(),
        );
        let events_dead_lettered = Counter::default();
        registry.register(
            "events_dead_lettered",
            "Messages parked on the dead-letter topic",
            events_dead_lettered.clone(),
        );
        let events_processed = Family::<ResultLabels, Counter>::default();
        registry.register(
            "events_processed",
            "Messages processed: applied, or duplicate (already applied)",
            events_processed.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog_rows",
            "Outbox rows not yet published (sampled at scrape)",
            outbox_backlog.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty)",
            outbox_oldest_age.clone(),
        );
        let processed_ids_kept = Gauge::default();
        registry.register(
            "processed_message_ids_kept_seconds",
            "How long the ids of processed messages are kept to recognize a message delivered \
             again (PROCESSED_MESSAGES_RETENTION; -1: forever, the bus keeps messages forever)",
            processed_ids_kept.clone(),
        );
        let events_expired = Counter::default();
        registry.register(
            "events_expired",
            "Events removed because they were older than EVENTS_RETENTION",
            events_expired.clone(),
        );
        let worker_queue_depth = Gauge::default();
        registry.register(
            "worker_queue_depth",
            "Messages waiting for a worker",
            worker_queue_depth.clone(),
        );
        let worker_in_flight = Gauge::default();
        registry.register(
            "worker_in_flight",
            "Messages being processed now",
            worker_in_flight.clone(),
        );
        let worker_queue_capacity = Gauge::default();
        registry.register(
            "worker_queue_capacity",
            "Messages the workers' queues hold when full",
            worker_queue_capacity.clone(),
        );
        let kafka_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "kafka_consumer_lag",
            "Messages behind the end of each assigned partition (from librdkafka statistics)",
            kafka_lag.clone(),
        );
        let kafka_partitions = Gauge::default();
        registry.register(
            "kafka_consumer_assigned_partitions",
            "Partitions this consumer holds (from librdkafka statistics); 0 while its group has lag \
             means others, or a member that is gone, hold them",
            kafka_partitions.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections",
            db_pool_connections.clone(),
        );
        let db_pool_idle = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_idle_connections",
            "Open database connections not in use",
            db_pool_idle.clone(),
        );
        let db_pool_max = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_max_connections",
            "Most connections the pool opens",
            db_pool_max.clone(),
        );
        let db_pool_waiting = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_waiting",
            "Tasks waiting for a database connection",
            db_pool_waiting.clone(),
        );
        let db_replica_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "db_replica_lag_seconds",
            "How long ago the read replica last had everything the primary had (sampled every \
             10 ms; +Inf until first seen; 0 without DATABASE_READ_URL or DB_READ_HOST)",
            db_replica_lag.clone(),
        );
        let events_delay: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DELAY_BUCKETS));
        registry.register(
            "events_delay_seconds",
            "Age of an event (from its message's timestamp, the time of the change) when the bus \
             had it (stage relayed, by the bus's own timestamp), when a worker took it from the \
             bus (consumed) and when its activity was applied (applied); clocks of other \
             replicas count",
            events_delay.clone(),
        );
        let db_write_batch_size = Histogram::new(BATCH_SIZE_BUCKETS);
        registry.register(
            "db_write_batch_size",
            "Writes that shared one database transaction",
            db_write_batch_size.clone(),
        );
        let health_checks = Family::<DependencyLabels, Counter>::default();
        registry.register(
            "health_checks",
            "Checks of each dependency made for the health endpoints",
            health_checks.clone(),
        );
        let http_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "http_requests_shed",
            "API requests answered 503 by admission control, by class (read, write) and reason \
             (queue_full, queue_timeout)",
            http_shed.clone(),
        );
        let admission_limit = Family::<AdmissionLabels, Gauge>::default();
        registry.register(
            "http_admission_limit",
            "API requests of a class admitted at once: the adaptive concurrency limit",
            admission_limit.clone(),
        );
        let admission_in_flight = Family::<AdmissionLabels, Gauge>::default();
        registry.register(
            "http_admission_in_flight",
            "API requests of a class admitted and not yet answered",
            admission_in_flight.clone(),
        );
        let admission_waiting = Family::<AdmissionLabels, Gauge>::default();
        registry.register(
            "http_admission_waiting",
            "API requests of a class waiting for admission",
            admission_waiting.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector {
            started: Instant::now(),
            started_at: SystemTime::now(),
        }));
        registry.register_collector(Box::new(BuildInfo));
        Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            cache_reads,
            events_published,
            events_consumed,
            events_failed,
            events_dead_lettered,
            events_processed,
            events_delay,
            outbox_backlog,
            outbox_oldest_age,
            processed_ids_kept,
            events_expired,
            worker_queue_depth,
            worker_in_flight,
            worker_queue_capacity,
            kafka_lag,
            kafka_partitions,
            db_pool_connections,
            db_pool_idle,
            db_pool_max,
            db_pool_waiting,
            db_replica_lag,
            db_write_batch_size,
            health_checks,
            http_shed,
            admission_limit,
            admission_in_flight,
            admission_waiting,
        }
    }

    /// Records that an event changed at `changed_at` reached `stage` at `at`
    /// (a clock behind the change counts as no delay).
    pub(crate) fn event_delay(
        &self,
        stage: &'static str,
        changed_at: chrono::DateTime<chrono::Utc>,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let seconds = (at - changed_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        self.events_delay
            .get_or_create(&StageLabels { stage })
            .observe(seconds.max(0.0));
    }

    /// Adds figures sampled at each scrape (before the metrics are shared).
    pub(crate) fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Counts one cache read.
    pub(crate) fn cache_read(&self, kind: &'static str, result: &'static str) {
        let (_, counter) = self
            .cache_reads
            .iter()
            .find(|(labels, _)| labels.kind == kind && labels.result == result)
            .expect("BUG: a cache read of an unknown kind or result");
        counter.inc();
    }

    /// The registry in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("BUG: writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Group commit's batches, as `db_write_batch_size`.
impl CommitObserver for Metrics {
    fn batch_committing(&self, writes: usize) {
        self.db_write_batch_size.observe(writes as f64);
    }
}

/// Samples the store's connection pools and outbox backlog into the
/// metrics at scrape time. Reading the backlog is a query, so this is
/// asynchronous and runs before rendering, not inside the registry.
pub(crate) struct StoreCollector {
    store: Arc<dyn Store>,
}

impl StoreCollector {
    /// The longest a scrape waits for the backlog query: a scrape must not
    /// hang on a slow database, so the last values are kept instead.
    const BACKLOG_TIMEOUT: Duration = Duration::from_secs(1);

    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Updates the pool and outbox gauges of `metrics`.
    pub(crate) async fn collect(&self, metrics: &Metrics) {
        for pool in self.store.pool_stats() {
            let labels = PoolLabels { pool: pool.pool };
            metrics
                .db_pool_connections
                .get_or_create(&labels)
                .set(i64::from(pool.size));
            metrics
                .db_pool_idle
                .get_or_create(&labels)
                .set(pool.idle as i64);
            metrics
                .db_pool_max
                .get_or_create(&labels)
                .set(i64::from(pool.max));
            metrics
                .db_pool_waiting
                .get_or_create(&labels)
                .set(pool.waiting as i64);
        }
        if let Some(lag) = self.store.replica_lag() {
            metrics
                .db_replica_lag
                .set(lag.map_or(f64::INFINITY, |lag| lag.as_secs_f64()));
        }
        if let Ok(Ok(backlog)) =
            tokio::time::timeout(Self::BACKLOG_TIMEOUT, self.store.outbox_backlog()).await
        {
            metrics.outbox_backlog.set(backlog.rows as i64);
            let age = backlog.oldest.map_or(0.0, |oldest| {
                (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1e3
            });
            metrics.outbox_oldest_age.set(age);
        }
    }
}

/// `highload_build_info{version, git_commit} 1`.
#[derive(Debug)]
struct BuildInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git_commit: &'static str,
}

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1);
        let labels = BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("HIGHLOAD_GIT_COMMIT"),
        };
        let mut metric = encoder.encode_descriptor(
            "highload_build_info",
            "The running build: version and git commit",
            None,
            info.metric_type(),
        )?;
        info.encode(metric.encode_family(&labels)?)
    }
}

/// CPU time, resident memory, open file descriptors and uptime of this
/// process, read from /proc at scrape time (absent on other systems).
#[derive(Debug)]
struct ProcessCollector {
    started: Instant,
    started_at: SystemTime,
}

impl ProcessCollector {
    /// (CPU seconds, resident bytes) from /proc/self/stat.
    fn stat() -> Option<(f64, u64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may
        // contain spaces: state is field 3, utime 14, stime 15, rss 24.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf only reads a system constant.
        let (ticks_per_second, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let cpu = (field(14)? + field(15)?) as f64 / ticks_per_second.max(1) as f64;
        Some((cpu, field(24)? * page_size.max(1) as u64))
    }

    fn open_fds() -> Option<i64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((cpu, rss)) = Self::stat() {
            let cpu = ConstCounter::new(cpu);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time used by this process, user and system",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = ConstGauge::new(rss as i64);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of this process",
                None,
                rss.metric_type(),
            )?)?;
        }
        if let Some(fds) = Self::open_fds() {
            let fds = ConstGauge::new(fds);
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        uptime.encode(encoder.encode_descriptor(
            "process_uptime_seconds",
            "Time since the service started",
            None,
            uptime.metric_type(),
        )?)?;
        let start = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = ConstGauge::new(start);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process, in seconds since the Unix epoch",
            None,
            start.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn store_collector_samples_pools_and_the_outbox_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("metrics.db"), 3, Duration::from_secs(1))
            .await
            .expect("open the database");
        store.migrate().await.expect("migrate");
        let metrics = Metrics::new();
        StoreCollector::new(Arc::new(store)).collect(&metrics).await;
        let text = metrics.render();
        for line in [
            "db_pool_max_connections{pool=\"writer\"} 1",
            "db_pool_max_connections{pool=\"reader\"} 3",
            "outbox_backlog_rows 0",
            "outbox_oldest_age_seconds 0",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn renders_every_family_in_the_prometheus_text_format() {
        let metrics = Metrics::new();
        metrics
            .http_requests
            .get_or_create(&RequestLabels {
                method: "GET",
                route: "/api/v1/users/{id}".into(),
                status: 200,
            })
            .inc();
        metrics.cache_read("user", "hit");
        metrics
            .http_duration
            .get_or_create(&RouteLabels {
                method: "GET",
                route: "/health".into(),
            })
            .observe(0.002);
        let text = metrics.render();
        assert!(text.contains(
            "http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"200\"} 1"
        ));
        assert!(text.contains("cache_requests_total{kind=\"user\",result=\"hit\"} 1"));
        // Every cache series exists from the start, at 0 until it counts.
        for kind in ["user", "event"] {
            for result in ["hit", "miss", "error"] {
                let series = format!("cache_requests_total{{kind=\"{kind}\",result=\"{result}\"}}");
                assert!(text.contains(&series), "{series} is missing");
            }
        }
        assert!(text.contains("cache_requests_total{kind=\"event\",result=\"error\"} 0"));
        for name in [
            "# TYPE process_cpu_seconds_total counter",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_uptime_seconds ",
            "highload_build_info{version=",
            "# TYPE http_request_duration_seconds histogram",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",le=\"0.0025\"} 1",
            "events_published_total 0",
        ] {
            assert!(text.contains(name), "missing {name}:\n{text}");
        }
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }
}
