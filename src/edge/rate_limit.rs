//! Per-client rate limiting: a token bucket per client (GCRA, by
//! `governor`), on the API routes only: `/health*` and `/metrics` are
//! never limited.
//!
//! Every limited response says where the client stands (`RateLimit-Limit`:
//! the bucket's size; `RateLimit-Remaining`: requests left now;
//! `RateLimit-Reset`: seconds until the bucket is full again); a request
//! over the limit is answered 429 with `Retry-After`, the seconds until
//! the next one is allowed.
//!
//! A client is its credential's hash once that credential has verified
//! (a request that brings a credential not verified yet, made up or
//! refused, counts against its address, so that made-up credentials are
//! no way around the limit), else its address: the peer's, or
//! with `TRUSTED_PROXY_HOPS` = n, the address the farthest of the n
//! proxies saw (the n-th `X-Forwarded-For` entry from the right; entries
//! further left are the client's to make up). IPv6 addresses count by
//! their /64, which one host usually has whole.
//!
//! Memory is bounded: at most `RATE_LIMIT_MAX_CLIENTS` buckets are kept,
//! the least recently seen go first, and a bucket unused for as long as it
//! takes to fill is dropped, since it equals a new one. A client whose
//! bucket was pushed out by a flood of others starts again with a full
//! bucket: the bound on memory wins over exactness.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};

use crate::auth::VerifiedCredentials;
use crate::config::RateLimitConfig;
use crate::http::error::ApiError;

pub(super) const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub(super) const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(super) const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Client {
    /// The SHA-256 of the credential the client sent, which verified.
    Credential([u8; 32]),
    /// An IPv4 address, or the /64 of an IPv6 one.
    Address(IpAddr),
    /// Served without peer addresses (not by `Application`): one bucket.
    Unknown,
}

/// The buckets, at most `max_clients` of them.
struct Buckets(moka::sync::Cache<Client, Arc<InMemoryState>>);

impl StateStore for Buckets {
    type Key = Client;

    fn measure_and_replace<T, F, E>(&self, key: &Client, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0
            .get_with_by_ref(key, Default::default)
            .measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The rate limit of every client.
pub(super) struct RateLimit {
    limiter: RateLimiter<Client, Buckets, DefaultClock, StateInformationMiddleware>,
    /// The bucket's size (`RateLimit-Limit`).
    burst: u32,
    /// The time one token takes to come back.
    per_token: Duration,
    trusted_proxy_hops: u32,
    verified: VerifiedCredentials,
}

/// What a client may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Allowed; `remaining` more at once, full again in `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Refused; the next request is allowed in `retry_after`.
    Limited { retry_after: Duration },
}

impl RateLimit {
    pub(super) fn new(
        config: RateLimitConfig,
        trusted_proxy_hops: u32,
        verified: VerifiedCredentials,
    ) -> Self {
        let per_token = Duration::from_secs_f64(1.0 / config.per_second);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(per_token)
            .expect("BUG: RATE_LIMIT_PER_SECOND is checked to give a positive period")
            .allow_burst(burst);
        // A bucket unused this long is full, the same as a new one.
        let refill = per_token.saturating_mul(burst.get());
        let buckets = moka::sync::Cache::builder()
            .max_capacity(config.max_clients)
            .time_to_idle(refill.max(Duration::from_secs(1)))
            .build();
        Self {
            limiter: RateLimiter::new(quota, Buckets(buckets), DefaultClock::default()),
            burst: burst.get(),
            per_token,
            trusted_proxy_hops,
            verified,
        }
    }

    /// Takes a token from `client`'s bucket, if there is one.
    pub(super) fn check(&self, client: &Client) -> Decision {
        match self.limiter.check_key(client) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = self.burst.saturating_sub(remaining);
                Decision::Allowed {
                    remaining,
                    reset: self.per_token.saturating_mul(missing),
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            },
        }
    }

    /// Who sent `req` (see the module's documentation).
    pub(super) fn client(&self, req: &Request) -> Client {
        if let Some(digest) = self.verified.of(req.headers()) {
            return Client::Credential(digest);
        }
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        let address = forwarded_for(req.headers(), self.trusted_proxy_hops).or(peer);
        address.map_or(Client::Unknown, |ip| Client::Address(per_host(ip)))
    }
}

/// The address the farthest of `hops` trusted proxies saw, from
/// `X-Forwarded-For`; `None` (use the peer) without hops, without the
/// header, or when that entry is no address.
pub(super) fn forwarded_for(headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let entries: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // Fewer entries than proxies: the farthest entry there is.
    let index = entries.len().saturating_sub(hops as usize);
    let entry = entries.get(index)?;
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// An IPv4 address as it is, an IPv6 one as its /64 (an IPv4-mapped one as
/// IPv4).
fn per_host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Whole seconds, rounded up: a client that waits this long is allowed.
fn seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn header_number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// Applies the client's rate limit to the request (the layer is there only
/// when a limit is set).
pub(super) async fn limit_rate(
    State(limit): State<Arc<RateLimit>>,
    req: Request,
    next: Next,
) -> Response {
    let decision = limit.check(&limit.client(&req));
    let (mut response, remaining, reset) = match decision {
        Decision::Allowed { remaining, reset } => (next.run(req).await, remaining, reset),
        Decision::Limited { retry_after } => {
            let mut response = ApiError::RateLimited.into_response();
            // At least a second: "0" would invite an immediate retry.
            let retry_after = seconds(retry_after).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header_number(retry_after));
            (response, 0, Duration::from_secs(retry_after))
        }
    };
    let headers = response.headers_mut();
    headers.insert(LIMIT, header_number(u64::from(limit.burst)));
    headers.insert(REMAINING, header_number(u64::from(remaining)));
    headers.insert(RESET, header_number(seconds(reset)));
    response
}

