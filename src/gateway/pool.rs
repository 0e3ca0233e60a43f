//! Keep-alive HTTP/1.1 connections to one upstream target.
//!
//! A target keeps one idle list per serving thread (and one for everything else, such as
//! health checks). A request takes the most recently used idle connection of its own
//! thread, or opens one; the response body puts the connection back when it has been read
//! to the end. So the hot path is an uncontended lock and a `Vec` pop: no shared map keyed
//! by authority, no connect future raced against the checkout, and no task spawned per
//! request to wait for the connection to become idle, which is what hyper-util's pooled
//! client costs (BENCHMARKS.md, "Gateway vs nginx").

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::upstream::ReqBody;

/// An idle connection older than this is closed rather than reused: servers commonly drop
/// idle keep-alive connections after 60–75 s, and a request sent as they do fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Idle connections kept per target and thread; more are closed when they come back.
pub const MAX_IDLE: usize = 256;
/// TCP keep-alive probes on upstream sockets, so a peer that vanished is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// The slot of callers that are not serving threads (health checks).
pub const OFF_THREAD: usize = usize::MAX;

/// Why a request did not get a response from the target.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, name not resolved).
    Connect(std::io::Error),
    /// Opening a connection took longer than the upstream's connect timeout.
    ConnectTimeout,
    /// The connection failed while the request or response was in flight, or the request
    /// body failed (e.g. it went over `max_body`).
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::Request(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::ConnectTimeout => None,
            Self::Request(e) => Some(e),
        }
    }
}

struct Idle {
    tx: SendRequest<ReqBody>,
    since: Instant,
}

/// One thread's idle connections to a target, oldest first.
#[derive(Default)]
struct Slot(Mutex<VecDeque<Idle>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live connection: the one least likely to have been closed
    /// by the server's own idle timeout.
    fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop_back() {
            if i.since.elapsed() >= IDLE_TIMEOUT {
                // Everything before it is older still.
                idle.clear();
                return None;
            }
            if i.tx.is_ready() {
                return Some(i.tx);
            }
        }
        None
    }

    /// Keeps a connection whose response was read to the end. One that is not ready for
    /// the next request at this point is still sending this request's body (the upstream
    /// answered before reading it all) or closing: a request must never queue behind it,
    /// so it is let go.
    fn checkin(&self, tx: SendRequest<ReqBody>) {
        if !tx.is_ready() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        evict_expired(&mut idle, now);
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { tx, since: now });
    }
}

fn evict_expired(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT || !i.tx.is_ready())
    {
        idle.pop_front();
    }
}

/// The connections to one target.
pub struct Pool {
    addr: Arc<str>,
    /// One per serving thread, then the [`OFF_THREAD`] one.
    slots: Box<[Arc<Slot>]>,
}

impl Pool {
    pub fn new(addr: &str, workers: usize) -> Self {
        Self {
            addr: addr.into(),
            slots: (0..workers.max(1) + 1).map(|_| Arc::default()).collect(),
        }
    }

    fn slot(&self, worker: usize) -> &Arc<Slot> {
        let serving = self.slots.len() - 1;
        if worker == OFF_THREAD {
            &self.slots[serving]
        } else {
            &self.slots[worker % serving]
        }
    }

