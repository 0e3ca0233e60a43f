//! A lean HTTP/1.1 client connection for requests without a body.
//!
//! Most proxied API calls are `GET`s: a head out, a head and a body back. Sent through
//! hyper's client, each one crosses to a connection task and back over two channels and
//! runs hyper's full read/write state machine several times, which was a quarter of the
//! gateway's instructions per request (BENCHMARKS.md, item 9). Here the request's own
//! task writes the head and reads the answer: one `write`, usually one `read`.
//!
//! Only requests with no body take this path ([`super::pool`] decides); anything with a
//! body, and protocol switches, go through hyper, which streams request bodies while it
//! reads an early answer. Responses are parsed with `httparse` (hyper's own parser) and
//! framed as RFC 9112 §6.3 says: no body after `HEAD`, `204` or `304`; chunked when
//! `Transfer-Encoding` ends in `chunked`; else by a valid `Content-Length`; else until the
//! upstream closes. Anything doubtful leaves the connection unused afterwards.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The largest response head (status line and headers) read, as hyper's default buffer.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most headers a response head (or trailer section) may have, as hyper's default.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) read before the chunk is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// Read at least this much room at a time.
const READ_ROOM: usize = 8192;
/// A request-head buffer grown past this (a huge cookie, once) is not kept for the next.
const KEEP_HEAD_BUF: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The connection closed (`None`) or failed before the first byte of an answer. On a
    /// connection that served requests before, this is the upstream closing it as idle
    /// just as the request went out; the request may go again on another connection.
    BeforeAnswer(Option<std::io::Error>),
    /// The upstream closed the connection in the middle of its answer.
    ClosedMidAnswer,
    /// The answer is not valid HTTP/1.x (or is over a limit).
    Invalid(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::BeforeAnswer(None) => f.write_str("the connection closed before an answer"),
            Self::BeforeAnswer(Some(e)) => write!(f, "{e}"),
            Self::ClosedMidAnswer => {
                f.write_str("the connection closed in the middle of the answer")
            }
            Self::Invalid(what) => write!(f, "invalid answer: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) | Self::BeforeAnswer(Some(e)) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// Nothing of an answer arrived: the request may not have reached the upstream's
    /// application at all (a reset or close of a connection it had let go idle).
    pub fn before_answer(&self) -> bool {
        matches!(self, Self::BeforeAnswer(_))
    }
}

/// One keep-alive connection to an upstream.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    /// The request head being written, kept for the next one.
    head: Vec<u8>,
    /// Where an answer's fields lie in its head, kept for the next answer.
    fields_at: Vec<FieldAt>,
}

/// Where a header field's name and value lie in a head: name start and end, value start
/// and end.
pub(super) type FieldAt = (usize, usize, usize, usize);

/// How the body of an answer is delimited, and how much of it is left.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes (the connection cannot be reused).
    UntilClose,
    /// All read.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Within a chunk's data, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then the final CRLF.
    Trailers,
}

