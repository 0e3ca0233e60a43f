//! Refreshes a metrics source on its own tokio task and publishes the latest
//! [`MetricsFeed`] on a `watch` channel. Readers take `borrow()` and never wait on I/O.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::domain::metrics::{FeedError, MetricsFeed};

use super::{CanaryRoles, MetricsSource};

/// A running poller. Dropping it stops the task.
pub struct MetricsPoller {
    feed: watch::Receiver<MetricsFeed>,
    roles: watch::Sender<CanaryRoles>,
    refresh: Arc<Notify>,
    task: JoinHandle<()>,
}

impl MetricsPoller {
    /// Starts polling `source` every `source.interval()`. Must be called within a tokio
    /// runtime.
    pub fn spawn(source: MetricsSource) -> Self {
        let interval = source.interval();
        Self::spawn_every(source, interval)
    }

    /// Starts polling at a given interval.
    pub fn spawn_every(mut source: MetricsSource, interval: Duration) -> Self {
        let (tx, feed) = watch::channel(MetricsFeed::new(source.environment(), source.describe()));
        let (roles, roles_rx) = watch::channel(CanaryRoles::default());
        let refresh = Arc::new(Notify::new());
        let wake = refresh.clone();
        let task = tokio::spawn(async move {
            loop {
                let roles_now = roles_rx.borrow().clone();
                let deadline = source.deadline();
                let outcome = tokio::time::timeout(deadline, source.sample(&roles_now)).await;
                match outcome {
                    Ok(Ok(sample)) => {
                        tx.send_modify(|f| {
                            f.latest = Some(Arc::new(sample));
                            f.error = None;
                        });
                    }
                    Ok(Err(e)) => fail(&tx, e.to_string()),
                    Err(_) => fail(
                        &tx,
                        format!(
                            "{} did not answer within {:.1}s",
                            source.describe(),
                            deadline.as_secs_f64()
                        ),
                    ),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = wake.notified() => {}
                    _ = tx.closed() => break,
                }
            }
        });
        Self {
            feed,
            roles,
            refresh,
            task,
        }
    }

    /// A receiver of the feed; `changed().await` wakes on every refresh.
    pub fn subscribe(&self) -> watch::Receiver<MetricsFeed> {
        self.feed.clone()
    }

    /// The latest feed.
    pub fn latest(&self) -> MetricsFeed {
        self.feed.borrow().clone()
    }

    /// Tells the poller which upstream of each route is stable and which the canary
    /// (from the route's split); used from the next refresh on.
    pub fn set_roles(&self, roles: CanaryRoles) {
        self.roles.send_replace(roles);
    }

    /// Refreshes now instead of at the next tick (e.g. right after a canary step).
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }
}

impl Drop for MetricsPoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the last good sample and records why this refresh failed.
fn fail(tx: &watch::Sender<MetricsFeed>, message: String) {
    tracing::warn!(error = %message, "metrics refresh failed");
    tx.send_modify(|f| {
        let n = f.error.as_ref().map_or(0, |e| e.consecutive_failures);
        f.error = Some(FeedError {
            message,
            failed_at: Utc::now(),
            consecutive_failures: n.saturating_add(1),
        });
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;
    use crate::metrics::ScrapeConfig;
    use crate::metrics::scrape::ScrapeSource;

    /// A gateway stand-in whose counter grows by 10 per scrape, and which answers 500
    /// while `broken` is set.
    async fn fake_gateway(broken: Arc<AtomicU32>) -> (String, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let n = Arc::new(AtomicU32::new(0));
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let n = n.clone();
                let broken = broken.clone();
                async move {
                    if broken.load(Ordering::SeqCst) == 1 {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "boom".to_string());
                    }
                    let v = n.fetch_add(10, Ordering::SeqCst) + 10;
                    (
                        StatusCode::OK,
                        format!(
                            "# TYPE signalbox_requests counter\n\
                             signalbox_requests_total{{route=\"users\",upstream=\"blue\",method=\"GET\",status_class=\"2xx\"}} {v}\n"
                        ),
                    )
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}/metrics"), task)
    }

    async fn wait_for(
        rx: &mut watch::Receiver<MetricsFeed>,
        what: &str,
        f: impl Fn(&MetricsFeed) -> bool,
    ) {
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if f(&rx.borrow_and_update()) {
                    return;
                }
                rx.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "timed out waiting for {what}: {:?}",
            rx.borrow()
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_sample_and_marks_it_stale() {
        let broken = Arc::new(AtomicU32::new(0));
        let (url, server) = fake_gateway(broken.clone()).await;
        let mut cfg = ScrapeConfig::new(url);
        cfg.window = crate::gateway::config::units::Dur::secs(5);
        let source = ScrapeSource::new("dev", cfg).unwrap();
        let poller = MetricsPoller::spawn_every(source.into(), Duration::from_millis(50));
        let mut rx = poller.subscribe();

        wait_for(&mut rx, "a rate", |f| {
            f.latest
                .as_ref()
                .and_then(|s| s.route("users"))
                .is_some_and(|r| r.signals.request_rate.get().is_some_and(|v| v > 0.0))
        })
        .await;
        assert!(!rx.borrow().is_stale());

        broken.store(1, Ordering::SeqCst);
        wait_for(&mut rx, "two failures", |f| {
            f.error
                .as_ref()
                .is_some_and(|e| e.consecutive_failures >= 2)
        })
        .await;
        let feed = rx.borrow().clone();
        assert!(feed.is_stale());
        let err = feed.error.unwrap();
        assert!(
            err.message.contains("answered HTTP 500: boom"),
            "{}",
            err.message
        );
        assert!(feed.latest.unwrap().route("users").is_some());

        broken.store(0, Ordering::SeqCst);
        wait_for(&mut rx, "recovery", |f| f.error.is_none()).await;
        drop(poller);
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_an_error_naming_the_address() {
        // Bind then drop, so nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/metrics");
        let source = ScrapeSource::new("dev", ScrapeConfig::new(url.clone())).unwrap();
        let poller = MetricsPoller::spawn_every(source.into(), Duration::from_millis(50));
        let mut rx = poller.subscribe();
        wait_for(&mut rx, "an error", |f| f.error.is_some()).await;
        let feed = poller.latest();
        assert!(feed.latest.is_none() && !feed.is_stale());
        let msg = feed.error.unwrap().message;
        assert!(msg.starts_with(&format!("cannot reach {url}")), "{msg}");
    }
}