    /// Idle connections, over all threads.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.slots.iter().map(|s| s.lock().len()).sum()
    }

    /// Closes idle connections that have outlived [`IDLE_TIMEOUT`] or whose server closed
    /// them. Checkouts do this too; this is for targets that no longer get traffic (the
    /// old colour after a flip).
    pub fn evict_idle(&self) {
        let now = Instant::now();
        for s in self.slots.iter() {
            let mut idle = s.lock();
            idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT && i.tx.is_ready());
        }
    }

    /// Sends `req` (origin-form URI, `Host` already set) over a pooled connection of
    /// `worker`'s slot, opening one when none is idle. The connection task runs on the
    /// caller's runtime, so a serving thread's upstream I/O stays on that thread.
    pub async fn send(
        &self,
        worker: usize,
        connect_timeout: Duration,
        mut req: Request<ReqBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let slot = self.slot(worker);
        loop {
            let (mut tx, reused) = match slot.checkout() {
                Some(tx) => (tx, true),
                // Boxed: connecting is rare and its future is large, and every request
                // would otherwise carry (and move) room for it.
                None => (Box::pin(self.connect(connect_timeout)).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let slot = slot.clone();
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn: Some((tx, slot)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // The server closed an idle connection before the request went out:
                    // nothing was sent, so another connection may carry it. The loop
                    // ends: each turn takes an idle connection, and a fresh one is final.
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<SendRequest<ReqBody>, SendError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&*self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        // Best effort: a socket without these options still works.
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            // With upgrades: a `101 Switching Protocols` hands the socket to the tunnel
            // (`proxy::tunnel`) instead of ending it.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

/// A response body from a pooled connection. Read to its end, it returns the connection
/// to its slot; dropped earlier, the connection is closed (its remaining bytes are
/// unknown).
pub struct PooledBody {
    body: Incoming,
    conn: Option<(SendRequest<ReqBody>, Arc<Slot>)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("body", &self.body)
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((tx, slot)) = self.conn.take() {
            slot.checkin(tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read (HEAD, 204, or a length fully delivered)
        // leaves the connection clean even if nobody polled it to `None`.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Either, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every request on a connection with `body`, counting the
    /// connections it accepted; `close_after` makes it close each connection after that
    /// many responses (a server-side keep-alive limit).
    async fn server(body: &'static str, close_after: Option<usize>) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut served = 0;
                    let mut pending = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            served += 1;
                            if close_after == Some(served) {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: &str) -> Request<ReqBody> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, addr)
            .body(Either::Right(Empty::new()))
            .unwrap()
    }

    async fn fetch(pool: &Pool, worker: usize, addr: &str) -> String {
        let resp = pool
            .send(worker, Duration::from_secs(1), get(addr))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_is_reused_by_the_same_thread_only() {
        let (addr, accepted) = server("hello", None).await;
        let pool = Pool::new(&addr, 2);
        for _ in 0..5 {
            assert_eq!(fetch(&pool, 0, &addr).await, "hello");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five requests"
        );
        assert_eq!(pool.idle(), 1);
        // Another serving thread has its own connections.
        assert_eq!(fetch(&pool, 1, &addr).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_does_not_return_its_connection() {
        let (addr, accepted) = server("a body nobody reads", None).await;
        let pool = Pool::new(&addr, 1);
        let resp = pool
            .send(0, Duration::from_secs(1), get(&addr))
            .await
            .unwrap();
        drop(resp);
        assert_eq!(pool.idle(), 0);
        assert_eq!(fetch(&pool, 0, &addr).await, "a body nobody reads");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        let (addr, accepted) = server("ok", Some(1)).await;
        let pool = Pool::new(&addr, 1);
        for _ in 0..4 {
            assert_eq!(fetch(&pool, 0, &addr).await, "ok");
            // The server's close reaches the idle connection.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        pool.evict_idle();
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn connect_errors_and_timeouts_are_told_apart() {
        // A port nothing listens on: refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap().to_string();
        drop(l);
        let pool = Pool::new(&closed, 1);
        let err = pool
            .send(0, Duration::from_secs(1), get(&closed))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err}");

        // A listener that never accepts, its queue full: the kernel drops further SYNs,
        // so connecting hangs until the connect timeout.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        sock.listen(0).unwrap();
        let full = sock.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&full, Duration::from_millis(100)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
        }
        let pool = Pool::new(&full.to_string(), 1);
        let started = Instant::now();
        let err = pool
            .send(0, Duration::from_millis(200), get(&full.to_string()))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::ConnectTimeout), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn idle_connections_are_capped_and_expire() {
        let (addr, _) = server("x", None).await;
        let pool = Pool::new(&addr, 1);
        // Hold MAX_IDLE + 3 responses open at once, then finish them all.
        let mut open = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            open.push(
                pool.send(0, Duration::from_secs(1), get(&addr))
                    .await
                    .unwrap(),
            );
        }
        for r in open {
            r.into_body().collect().await.unwrap();
        }
        assert_eq!(pool.idle(), MAX_IDLE);

        // Age them past the idle timeout: the sweep closes them all.
        for i in pool.slot(0).lock().iter_mut() {
            i.since = i
                .since
                .checked_sub(IDLE_TIMEOUT)
                .expect("the clock is past the timeout");
        }
        pool.evict_idle();
        assert_eq!(pool.idle(), 0);
    }
}
