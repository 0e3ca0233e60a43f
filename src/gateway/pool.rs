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
use http::{Method, Request, Response, header};
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::h1::{self, Framing};
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
    /// A request without a body got no valid answer (see [`h1`]).
    Answer(h1::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::Request(e) => write!(f, "{e}"),
            Self::Answer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::ConnectTimeout => None,
            Self::Request(e) => Some(e),
            Self::Answer(e) => Some(e),
        }
    }
}

/// A pooled connection: hyper's, for requests with a body and protocol switches, or the
/// lean one ([`h1::Conn`]) for requests without a body.
trait Reusable {
    /// Whether it can carry the next request now.
    fn usable(&self) -> bool;
    /// The cheap part of [`Reusable::usable`], for a connection that just finished a
    /// response (and for the oldest idle ones, which checkouts reach last).
    fn usable_at_checkin(&self) -> bool;
}

impl Reusable for SendRequest<ReqBody> {
    fn usable(&self) -> bool {
        self.is_ready()
    }

    fn usable_at_checkin(&self) -> bool {
        self.is_ready()
    }
}

impl Reusable for h1::Conn {
    fn usable(&self) -> bool {
        !self.closed_while_idle()
    }

    /// Whether it is clean is checked before it is handed back; whether the upstream
    /// closed it since is checked when it is taken out again.
    fn usable_at_checkin(&self) -> bool {
        true
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// Idle connections of one kind, oldest first.
struct IdleList<C>(Mutex<VecDeque<Idle<C>>>);

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<C: Reusable> IdleList<C> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle<C>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live connection: the one least likely to have been closed
    /// by the server's own idle timeout.
    fn checkout(&self) -> Option<C> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop_back() {
            if i.since.elapsed() >= IDLE_TIMEOUT {
                // Everything before it is older still.
                idle.clear();
                return None;
            }
            if i.conn.usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Keeps a connection whose response was read to the end. One that is not usable
    /// at this point (hyper's still sending this request's body because the upstream
    /// answered before reading it all, or closing) is let go: a request must never queue
    /// behind it.
    fn checkin(&self, conn: C) {
        if !conn.usable_at_checkin() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        while idle.front().is_some_and(|i| {
            now.duration_since(i.since) >= IDLE_TIMEOUT || !i.conn.usable_at_checkin()
        }) {
            idle.pop_front();
        }
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }

    fn evict(&self, now: Instant) {
        self.lock()
            .retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT && i.conn.usable());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One thread's idle connections to a target.
#[derive(Default)]
struct Slot {
    hyper: IdleList<SendRequest<ReqBody>>,
    lean: IdleList<h1::Conn>,
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

    /// Idle connections, over all threads and both kinds.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.hyper.len() + s.lean.len())
            .sum()
    }

    /// Closes idle connections that have outlived [`IDLE_TIMEOUT`] or whose server closed
    /// them. Checkouts do this too; this is for targets that no longer get traffic (the
    /// old colour after a flip).
    pub fn evict_idle(&self) {
        let now = Instant::now();
        for s in self.slots.iter() {
            s.hyper.evict(now);
            s.lean.evict(now);
        }
    }

    /// Sends `req` (origin-form URI, `Host` already set) over a pooled connection of
    /// `worker`'s slot, opening one when none is idle. Connections live on the caller's
    /// runtime, so a serving thread's upstream I/O stays on that thread.
    ///
    /// A request without a body goes over a lean connection ([`h1`]); one with a body,
    /// or asking to switch protocols, over hyper's.
    ///
    /// Not an `async fn`: one lays out room for both ways side by side, and a request's
    /// handler future, which carries this one, would be the larger for it.
    pub fn send(
        &self,
        worker: usize,
        connect_timeout: Duration,
        req: Request<ReqBody>,
    ) -> impl Future<Output = Result<Response<PooledBody>, SendError>> + '_ {
        let slot = self.slot(worker);
        if matches!(req.body(), Either::Right(_)) && !req.headers().contains_key(header::UPGRADE) {
            futures_util::future::Either::Left(self.send_lean(slot, connect_timeout, req))
        } else {
            futures_util::future::Either::Right(self.send_hyper(slot, connect_timeout, req))
        }
    }

    async fn send_lean(
        &self,
        slot: &Arc<Slot>,
        connect_timeout: Duration,
        req: Request<ReqBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let (mut parts, _) = req.into_parts();
        loop {
            let (mut conn, reused) = match slot.lean.checkout() {
                Some(c) => (c, true),
                None => (
                    h1::Conn::new(Box::pin(self.open(connect_timeout)).await?),
                    false,
                ),
            };
            match conn
                .exchange(&parts.method, &parts.uri, &mut parts.headers)
                .await
            {
                Ok(answer) => return Ok(lean_response(answer, conn, slot)),
                // An idle connection the upstream closed as the request went out: it
                // never got an answer going, and the request (idempotent: it has no
                // body, and only such go again) may go on another connection. The loop
                // ends: each turn takes an idle connection, and a fresh one is final.
                Err(e) if reused && e.before_answer() && idempotent(&parts.method) => {}
                Err(e) => return Err(SendError::Answer(e)),
            }
        }
    }

    async fn send_hyper(
        &self,
        slot: &Arc<Slot>,
        connect_timeout: Duration,
        mut req: Request<ReqBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut tx, reused) = match slot.hyper.checkout() {
                Some(tx) => (tx, true),
                // Boxed: connecting is rare and its future is large, and every request
                // would otherwise carry (and move) room for it.
                None => (Box::pin(self.handshake(connect_timeout)).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let slot = slot.clone();
                    return Ok(resp.map(|body| {
                        PooledBody(Inner::Hyper {
                            body,
                            conn: Some((tx, slot)),
                        })
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

    async fn open(&self, timeout: Duration) -> Result<TcpStream, SendError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&*self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        // Best effort: a socket without these options still works.
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        Ok(stream)
    }

    async fn handshake(&self, timeout: Duration) -> Result<SendRequest<ReqBody>, SendError> {
        let stream = self.open(timeout).await?;
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

/// Methods a request may be sent again with (RFC 9110 §9.2.2): the proxy retries them on
/// another target, the pool on another connection.
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The response to a lean exchange. A body that arrived whole with the head (the usual
/// small answer) is taken out at once, and the connection goes back to the pool before
/// the client has been answered.
fn lean_response(answer: h1::Answer, mut conn: h1::Conn, slot: &Arc<Slot>) -> Response<PooledBody> {
    let h1::Answer {
        parts,
        mut framing,
        keep_alive,
    } = answer;
    let mut whole = None;
    if let Framing::Length(n) = framing
        && conn.buffered() as u64 >= n
    {
        whole = conn.take_buffered(n);
        framing = Framing::Done;
    }
    let mut body = LeanBody {
        conn: Some(conn),
        framing,
        keep_alive,
        slot: slot.clone(),
        whole,
    };
    if body.framing == Framing::Done {
        body.release();
    }
    Response::from_parts(parts, PooledBody(Inner::Lean(body)))
}

/// A response body from a pooled connection. Read to its end, it returns the connection
/// to its slot; dropped earlier, the connection is closed (its remaining bytes are
/// unknown).
pub struct PooledBody(Inner);

enum Inner {
    Hyper {
        body: Incoming,
        conn: Option<(SendRequest<ReqBody>, Arc<Slot>)>,
    },
    Lean(LeanBody),
}

struct LeanBody {
    /// `None` once handed back or failed.
    conn: Option<h1::Conn>,
    framing: Framing,
    keep_alive: bool,
    slot: Arc<Slot>,
    /// The whole body, when it came with the head.
    whole: Option<Bytes>,
}

impl LeanBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.is_clean()
        {
            self.slot.lean.checkin(conn);
        }
    }

    fn finished(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Hyper { body, conn } => f
                .debug_struct("PooledBody")
                .field("body", body)
                .field("pooled", &conn.is_some())
                .finish(),
            Inner::Lean(b) => f
                .debug_struct("PooledBody")
                .field("framing", &b.framing)
                .field("pooled", &b.conn.is_some())
                .finish(),
        }
    }
}

/// A response body's failure (the upstream connection's).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.0 {
            Inner::Hyper { body, conn } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release_hyper(conn),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => release_hyper(conn),
                    Poll::Ready(Some(Err(_))) => *conn = None,
                    _ => {}
                }
                polled.map(|f| f.map(|f| f.map_err(Into::into)))
            }
            Inner::Lean(b) => {
                if let Some(data) = b.whole.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                let Some(conn) = b.conn.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = conn.poll_body(&mut b.framing, cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => b.conn = None,
                    Poll::Ready(_) if b.finished() => b.release(),
                    _ => {}
                }
                polled.map(|f| f.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Lean(b) => b.whole.is_none() && (b.conn.is_none() || b.finished()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Lean(b) => match (&b.whole, &b.framing) {
                (Some(w), _) => SizeHint::with_exact(w.len() as u64),
                (None, Framing::Length(n)) => SizeHint::with_exact(*n),
                (None, Framing::Done) => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}

fn release_hyper(conn: &mut Option<(SendRequest<ReqBody>, Arc<Slot>)>) {
    if let Some((tx, slot)) = conn.take() {
        slot.hyper.checkin(tx);
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read (HEAD, 204, or a length fully delivered)
        // leaves the connection clean even if nobody polled it to `None`.
        match &mut self.0 {
            Inner::Hyper { body, conn } => {
                if body.is_end_stream() {
                    release_hyper(conn);
                }
            }
            Inner::Lean(b) => {
                if b.finished() {
                    b.release();
                }
            }
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
        // Large enough not to arrive with the head: a body that did is read already, and
        // its connection rightly goes back at once.
        let big: &'static str = "b".repeat(64 * 1024).leak();
        let (addr, accepted) = server(big, None).await;
        let pool = Pool::new(&addr, 1);
        let resp = pool
            .send(0, Duration::from_secs(1), get(&addr))
            .await
            .unwrap();
        drop(resp);
        assert_eq!(pool.idle(), 0);
        assert_eq!(fetch(&pool, 0, &addr).await, big);
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
    async fn a_request_on_a_connection_closed_as_it_went_out_goes_again_on_a_new_one() {
        // The server closes every connection after one answer without saying so, and
        // the next request follows at once: it finds the close either while the
        // connection is idle or as its own answer fails to begin. Either way it
        // succeeds on a new connection.
        let (addr, accepted) = server("ok", Some(1)).await;
        let pool = Pool::new(&addr, 1);
        for _ in 0..20 {
            assert_eq!(fetch(&pool, 0, &addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_send_future_takes_the_room_of_one_way_not_both() {
        // Every connection's handler future carries one; an `async fn` choosing between
        // the two laid them out side by side (1,416 bytes against 832 and 672).
        let pool = Pool::new("127.0.0.1:1", 1);
        let empty = || get("127.0.0.1:1");
        let slot = pool.slot(0);
        let lean = std::mem::size_of_val(&pool.send_lean(slot, Duration::ZERO, empty()));
        let hyper = std::mem::size_of_val(&pool.send_hyper(slot, Duration::ZERO, empty()));
        let send = std::mem::size_of_val(&pool.send(0, Duration::ZERO, empty()));
        assert!(
            send <= lean.max(hyper) + 16,
            "{send} for {lean} and {hyper}"
        );
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
        // Bodies that do not arrive with their heads, so each response holds its
        // connection until read.
        let (addr, _) = server("x".repeat(64 * 1024).leak(), None).await;
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
        for i in pool.slot(0).lean.lock().iter_mut() {
            i.since = i
                .since
                .checked_sub(IDLE_TIMEOUT)
                .expect("the clock is past the timeout");
        }
        pool.evict_idle();
        assert_eq!(pool.idle(), 0);
    }
}
