//! What the guards refused lately, for the admin views: each refusal (shed,
//! rate limited, authentication refused, bad input) with its time, client,
//! method and route, in a ring of the last [`CAPACITY`] ones. Memory stays
//! bounded whatever a client sends; under a flood the ring holds the last
//! seconds of it, and the per-reason totals since start stay exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Refusals kept.
const CAPACITY: usize = 10_000;
/// Clients listed in a summary, most refused first.
const TOP_CLIENTS: usize = 20;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    /// Admission shed it (503 overloaded, or timed out waiting).
    Shed,
    /// Over the client's rate limit, or too many failed logins (429).
    RateLimited,
    /// No credential, or one that did not verify (401).
    Unauthenticated,
    /// A credential without the scope (403).
    Forbidden,
    /// Input the API refused (400, 413, 415, 422).
    BadInput,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::Shed,
        Reason::RateLimited,
        Reason::Unauthenticated,
        Reason::Forbidden,
        Reason::BadInput,
    ];
}

/// One refusal.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Refusal {
    pub(crate) at: DateTime<Utc>,
    pub(crate) reason: Reason,
    pub(crate) status: u16,
    /// The client's address (`null` when unknown).
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: String,
    /// The route's template (`/api/v1/users/{id}`), not the path sent.
    pub(crate) route: String,
}

/// The recent refusals, and totals since start.
pub(crate) struct Refusals {
    recent: Mutex<VecDeque<Refusal>>,
    totals: [AtomicU64; 5],
}

/// What was refused within a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Summary {
    /// Seconds back from now.
    pub(crate) window_seconds: u64,
    /// Refusals in the window, by reason.
    #[schema(value_type = Object)]
    pub(crate) by_reason: BTreeMap<Reason, u64>,
    /// The most refused clients in the window.
    pub(crate) by_client: Vec<ClientSummary>,
    /// Refusals by reason since the process started (exact, also beyond
    /// what the window holds).
    #[schema(value_type = Object)]
    pub(crate) since_start: BTreeMap<Reason, u64>,
    /// Whether the ring lost refusals of the window (a flood): the counts
    /// by reason and client are then those of its newest part.
    pub(crate) truncated: bool,
}

/// One client's refusals in a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClientSummary {
    pub(crate) client: Option<String>,
    pub(crate) refused: u64,
    #[schema(value_type = Object)]
    pub(crate) by_reason: BTreeMap<Reason, u64>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(1024)),
            totals: Default::default(),
        }
    }
}

impl Refusals {
    pub(crate) fn record(&self, refusal: Refusal) {
        self.totals[refusal.reason as usize].fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().expect("BUG: refusals lock poisoned");
        if recent.len() == CAPACITY {
            recent.pop_front();
        }
        recent.push_back(refusal);
    }

    /// The newest `limit` refusals of the last `window`, newest first.
    pub(crate) fn latest(&self, window: Duration, limit: usize) -> Vec<Refusal> {
        let since = since(window);
        let recent = self.recent.lock().expect("BUG: refusals lock poisoned");
        recent
            .iter()
            .rev()
            .take_while(|r| r.at >= since)
            .take(limit)
            .cloned()
            .collect()
    }

    pub(crate) fn summary(&self, window: Duration) -> Summary {
        let since = since(window);
        let mut by_reason: BTreeMap<Reason, u64> = Reason::ALL.iter().map(|r| (*r, 0)).collect();
        let mut clients: HashMap<Option<IpAddr>, BTreeMap<Reason, u64>> = HashMap::new();
        let truncated = {
            let recent = self.recent.lock().expect("BUG: refusals lock poisoned");
            for refusal in recent.iter().rev().take_while(|r| r.at >= since) {
                *by_reason.entry(refusal.reason).or_default() += 1;
                *clients
                    .entry(refusal.client)
                    .or_default()
                    .entry(refusal.reason)
                    .or_default() += 1;
            }
            recent.len() == CAPACITY && recent.front().is_some_and(|r| r.at >= since)
        };
        let mut by_client: Vec<ClientSummary> = clients
            .into_iter()
            .map(|(client, by_reason)| ClientSummary {
                client: client.map(|ip| ip.to_string()),
                refused: by_reason.values().sum(),
                by_reason,
            })
            .collect();
        by_client.sort_by(|a, b| b.refused.cmp(&a.refused).then(a.client.cmp(&b.client)));
        by_client.truncate(TOP_CLIENTS);
        Summary {
            window_seconds: window.as_secs(),
            by_reason,
            by_client,
            since_start: Reason::ALL
                .iter()
                .map(|r| (*r, self.totals[*r as usize].load(Ordering::Relaxed)))
                .collect(),
            truncated,
        }
    }
}

fn since(window: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(reason: Reason, client: &str) -> Refusal {
        Refusal {
            at: Utc::now(),
            reason,
            status: 401,
            client: client.parse().ok(),
            method: "GET".into(),
            route: "/api/v1/users".into(),
        }
    }

    #[test]
    fn a_summary_counts_by_reason_and_client_and_the_ring_stays_bounded() {
        let refusals = Refusals::default();
        for _ in 0..3 {
            refusals.record(refusal(Reason::Unauthenticated, "10.0.0.1"));
        }
        refusals.record(refusal(Reason::RateLimited, "10.0.0.2"));
        let summary = refusals.summary(Duration::from_secs(60));
        assert_eq!(summary.by_reason[&Reason::Unauthenticated], 3);
        assert_eq!(summary.by_reason[&Reason::Shed], 0);
        assert_eq!(summary.by_client[0].client.as_deref(), Some("10.0.0.1"));
        assert_eq!(summary.by_client[0].refused, 3);
        assert!(!summary.truncated);
        for _ in 0..CAPACITY {
            refusals.record(refusal(Reason::BadInput, "10.0.0.3"));
        }
        let summary = refusals.summary(Duration::from_secs(60));
        assert!(summary.truncated);
        assert_eq!(summary.by_reason[&Reason::BadInput], CAPACITY as u64);
        assert_eq!(summary.since_start[&Reason::Unauthenticated], 3);
        assert_eq!(refusals.latest(Duration::from_secs(60), 5).len(), 5);
    }
}