/// The head of an answer and what to do with its body.
#[derive(Debug)]
pub struct Answer {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            fields_at: Vec::new(),
        }
    }

    /// Whether an idle connection is no longer usable: the upstream closed or reset it,
    /// or sent something unasked. Costs no system call while the socket is quiet.
    pub fn closed_while_idle(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readable: an end of stream, a reset, stray bytes, or readiness left over from
            // the last answer. A one-byte read tells them apart.
            Poll::Ready(Ok(())) => !matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Sends a request without a body and reads the answer's head. Interim (`1xx`)
    /// answers are skipped; `101` was not asked for here, so it is an error.
    ///
    /// Once an answer's head is read, `headers` (sent, and not needed again: only a request
    /// no answer began for is sent again) becomes, emptied, the answer's header map, which
    /// the client side in turn recycles for its next request (`h1_server`): in the steady
    /// state no request allocates a header map.
    pub async fn exchange(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
    ) -> Result<Answer, Error> {
        encode_head(&mut self.head, method, uri, headers);
        let written = self.io.write_all(&self.head).await;
        if self.head.capacity() > KEEP_HEAD_BUF {
            self.head = Vec::new();
        }
        // Whatever went wrong while writing, no answer has begun.
        written.map_err(|e| Error::BeforeAnswer(Some(e)))?;
        let mut begun = false;
        loop {
            if let Some(answer) =
                read_answer_into(&mut self.buf, method, &mut self.fields_at, headers)?
            {
                return Ok(answer);
            }
            match std::future::poll_fn(|cx| self.poll_read_more(cx)).await {
                Ok(0) if begun => return Err(Error::ClosedMidAnswer),
                Ok(0) => return Err(Error::BeforeAnswer(None)),
                Ok(_) => begun = true,
                Err(e) if begun => return Err(Error::Io(e)),
                Err(e) => return Err(Error::BeforeAnswer(Some(e))),
            }
        }
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 2 {
            self.buf.reserve(READ_ROOM);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether nothing is left over after an answer: bytes beyond it mean the upstream
    /// and this side no longer agree where a message ends.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }

    /// How many bytes have been read and not yet handed on.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Body bytes already read, up to `max`, without reading more.
    pub fn take_buffered(&mut self, max: u64) -> Option<Bytes> {
        take(&mut self.buf, max)
    }

    /// The next frame of a body framed by `framing`, which it advances.
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match decode_body(&mut self.buf, framing) {
                Ok(Decoded::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match ready!(self.poll_read_more(cx)) {
                Ok(0) if *framing == Framing::UntilClose => *framing = Framing::Done,
                Ok(0) => return Poll::Ready(Some(Err(Error::ClosedMidAnswer))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
            }
        }
    }
}

/// The answer at the front of `buf`: its head is taken out of the buffer, interim (`1xx`)
/// answers skipped (`101` was not asked for here, so it is an error), and the framing of
/// its body worked out. `None` while more must be read.
pub fn read_answer(buf: &mut BytesMut, method: &Method) -> Result<Option<Answer>, Error> {
    read_answer_into(buf, method, &mut Vec::new(), &mut HeaderMap::new())
}

/// [`read_answer`], with the scratch space a connection keeps: `at` for the fields'
/// places, and `spare`, a header map taken (emptied) for the answer once its head is read.
fn read_answer_into(
    buf: &mut BytesMut,
    method: &Method,
    at: &mut Vec<FieldAt>,
    spare: &mut HeaderMap,
) -> Result<Option<Answer>, Error> {
    loop {
        let Some((mut parts, fields)) = parse_head(buf, at, spare)? else {
            if buf.len() >= MAX_HEAD {
                return Err(Error::Invalid("the head is larger than 408 KiB"));
            }
            return Ok(None);
        };
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid(
                "101 Switching Protocols, which was not asked for",
            ));
        }
        if parts.status.is_informational() {
            continue;
        }
        let (framing, keep_alive) = framing(method, &mut parts, &fields)?;
        return Ok(Some(Answer {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// What [`decode_body`] found in the buffer.
#[derive(Debug)]
pub enum Decoded {
    Frame(Frame<Bytes>),
    /// The body is complete.
    End,
    /// More must be read. The end of the stream ends an [`Framing::UntilClose`] body (set
    /// it to [`Framing::Done`]) and cuts any other short.
    NeedMore,
}

/// The next frame of a body framed by `framing` from what `buf` holds, advancing both.
pub fn decode_body(buf: &mut BytesMut, framing: &mut Framing) -> Result<Decoded, Error> {
    loop {
        match framing {
            Framing::Done => return Ok(Decoded::End),
            Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Decoded::End);
            }
            Framing::Length(left) => {
                let Some(data) = take(buf, *left) else {
                    return Ok(Decoded::NeedMore);
                };
                *left -= data.len() as u64;
                return Ok(Decoded::Frame(Frame::data(data)));
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let Some(data) = take(buf, *left) else {
                    return Ok(Decoded::NeedMore);
                };
                *left -= data.len() as u64;
                if *left == 0 {
                    *framing = Framing::Chunked(Chunk::DataEnd);
                }
                return Ok(Decoded::Frame(Frame::data(data)));
            }
            Framing::UntilClose => {
                return Ok(match take(buf, u64::MAX) {
                    Some(data) => Decoded::Frame(Frame::data(data)),
                    None => Decoded::NeedMore,
                });
            }
            Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                    return Ok(Decoded::NeedMore);
                }
                _ => return Err(Error::Invalid("a malformed chunk size")),
            },
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Invalid("a chunk longer than its size"));
                }
                buf.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *framing = Framing::Done;
                    return Ok(Decoded::End);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let trailers = trailer_map(fields);
                        buf.advance(used);
                        *framing = Framing::Done;
                        return Ok(Decoded::Frame(Frame::trailers(trailers)));
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                        return Ok(Decoded::NeedMore);
                    }
                    _ => return Err(Error::Invalid("malformed or too many trailer fields")),
                }
            }
        }
    }
}