/// Adds the 429 answer, with its headers, to an operation of the OpenAPI
/// document.
pub(super) fn document(operation: &mut Operation) {
    let seconds = |description: &str| {
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .description(Some(description))
            .build()
    };
    let limited = ResponseBuilder::new()
        .description(
            "This client sent more requests than RATE_LIMIT_PER_SECOND and RATE_LIMIT_BURST \
             allow (only when they are set). Every answer of a limited route carries the \
             RateLimit-* headers.",
        )
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .header(
            "Retry-After",
            seconds("Seconds until this client may send again"),
        )
        .header(
            "RateLimit-Limit",
            seconds("Requests a client may send at once (its bucket)"),
        )
        .header(
            "RateLimit-Remaining",
            seconds("Requests this client may send now"),
        )
        .header(
            "RateLimit-Reset",
            seconds("Seconds until this client's bucket is full again"),
        )
        .build();
    operation
        .responses
        .responses
        .insert("429".to_owned(), limited.into());
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A limit under which the credentials `k1` and `t1` have verified.
    fn limit(per_second: f64, burst: u32, hops: u32) -> RateLimit {
        let verified = VerifiedCredentials::default();
        for credential in ["k1", "t1"] {
            verified.remember(Sha256::digest(credential).into());
        }
        RateLimit::new(
            RateLimitConfig {
                per_second,
                burst,
                max_clients: 1000,
            },
            hops,
            verified,
        )
    }

    fn request(headers: &[(&str, &str)], peer: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder().uri("/api/v1/users");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(axum::body::Body::empty()).unwrap();
        if let Some(peer) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        req
    }

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_retry() {
        let limit = limit(0.1, 3, 0);
        let ada = Client::Address("10.0.0.1".parse().unwrap());
        let grace = Client::Address("10.0.0.2".parse().unwrap());
        let allowed: Vec<u32> = (0..3)
            .map(|_| match limit.check(&ada) {
                Decision::Allowed { remaining, reset } => {
                    assert!(reset <= Duration::from_secs(30), "{reset:?}");
                    remaining
                }
                limited => panic!("{limited:?}"),
            })
            .collect();
        assert_eq!(allowed, [2, 1, 0]);
        let Decision::Limited { retry_after } = limit.check(&ada) else {
            panic!("the fourth request is limited");
        };
        assert!(
            retry_after > Duration::from_secs(9) && retry_after <= Duration::from_secs(10),
            "{retry_after:?}"
        );
        assert!(matches!(
            limit.check(&grace),
            Decision::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn clients_are_credentials_then_addresses_through_trusted_proxies_only() {
        let direct = limit(1.0, 1, 0);
        let behind_two = limit(1.0, 1, 2);
        let peer = Some("192.0.2.7:5000");
        let key = |value: &str| Client::Credential(Sha256::digest(value.as_bytes()).into());

        assert_eq!(
            direct.client(&request(&[("x-api-key", "k1")], peer)),
            key("k1")
        );
        assert_eq!(
            direct.client(&request(&[("authorization", "bearer t1")], peer)),
            key("t1")
        );
        assert_eq!(
            direct.client(&request(&[("authorization", "Basic dTpw")], peer)),
            Client::Address("192.0.2.7".parse().unwrap())
        );
        // A credential that has not verified is no client of its own.
        assert_eq!(
            direct.client(&request(&[("x-api-key", "made-up")], peer)),
            Client::Address("192.0.2.7".parse().unwrap())
        );
        // Without trusted proxies the header is anyone's to write.
        assert_eq!(
            direct.client(&request(&[("x-forwarded-for", "203.0.113.9")], peer)),
            Client::Address("192.0.2.7".parse().unwrap())
        );
        // Two proxies: the farthest appended the client's address; what is
        // left of it came from the client.
        let forwarded = [
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.2"),
        ];
        assert_eq!(
            behind_two.client(&request(&forwarded, peer)),
            Client::Address("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            behind_two.client(&request(
                &[("x-forwarded-for", "not an address, 10.0.0.2")],
                peer
            )),
            Client::Address("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            behind_two.client(&request(
                &[("x-forwarded-for", "[2001:db8:1:2:3::4]:443, 10.0.0.2")],
                peer
            )),
            Client::Address("2001:db8:1:2::".parse().unwrap())
        );
        assert_eq!(direct.client(&request(&[], None)), Client::Unknown);
    }

    #[test]
    fn buckets_are_bounded_in_number() {
        let limit = limit(0.001, 1, 0);
        for i in 0..5000u32 {
            limit.check(&Client::Address(IpAddr::from(i.to_be_bytes())));
        }
        let Buckets(buckets) = limit.limiter.into_state_store();
        buckets.run_pending_tasks();
        assert!(buckets.entry_count() <= 1000, "{}", buckets.entry_count());
    }
}
