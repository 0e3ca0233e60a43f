//! The header read timeout (the slowloris guard): a client connection that takes longer
//! than `server.header_read_timeout` to send a request head is closed, whether it trickles
//! the head or sits idle between keep-alive requests.
//!
//! hyper can do this itself, but then every request boxes a fresh timer, registers and
//! cancels it in tokio's timer wheel, and costs the connection one more poll after each
//! response to start it: 4.6 % of the gateway's instructions per request (callgrind,
//! BENCHMARKS.md). Here each serving thread keeps one coarse clock instead. A connection
//! notes the tick at which it began waiting for a head (when it opened, and when each
//! response's body was done) and clears it when a head has arrived (hyper calls the
//! service); a sweep on every tick closes the connections that waited too long. A request
//! costs a reference count and two stores, and a connection is closed at most a tenth of
//! the timeout (at most one second) after it ran out, never before.
//!
//! HTTP/2 connections are watched until their first request, then left to HTTP/2's own
//! flow control: their streams overlap, so "between requests" does not exist there.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::{Interval, MissedTickBehavior};

/// `waiting_since` while a request is being served (its head has arrived).
const SERVING: u64 = u64::MAX;
/// `waiting_since` of an HTTP/2 connection: never timed out here.
const EXEMPT: u64 = u64::MAX - 1;

/// How many ticks make up one timeout: the sweep's resolution.
const TICKS_PER_TIMEOUT: u32 = 20;
const MIN_TICK: Duration = Duration::from_millis(5);
const MAX_TICK: Duration = Duration::from_millis(500);

/// One serving thread's clock and the connections it watches.
pub struct HeadTimeouts {
    now: Arc<AtomicU64>,
    /// Ticks a connection may wait; it is closed once it has waited more.
    limit: u64,
    interval: Interval,
    watched: Vec<Arc<HeadClock>>,
}

/// One client connection's view of its thread's clock.
pub struct HeadClock {
    now: Arc<AtomicU64>,
    waiting_since: AtomicU64,
    /// The connection's task, to close it. Given up by [`HeadClock::closed`] as soon as the
    /// connection ends: a task handle keeps the task's memory, and a gateway taking many
    /// short connections should not hold thousands of them until the next sweep.
    task: Mutex<Option<AbortHandle>>,
}

impl HeadTimeouts {
    pub fn new(timeout: Duration) -> Self {
        let tick = (timeout / TICKS_PER_TIMEOUT).clamp(MIN_TICK, MAX_TICK);
        let limit = timeout.as_nanos().div_ceil(tick.as_nanos()) as u64;
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        // A late tick counts as one: time is then under-counted, so nobody is cut early.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            now: Arc::new(AtomicU64::new(0)),
            limit,
            interval,
            watched: Vec::new(),
        }
    }

    /// A clock for a new connection, which waits for its first head from now.
    pub fn clock(&self) -> Arc<HeadClock> {
        Arc::new(HeadClock {
            waiting_since: AtomicU64::new(self.now.load(Ordering::Relaxed)),
            now: self.now.clone(),
            task: Mutex::new(None),
        })
    }

    /// Watches the connection task `task` serves with `clock`.
    pub fn watch(&mut self, clock: Arc<HeadClock>, task: AbortHandle) {
        *clock.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        self.watched.push(clock);
    }

    /// Waits for the next tick, then closes the connections that have waited too long.
    /// Cancel-safe: a tick that is interrupted has not happened.
    pub async fn tick(&mut self) {
        self.interval.tick().await;
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.limit;
        self.watched.retain(|clock| {
            // Only this list holds the clock once the connection is gone.
            if Arc::strong_count(clock) == 1 {
                return false;
            }
            let since = clock.waiting_since.load(Ordering::Relaxed);
            // `since` was stamped during tick `since`, so more than `limit` whole ticks
            // have passed once `now - since > limit`.
            if since < EXEMPT && now.saturating_sub(since) > limit {
                if let Some(task) = clock.take_task() {
                    tracing::debug!(
                        "closing a client connection that sent no request head in time"
                    );
                    task.abort();
                }
                return false;
            }
            true
        });
    }

    /// Ticks forever: for the drain, where nothing else drives the sweep.
    pub async fn run(&mut self) {
        loop {
            self.tick().await;
        }
    }
}