/// Up to `max` bytes from the front of `buf`, or `None` when it is empty.
fn take(buf: &mut BytesMut, max: u64) -> Option<Bytes> {
    if buf.is_empty() || max == 0 {
        return None;
    }
    let n = usize::try_from(max).map_or(buf.len(), |m| m.min(buf.len()));
    Some(buf.split_to(n).freeze())
}

/// A complete head from the buffer, or `None` when more must be read.
/// A header value httparse has accepted, without checking its bytes a second time (as
/// hyper does): that check was 4 % of the gateway's instructions per request.
pub(super) fn parsed_value(bytes: Bytes) -> HeaderValue {
    // SAFETY: httparse accepts in a field value only HTAB, SP, VCHAR and obs-text
    // (0x80-0xFF), exactly the bytes `HeaderValue` allows; the test
    // `httparse_accepts_only_what_header_values_allow` holds httparse to that, and debug
    // builds (every test) check each value again.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

fn parse_head(
    buf: &mut BytesMut,
    at: &mut Vec<FieldAt>,
    spare: &mut HeaderMap,
) -> Result<Option<(http::response::Parts, Fields)>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("more than 100 header fields"));
        }
        Err(_) => return Err(Error::Invalid("a malformed status line or header field")),
    };
    // Where each name and value lies in the buffer, to slice them out of it once the
    // head is split off (no copy of any value).
    let base = buf.as_ptr() as usize;
    at.clear();
    at.extend(resp.headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        (name, name + h.name.len(), value, value + h.value.len())
    }));
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("a malformed status code"))?;
    // A reason phrase of its own (`200 Fine`) is passed on as hyper passes it on.
    let reason = resp
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    let head = buf.split_to(len).freeze();
    // Room for what the gateway adds on the way back (the request id, `RateLimit-*`),
    // rather than growing the map for them.
    let mut headers = std::mem::take(spare);
    headers.clear();
    headers.reserve(at.len() + 4);
    let mut fields = Fields::default();
    for &(ns, ne, vs, ve) in at.iter() {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| Error::Invalid("a malformed header name"))?;
        let value = parsed_value(head.slice(vs..ve));
        fields.note(&name, &value);
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    if let Some(r) = reason {
        parts.extensions.insert(r);
    }
    Ok(Some((parts, fields)))
}

