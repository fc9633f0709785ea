//! Admission control of the API: how many requests run at once, adapted to
//! what the backends serve.
//!
//! Requests fall in two classes with budgets of their own: reads (`GET`,
//! `HEAD`, `OPTIONS`) and writes (the rest). A write waits for the
//! database's write path; a cached read waits for nothing, so writes
//! stuck behind a saturated database must not take the slots of reads.
//!
//! Each class has a [`Limiter`]: a concurrency limit that adapts by AIMD on
//! latency. A request that completes within the target latency lets the
//! limit grow by one (while at least half of it is in use); one that is
//! slower, or answers 503 because a dependency is saturated or it timed
//! out, shrinks it by a quarter, at most once per target latency so that
//! one burst of slow completions counts once. The limit stays between
//! [`MIN_LIMIT`] and `HTTP_MAX_IN_FLIGHT`.
//!
//! A request beyond the limit waits, up to `ADMISSION_QUEUE_TIMEOUT`, in a
//! queue of at most [`QUEUE_FACTOR`] × `HTTP_MAX_IN_FLIGHT` per class, then
//! gets 503 with `Retry-After`. The queue is served oldest first while its
//! oldest has waited less than the target latency (or half the timeout, if
//! shorter), newest first beyond that (adaptive LIFO): when the queue is
//! longer than can be served in time, serving the oldest would only admit
//! requests late, one after the other, while the newest can still be
//! answered quickly; the oldest are the ones that time out. Waiting costs
//! nothing but a parked future, so a client that retries at once is slowed
//! down instead of spinning through rejections. A timeout of zero sheds at
//! once.
//!
//! Shed requests are counted (`http_requests_shed_total{class, reason}`)
//! and logged in summary, one line per [`SHED_LOG_INTERVAL`] at most, never
//! one line each.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::{AdmissionLabels, Metrics, ShedLabels};

/// The smallest limit of a class (unless `HTTP_MAX_IN_FLIGHT` is smaller):
/// enough to keep the database's pool and group commit busy. Latency also
/// grows when the process itself is short of CPU (thousands of connections
/// parsing requests), which no limit on one class cures; a floor keeps the
/// limit from collapsing then.
pub(crate) const MIN_LIMIT: usize = 32;

/// The limit a class starts with; it grows by one per fast completion, so
/// it reaches thousands within a second when the backends keep up.
const INITIAL_LIMIT: usize = 64;

/// The factor applied to the limit on a slow completion.
const BACKOFF: f64 = 0.75;

/// Waiters per class, as a multiple of `HTTP_MAX_IN_FLIGHT`: enough to
/// park every connection a burst brings, so that few are refused at once
/// (a client refused at once retries at once).
pub(crate) const QUEUE_FACTOR: usize = 4;

/// How often, at most, shed requests are logged (as one line with counts).
pub(crate) const SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The settings of admission control.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdmissionSettings {
    /// Latency above which a class's limit shrinks.
    pub target_latency: Duration,
    /// Longest a request waits for admission; zero sheds at once.
    pub queue_timeout: Duration,
    /// Largest limit of a class (and, times [`QUEUE_FACTOR`], most
    /// waiters).
    pub max_in_flight: usize,
}

impl AdmissionSettings {
    /// How long the oldest waiter may have waited before the queue counts
    /// as congested and serves the newest first: the target latency, or
    /// half the queue timeout if that is shorter. A request admitted from
    /// the queue has then waited no longer than a request may take, while
    /// those that cannot be served in time wait out the timeout, which
    /// keeps clients that retry at once from spinning through rejections.
    fn congested_after(&self) -> Duration {
        self.target_latency.min(self.queue_timeout / 2)
    }
}

/// A class of API requests, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Read,
    Write,
}

impl Class {
    pub(crate) fn of(method: &Method) -> Self {
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Self::Read,
            _ => Self::Write,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The class was at its limit with its queue full (or no queue).
    QueueFull,
    /// The request waited `ADMISSION_QUEUE_TIMEOUT` without a slot.
    QueueTimeout,
}

impl Shed {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
        }
    }
}

