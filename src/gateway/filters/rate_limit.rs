//! `rate_limit`: GCRA limits (governor) keyed by client IP, consumer, API key or a header.
//!
//! Limiters live in a [`LimiterRegistry`] outside the config snapshot, so a reload or a
//! canary step does not hand every client a fresh allowance.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DefaultKeyedStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::Reject;
use crate::gateway::config::{RateLimitConfig, RateLimitKey};

type Limiter = RateLimiter<u64, LagStore, DefaultClock, StateInformationMiddleware>;

thread_local! {
    /// What the last allowed decision on this thread left in [`LagStore`]. A decision runs
    /// synchronously on the request's thread, so a check reads its own.
    static LAG: Cell<u64> = const { Cell::new(0) };
}

/// governor's keyed store, noting for each allowed decision how far the key's theoretical
/// arrival time now lies beyond a fresh key's: that is how long until its allowance is
/// full again, less one unit. governor's snapshot of a decision keeps that time to itself,
/// and `RateLimit-Reset` is made from it.
#[derive(Default)]
struct LagStore(DefaultKeyedStateStore<u64>);

impl StateStore for LagStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let (out, tat) = self
            .0
            .measure_and_replace(key, |prev| f(prev).map(|(out, tat)| ((out, tat), tat)))?;
        // `f` is pure (the store may call it again when it races another thread): asked
        // about a key it has never seen, it answers for a fresh key at the same instant.
        if let Ok((_, fresh)) = f(None) {
            LAG.set(tat.saturating_sub(fresh).as_u64());
        }
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<u64> for LagStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }
    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct LimiterId {
    route: String,
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: Option<u32>,
    by: RateLimitKey,
    header: Option<String>,
}

#[derive(Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<LimiterId, Arc<Limiter>>>,
}

impl LimiterRegistry {
    fn get(&self, id: LimiterId, quota: Quota) -> Arc<Limiter> {
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id)
            .or_insert_with(|| {
                Arc::new(Limiter::new(
                    quota,
                    LagStore::default(),
                    DefaultClock::default(),
                ))
            })
            .clone()
    }

    /// Forgets limiters no live route uses, and idle keys in the rest, so memory stays
    /// bounded however many clients pass by.
    pub fn sweep(&self, live_routes: &dyn Fn(&str) -> bool) {
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|id, _| live_routes(&id.route));
        for l in m.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// What the limit key is made of for one request.
pub struct KeySource<'a> {
    pub ip: IpAddr,
    pub consumer: Option<&'a str>,
    pub api_key_hash: Option<u64>,
    pub headers: &'a HeaderMap,
}

pub struct RateLimitFilter {
    limiter: Arc<Limiter>,
    by: RateLimitKey,
    header: Option<HeaderName>,
    /// `RateLimit-Limit`, the same on every response, so formatted once.
    limit: HeaderValue,
    burst: u32,
    /// How long one unit of quota takes to come back.
    period: Duration,
    rejected: Arc<AtomicU64>,
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Headers that tell a client where it stands (IETF RateLimit fields).
#[derive(Debug)]
pub struct Allowance {
    limit: HeaderValue,
    remaining: u32,
    reset: HeaderValue,
}

impl Allowance {
    pub fn write(&self, h: &mut HeaderMap) {
        h.insert(LIMIT.clone(), self.limit.clone());
        h.insert(REMAINING.clone(), HeaderValue::from(self.remaining));
        h.insert(RESET.clone(), self.reset.clone());
    }
}

impl RateLimitFilter {
    pub fn new(
        route: &str,
        cfg: &RateLimitConfig,
        registry: &LimiterRegistry,
        rejected: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        let nz = |n: u32| NonZeroU32::new(n).ok_or("the rate must be at least 1");
        let (rate, quota) = match (cfg.per_second, cfg.per_minute) {
            (Some(n), None) => (n, Quota::per_second(nz(n)?)),
            (None, Some(n)) => (n, Quota::per_minute(nz(n)?)),
            _ => return Err("give exactly one of per_second or per_minute".into()),
        };
        let burst = cfg.burst.unwrap_or(rate);
        let quota = quota.allow_burst(nz(burst)?);
        let id = LimiterId {
            route: route.to_string(),
            per_second: cfg.per_second,
            per_minute: cfg.per_minute,
            burst: cfg.burst,
            by: cfg.by,
            header: cfg.header.clone(),
        };
        let header = match &cfg.header {
            Some(h) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("{h:?} is not a valid header name"))?,
            ),
            None => None,
        };
        Ok(Self {
            limiter: registry.get(id, quota),
            by: cfg.by,
            header,
            limit: HeaderValue::from(burst),
            burst,
            period: quota.replenish_interval(),
            rejected,
        })
    }

    fn key(&self, src: &KeySource<'_>) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        match self.by {
            RateLimitKey::Ip => src.ip.hash(&mut h),
            // Unauthenticated callers share one bucket per IP rather than escaping the limit.
            RateLimitKey::Consumer => match src.consumer {
                Some(c) => c.hash(&mut h),
                None => src.ip.hash(&mut h),
            },
            RateLimitKey::ApiKey => match src.api_key_hash {
                Some(k) => k.hash(&mut h),
                None => src.ip.hash(&mut h),
            },
            RateLimitKey::Header => match self.header.as_ref().and_then(|n| src.headers.get(n)) {
                Some(v) => v.as_bytes().hash(&mut h),
                None => src.ip.hash(&mut h),
            },
        }
        h.finish()
    }

    /// `RateLimit-Reset` is the seconds until the next unit of quota comes back (GCRA has
    /// no window to reset): on a 429 that is when a request is let through again, the same
    /// as `Retry-After`; on an allowed response, when `Remaining` grows by one.
    pub fn check(&self, src: &KeySource<'_>) -> Result<Allowance, Reject> {
        match self.limiter.check_key(&self.key(src)) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // The allowance is full again `LAG + period` from now, and gains its
                // units back one per period until then.
                let full_in = Duration::from_nanos(LAG.get()) + self.period;
                let missing = self.burst.saturating_sub(1).saturating_sub(remaining);
                let next_in = full_in.saturating_sub(self.period * missing);
                Ok(Allowance {
                    limit: self.limit.clone(),
                    remaining,
                    reset: HeaderValue::from(whole_secs(next_in)),
                })
            }
            Err(not_until) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let secs = whole_secs(not_until.wait_time_from(DefaultClock::default().now()));
                let mut r = Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "rate limit exceeded; retry after the time in Retry-After",
                );
                r.headers
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                Allowance {
                    limit: self.limit.clone(),
                    remaining: 0,
                    reset: HeaderValue::from(secs),
                }
                .write(&mut r.headers);
                Err(r)
            }
        }
    }
}