impl HeadClock {
    /// A request head has arrived (hyper is calling the service).
    pub fn head_arrived(&self, version: Version) {
        let state = if version == Version::HTTP_2 {
            EXEMPT
        } else {
            SERVING
        };
        self.waiting_since.store(state, Ordering::Relaxed);
    }

    /// The connection has ended: its task needs no closing, and its memory can go.
    pub fn closed(&self) {
        drop(self.take_task());
    }

    fn take_task(&self) -> Option<AbortHandle> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The response's body is done: the connection waits for its next head.
    pub fn response_done(&self) {
        if self.waiting_since.load(Ordering::Relaxed) == SERVING {
            self.waiting_since
                .store(self.now.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// A response body that restarts its connection's head clock when hyper drops it, which
/// it does once the body has been written out (or the exchange was abandoned).
pub struct Timed<B> {
    body: B,
    clock: Arc<HeadClock>,
}

impl<B> Timed<B> {
    pub fn new(body: B, clock: Arc<HeadClock>) -> Self {
        Self { body, clock }
    }
}

impl<B> Drop for Timed<B> {
    fn drop(&mut self) {
        self.clock.response_done();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Timed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_task() -> tokio::task::JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    /// Sweeps until `task` is closed (at most 100 ticks); how long that took.
    async fn ticks_until_closed(
        t: &mut HeadTimeouts,
        task: &tokio::task::JoinHandle<()>,
    ) -> Duration {
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            if task.is_finished() {
                break;
            }
            t.tick().await;
            tokio::task::yield_now().await;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_longer_than_the_timeout_is_closed_and_not_before() {
        let mut t = HeadTimeouts::new(Duration::from_secs(1));
        let clock = t.clock();
        let task = pending_task();
        t.watch(clock.clone(), task.abort_handle());
        let waited = ticks_until_closed(&mut t, &task).await;
        assert!(
            waited > Duration::from_secs(1) && waited <= Duration::from_millis(1100),
            "{waited:?}"
        );
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_timed_out_and_the_clock_restarts_after_it() {
        let mut t = HeadTimeouts::new(Duration::from_secs(1));
        let clock = t.clock();
        let task = pending_task();
        t.watch(clock.clone(), task.abort_handle());
        clock.head_arrived(Version::HTTP_11);
        let body = Timed::new(http_body_util::Empty::<Bytes>::new(), clock.clone());
        // A response streaming for ten timeouts is left alone.
        for _ in 0..200 {
            t.tick().await;
        }
        assert!(!task.is_finished());
        drop(body);
        let waited = ticks_until_closed(&mut t, &task).await;
        assert!(
            waited > Duration::from_secs(1) && waited <= Duration::from_millis(1100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_left_alone_after_their_first_request() {
        let mut t = HeadTimeouts::new(Duration::from_millis(100));
        let clock = t.clock();
        let task = pending_task();
        t.watch(clock.clone(), task.abort_handle());
        clock.head_arrived(Version::HTTP_2);
        drop(Timed::new(
            http_body_util::Empty::<Bytes>::new(),
            clock.clone(),
        ));
        for _ in 0..100 {
            t.tick().await;
        }
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn closed_connections_are_forgotten_and_their_task_let_go_at_once() {
        let mut t = HeadTimeouts::new(Duration::from_secs(1));
        // The connection's service holds its clock for as long as the connection lives.
        let service = t.clock();
        let task = tokio::spawn(async {});
        t.watch(service.clone(), task.abort_handle());
        t.tick().await;
        assert_eq!(t.watched.len(), 1);
        // The connection ends: the task handle goes now, not at the next sweep.
        service.closed();
        assert!(service.task.lock().unwrap().is_none());
        drop(service);
        t.tick().await;
        assert!(t.watched.is_empty());
        task.await.unwrap();
    }
}