/// Trailer fields that are not valid header fields are dropped: they are advisory, and
/// a bad one must not fail a body that arrived whole.
fn trailer_map(fields: &[httparse::Header<'_>]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// Writes the request line and header fields. The body is empty, so `Transfer-Encoding`
/// is never sent and `Content-Length` only as `0` (a client's own `Content-Length: 0`,
/// which some upstreams want on a `PUT`).
fn encode_head(out: &mut Vec<u8>, method: &Method, uri: &Uri, headers: &HeaderMap) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut zero_length = false;
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            zero_length = true;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if zero_length {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What an answer's header fields say about its framing, noted as they are read (so no
/// field is looked up again).
#[derive(Debug, Default)]
struct Fields {
    /// `None` without `Content-Length`; `Some(None)` when malformed or differing.
    content_length: Option<Option<u64>>,
    transfer_encoding: bool,
    /// Whether the last transfer coding (of the last field) is `chunked`.
    chunked: bool,
    /// `Connection: close`.
    close: bool,
}

impl Fields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            let length = parse_length(value.as_bytes());
            self.content_length = Some(match (self.content_length, length) {
                (None, l) => l,
                (Some(Some(a)), Some(b)) if a == b => Some(a),
                _ => None,
            });
        } else if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if *name == header::CONNECTION {
            self.close |= names_close(value.as_bytes());
        }
    }
}

