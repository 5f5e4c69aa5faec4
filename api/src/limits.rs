//! Per-owner (per client address without authentication) upload rate, and the quotas the job
//! store counts (see `thumbnail_core::jobstore::Caps`).
//!
//! The rate is a token bucket per key (GCRA, the `governor` crate): UPLOADS_PER_MINUTE sustained,
//! UPLOAD_BURST at once. It lives in each API process: with N replicas behind a load balancer an
//! owner gets up to N times the rate. Unfinished jobs and bytes stored are counted by the job
//! store and are exact however many replicas there are.
//!
//! Limited responses carry `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "uploads";q=600;w=60` and
//! `RateLimit: "uploads";r=59;t=0`.
use crate::config::QuotaArgs;
use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{Caps, Refusal};

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The upload rate limit.
pub struct UploadRate {
    limiter: Option<KeyedLimiter>,
    per_minute: u32,
    burst: u32,
}

/// Who a rate applies to.
pub enum RateKey<'a> {
    Owner(&'a str),
    Client(IpAddr),
}

impl UploadRate {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let quota =
                Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
        });
        UploadRate {
            limiter,
            per_minute,
            burst: burst.max(1),
        }
    }

    /// Take one upload from `key`'s bucket: the `RateLimit` headers to send, or the refusal.
    pub fn check(&self, key: RateKey<'_>) -> Result<HeaderMap, ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(HeaderMap::new());
        };
        let key = match key {
            RateKey::Owner(owner) => format!("owner:{owner}"),
            RateKey::Client(ip) => format!("client:{ip}"),
        };
        let interval = Duration::from_secs(60) / self.per_minute;
        match limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // Until the bucket is full again.
                let full_in = interval * (self.burst.saturating_sub(remaining));
                Ok(self.headers(remaining, full_in))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::limited(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "upload rate limit: at most {} uploads per minute (UPLOADS_PER_MINUTE), {} at once \
                         (UPLOAD_BURST); retry in {} s",
                        self.per_minute,
                        self.burst,
                        wait.as_secs() + 1
                    ),
                    wait,
                    self.headers(0, wait),
                ))
            }
        }
    }

    fn headers(&self, remaining: u32, reset: Duration) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let seconds = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&format!("\"uploads\";q={};w=60", self.per_minute)) {
            headers.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("\"uploads\";r={remaining};t={seconds}")) {
            headers.insert("ratelimit", v);
        }
        headers
    }

    /// Forget buckets that are full again (called every minute), so that the map does not grow
    /// with every address ever seen.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// How long a refusal of the job store is remembered: uploads of an owner that is at its quota
/// (or while the queue is full) are refused before their body is read, without asking the store
/// again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(1);
const REFUSAL_MEMORY_MAX: usize = 10_000;

/// The quotas checked at admission, and refusals remembered for [`REFUSAL_MEMORY`].
pub struct Quotas {
    pub caps: Caps,
    remembered: Mutex<HashMap<Option<String>, (Refusal, Instant)>>,
}

