//! The client side's HTTP/1.1, for the request nearly every client sends: HTTP/1.1 in
//! origin form, without a body, an upgrade or an expectation. Such a request is read,
//! handed to the proxy and answered by the connection's own task: one read and one
//! gathered write, where hyper's server ran a dispatcher, a connection state machine and
//! buffered I/O around the same system calls (a quarter of the gateway's instructions,
//! BENCHMARKS.md). It is the server-side twin of [`super::h1`].
//!
//! Anything else hands the connection to hyper from that request on, with the bytes
//! already read: a body (`Content-Length`, `Transfer-Encoding`), `Upgrade`, `Expect`,
//! HTTP/1.0, h2c's preface, a head that is malformed, has more than 100 fields or outgrows
//! `server.max_header_bytes`. So every unusual request keeps hyper's handling: its 400,
//! 414 and 431 answers, its refusal of smuggling attempts, uploads, WebSocket and h2c.
//!
//! Framing and headers follow hyper's server (`proto::h1::role::Server::encode`), so a
//! client cannot tell the two apart: lowercase names, a `date`, `content-length` from an
//! exact body size or chunked otherwise, no body after `HEAD`, `204` or `304`, and
//! `connection: close` on the last answer. As hyper does, a client that closes its end
//! while its request is being served abandons the request.

use std::future::Future;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::h1::{FieldAt, names_close, parsed_value};
use super::head_timeout::HeadClock;
use super::proxy::ClientBody;

/// hyper's limit on a request's header fields (above it hyper answers 431).
const MAX_HEADERS: usize = 100;
/// hyper's limit on a request target (above it hyper answers 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 8192;
/// A buffer grown past this by an unusual message is not kept for the next one.
const KEEP_BUF: usize = 64 * 1024;

/// What [`read_request`] found at the front of the buffer.
#[derive(Debug)]
// Returned, not stored: boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A request served here, its head taken out of the buffer, and whether the client
    /// lets the connection carry another after it.
    Request(Request<()>, bool),
    /// The head is not complete yet.
    NeedMore,
    /// Not a request served here: hyper takes the connection, the buffer untouched.
    HandOff,
}

/// What a connection keeps from one request to the next, so that reading one allocates
/// as little as it can.
#[derive(Default)]
pub struct Scratch {
    /// Where each field's name and value are in the head.
    fields: Vec<FieldAt>,
    /// The last answer's header map, emptied: hyper recycles it the same way.
    headers: Option<HeaderMap>,
}

impl Scratch {
    /// Keeps `headers` (emptied) for the next request.
    pub fn recycle(&mut self, mut headers: HeaderMap) {
        headers.clear();
        self.headers = Some(headers);
    }
}

/// Fields the gateway may add to a request on its way upstream (`Host`, the request id,
/// `X-Forwarded-For`/`-Proto`, `X-Consumer`, a few `request_headers`): room made up front
/// rather than by growing the map as they come.
const ADDED_FIELDS: usize = 8;

/// The request at the front of `buf`, if it is one served here.
pub fn read_request(buf: &mut BytesMut, max_head: usize, scratch: &mut Scratch) -> Parsed {
    if buf.is_empty() {
        return Parsed::NeedMore;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::NeedMore,
        // Too large, too many fields, or malformed: hyper answers it.
        _ => return Parsed::HandOff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOff;
    };
    if len > max_head || !path.starts_with('/') || path.len() > MAX_URI_LEN {
        return Parsed::HandOff;
    }
    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(m) if m != Method::CONNECT => m,
        _ => return Parsed::HandOff,
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| s.as_ptr() as usize - base;
    let path = (at(path.as_bytes()), path.len());
    let mut keep_alive = true;
    let fields = &mut scratch.fields;
    fields.clear();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if ["content-length", "transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            return Parsed::HandOff;
        }
        if name.eq_ignore_ascii_case(b"connection") && names_close(h.value) {
            keep_alive = false;
        }
        let (name_at, value_at) = (at(name), at(h.value));
        fields.push((
            name_at,
            name_at + name.len(),
            value_at,
            value_at + h.value.len(),
        ));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = scratch.headers.take().unwrap_or_default();
    headers.reserve(scratch.fields.len() + ADDED_FIELDS);
    match build(method, &head, path, &scratch.fields, headers) {
        Some(req) => Parsed::Request(req, keep_alive),
        None => {
            // Something only hyper accepts (or answers): give the bytes back.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::HandOff
        }
    }
}