/// Whether a `Connection` value asks to close (any of its tokens).
pub(super) fn names_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// One `Content-Length` field: digits, or a list of the same digits (`5, 5`).
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// How the answer's body is delimited (RFC 9112 §6.3), and whether the connection may be
/// reused after it. A `Content-Length` that a `Transfer-Encoding` overrides is removed,
/// so the client is not told a length the body does not have.
fn framing(
    method: &Method,
    parts: &mut http::response::Parts,
    fields: &Fields,
) -> Result<(Framing, bool), Error> {
    let mut keep_alive = parts.version == Version::HTTP_11 && !fields.close;
    let status = parts.status;
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if fields.transfer_encoding {
        // Both, or an HTTP/1.0 answer with one: a framing to distrust; read this one
        // answer and close.
        if fields.content_length.is_some() || parts.version == Version::HTTP_10 {
            parts.headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        if parts.version == Version::HTTP_11 && fields.chunked {
            return Ok((Framing::Chunked(Chunk::Size), keep_alive));
        }
        return Ok((Framing::UntilClose, false));
    }
    match fields.content_length {
        Some(Some(n)) => Ok((Framing::Length(n), keep_alive)),
        Some(None) => Err(Error::Invalid("a malformed or differing Content-Length")),
        None => Ok((Framing::UntilClose, false)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn httparse_accepts_only_what_header_values_allow() {
        // Every byte in a value, in an answer's head and in a request's: wherever httparse
        // takes it, `HeaderValue`'s own check must too (`parsed_value` relies on it).
        for b in 0..=255u8 {
            let mut answer = b"HTTP/1.1 200 OK\r\nX: a".to_vec();
            answer.extend_from_slice(&[b, b'a']);
            answer.extend_from_slice(b"\r\n\r\n");
            let mut request = b"GET / HTTP/1.1\r\nX: a".to_vec();
            request.extend_from_slice(&[b, b'a']);
            request.extend_from_slice(b"\r\n\r\n");
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut resp = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(_)) = resp.parse(&answer) {
                let v = resp.headers[0].value;
                assert!(HeaderValue::from_bytes(v).is_ok(), "answer byte {b:#x}");
            }
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut req = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(_)) = req.parse(&request) {
                let v = req.headers[0].value;
                assert!(HeaderValue::from_bytes(v).is_ok(), "request byte {b:#x}");
            }
        }
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connection to a server that reads one request head and answers with `answer`
    /// (raw bytes), then keeps reading until the client closes. Returns the head it got.
    async fn conn_to(answer: &'static [u8]) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before a whole head");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            got
        });
        (Conn::new(TcpStream::connect(addr).await.unwrap()), server)
    }

    fn get() -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up"));
        (Method::GET, Uri::from_static("/a?b=c"), h)
    }

    async fn exchange(conn: &mut Conn, method: Method) -> Result<Answer, Error> {
        let (_, uri, mut headers) = get();
        conn.exchange(&method, &uri, &mut headers).await
    }

    /// The body's data, concatenated, and its trailers.
    async fn body(
        conn: &mut Conn,
        framing: &mut Framing,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = std::future::poll_fn(|cx| conn.poll_body(framing, cx)).await {
            match frame?.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        Ok((data, trailers))
    }

    #[tokio::test]
    async fn a_length_framed_answer_is_read_whole_and_leaves_the_connection_clean() {
        let (mut c, server) =
            conn_to(b"HTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello")
                .await;
        let mut a = exchange(&mut c, Method::GET).await.unwrap();
        assert_eq!(a.parts.status, StatusCode::OK);
        let reason = a.parts.extensions.get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.unwrap().as_bytes(), b"Fine");
        assert_eq!(a.parts.headers.get_all("x-a").iter().count(), 2);
        assert!(a.keep_alive);
        assert_eq!(body(&mut c, &mut a.framing).await.unwrap().0, b"hello");
        assert!(c.is_clean());
        let head = server.await.unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nhost: up\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_with_extensions_and_trailers() {
        let (mut c, _s) = conn_to(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: abc\r\n\r\n",
        )
        .await;
        let mut a = exchange(&mut c, Method::GET).await.unwrap();
        assert_eq!(a.framing, Framing::Chunked(Chunk::Size));
        assert!(a.keep_alive);
        let (data, trailers) = body(&mut c, &mut a.framing).await.unwrap();
        assert_eq!(data, b"hello, world");
        assert_eq!(trailers.unwrap()["x-sum"], "abc");
        assert!(c.is_clean(), "the final CRLF is consumed");
    }

    #[tokio::test]
    async fn a_chunk_longer_than_its_size_or_a_bad_size_is_an_error() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ] {
            let leaked: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (mut c, _s) = conn_to(leaked).await;
            let mut a = exchange(&mut c, Method::GET).await.unwrap();
            let e = body(&mut c, &mut a.framing).await.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e}");
        }
    }

    #[tokio::test]
    async fn an_answer_without_length_runs_until_close_and_is_not_reused() {
        let (mut c, server) = conn_to(b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
        let mut a = exchange(&mut c, Method::GET).await.unwrap();
        assert_eq!(a.framing, Framing::UntilClose);
        assert!(!a.keep_alive);
        server.await.unwrap(); // closes its end
        assert_eq!(body(&mut c, &mut a.framing).await.unwrap().0, b"all of it");
    }

    #[tokio::test]
    async fn no_body_after_head_204_or_304_whatever_the_fields_say() {
        let (mut c, _s) = conn_to(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n").await;
        let a = exchange(&mut c, Method::HEAD).await.unwrap();
        assert_eq!(a.framing, Framing::Length(0));
        assert_eq!(
            a.parts.headers[header::CONTENT_LENGTH],
            "1234",
            "kept for the client"
        );
        for answer in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let leaked: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (mut c, _s) = conn_to(leaked).await;
            let a = exchange(&mut c, Method::GET).await.unwrap();
            assert_eq!(a.framing, Framing::Length(0));
            assert!(a.keep_alive);
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_an_unasked_switch_is_refused() {
        let (mut c, _s) = conn_to(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let a = exchange(&mut c, Method::GET).await.unwrap();
        assert_eq!(a.parts.status, StatusCode::CREATED);
        assert!(
            !a.parts.headers.contains_key("link"),
            "the interim answer's fields are not kept"
        );

        let (mut c, _s) =
            conn_to(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n").await;
        assert!(matches!(
            exchange(&mut c, Method::GET).await,
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn doubtful_framing_is_refused_or_read_once_and_closed() {
        // Both framings: chunked wins, the length is not passed on, and no reuse.
        let (mut c, _s) = conn_to(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        let mut a = exchange(&mut c, Method::GET).await.unwrap();
        assert!(!a.parts.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!a.keep_alive);
        assert_eq!(body(&mut c, &mut a.framing).await.unwrap().0, b"ok");

        // The same length twice is one length; two lengths are an invalid answer.
        let (mut c, _s) =
            conn_to(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
                .await;
        assert_eq!(
            exchange(&mut c, Method::GET).await.unwrap().framing,
            Framing::Length(2)
        );
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nok",
        ] {
            let leaked: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (mut c, _s) = conn_to(leaked).await;
            assert!(matches!(
                exchange(&mut c, Method::GET).await,
                Err(Error::Invalid(_))
            ));
        }

        // HTTP/1.0, and `Connection: close`: read, then not reused.
        for answer in [
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let leaked: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (mut c, _s) = conn_to(leaked).await;
            assert!(!exchange(&mut c, Method::GET).await.unwrap().keep_alive);
        }
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads_are_invalid_answers() {
        let (mut c, _s) = conn_to(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n").await;
        assert!(matches!(
            exchange(&mut c, Method::GET).await,
            Err(Error::Invalid(_))
        ));

        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let answer = format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n");
        let (mut c, _s) = conn_to(Box::leak(answer.into_bytes().into_boxed_slice())).await;
        let e = exchange(&mut c, Method::GET).await.unwrap_err();
        assert!(e.to_string().contains("more than 100"), "{e}");

        let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        let (mut c, _s) = conn_to(Box::leak(huge.into_bytes().into_boxed_slice())).await;
        let e = exchange(&mut c, Method::GET).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[tokio::test]
    async fn a_close_before_any_answer_is_told_from_one_in_the_middle() {
        // The server reads the head, answers with these bytes and closes.
        let (mut c, _s) = conn_to(b"").await;
        let e = exchange(&mut c, Method::GET).await.unwrap_err();
        assert!(e.before_answer(), "{e}");

        let (mut c, _s) = conn_to(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        let e = exchange(&mut c, Method::GET).await.unwrap_err();
        assert!(!e.before_answer(), "{e}");

        let (mut c, _s) = conn_to(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf").await;
        let mut a = exchange(&mut c, Method::GET).await.unwrap();
        let e = body(&mut c, &mut a.framing).await.unwrap_err();
        assert!(matches!(e, Error::ClosedMidAnswer), "{e}");
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_or_wrote_to_is_noticed() {
        let (c, _server) = conn_to(b"").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!c.closed_while_idle(), "a quiet connection is usable");

        // A server that closes right after accepting.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closer = tokio::spawn(async move { drop(l.accept().await.unwrap()) });
        let c = Conn::new(TcpStream::connect(addr).await.unwrap());
        closer.await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(c.closed_while_idle());

        // A server that sends unasked bytes.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let talker = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                .await
                .unwrap();
            s
        });
        let c = Conn::new(TcpStream::connect(addr).await.unwrap());
        let _keep = talker.await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(c.closed_while_idle());
    }

    #[test]
    fn an_answer_arriving_a_byte_at_a_time_reads_the_same() {
        let whole: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
            Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
        let mut buf = BytesMut::new();
        let mut bytes = whole.iter();
        let mut answer = loop {
            if let Some(a) = read_answer(&mut buf, &Method::GET).unwrap() {
                break a;
            }
            buf.extend_from_slice(&[*bytes.next().expect("a head before the end")]);
        };
        assert_eq!(answer.parts.status, StatusCode::OK);
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            match decode_body(&mut buf, &mut answer.framing).unwrap() {
                Decoded::Frame(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Decoded::End => break,
                Decoded::NeedMore => {
                    buf.extend_from_slice(&[*bytes.next().expect("the body before the end")])
                }
            }
        }
        assert_eq!(data, b"hello, world");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert!(
            bytes.next().is_none() && buf.is_empty(),
            "every byte read, none left"
        );
    }

    #[test]
    fn the_head_drops_transfer_encoding_and_keeps_only_a_zero_length() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut out = Vec::new();
        encode_head(&mut out, &Method::PUT, &Uri::from_static("/x"), &h);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUT /x HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