/// Whole seconds, rounded up so a client that waits them is not early, and at least 1.
fn whole_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_second: u32, burst: u32, by: RateLimitKey) -> RateLimitConfig {
        RateLimitConfig {
            per_second: Some(per_second),
            per_minute: None,
            burst: Some(burst),
            by,
            header: Some("x-tenant".into()),
        }
    }

    #[test]
    fn burst_then_429_with_headers_per_key() {
        let reg = LimiterRegistry::default();
        let rejected = Arc::new(AtomicU64::new(0));
        let f = RateLimitFilter::new("r", &cfg(1, 3, RateLimitKey::Ip), &reg, rejected.clone())
            .unwrap();
        let h = HeaderMap::new();
        let a = KeySource {
            ip: "10.0.0.1".parse().unwrap(),
            consumer: None,
            api_key_hash: None,
            headers: &h,
        };
        for _ in 0..3 {
            assert!(f.check(&a).is_ok());
        }
        let r = f.check(&a).unwrap_err();
        assert_eq!(r.status, 429);
        assert_eq!(r.headers["retry-after"], "1");
        assert_eq!(r.headers["ratelimit-remaining"], "0");
        assert_eq!(rejected.load(Ordering::Relaxed), 1);
        let b = KeySource {
            ip: "10.0.0.2".parse().unwrap(),
            ..a
        };
        let ok = f.check(&b).expect("another client has its own bucket");
        let mut h = HeaderMap::new();
        ok.write(&mut h);
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], "2");
        assert_eq!(h["ratelimit-reset"], "1");
    }

    fn reset(r: Result<Allowance, Reject>) -> (String, String) {
        let h = match r {
            Ok(a) => {
                let mut h = HeaderMap::new();
                a.write(&mut h);
                h
            }
            Err(r) => *r.headers,
        };
        let v = |n: &str| h[n].to_str().unwrap().to_string();
        (v("ratelimit-remaining"), v("ratelimit-reset"))
    }

    #[test]
    fn reset_is_when_the_next_unit_comes_back_as_on_the_429() {
        let reg = LimiterRegistry::default();
        // 3 a minute: one unit every 20 s.
        let c = RateLimitConfig {
            per_second: None,
            per_minute: Some(3),
            ..cfg(1, 3, RateLimitKey::Ip)
        };
        let f = RateLimitFilter::new("r", &c, &reg, Arc::default()).unwrap();
        let h = HeaderMap::new();
        let src = KeySource {
            ip: "10.0.0.1".parse().unwrap(),
            consumer: None,
            api_key_hash: None,
            headers: &h,
        };
        let got: Vec<_> = (0..4).map(|_| reset(f.check(&src))).collect();
        let want = [("2", "20"), ("1", "20"), ("0", "20"), ("0", "20")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));

        // Part of a period gone: the next unit is that much nearer.
        let c = RateLimitConfig {
            per_second: None,
            per_minute: Some(20),
            ..cfg(1, 3, RateLimitKey::Ip)
        };
        let f = RateLimitFilter::new("r", &c, &reg, Arc::default()).unwrap();
        let first = std::time::Instant::now();
        assert_eq!(reset(f.check(&src)), ("2".into(), "3".into()));
        std::thread::sleep(Duration::from_millis(1100));
        // Full again 6 s after the first, so one unit back 3 s after it: 1.9 s from now.
        let (remaining, reset) = reset(f.check(&src));
        let gone = first.elapsed().as_secs_f64();
        assert_eq!(remaining, "1");
        assert_eq!(reset, format!("{}", (3.0 - gone).ceil().max(1.0)), "{gone}");
    }

    #[test]
    fn survives_recompile_and_keys_by_header() {
        let reg = LimiterRegistry::default();
        let c = cfg(1, 1, RateLimitKey::Header);
        let f1 = RateLimitFilter::new("r", &c, &reg, Arc::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-tenant", "t1".parse().unwrap());
        let src = KeySource {
            ip: "10.0.0.1".parse().unwrap(),
            consumer: None,
            api_key_hash: None,
            headers: &h,
        };
        assert!(f1.check(&src).is_ok());
        let f2 = RateLimitFilter::new("r", &c, &reg, Arc::default()).unwrap();
        assert!(
            f2.check(&src).is_err(),
            "a reload must not reset the allowance"
        );
    }
}