fn build(
    method: Method,
    head: &Bytes,
    (path_at, path_len): (usize, usize),
    fields: &[FieldAt],
    mut headers: HeaderMap,
) -> Option<Request<()>> {
    let uri = Uri::from_maybe_shared(head.slice(path_at..path_at + path_len)).ok()?;
    for &(name_start, name_end, value_start, value_end) in fields {
        let name = HeaderName::from_bytes(&head[name_start..name_end]).ok()?;
        let value = parsed_value(head.slice(value_start..value_end));
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req)
}

/// A response body's length, as hyper tells it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// Nothing to send (the body is at its end already).
    Empty,
    Known(u64),
    Unknown,
}

/// What follows a response head on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: `HEAD`, `204`, `304`, or an empty one.
    None,
    Length(u64),
    Chunked,
}

/// A response hyper would not send either: the connection is closed instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsendable;

/// Writes the head of `parts` (an answer to `method`) into `dst`, hyper's way, and says
/// how its body is framed and whether the connection stays open after it.
pub fn encode_head(
    parts: &http::response::Parts,
    method: &Method,
    body: BodyLen,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<(Framing, bool), Unsendable> {
    let status = parts.status;
    if status.is_informational() {
        return Err(Unsendable);
    }
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let can_have_length = !bodiless;
    let can_have_body = !bodiless && *method != Method::HEAD;

    let mut framing = None;
    let mut keep_alive = keep_alive;
    let mut asked_close = false;
    let mut wrote_date = false;
    for (name, value) in &parts.headers {
        match *name {
            http::header::CONTENT_LENGTH => {
                if framing.is_some() {
                    // Written once; hyper refuses differing values where it relies on them.
                    if body == BodyLen::Unknown
                        && framing != Some(Framing::Length(content_length(value)?))
                    {
                        return Err(Unsendable);
                    }
                    continue;
                }
                framing = Some(match body {
                    BodyLen::Known(n) => Framing::Length(n),
                    BodyLen::Unknown => Framing::Length(content_length(value)?),
                    // An empty body keeps its length only as the answer to `HEAD`.
                    BodyLen::Empty if *method == Method::HEAD => Framing::Length(0),
                    BodyLen::Empty => continue,
                });
            }
            // The body's framing is this hop's, decided here.
            http::header::TRANSFER_ENCODING | http::header::TRAILER => continue,
            http::header::CONNECTION => asked_close |= names_close(value.as_bytes()),
            http::header::DATE => wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if asked_close {
        keep_alive = false;
    } else if !keep_alive {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(f) => f,
        None => match body {
            BodyLen::Unknown if can_have_body => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyLen::Unknown => Framing::None,
            BodyLen::Empty | BodyLen::Known(0) => {
                if can_have_body {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::None
            }
            BodyLen::Known(n) => {
                if can_have_length {
                    dst.extend_from_slice(b"content-length: ");
                    extend_decimal(dst, n);
                    dst.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
        },
    };
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        extend_date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    let framing = match framing {
        _ if !can_have_body => Framing::None,
        Framing::Length(0) => Framing::None,
        f => f,
    };
    Ok((framing, keep_alive))
}

/// `n` in decimal, without allocating.
fn extend_decimal(dst: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
}

/// A chunk's size line (`{n:x}\r\n`) without allocating: the bytes, and where the line
/// begins in them.
fn chunk_size_line(mut n: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    line[16..].copy_from_slice(b"\r\n");
    let mut at = 16;
    loop {
        at -= 1;
        line[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    (line, at)
}

/// A response's own `Content-Length`, read as hyper's server reads it: one value of digits
/// (not the `5, 5` lists `h1::parse_length` takes from upstreams).
fn content_length(v: &HeaderValue) -> Result<u64, Unsendable> {
    std::str::from_utf8(v.as_bytes())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(Unsendable)
}

/// The `Date` value, formatted once a second per thread.
fn extend_date(dst: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        dst.extend_from_slice(text.as_bytes());
    });
}

/// How a connection left this module.
pub enum Served {
    Closed,
    /// A request served by hyper is next: the connection, with what was read of it.
    HandOff(Prefixed),
}

/// Serves `io`'s requests with `handler` while they are ones served here. `shutdown`
/// closes an idle connection and makes the request in progress the last.
pub async fn serve<H, F, B>(
    mut io: TcpStream,
    handler: &H,
    clock: &HeadClock,
    shutdown: &CancellationToken,
    max_head: usize,
) -> Served
where
    H: Fn(Request<ClientBody>) -> F,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    loop {
        let (req, keep_alive) = loop {
            match read_request(&mut buf, max_head, &mut scratch) {
                Parsed::Request(req, keep_alive) => break (req, keep_alive),
                Parsed::HandOff => return Served::HandOff(Prefixed::new(buf.freeze(), io)),
                Parsed::NeedMore => {}
            }
            // Between requests a shutdown closes the connection; a head begun is served.
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| poll_read_more(&mut io, &mut buf, cx)) => r,
                () = shutdown.cancelled(), if idle => return Served::Closed,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Served::Closed;
            }
        };
        clock.head_arrived(http::Version::HTTP_11);
        let method = req.method().clone();
        let answer = {
            let mut answer = pin!(handler(req.map(|()| None)));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
                    let Ok(resp) = answered;
                    return Poll::Ready(Some(resp));
                }
                if client_left(&mut io, &mut buf, cx) {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        let Some(resp) = answer else {
            return Served::Closed;
        };
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        let kept = write_response(
            &mut io,
            &mut buf,
            resp,
            &method,
            keep_alive,
            &mut out,
            &mut scratch,
        )
        .await;
        clock.response_done();
        if out.capacity() > KEEP_BUF {
            out = Vec::new();
        }
        if !kept {
            // The answer is out; a FIN rather than dropping the socket, which would reset
            // it if the client sent more, and could lose the answer on its way.
            let _ = io.shutdown().await;
            return Served::Closed;
        }
        if buf.is_empty() && buf.capacity() > KEEP_BUF {
            buf = BytesMut::new();
        }
    }
}

/// Whether the client has closed its end (or the connection failed) while its request is
/// being served, as hyper checks: only while nothing it sent is waiting, so a pipelining
/// client that then half-closes still gets the answers it has a right to. What it sends
/// meanwhile is kept for the next request. tokio makes this no system call while the
/// socket is quiet.
fn client_left(io: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    while buf.is_empty() {
        match poll_read_more(io, buf, cx) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => break,
        }
    }
    false
}

fn poll_read_more(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_ROOM / 2 {
        buf.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes `resp` out; whether the connection may carry another request after it. A
/// client that leaves while the body is awaited ends it (and frees what the body holds,
/// such as an upstream connection).
async fn write_response<B>(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    resp: Response<B>,
    method: &Method,
    keep_alive: bool,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> bool
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = resp.into_parts();
    let len = if body.is_end_stream() {
        BodyLen::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(BodyLen::Unknown, BodyLen::Known)
    };
    out.clear();
    let encoded = encode_head(&parts, method, len, keep_alive, out);
    let status = parts.status;
    scratch.recycle(parts.headers);
    let Ok((framing, keep_alive)) = encoded else {
        tracing::warn!(%status, "a response hyper would not send either; closing the connection");
        return false;
    };
    if framing == Framing::None {
        return write_all(io, &mut [IoSlice::new(out)]).await && keep_alive;
    }
    let mut head_sent = false;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let mut next = pin!(body.frame());
        let frame = match futures_util::poll!(next.as_mut()) {
            Poll::Ready(f) => f,
            Poll::Pending => {
                // Nothing of the body yet: the head goes now, not held back for it.
                if !head_sent {
                    if !write_all(io, &mut [IoSlice::new(out)]).await {
                        return false;
                    }
                    head_sent = true;
                }
                let awaited = std::future::poll_fn(|cx| match next.as_mut().poll(cx) {
                    Poll::Ready(f) => Poll::Ready(Some(f)),
                    Poll::Pending if client_left(io, buf, cx) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                });
                match awaited.await {
                    Some(f) => f,
                    None => return false,
                }
            }
        };
        let head: &[u8] = if head_sent { &[] } else { &out[..] };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if d.is_empty() => continue,
                Ok(d) => d,
                // Trailers are not sent. hyper sends only those a `Trailer` header
                // declares, and the proxy strips `Trailer` from every answer.
                Err(_) => continue,
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the response body failed; closing the connection");
                return false;
            }
            None => {
                return match framing {
                    Framing::Chunked => {
                        write_all(io, &mut [IoSlice::new(head), IoSlice::new(b"0\r\n\r\n")]).await
                            && keep_alive
                    }
                    // Shorter than its length: the client would wait for the rest.
                    _ => {
                        if !head_sent {
                            let _ = write_all(io, &mut [IoSlice::new(head)]).await;
                        }
                        false
                    }
                };
            }
        };
        let written = match framing {
            Framing::Chunked => {
                let (size, at) = chunk_size_line(data.len());
                write_all(
                    io,
                    &mut [
                        IoSlice::new(head),
                        IoSlice::new(&size[at..]),
                        IoSlice::new(&data),
                        IoSlice::new(b"\r\n"),
                    ],
                )
                .await
            }
            _ => {
                let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                left -= n as u64;
                let ok = write_all(io, &mut [IoSlice::new(head), IoSlice::new(&data[..n])]).await;
                if n < data.len() {
                    // hyper cuts it and keeps the connection; closing cannot leave the
                    // client and this side disagreeing about where the next answer begins.
                    tracing::debug!("the response body is longer than its length; closing");
                    return false;
                }
                ok
            }
        };
        if !written {
            return false;
        }
        head_sent = true;
        if framing != Framing::Chunked && left == 0 {
            return keep_alive;
        }
    }
}

/// Writes every slice, gathered; false when the client is gone.
async fn write_all(io: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> bool {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match io.write_vectored(bufs).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
        }
    }
    true
}

/// A connection handed to hyper: the bytes already read come first.
pub struct Prefixed {
    /// Let go once read, rather than held for the connection's life.
    read: Option<Bytes>,
    io: TcpStream,
}

impl Prefixed {
    pub fn new(read: Bytes, io: TcpStream) -> Self {
        Self {
            read: Some(read).filter(|r| !r.is_empty()),
            io,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.read.as_mut() {
            // No room: the socket's own answer, so that nothing reads as an end of stream.
            Some(read) if buf.remaining() > 0 => {
                let n = read.len().min(buf.remaining());
                buf.put_slice(&read[..n]);
                read.advance(n);
                if read.is_empty() {
                    this.read = None;
                }
                Poll::Ready(Ok(()))
            }
            _ => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::gateway::head_timeout::HeadTimeouts;

    const MAX: usize = 8192;

    /// Sets its flag when dropped: shows that what a request held was let go.
    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn parse(text: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text);
        let parsed = read_request(&mut buf, MAX, &mut Scratch::default());
        (parsed, buf)
    }

    #[test]
    fn a_plain_request_is_read_with_its_fields_in_order_and_the_rest_left() {
        let text = b"GET /a/b?c=1 HTTP/1.1\r\nHost: x\r\nX-Id: 1\r\nx-id: 2\r\nAccept: */*\r\n\r\nGET /next";
        let (parsed, rest) = parse(text);
        let Parsed::Request(req, keep_alive) = parsed else {
            panic!("{parsed:?}")
        };
        assert!(keep_alive);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a/b?c=1");
        assert_eq!(req.version(), http::Version::HTTP_11);
        let ids: Vec<_> = req.headers().get_all("x-id").iter().collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().len(), 4);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_in_any_line_or_token_ends_the_connection_after_the_answer() {
        for conn in ["close", "Keep-Alive, CLOSE", " x-foo ,close "] {
            let text = format!("GET / HTTP/1.1\r\nConnection: {conn}\r\n\r\n");
            let (Parsed::Request(_, keep_alive), _) = parse(text.as_bytes()) else {
                panic!()
            };
            assert!(!keep_alive, "{conn}");
        }
        let (Parsed::Request(_, keep_alive), _) =
            parse(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: closed\r\n\r\n")
        else {
            panic!()
        };
        assert!(keep_alive);
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_it_is_too_large_for_one() {
        let (parsed, rest) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(parsed, Parsed::NeedMore), "{parsed:?}");
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: x\r\n");
        let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        long.resize(MAX + 10, b'a');
        let (parsed, rest) = parse(&long);
        assert!(matches!(parsed, Parsed::HandOff), "{parsed:?}");
        assert_eq!(&rest[..], &long[..]);
    }

    #[test]
    fn every_request_not_served_here_goes_to_hyper_with_its_bytes_untouched() {
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let cases = [
            "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi".to_string(),
            "GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".into(),
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n".into(),
            "GET / HTTP/1.0\r\n\r\n".into(),
            "GET http://example.com/ HTTP/1.1\r\n\r\n".into(),
            "OPTIONS * HTTP/1.1\r\n\r\n".into(),
            "CONNECT /x HTTP/1.1\r\n\r\n".into(),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".into(),
            "G@T / HTTP/1.1\r\n\r\n".into(),
            // httparse takes this target; `http::Uri` does not: read, then given back.
            "GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n".into(),
            many,
        ];
        for text in cases {
            let (parsed, rest) = parse(text.as_bytes());
            assert!(matches!(parsed, Parsed::HandOff), "{text:?}: {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
        }
    }

    fn head(
        resp: Response<()>,
        method: Method,
        body: BodyLen,
        keep_alive: bool,
    ) -> (String, Result<(Framing, bool), Unsendable>) {
        let (parts, ()) = resp.into_parts();
        let mut dst = Vec::new();
        let r = encode_head(&parts, &method, body, keep_alive, &mut dst);
        let text = String::from_utf8(dst).unwrap();
        // The date changes; its presence is checked, its value left out (but for the
        // fixed one an upstream sends below).
        let text = text
            .lines()
            .map(|l| match l.strip_prefix("date: ") {
                Some(d) if !d.ends_with("11:00:00 GMT") => "date: *",
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("|");
        (text, r)
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn heads_are_written_as_hyper_writes_them() {
        let ok = |r, m, b, k| head(r, m, b, k);
        // An upstream's answer: its length kept, a date added, names in lowercase.
        assert_eq!(
            ok(
                response(
                    200,
                    &[("Content-Type", "text/plain"), ("Content-Length", "5")]
                ),
                Method::GET,
                BodyLen::Known(5),
                true
            ),
            (
                "HTTP/1.1 200 OK|content-type: text/plain|content-length: 5|date: *|".into(),
                Ok((Framing::Length(5), true))
            )
        );
        // The gateway's own answer: the length from the body.
        assert_eq!(
            ok(response(404, &[]), Method::GET, BodyLen::Known(2), true),
            (
                "HTTP/1.1 404 Not Found|content-length: 2|date: *|".into(),
                Ok((Framing::Length(2), true))
            )
        );
        // The upstream's own reason phrase, and its date.
        let mut r = response(299, &[("Date", "Sun, 22 Nov 2026 11:00:00 GMT")]);
        r.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Indeed"));
        assert_eq!(
            ok(r, Method::GET, BodyLen::Empty, true),
            (
                "HTTP/1.1 299 Fine Indeed|date: Sun, 22 Nov 2026 11:00:00 GMT|content-length: 0|"
                    .into(),
                Ok((Framing::None, true))
            )
        );
        // A stream of unknown length is chunked; a length the upstream gave is kept.
        assert_eq!(
            ok(response(200, &[]), Method::GET, BodyLen::Unknown, true),
            (
                "HTTP/1.1 200 OK|transfer-encoding: chunked|date: *|".into(),
                Ok((Framing::Chunked, true))
            )
        );
        assert_eq!(
            ok(
                response(200, &[("content-length", "7")]),
                Method::GET,
                BodyLen::Unknown,
                true
            )
            .1,
            Ok((Framing::Length(7), true))
        );
        // The upstream hop's framing headers are not this hop's.
        assert_eq!(
            ok(
                response(200, &[("transfer-encoding", "chunked"), ("trailer", "x")]),
                Method::GET,
                BodyLen::Unknown,
                true
            )
            .0,
            "HTTP/1.1 200 OK|transfer-encoding: chunked|date: *|"
        );
    }

    #[test]
    fn head_204_and_304_answers_have_no_body_and_keep_the_lengths_hyper_keeps() {
        // HEAD: the length of what GET would send, and nothing after the head.
        assert_eq!(
            head(
                response(200, &[("content-length", "48")]),
                Method::HEAD,
                BodyLen::Empty,
                true
            ),
            (
                "HTTP/1.1 200 OK|content-length: 48|date: *|".into(),
                Ok((Framing::None, true))
            )
        );
        assert_eq!(
            head(response(404, &[]), Method::HEAD, BodyLen::Known(60), true),
            (
                "HTTP/1.1 404 Not Found|content-length: 60|date: *|".into(),
                Ok((Framing::None, true))
            )
        );
        assert_eq!(
            head(response(204, &[]), Method::GET, BodyLen::Empty, true).0,
            "HTTP/1.1 204 No Content|date: *|"
        );
        assert_eq!(
            head(
                response(304, &[("content-length", "48"), ("etag", "\"a\"")]),
                Method::GET,
                BodyLen::Empty,
                true
            ),
            (
                "HTTP/1.1 304 Not Modified|etag: \"a\"|date: *|".into(),
                Ok((Framing::None, true))
            )
        );
        assert_eq!(
            head(response(204, &[]), Method::GET, BodyLen::Unknown, true).1,
            Ok((Framing::None, true))
        );
    }

    #[test]
    fn the_last_answer_says_close_once_and_bad_heads_are_not_sent() {
        assert_eq!(
            head(response(200, &[]), Method::GET, BodyLen::Known(1), false),
            (
                "HTTP/1.1 200 OK|connection: close|content-length: 1|date: *|".into(),
                Ok((Framing::Length(1), false))
            )
        );
        assert_eq!(
            head(
                response(200, &[("connection", "close")]),
                Method::GET,
                BodyLen::Known(1),
                true
            ),
            (
                "HTTP/1.1 200 OK|connection: close|content-length: 1|date: *|".into(),
                Ok((Framing::Length(1), false))
            )
        );
        for bad in [
            response(103, &[]),
            response(200, &[("content-length", "x")]),
            response(200, &[("content-length", "1"), ("content-length", "2")]),
        ] {
            assert_eq!(
                head(bad, Method::GET, BodyLen::Unknown, true).1,
                Err(Unsendable)
            );
        }
    }

    /// A connection to `serve` on loopback, with `handler`; the client end, the serving
    /// task (which ends with how the connection left) and the shutdown token.
    async fn served<H, F, B>(
        handler: H,
    ) -> (
        TcpStream,
        tokio::task::JoinHandle<Served>,
        CancellationToken,
    )
    where
        H: Fn(Request<ClientBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, Infallible>> + Send,
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (io, _) = listener.accept().await.unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let clock = HeadTimeouts::new(Duration::from_secs(10)).clock();
            serve(io, &handler, &clock, &token, MAX).await
        });
        (client, task, shutdown)
    }

    fn echo(
        req: Request<ClientBody>,
    ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        let text = format!("{} {}", req.method(), req.uri());
        std::future::ready(Ok(Response::builder()
            .header("x-served", "lean")
            .body(Full::new(Bytes::from(text)))
            .unwrap()))
    }

    /// Reads answers until one per entry of `bodiless` has arrived (or the connection
    /// ends): a head, then as many bytes as its `content-length` says unless `bodiless`
    /// says the answer has none (to `HEAD`).
    async fn read_answers(c: &mut TcpStream, bodiless: &[bool]) -> Vec<String> {
        let want = bodiless.len();
        let mut raw = Vec::new();
        let mut answers = Vec::new();
        while answers.len() < want {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
                .await
                .expect("an answer in time")
                .unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            loop {
                let text = String::from_utf8_lossy(&raw).into_owned();
                let Some(end) = text.find("\r\n\r\n") else {
                    break;
                };
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .filter(|_| !bodiless[answers.len()])
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if raw.len() < end + 4 + len {
                    break;
                }
                answers.push(text[..end + 4 + len].to_string());
                raw.drain(..end + 4 + len);
            }
        }
        answers
    }

    #[tokio::test]
    async fn keep_alive_and_pipelined_requests_are_answered_in_order_on_one_connection() {
        let (mut c, task, _shutdown) = served(echo).await;
        c.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let first = read_answers(&mut c, &[false]).await;
        assert!(
            first[0]
                .starts_with("HTTP/1.1 200 OK\r\nx-served: lean\r\ncontent-length: 8\r\ndate: "),
            "{first:?}"
        );
        assert!(first[0].ends_with("\r\n\r\nGET /one"), "{first:?}");
        // Three at once, the last split mid-head.
        c.write_all(b"GET /two HTTP/1.1\r\n\r\nDELETE /three HTTP/1.1\r\n\r\nHEAD /fo")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(b"ur HTTP/1.1\r\n\r\n").await.unwrap();
        let rest = read_answers(&mut c, &[false, false, true]).await;
        assert!(rest[0].ends_with("GET /two"), "{rest:?}");
        assert!(rest[1].ends_with("DELETE /three"), "{rest:?}");
        // HEAD: the length GET would have, and no body (the next read would show it).
        assert!(
            rest[2].contains("content-length: 10\r\n") && rest[2].ends_with("\r\n\r\n"),
            "{rest:?}"
        );
        c.write_all(b"GET /five HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let last = read_answers(&mut c, &[false, false]).await;
        assert_eq!(
            last.len(),
            1,
            "the connection closes after the last answer: {last:?}"
        );
        assert!(last[0].contains("\r\nconnection: close\r\n") && last[0].ends_with("GET /five"));
        assert!(matches!(task.await.unwrap(), Served::Closed));
    }

    #[tokio::test]
    async fn the_first_request_not_served_here_hands_over_exactly_the_bytes_from_it_on() {
        let (mut c, task, _shutdown) = served(echo).await;
        c.write_all(b"GET /lean HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read_answers(&mut c, &[false]).await.len(), 1);
        c.write_all(
            b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
        let Served::HandOff(mut io) = task.await.unwrap() else {
            panic!("not handed over")
        };
        c.write_all(b"more").await.unwrap();
        let mut got = Vec::new();
        let want =
            b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\n\r\nmore";
        while got.len() < want.len() {
            let mut chunk = [0u8; 16];
            let n = io.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&got[..], &want[..]);
        // Writes go to the client.
        io.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        let mut back = [0u8; 27];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_abandons_its_request() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let (mut c, task, _shutdown) = served(move |_req| {
            let guard = SetOnDrop(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        })
        .await;
        c.write_all(b"GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        drop(c);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Served::Closed))));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_stream_is_chunked_and_its_head_is_not_held_back_for_its_body() {
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = std::sync::Mutex::new(Some(wait));
        let (mut c, _task, _shutdown) = served(move |_req| {
            let wait = wait.lock().unwrap().take().unwrap();
            let frames = futures_util::stream::unfold((0, Some(wait)), |(i, wait)| async move {
                if let Some(w) = wait {
                    let _ = w.await;
                }
                let frame = match i {
                    0 => Frame::data(Bytes::from_static(b"hello")),
                    1 => Frame::data(Bytes::new()),
                    2 => Frame::data(Bytes::from_static(b", streamed world")),
                    3 => Frame::trailers(HeaderMap::new()),
                    _ => return None,
                };
                Some((Ok::<_, Infallible>(frame), (i + 1, None)))
            });
            std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(
                Box::pin(frames),
            ))))
        })
        .await;
        c.write_all(b"GET /events HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut got))
            .await
            .expect("the head before the body")
            .unwrap();
        let head = String::from_utf8_lossy(&got[..n]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: ")
                && head.ends_with("\r\n\r\n"),
            "{head:?}"
        );
        release.send(()).unwrap();
        let mut body = Vec::new();
        while !body.ends_with(b"0\r\n\r\n") {
            let n = c.read(&mut got).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&got[..n]);
        }
        // No empty chunk (it would end the body early), no trailers.
        assert_eq!(
            &body[..],
            b"5\r\nhello\r\n10\r\n, streamed world\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_while_a_body_is_awaited_ends_the_answer() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let (mut c, task, _shutdown) = served(move |_req| {
            let guard = SetOnDrop(flag.clone());
            // A head, one event, then nothing (a quiet event stream).
            let frames = futures_util::stream::unfold((0, guard), |(i, guard)| async move {
                if i > 0 {
                    std::future::pending::<()>().await;
                }
                let frame = Frame::data(Bytes::from_static(b"event"));
                Some((Ok::<_, Infallible>(frame), (i + 1, guard)))
            });
            std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(
                Box::pin(frames),
            ))))
        })
        .await;
        c.write_all(b"GET /events HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"5\r\nevent\r\n") {
            let mut chunk = [0u8; 256];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(!dropped.load(Ordering::SeqCst));
        drop(c);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Served::Closed))));
        assert!(
            dropped.load(Ordering::SeqCst),
            "the body (and what it holds) is let go"
        );
    }

    #[tokio::test]
    async fn a_pipelining_client_that_half_closes_gets_the_answers_it_sent_for() {
        let (mut c, task, _shutdown) = served(echo).await;
        c.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let answers = read_answers(&mut c, &[false, false]).await;
        // hyper's rule: the end of stream is looked for only while nothing sent waits, so
        // `/a` is answered; `/b`, in progress when the end is seen, is abandoned.
        assert!(
            !answers.is_empty() && answers[0].ends_with("GET /a"),
            "{answers:?}"
        );
        assert!(matches!(task.await.unwrap(), Served::Closed));
    }

    #[tokio::test]
    async fn what_was_read_is_handed_over_once_and_a_full_buffer_is_not_an_end_of_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (io, _) = listener.accept().await.unwrap();
        let mut p = Prefixed::new(Bytes::from_static(b"abc"), io);
        // No room: the socket answers (here: nothing to read yet), and nothing of what
        // was kept is consumed.
        let mut none = ReadBuf::new(&mut []);
        let _ =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut p).poll_read(cx, &mut none))).await;
        assert_eq!(p.read.as_deref(), Some(&b"abc"[..]));
        let mut two = [0u8; 2];
        p.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"ab");
        client.write_all(b"de").await.unwrap();
        let mut three = [0u8; 3];
        p.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"cde");
        assert!(p.read.is_none());
    }

    #[tokio::test]
    async fn shutdown_closes_an_idle_connection_and_makes_a_request_in_progress_the_last() {
        let (mut c, task, shutdown) = served(echo).await;
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read_answers(&mut c, &[false]).await;
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Served::Closed))));

        let gate = Arc::new(tokio::sync::Notify::new());
        let open = gate.clone();
        let (mut c, task, shutdown) = served(move |req| {
            let open = open.clone();
            async move {
                open.notified().await;
                echo(req).await
            }
        })
        .await;
        c.write_all(b"GET /busy HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        gate.notify_one();
        let answers = read_answers(&mut c, &[false, false]).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(answers[0].contains("connection: close\r\n") && answers[0].ends_with("GET /busy"));
        assert!(matches!(task.await.unwrap(), Served::Closed));
    }
}