impl Quotas {
    /// `owner_caps`: whether the per-owner caps apply (not without authentication, where the
    /// owner is whatever the client claims).
    pub fn new(args: &QuotaArgs, owner_caps: bool) -> Self {
        let per_owner = |cap: u64| if owner_caps { cap } else { 0 };
        Quotas {
            caps: Caps {
                max_queued_jobs: args.max_queued_jobs,
                max_unfinished_per_owner: per_owner(args.max_unfinished_jobs_per_owner),
                max_stored_bytes_per_owner: per_owner(args.max_stored_bytes_per_owner),
            },
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// A refusal of the last second that still applies to an upload of `owner`.
    pub fn recent_refusal(&self, owner: Option<&str>) -> Option<Refusal> {
        let remembered = self.remembered.lock().expect("refusals");
        let recent = |key: &Option<String>| {
            remembered
                .get(key)
                .filter(|(_, at)| at.elapsed() < REFUSAL_MEMORY)
                .map(|(r, _)| *r)
        };
        recent(&None).or_else(|| owner.and_then(|o| recent(&Some(o.to_owned()))))
    }

    /// Remember a refusal: a full queue for everyone, an owner's quota for that owner.
    pub fn remember(&self, owner: Option<&str>, refusal: Refusal) {
        let key = match refusal {
            Refusal::QueueFull { .. } => None,
            _ => owner.map(str::to_owned),
        };
        let mut remembered = self.remembered.lock().expect("refusals");
        if remembered.len() >= REFUSAL_MEMORY_MAX {
            remembered.clear();
        }
        remembered.insert(key, (refusal, Instant::now()));
    }

    /// Forget every remembered refusal (a job finished or was removed; used by tests).
    pub fn forget(&self) {
        self.remembered.lock().expect("refusals").clear();
    }
}

/// Long-polls (`GET /api/v1/jobs/{id}?wait=`) one owner (or client address) may hold at once;
/// beyond, `wait` is answered at once with the job as it is, so that no tenant can hold every
/// connection of the server waiting.
pub const MAX_WAITS_PER_CALLER: usize = 32;

/// Long-polls in progress, per caller.
#[derive(Default)]
pub struct Waiters {
    held: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

/// One long-poll's place; given back when dropped.
pub struct WaitSlot {
    held: std::sync::Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Waiters {
    /// A place for one more long-poll of `caller`, if it holds fewer than
    /// [`MAX_WAITS_PER_CALLER`].
    pub fn enter(&self, caller: RateKey<'_>) -> Option<WaitSlot> {
        let caller = match caller {
            RateKey::Owner(owner) => format!("owner:{owner}"),
            RateKey::Client(ip) => format!("client:{ip}"),
        };
        let mut held = self.held.lock().expect("waiters");
        let count = held.entry(caller.clone()).or_insert(0);
        if *count >= MAX_WAITS_PER_CALLER {
            return None;
        }
        *count += 1;
        Some(WaitSlot {
            held: self.held.clone(),
            caller,
        })
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("waiters");
        if let Some(count) = held.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

/// The client's address: the TCP peer, or with `trusted_hops` reverse proxies in front, the
/// address they saw (`X-Forwarded-For`, counted from the right, where proxies append). Pure.
pub fn client_address(headers: &HeaderMap, peer: SocketAddr, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer.ip();
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .len()
        .checked_sub(trusted_hops)
        .and_then(|i| forwarded.get(i))
        .copied()
        .unwrap_or_else(|| peer.ip())
}

/// The client's address, as an extractor: [`client_address`] of the connection's peer with the
/// configured TRUSTED_PROXY_HOPS.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl axum::extract::FromRequestParts<crate::state::SharedState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::SharedState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(ClientAddr(client_address(
            &parts.headers,
            peer,
            state.trusted_proxy_hops,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_refuses_with_retry_after_and_headers() {
        let rate = UploadRate::new(60, 3);
        for remaining in [2, 1, 0] {
            let headers = rate.check(RateKey::Owner("alice")).unwrap();
            assert_eq!(headers["ratelimit-policy"], "\"uploads\";q=60;w=60");
            assert!(
                headers["ratelimit"]
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("\"uploads\";r={remaining};")),
                "{headers:?}"
            );
        }
        let Err(ApiError::Limited(hit)) = rate.check(RateKey::Owner("alice")) else {
            panic!("the fourth upload at once must be refused");
        };
        let crate::error::LimitHit {
            status,
            retry_after,
            headers,
            detail,
        } = *hit;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert!(detail.contains("UPLOADS_PER_MINUTE"), "{detail}");
        assert!(
            headers["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"uploads\";r=0;t=1")
        );
        // Another owner has a bucket of its own; 0 turns the limit off.
        assert!(rate.check(RateKey::Owner("bob")).is_ok());
        let off = UploadRate::new(0, 0);
        assert!((0..1000).all(|_| off.check(RateKey::Client([127, 0, 0, 1].into())).is_ok()));
    }

    #[test]
    fn long_polls_are_capped_per_caller_and_given_back() {
        let waiters = Waiters::default();
        let slots: Vec<_> = (0..MAX_WAITS_PER_CALLER)
            .map(|_| waiters.enter(RateKey::Owner("alice")).expect("a slot"))
            .collect();
        assert!(waiters.enter(RateKey::Owner("alice")).is_none());
        assert!(waiters.enter(RateKey::Owner("bob")).is_some());
        drop(slots);
        assert!(waiters.enter(RateKey::Owner("alice")).is_some());
        assert!(waiters.held.lock().unwrap().get("owner:alice").is_none());
    }

    #[test]
    fn the_client_address_is_taken_from_trusted_proxies_only() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(client_address(&headers, peer, 0), peer.ip());
        assert_eq!(
            client_address(&headers, peer, 1),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(&headers, peer, 2),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(&headers, peer, 9), peer.ip());
        assert_eq!(client_address(&HeaderMap::new(), peer, 1), peer.ip());
    }

    #[test]
    fn refusals_are_remembered_briefly_by_owner_or_for_everyone() {
        let quotas = Quotas::new(
            &QuotaArgs {
                uploads_per_minute: 0,
                upload_burst: 0,
                max_unfinished_jobs_per_owner: 1,
                max_stored_bytes_per_owner: 0,
                max_queued_jobs: 0,
                trusted_proxy_hops: 0,
            },
            true,
        );
        let full = Refusal::TooManyUnfinished {
            unfinished: 1,
            max: 1,
        };
        quotas.remember(Some("alice"), full);
        assert_eq!(quotas.recent_refusal(Some("alice")), Some(full));
        assert_eq!(quotas.recent_refusal(Some("bob")), None);
        let queue = Refusal::QueueFull { queued: 5, max: 5 };
        quotas.remember(Some("alice"), queue);
        assert_eq!(quotas.recent_refusal(Some("bob")), Some(queue));
        quotas.forget();
        assert_eq!(quotas.recent_refusal(Some("alice")), None);
    }
}
