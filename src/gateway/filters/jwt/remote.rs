//! A JWKS fetched over HTTP: cached for `jwks_cache`, refetched when a token names a key we
//! do not have, one fetch at a time and at most one per `min_refetch_interval`.
//!
//! The request path reads the key set through `ArcSwap` and an atomic deadline, so with keys
//! present and fresh it takes no lock. Fetches run in their own task: a client that hangs up
//! does not cancel a fetch other requests are waiting for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::JwksTuning;
use super::keys::{KeySet, parse_jwks};

type Fetch = Shared<BoxFuture<'static, ()>>;

pub struct RemoteJwks {
    url: reqwest::Url,
    /// The URL without user info or query, for logs.
    shown: String,
    client: reqwest::Client,
    tuning: JwksTuning,
    cache_for: Duration,
    keys: ArcSwap<KeySet>,
    epoch: Instant,
    /// Milliseconds after `epoch` when the keys should be refetched in the background.
    refresh_due_ms: AtomicU64,
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    inflight: Option<Fetch>,
    last_started: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The cache is older than `jwks_cache`: refresh behind the requests' backs.
    Due,
    /// A token names a key we lack: the caller waits for the result.
    UnknownKey,
}

impl RemoteJwks {
    pub fn new(url: &str, cache_for: Duration, tuning: JwksTuning) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("must be http or https, not {}", url.scheme()));
        }
        let shown = shown_url(&url);
        if url.scheme() == "http" && !is_loopback(&url) {
            tracing::warn!(jwks_url = %shown, "jwt.jwks_url uses plain http; keys can be forged in transit");
        }
        let client = reqwest::Client::builder()
            .timeout(tuning.fetch_timeout)
            .user_agent(concat!("signalbox/", env!("CARGO_PKG_VERSION")))
            // Fetches are minutes apart: a pooled connection would only be stale by then.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", error_chain(&e)))?;
        Ok(Self {
            url,
            shown,
            client,
            tuning,
            cache_for,
            keys: ArcSwap::from_pointee(KeySet::default()),
            epoch: Instant::now(),
            refresh_due_ms: AtomicU64::new(0),
            state: Mutex::new(FetchState::default()),
        })
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// The first fetch, awaited while a config snapshot is built. Failing is not fatal: the
    /// routes still serve (and reject) while the key server is down, and later tokens retry.
    pub async fn initial_fetch(self: &Arc<Self>) {
        if let Some(f) = self.start(Why::Due, true) {
            f.await;
        }
    }

    /// Called for every token: starts a background refresh when the cache is due.
    pub fn refresh_if_due(self: &Arc<Self>) {
        if self.now_ms() >= self.refresh_due_ms.load(Ordering::Relaxed) {
            // Nobody waits for this one; requests go on with the keys they have.
            drop(self.start(Why::Due, false));
        }
    }

    /// Refetches because a token names a key we lack, unless a fetch started recently. Joins a
    /// fetch already in flight, so a burst of such tokens causes one fetch.
    pub async fn refresh_for_unknown_key(self: &Arc<Self>) {
        if let Some(f) = self.start(Why::UnknownKey, false) {
            f.await;
        }
    }

    fn state(&self) -> MutexGuard<'_, FetchState> {
        // No code panics while holding this lock; recover the data if one ever does.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set_due_in(&self, d: Duration) {
        let d = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.refresh_due_ms
            .store(self.now_ms().saturating_add(d), Ordering::Relaxed);
    }

    fn start(self: &Arc<Self>, why: Why, first: bool) -> Option<Fetch> {
        let mut st = self.state();
        if let Some(f) = &st.inflight {
            return Some(f.clone());
        }
        match why {
            Why::Due if self.now_ms() < self.refresh_due_ms.load(Ordering::Relaxed) => {
                return None;
            }
            Why::UnknownKey
                if st
                    .last_started
                    .is_some_and(|t| t.elapsed() < self.tuning.min_refetch_interval) =>
            {
                return None;
            }
            _ => {}
        }
        st.last_started = Some(Instant::now());
        // Until this fetch ends, no request starts another one for being due.
        self.set_due_in(self.tuning.min_refetch_interval);
        let me = Arc::clone(self);
        let run = async move {
            me.fetch_and_store(first).await;
            me.state().inflight = None;
        };
        let fetch: Fetch = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn(run);
                async move {
                    // The task only ends early if the runtime shuts down; nothing to report then.
                    let _ = task.await;
                }
                .boxed()
                .shared()
            }
            // Outside tokio (no runtime to spawn on) the waiters drive the fetch themselves.
            Err(_) => run.boxed().shared(),
        };
        st.inflight = Some(fetch.clone());
        Some(fetch)
    }

    async fn fetch_and_store(&self, first: bool) {
        let retry = self.tuning.min_refetch_interval;
        match self.fetch().await {
            Ok((set, skipped)) if set.is_empty() => {
                tracing::warn!(
                    jwks_url = %self.shown,
                    skipped = %skipped.join("; "),
                    "JWKS has no usable keys; keeping the last good keys"
                );
                self.set_due_in(retry);
            }
            Ok((set, skipped)) => {
                for why in &skipped {
                    if first {
                        tracing::warn!(jwks_url = %self.shown, "JWKS {why}; skipped");
                    } else {
                        tracing::debug!(jwks_url = %self.shown, "JWKS {why}; skipped");
                    }
                }
                tracing::debug!(jwks_url = %self.shown, keys = set.len(), "JWKS fetched");
                self.keys.store(Arc::new(set));
                self.set_due_in(self.cache_for.max(retry));
            }
            Err(e) => {
                tracing::warn!(
                    jwks_url = %self.shown,
                    error = %e,
                    "JWKS fetch failed; keeping the last good keys"
                );
                self.set_due_in(retry);
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<String>), String> {
        let limit = self.tuning.max_body;
        let mut resp = self
            .client
            .get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| self.describe(e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("response is larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.describe(e))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("response is larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }

    fn describe(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("timed out after {:?}", self.tuning.fetch_timeout);
        }
        error_chain(&e.without_url())
    }
}

/// An error and its sources, which carry the useful part ("connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_str = c.to_string();
        if !s.contains(&c_str) {
            s.push_str(": ");
            s.push_str(&c_str);
        }
        cur = c.source();
    }
    s
}

/// The URL as it may be logged: no user info, no query (either can hold a credential).
fn shown_url(u: &reqwest::Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.path());
    s
}

fn is_loopback(u: &reqwest::Url) -> bool {
    match u.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_hides_credentials() {
        let u = reqwest::Url::parse("https://user:pw@idp.example.com:8443/jwks?token=abc").unwrap();
        assert_eq!(shown_url(&u), "https://idp.example.com:8443/jwks");
    }

    #[test]
    fn only_http_urls() {
        let t = JwksTuning::default();
        let d = Duration::from_secs(60);
        assert!(RemoteJwks::new("file:///etc/jwks.json", d, t.clone()).is_err());
        assert!(RemoteJwks::new("not a url", d, t.clone()).is_err());
        assert!(RemoteJwks::new("http://127.0.0.1:1/jwks", d, t).is_ok());
    }
}