/// Admission of the API's requests: one limiter per class.
pub(crate) struct Admission {
    read: Arc<Limiter>,
    write: Arc<Limiter>,
    metrics: Arc<Metrics>,
    summary: ShedSummary,
}

impl Admission {
    pub(crate) fn new(settings: AdmissionSettings, metrics: Arc<Metrics>) -> Self {
        let limiter = |class| Arc::new(Limiter::new(class, settings, Some(Arc::clone(&metrics))));
        Self {
            read: limiter(Class::Read),
            write: limiter(Class::Write),
            summary: ShedSummary::new(),
            metrics,
        }
    }

    fn limiter(&self, class: Class) -> &Arc<Limiter> {
        match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        }
    }

    /// Waits for a slot of `class`, or says why there is none.
    pub(crate) async fn admit(&self, class: Class) -> Result<Permit, Shed> {
        let admitted = self.limiter(class).acquire().await;
        if let Err(reason) = admitted {
            self.metrics
                .http_shed
                .get_or_create(&ShedLabels {
                    class: class.as_str(),
                    reason: reason.as_str(),
                })
                .inc();
            self.summary.count(class);
        }
        self.summary.log_if_due();
        admitted
    }
}

/// Counts shed requests between summary log lines.
struct ShedSummary {
    started: Instant,
    /// Milliseconds since `started` when the next line is due.
    next_due_ms: AtomicU64,
    read: AtomicU64,
    write: AtomicU64,
}

impl ShedSummary {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            next_due_ms: AtomicU64::new(SHED_LOG_INTERVAL.as_millis() as u64),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
        }
    }

    fn count(&self, class: Class) {
        let counter = match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs the counts since the last line when an interval has passed
    /// (checked on every admission decision, so no task is needed: when
    /// shedding stops, the next request writes the last line). Returns the
    /// (read, write) counts logged.
    fn log_if_due(&self) -> Option<(u64, u64)> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let due = self.next_due_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return None;
        }
        let next = now_ms + SHED_LOG_INTERVAL.as_millis() as u64;
        if self
            .next_due_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None; // another request writes this line
        }
        let read = self.read.swap(0, Ordering::Relaxed);
        let write = self.write.swap(0, Ordering::Relaxed);
        if read + write > 0 {
            // Not inside the span of the request that happens to log it.
            tracing::warn!(
                parent: None,
                read,
                write,
                interval_s = SHED_LOG_INTERVAL.as_secs(),
                "requests shed: the API was at its admission limit"
            );
            return Some((read, write));
        }
        None
    }
}

/// The adaptive concurrency limit of one class, with its queue.
pub(crate) struct Limiter {
    settings: AdmissionSettings,
    min: f64,
    max: f64,
    state: Mutex<LimiterState>,
    /// Where the limit, in-flight and waiting counts are shown (none in
    /// unit tests).
    gauges: Option<LimiterGauges>,
}

/// This class's gauges, looked up once: [`Limiter::show`] runs under the
/// lock on every admission and completion, where a lookup by label would
/// hash and lock the metric family each time.
struct LimiterGauges {
    limit: Gauge,
    in_flight: Gauge,
    waiting: Gauge,
}

impl LimiterGauges {
    fn new(metrics: &Metrics, class: Class) -> Self {
        let labels = AdmissionLabels {
            class: class.as_str(),
        };
        Self {
            limit: metrics.admission_limit.get_or_create(&labels).clone(),
            in_flight: metrics.admission_in_flight.get_or_create(&labels).clone(),
            waiting: metrics.admission_waiting.get_or_create(&labels).clone(),
        }
    }
}

struct LimiterState {
    limit: f64,
    in_flight: usize,
    /// Waiting requests, oldest first. Some may have stopped waiting: a
    /// send to them fails.
    waiters: VecDeque<Waiter>,
    /// When the limit last shrank.
    last_decrease: Option<Instant>,
}

struct Waiter {
    since: Instant,
    sender: oneshot::Sender<Permit>,
}

impl LimiterState {
    /// Requests admitted at once: the limit, rounded down.
    fn capacity(&self) -> usize {
        self.limit as usize
    }

    /// The waiter to admit next: the oldest, unless it has waited
    /// `congested_after` (then the newest).
    fn next_waiter(&mut self, congested_after: Duration) -> Option<Waiter> {
        while self
            .waiters
            .front()
            .is_some_and(|waiter| waiter.sender.is_closed())
        {
            self.waiters.pop_front();
        }
        let oldest = self.waiters.front()?;
        if oldest.since.elapsed() < congested_after {
            self.waiters.pop_front()
        } else {
            self.waiters.pop_back()
        }
    }
}

impl Limiter {
    pub(crate) fn new(
        class: Class,
        settings: AdmissionSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let max = settings.max_in_flight.max(1);
        let min = MIN_LIMIT.min(max);
        let limiter = Self {
            settings,
            min: min as f64,
            max: max as f64,
            state: Mutex::new(LimiterState {
                limit: INITIAL_LIMIT.clamp(min, max) as f64,
                in_flight: 0,
                waiters: VecDeque::new(),
                last_decrease: None,
            }),
            gauges: metrics.map(|metrics| LimiterGauges::new(&metrics, class)),
        };
        limiter.show(&limiter.lock());
        limiter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state
            .lock()
            .expect("BUG: the limiter's lock is poisoned")
    }

    /// The current limit (rounded down).
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.lock().capacity()
    }

    /// Requests admitted and not yet complete.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Takes a slot, waiting for one up to the queue timeout.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Permit, Shed> {
        let waiting = {
            let mut state = self.lock();
            if state.in_flight < state.capacity() {
                state.in_flight += 1;
                self.show(&state);
                return Ok(Permit::new(Arc::clone(self)));
            }
            if self.settings.queue_timeout.is_zero() {
                return Err(Shed::QueueFull);
            }
            let max_waiting = self.settings.max_in_flight * QUEUE_FACTOR;
            if state.waiters.len() >= max_waiting {
                state.waiters.retain(|waiter| !waiter.sender.is_closed());
                if state.waiters.len() >= max_waiting {
                    return Err(Shed::QueueFull);
                }
            }
            let (sender, receiver) = oneshot::channel();
            state.waiters.push_back(Waiter {
                since: Instant::now(),
                sender,
            });
            receiver
        };
        let _waiting = self.gauges.as_ref().map(|gauges| {
            gauges.waiting.inc();
            DecOnDrop(gauges.waiting.clone())
        });
        // A permit sent as the timeout fires is dropped with the receiver,
        // which hands its slot on: nothing leaks.
        match tokio::time::timeout(self.settings.queue_timeout, waiting).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Shed::QueueTimeout),
        }
    }

    /// Adapts the limit to a completion, then hands the slot to a waiter
    /// (see [`LimiterState::next_waiter`]) or frees it.
    fn release(self: &Arc<Self>, sample: Option<Sample>) {
        let mut state = self.lock();
        if let Some(sample) = sample {
            self.adapt(&mut state, sample);
        }
        // The slot is passed on only if the limit still has room for it.
        if state.in_flight <= state.capacity() {
            let congested_after = self.settings.congested_after();
            while let Some(waiter) = state.next_waiter(congested_after) {
                match waiter.sender.send(Permit::new(Arc::clone(self))) {
                    Ok(()) => {
                        self.show(&state);
                        return;
                    }
                    // That request stopped waiting; its permit is unarmed
                    // so that dropping it does not release again.
                    Err(mut permit) => permit.limiter = None,
                }
            }
        }
        state.in_flight -= 1;
        self.show(&state);
    }

    /// AIMD: one more for a fast completion while at least half the limit
    /// is in use; a quarter less for a slow or overloaded one, at most once
    /// per target latency.
    fn adapt(&self, state: &mut LimiterState, sample: Sample) {
        let target = self.settings.target_latency;
        if sample.overloaded || sample.latency > target {
            let now = Instant::now();
            if state
                .last_decrease
                .is_none_or(|last| now.duration_since(last) >= target)
            {
                state.limit = (state.limit * BACKOFF).max(self.min);
                state.last_decrease = Some(now);
            }
        } else if state.in_flight as f64 * 2.0 >= state.limit {
            state.limit = (state.limit + 1.0).min(self.max);
        }
    }

    /// Updates the gauges of this class.
    fn show(&self, state: &LimiterState) {
        if let Some(gauges) = &self.gauges {
            gauges.limit.set(state.capacity() as i64);
            gauges.in_flight.set(state.in_flight as i64);
        }
    }
}

struct DecOnDrop(Gauge);

impl Drop for DecOnDrop {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A completion, as the limit adapts to it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: Duration,
    /// The request answered 503: a dependency saturated, or it timed out.
    overloaded: bool,
}

/// A slot of a class; dropping it frees the slot (a request cancelled by
/// its client adapts nothing), [`Permit::complete`] also adapts the limit.
pub(crate) struct Permit {
    /// `None` once released (or never armed).
    limiter: Option<Arc<Limiter>>,
    /// When the request was admitted: its latency excludes the queue.
    admitted: Instant,
}

impl Permit {
    fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter: Some(limiter),
            admitted: Instant::now(),
        }
    }

    /// Frees the slot, counting the request's latency since admission;
    /// `overloaded` when it answered 503.
    pub(crate) fn complete(mut self, overloaded: bool) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release(Some(Sample {
                latency: self.admitted.elapsed(),
                overloaded,
            }));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinHandle;

    use super::*;

    fn limiter(max: usize, queue_timeout: Duration) -> Arc<Limiter> {
        Arc::new(Limiter::new(
            Class::Write,
            AdmissionSettings {
                target_latency: Duration::from_millis(100),
                queue_timeout,
                max_in_flight: max,
            },
            None,
        ))
    }

    /// Takes `n` permits at once (they must be admitted without waiting).
    async fn take(limiter: &Arc<Limiter>, n: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(limiter.acquire().await.expect("admitted"));
        }
        permits
    }

    #[tokio::test(start_paused = true)]
    async fn shed_requests_are_logged_once_per_interval_with_their_counts() {
        let summary = ShedSummary::new();
        summary.count(Class::Write);
        summary.count(Class::Write);
        assert_eq!(summary.log_if_due(), None, "not before the interval");
        tokio::time::advance(SHED_LOG_INTERVAL).await;
        summary.count(Class::Read);
        assert_eq!(summary.log_if_due(), Some((1, 2)));
        summary.count(Class::Read);
        assert_eq!(summary.log_if_due(), None, "one line per interval");
        tokio::time::advance(SHED_LOG_INTERVAL).await;
        assert_eq!(summary.log_if_due(), Some((1, 0)));
        tokio::time::advance(SHED_LOG_INTERVAL).await;
        assert_eq!(summary.log_if_due(), None, "nothing shed, no line");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_completions_raise_the_limit_up_to_the_maximum() {
        let limiter = limiter(100, Duration::ZERO);
        assert_eq!(limiter.limit(), INITIAL_LIMIT);
        for _ in 0..200 {
            let permits = take(&limiter, limiter.limit()).await;
            tokio::time::advance(Duration::from_millis(10)).await;
            for permit in permits {
                permit.complete(false);
            }
        }
        assert_eq!(limiter.limit(), 100);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limit_does_not_grow() {
        let limiter = limiter(1000, Duration::ZERO);
        for _ in 0..500 {
            let permit = limiter.acquire().await.unwrap();
            permit.complete(false);
        }
        assert_eq!(
            limiter.limit(),
            INITIAL_LIMIT,
            "one at a time is not a need for more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_completions_shrink_the_limit_once_per_target_latency() {
        let limiter = limiter(1000, Duration::ZERO);
        let permits = take(&limiter, INITIAL_LIMIT).await;
        tokio::time::advance(Duration::from_millis(150)).await;
        for permit in permits {
            permit.complete(false);
        }
        // Sixty-four slow completions at one instant count once.
        assert_eq!(limiter.limit(), (INITIAL_LIMIT as f64 * BACKOFF) as usize);

        // Each later target interval with slow completions shrinks it again,
        // down to the minimum.
        for _ in 0..30 {
            let permit = limiter.acquire().await.unwrap();
            tokio::time::advance(Duration::from_millis(150)).await;
            permit.complete(false);
        }
        assert_eq!(limiter.limit(), MIN_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overloaded_answer_shrinks_the_limit_however_fast() {
        let limiter = limiter(1000, Duration::ZERO);
        let permit = limiter.acquire().await.unwrap();
        permit.complete(true);
        assert_eq!(limiter.limit(), (INITIAL_LIMIT as f64 * BACKOFF) as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_limit_a_request_is_shed_at_once_without_a_queue() {
        let limiter = limiter(4, Duration::ZERO);
        let held = take(&limiter, 4).await;
        assert_eq!(limiter.acquire().await.err(), Some(Shed::QueueFull));
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.acquire().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_shed_when_the_queue_timeout_passes() {
        let limiter = limiter(4, Duration::from_millis(500));
        let _held = take(&limiter, 4).await;
        let started = Instant::now();
        assert_eq!(limiter.acquire().await.err(), Some(Shed::QueueTimeout));
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(limiter.in_flight(), 4);
    }

    type Waiting = JoinHandle<Result<Permit, Shed>>;

    /// Two waiters, the older `age` older than the newer; then one slot
    /// frees. Returns (older, newer) and the remaining held permits.
    async fn two_waiters_and_a_freed_slot(
        limiter: &Arc<Limiter>,
        age: Duration,
    ) -> (Waiting, Waiting, Vec<Permit>) {
        let mut held = take(limiter, 4).await;
        let waiter = || {
            let limiter = Arc::clone(limiter);
            tokio::spawn(async move { limiter.acquire().await })
        };
        let older = waiter();
        // Let it queue before the clock moves.
        tokio::task::yield_now().await;
        tokio::time::advance(age).await;
        let newer = waiter();
        tokio::time::advance(Duration::from_millis(1)).await;
        held.pop().unwrap().complete(false);
        tokio::time::advance(Duration::from_millis(1)).await;
        (older, newer, held)
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_oldest_waiter_while_the_queue_is_short() {
        let limiter = limiter(4, Duration::from_secs(10));
        let (older, newer, held) =
            two_waiters_and_a_freed_slot(&limiter, Duration::from_millis(50)).await;
        assert!(older.is_finished(), "the oldest waiter is served first");
        assert!(!newer.is_finished());
        // Its slot, once freed, passes to the newer one.
        drop(older.await.unwrap().expect("admitted"));
        drop(newer.await.unwrap().expect("admitted"));
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_newest_waiter_once_the_oldest_waited_the_target_latency() {
        // 150 ms: beyond the target latency (100 ms), far from the timeout.
        let limiter = limiter(4, Duration::from_secs(10));
        let (older, newer, held) =
            two_waiters_and_a_freed_slot(&limiter, Duration::from_millis(150)).await;
        assert!(newer.is_finished(), "the newest waiter is served first");
        assert!(!older.is_finished());
        drop(newer.await.unwrap().expect("admitted"));
        drop(older.await.unwrap().expect("admitted"));
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_short_queue_timeout_the_newest_go_first_after_half_of_it() {
        // 60 ms: below the target latency (100 ms), beyond half the timeout.
        let limiter = limiter(4, Duration::from_millis(100));
        let (older, newer, held) =
            two_waiters_and_a_freed_slot(&limiter, Duration::from_millis(60)).await;
        assert!(newer.is_finished(), "the newest waiter is served first");
        assert!(!older.is_finished());
        let newer = newer.await.unwrap().expect("admitted");
        // No slot frees up: the oldest waits out the timeout.
        assert_eq!(older.await.unwrap().err(), Some(Shed::QueueTimeout));
        drop((newer, held));
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let limiter = limiter(4, Duration::from_secs(10));
        let _held = take(&limiter, 4).await;
        let waiters: Vec<_> = (0..4 * QUEUE_FACTOR)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.acquire().await.map(drop) })
            })
            .collect();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limiter.acquire().await.err(), Some(Shed::QueueFull));
        for waiter in waiters {
            waiter.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slots_of_waiters_that_gave_up_are_not_lost() {
        let limiter = limiter(4, Duration::from_millis(100));
        let held = take(&limiter, 4).await;
        let gave_up = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire().await.map(drop) }
        });
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(gave_up.await.unwrap(), Err(Shed::QueueTimeout));
        for permit in held {
            permit.complete(false);
        }
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(take(&limiter, limiter.limit()).await.len(), 4);
    }
}
