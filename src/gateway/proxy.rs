//! The request path, as named phases (after pingora):
//! `request_filter` (the client's hop-by-hop headers, request id, path safety, routing, CORS
//! preflight, auth, rate limit, body limit, header rules) → `upstream_peer` (header canary,
//! sticky or weighted split, target) → `upstream_request` (forward with timeout and retries)
//! → `response_filter` (header rules, CORS, rate-limit and request-id headers) → `logging`
//! (metrics, access log).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::error::json_error;
use super::filters::cors::is_preflight;
use super::filters::rate_limit::{Allowance, KeySource};
use super::filters::{Reject, request_id};
use super::h1;
use super::metrics::GatewayMetrics;
use super::pool::{PooledBody, SendError, idempotent};
use super::router::{Found, path_is_safe, request_host};
use super::snapshot::{Backend, CompiledGate, Route, Snapshot, StickyKey};
use super::state::GatewayState;
use super::upstream::{ReqBody, TargetState, Upstream};

/// An upstream's streamed answer, or one the gateway wrote itself.
pub type RespBody = Either<PooledBody, Full<Bytes>>;

/// What the request path learned, for the response phase and the access log.
struct Ctx {
    request_id: HeaderValue,
    started: Instant,
    method: Method,
    origin: Option<HeaderValue>,
    allowance: Option<Allowance>,
    /// A CORS preflight the route's `cors` answered: its answer has every CORS header it
    /// should (a refused one none), so the response phase adds none.
    cors_answered: bool,
    /// The client's `Upgrade`, kept aside when its hop-by-hop headers went.
    upgrade: Option<HeaderValue>,
    /// Set by a `101` from the upstream: the protocol switch for `handle` to start.
    tunnel: Option<Box<Tunnel>>,
}

/// The client end of a connection, with its `X-Forwarded-For` entry formatted once per
/// connection rather than on every request.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    forwarded_for: Option<HeaderValue>,
    /// The serving thread the connection lives on; it picks the upstream pool.
    worker: usize,
}

impl Peer {
    pub fn new(addr: SocketAddr, worker: usize) -> Self {
        Self {
            addr,
            forwarded_for: HeaderValue::try_from(addr.ip().to_string()).ok(),
            worker,
        }
    }
}

/// A client's request body: `None` when the request has none (HTTP/1.1 requests served by
/// [`super::h1_server`] never do; hyper hands over an empty `Incoming`).
pub type ClientBody = Option<Incoming>;

pub async fn handle(
    state: Arc<GatewayState>,
    peer: Peer,
    req: Request<ClientBody>,
) -> Result<Response<RespBody>, std::convert::Infallible> {
    let snap = state.snapshot();
    let (mut parts, body) = req.into_parts();
    // The client's hop-by-hop headers go before anything reads or sets a header: its
    // `Connection` may name any header, and must not remove one the gateway sets for the
    // upstream (the request id, `X-Consumer`, `request_headers`).
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    let mut ctx = Ctx {
        request_id: request_id::ensure(&mut parts.headers),
        started: Instant::now(),
        method: parts.method.clone(),
        origin: parts.headers.get(header::ORIGIN).cloned(),
        allowance: None,
        cors_answered: false,
        upgrade,
        tunnel: None,
    };
    let path = parts.uri.path();

    if !path_is_safe(path) {
        let mut resp = error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path has dot segments, encoded slashes or control characters",
            None,
        );
        finish(&snap, &ctx, None, None, &mut resp, &parts.uri);
        return Ok(resp);
    }
    let host = if snap.router.matches_hosts() {
        request_host(&parts.uri, &parts.headers)
    } else {
        None
    };
    let preflight = is_preflight(&parts.method, &parts.headers);
    let (route, prefix_len) = match snap.router.find(
        &parts.method,
        host.as_deref(),
        path,
        &parts.headers,
        preflight,
    ) {
        Found::Route(r, len) => (r, len),
        Found::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error(
                &ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this path takes {allow}"),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            finish(&snap, &ctx, None, None, &mut resp, &parts.uri);
            return Ok(resp);
        }
        Found::NotFound => {
            let mut resp = error(
                &ctx,
                StatusCode::NOT_FOUND,
                "route_not_found",
                "no route matches this request",
                None,
            );
            finish(&snap, &ctx, None, None, &mut resp, &parts.uri);
            return Ok(resp);
        }
    };

    let mut resp = match request_filter(&snap, route, &mut ctx, &mut parts, peer.addr, preflight)
        .await
    {
        Ok(Phase::Continue { sticky_key }) => {
            let backend = upstream_peer(route, &parts.headers, sticky_key);
            // Only the access log reads the path after `parts` goes upstream: no copy
            // when it is off.
            let uri = if snap.access_log {
                parts.uri.clone()
            } else {
                Uri::default()
            };
            let mut resp =
                upstream_request(route, backend, &mut ctx, parts, body, prefix_len, &peer).await;
            if let Some(t) = ctx.tunnel.take() {
                tokio::spawn(t.run(snap.metrics.clone()));
            }
            response_filter(route, &ctx, resp.headers_mut());
            finish(&snap, &ctx, Some(route), Some(backend), &mut resp, &uri);
            return Ok(resp);
        }
        Ok(Phase::Answer(headers)) => {
            let mut resp = Response::new(Either::Right(Full::default()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            *resp.headers_mut() = headers;
            resp
        }
        Err(reject) => error(
            &ctx,
            reject.status,
            reject.code,
            reject.message,
            Some(*reject.headers),
        ),
    };
    response_filter(route, &ctx, resp.headers_mut());
    finish(&snap, &ctx, Some(route), None, &mut resp, &parts.uri);
    Ok(resp)
}

enum Phase {
    Continue {
        sticky_key: Option<u64>,
    },
    /// Answered at the gateway (a CORS preflight).
    Answer(HeaderMap),
}

async fn request_filter(
    snap: &Snapshot,
    route: &Route,
    ctx: &mut Ctx,
    parts: &mut http::request::Parts,
    peer: SocketAddr,
    preflight: bool,
) -> Result<Phase, Reject> {
    let f = &route.filters;
    if preflight && let Some(cors) = &f.cors {
        ctx.cors_answered = true;
        return cors.preflight(&parts.headers).map(Phase::Answer);
    }
    // Never let a client claim an identity the gateway did not establish.
    parts.headers.remove(&CONSUMER_HEADER);
    let mut consumer = None;
    let mut api_key_hash = None;
    if let Some(ka) = &f.key_auth {
        let who = ka.check(&mut parts.headers)?;
        if let Ok(v) = HeaderValue::from_str(&who.consumer) {
            parts.headers.insert(CONSUMER_HEADER.clone(), v);
        }
        api_key_hash = Some(who.key_hash);
        consumer = Some(who.consumer);
    }
    if let Some(jwt) = &f.jwt {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match jwt.verify(auth).await {
            Ok(v) => {
                if consumer.is_none()
                    && let Some(c) = v.consumer
                {
                    if let Ok(h) = HeaderValue::from_str(&c) {
                        parts.headers.insert(CONSUMER_HEADER.clone(), h);
                    }
                    consumer = Some(c.into());
                }
            }
            Err(e) => {
                let mut r = Reject::new(StatusCode::UNAUTHORIZED, e.code.as_str(), e.message);
                r.headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(super::filters::jwt::WWW_AUTHENTICATE),
                );
                return Err(r);
            }
        }
    }
    if let Some(rl) = &f.rate_limit {
        ctx.allowance = Some(rl.check(&KeySource {
            ip: peer.ip(),
            consumer: consumer.as_deref(),
            api_key_hash,
            headers: &parts.headers,
        })?);
    }
    if let Some(gate) = &route.flag {
        flag_gate(snap, gate, &mut parts.headers, consumer.as_deref(), peer)?;
    }
    if let Some(max) = f.max_body
        && let Some(len) = content_length(&parts.headers)
        && len > max
    {
        return Err(too_large(max));
    }
    if let Some(rules) = &f.request_headers {
        rules.apply(&mut parts.headers);
    }
    let sticky_key = match &route.sticky {
        None => None,
        Some(StickyKey::ApiKey) => api_key_hash,
        Some(StickyKey::Header(h)) => parts.headers.get(h).map(|v| hash(v.as_bytes())),
        Some(StickyKey::Cookie(name)) => cookie(&parts.headers, name).map(|v| hash(v.as_bytes())),
    };
    Ok(Phase::Continue { sticky_key })
}

/// A route behind a flag exists only for requests the flag is on for; for everyone else it
/// answers 404 exactly as if it did not exist.
fn flag_gate(
    snap: &Snapshot,
    gate: &CompiledGate,
    headers: &mut HeaderMap,
    consumer: Option<&str>,
    peer: SocketAddr,
) -> Result<(), Reject> {
    let not_found = || {
        Reject::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no route matches this request",
        )
    };
    let Some(flags) = &snap.flags else {
        return Err(not_found());
    };
    let ip = peer.ip().to_string();
    let mut ctx = serde_json::Map::new();
    let targeting = gate
        .targeting_key
        .as_ref()
        .and_then(|h| headers.get(h)?.to_str().ok())
        .map(str::to_string)
        .or_else(|| consumer.map(str::to_string))
        .unwrap_or_else(|| ip.clone());
    ctx.insert("targetingKey".into(), targeting.into());
    ctx.insert("ip".into(), ip.into());
    if let Some(c) = consumer {
        ctx.insert("consumer".into(), c.into());
    }
    for h in &gate.context_headers {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            ctx.insert(h.as_str().to_string(), v.into());
        }
    }
    let ctx = serde_json::Value::Object(ctx);
    let eval = flags.evaluate(&gate.key, &ctx);
    snap.metrics
        .flag_evaluated(&gate.key, eval.variant.as_deref().unwrap_or("none"));
    let on = eval.value == serde_json::Value::Bool(true)
        || matches!(eval.variant.as_deref(), Some("on" | "enabled"));
    if !on {
        return Err(not_found());
    }
    if gate.forward_headers {
        // Only the gateway may say what a flag is.
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-flag-"))
            .cloned()
            .collect();
        for k in spoofed {
            headers.remove(k);
        }
        for key in flags.keys() {
            let e = if key == gate.key {
                eval.clone()
            } else {
                flags.evaluate(key, &ctx)
            };
            if let Some(v) = e.variant
                && let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(
                        format!("x-flag-{}", key.to_ascii_lowercase()).as_bytes(),
                    ),
                    HeaderValue::from_str(&v),
                )
            {
                headers.insert(name, value);
            }
        }
    }
    Ok(())
}

static CONSUMER_HEADER: HeaderName = HeaderName::from_static("x-consumer");

fn too_large(max: u64) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {max} bytes"),
    )
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn hash(b: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn upstream_peer<'r>(
    route: &'r Route,
    headers: &HeaderMap,
    sticky_key: Option<u64>,
) -> &'r Backend {
    if let Some(c) = &route.canary
        && headers.get_all(&c.name).iter().any(|v| v == c.value)
    {
        return &route.backends[c.backend];
    }
    &route.backends[route.split.pick(sticky_key)]
}

/// Headers that describe one hop only (RFC 9110 §7.6.1), never forwarded; `Connection`
/// first. Transfer-Encoding frames this hop's body; hyper frames the next one itself.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// The position of `name` in [`HOP_BY_HOP`]: one string match (a jump on length, then a
/// compare) instead of nine `HeaderName` comparisons per header.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "upgrade" => 7,
        "transfer-encoding" => 8,
        _ => return None,
    })
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the headers finds the listed ones present and whether `Connection`
    // names anything else: most messages carry none, or only `Connection: keep-alive`,
    // and a hash lookup per listed name cost more than this.
    let mut present = 0u16;
    let mut names_others = false;
    for (name, value) in h.iter() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
            // Nearly every `Connection` says just `keep-alive` or `close`: no tokens to
            // split and compare for those.
            if i == 0 && !is_keep_alive_or_close(value.as_bytes()) {
                names_others |= connection_tokens(value).any(names_another_header);
            }
        }
    }
    if present == 0 {
        return;
    }
    if names_others {
        // Headers the Connection header names are hop-by-hop too.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(connection_tokens)
            .filter(|t| names_another_header(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in &named {
            h.remove(n);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
}

fn is_keep_alive_or_close(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

fn connection_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A `Connection` option that names a header not already in [`HOP_BY_HOP`] (`close` is
/// an option, not a header).
fn names_another_header(token: &str) -> bool {
    !token.eq_ignore_ascii_case("close")
        && !HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_str()))
}

enum Failure {
    Timeout,
    TooLarge,
    Send(SendError),
}

#[allow(clippy::too_many_arguments)]
async fn upstream_request(
    route: &Route,
    backend: &Backend,
    ctx: &mut Ctx,
    mut parts: http::request::Parts,
    mut body: ClientBody,
    prefix_len: usize,
    peer: &Peer,
) -> Response<RespBody> {
    let up: &Upstream = &backend.upstream;
    let path_and_query = upstream_path(&parts.uri, route.strip_prefix, prefix_len);
    // A client asking to switch protocols comes with hyper's means to take its connection
    // over; `Upgrade` is hop-by-hop, so the upstream is asked anew. Only to WebSocket: a
    // switch to anything else (`h2c` above all) would let the client talk to the upstream
    // past the routes and filters, so such a request goes on as plain HTTP.
    let mut client_upgrade = parts.extensions.remove::<OnUpgrade>();
    let protocol = client_upgrade
        .as_ref()
        .and(ctx.upgrade.take())
        .filter(is_websocket);
    if protocol.is_none() {
        client_upgrade = None;
    }
    if let Some(p) = protocol {
        ask_to_switch(&mut parts.headers, p);
    }
    append_forwarded(&mut parts.headers, peer);
    if route.preserve_host
        && !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }

    let retryable = idempotent(&parts.method) && body.as_ref().is_none_or(Body::is_end_stream);
    let attempts = if retryable { up.retries + 1 } else { 1 };
    let limit = route
        .filters
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let mut last: Option<&Arc<TargetState>> = None;
    let mut failure = Failure::Timeout;
    for attempt in 0..attempts {
        let target = up.pick(last.map(|t| t.as_ref()));
        last = Some(target);
        let req_body: ReqBody = match body.take() {
            Some(b) if !retryable => Either::Left(Limited::new(b, limit)),
            _ => Either::Right(Empty::new()),
        };
        let mut req = Request::new(req_body);
        *req.method_mut() = parts.method.clone();
        // Origin-form: the target is the connection's peer, not named in the line.
        *req.uri_mut() = Uri::from(path_and_query.clone());
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = if attempt + 1 < attempts {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        if !route.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, target.host_header.clone());
        }

        let sent = target.pool.send(peer.worker, up.connect_timeout, req);
        match tokio::time::timeout(up.timeout, sent).await {
            Ok(Ok(mut resp)) => {
                if matches!(resp.status().as_u16(), 502..=504) {
                    target.record_failure(&up.passive);
                } else {
                    target.record_success();
                }
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return switch_protocols(ctx, resp, client_upgrade.take(), up, target);
                }
                strip_hop_by_hop(resp.headers_mut());
                // The client is answered in its own HTTP version (hyper steps down to 1.0
                // for a 1.0 client), not in the upstream's: an HTTP/1.0 upstream must not
                // cost HTTP/1.1 clients their keep-alive.
                *resp.version_mut() = Version::HTTP_11;
                return resp.map(Either::Left);
            }
            Ok(Err(e)) => {
                if source_is::<http_body_util::LengthLimitError>(&e) {
                    failure = Failure::TooLarge;
                    break;
                }
                target.record_failure(&up.passive);
                failure = Failure::Send(e);
                // The request may have reached the upstream; only a body-less idempotent
                // request is safe to send again (`attempts` says which may).
            }
            Err(_) => {
                target.record_failure(&up.passive);
                failure = Failure::Timeout;
                break;
            }
        }
    }
    let target = last.map(|t| t.addr.as_str()).unwrap_or_default();
    match failure {
        Failure::Timeout => error(
            ctx,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "upstream {} ({target}) did not answer within {:?}",
                up.name, up.timeout
            ),
            None,
        ),
        Failure::TooLarge => error(
            ctx,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is larger than {} bytes",
                route.filters.max_body.unwrap_or_default()
            ),
            None,
        ),
        Failure::Send(e)
            if matches!(&e, SendError::ConnectTimeout)
                || matches!(&e, SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut) =>
        {
            error(
                ctx,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                format!(
                    "could not connect to upstream {} ({target}) in time",
                    up.name
                ),
                None,
            )
        }
        // Not HTTP/1.x, whichever client read it.
        Failure::Send(SendError::Answer(h1::Error::Invalid(what))) => error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "upstream_bad_response",
            format!(
                "upstream {} ({target}) sent an invalid answer: {what}",
                up.name
            ),
            None,
        ),
        Failure::Send(SendError::Request(e)) if e.is_parse() || e.is_parse_status() => error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "upstream_bad_response",
            format!(
                "upstream {} ({target}) sent an invalid answer: {e}",
                up.name
            ),
            None,
        ),
        Failure::Send(e) => {
            tracing::debug!(upstream = %up.name, target, error = ?e, "upstream request failed");
            error(
                ctx,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("upstream {} ({target}) failed: {}", up.name, root_cause(&e)),
                None,
            )
        }
    }
}

fn is_websocket(protocol: &HeaderValue) -> bool {
    protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
}

fn ask_to_switch(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The upstream agreed to switch protocols: the client gets the `101`, and once both
/// connections have switched, a tunnel carries bytes both ways until either side closes.
fn switch_protocols(
    ctx: &mut Ctx,
    mut resp: Response<PooledBody>,
    client: Option<OnUpgrade>,
    up: &Upstream,
    target: &TargetState,
) -> Response<RespBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let protocol = resp.headers().get(header::UPGRADE).cloned();
    // Unasked, or to something other than WebSocket: the client would not know what it is
    // talking to next, or would be past the routes.
    let (Some(client), Some(protocol)) = (client, protocol.filter(is_websocket)) else {
        return error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "upstream_bad_response",
            format!(
                "upstream {} ({}) switched protocols unasked, or not to WebSocket",
                up.name, target.addr
            ),
            None,
        );
    };
    strip_hop_by_hop(resp.headers_mut());
    *resp.version_mut() = Version::HTTP_11;
    ask_to_switch(resp.headers_mut(), protocol);
    ctx.tunnel = Some(Box::new(Tunnel {
        client,
        upstream,
        name: up.name.clone(),
        target: target.addr.clone(),
    }));
    resp.map(Either::Left)
}

/// Both ends of a protocol switch, handed from `upstream_request` to `handle` (which has
/// the metrics) to start.
struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    name: Arc<str>,
    target: String,
}

impl Tunnel {
    /// Copies bytes between the client and the upstream once both have switched. It lives
    /// on the serving thread that answered the handshake, outside any request timeout: a
    /// WebSocket stays open as long as both ends keep it open (or until the gateway stops),
    /// and counts as an active connection meanwhile.
    async fn run(self, metrics: Arc<GatewayMetrics>) {
        let Self {
            client,
            upstream,
            name,
            target,
        } = self;
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                let e = c.err().or(u.err()).map(|e| e.to_string());
                tracing::debug!(upstream = %name, target, error = ?e, "protocol switch did not complete");
                return;
            }
        };
        metrics.connection_opened();
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((sent, received)) => {
                tracing::debug!(upstream = %name, target, sent, received, "tunnel closed");
            }
            Err(e) => {
                tracing::debug!(upstream = %name, target, error = %e, "tunnel ended with an error")
            }
        }
        metrics.connection_closed();
    }
}

fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn upstream_path(uri: &Uri, strip: bool, prefix_len: usize) -> http::uri::PathAndQuery {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    if !strip || prefix_len == 0 {
        return uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    }
    let rest = &pq[prefix_len.min(pq.len())..];
    let rest = rest.trim_start_matches('/');
    format!("/{rest}")
        .parse()
        .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn append_forwarded(h: &mut HeaderMap, peer: &Peer) {
    // One hash of the name for both the lookup and the write.
    match h.entry(&X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            // Several lines are one comma-separated list (RFC 9110, 5.3).
            let prev: Option<Vec<&str>> = e.iter().map(|v| v.to_str().ok()).collect();
            let joined = prev.and_then(|prev| {
                HeaderValue::from_str(&format!("{}, {}", prev.join(", "), peer.addr.ip())).ok()
            });
            // An unreadable chain is replaced rather than extended.
            if let Some(v) = joined.or_else(|| peer.forwarded_for.clone()) {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            if let Some(v) = &peer.forwarded_for {
                e.insert(v.clone());
            }
        }
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

fn response_filter(route: &Route, ctx: &Ctx, h: &mut HeaderMap) {
    let f = &route.filters;
    if let Some(rules) = &f.response_headers {
        rules.apply(h);
    }
    if let Some(cors) = &f.cors
        && !ctx.cors_answered
    {
        cors.apply(ctx.origin.as_ref(), h);
    }
    if let Some(a) = &ctx.allowance {
        a.write(h);
    }
}

/// The `logging` phase: request id on the response, metrics, and the access-log line.
fn finish(
    snap: &Snapshot,
    ctx: &Ctx,
    route: Option<&Route>,
    backend: Option<&Backend>,
    resp: &mut Response<RespBody>,
    uri: &Uri,
) {
    resp.headers_mut()
        .insert(request_id::HEADER.clone(), ctx.request_id.clone());
    let status = resp.status().as_u16();
    let elapsed = ctx.started.elapsed();
    let metrics = match (backend, route) {
        (Some(b), _) => &b.metrics,
        // Answered by the route itself (auth, limit, preflight): upstream "".
        (None, Some(r)) => &r.gateway_answered,
        (None, None) => &snap.unrouted,
    };
    metrics.record(&ctx.method, status, elapsed.as_secs_f64());
    if snap.access_log {
        // The path only: query strings can carry credentials.
        tracing::info!(
            target: "signalbox::access",
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            method = %ctx.method,
            path = uri.path(),
            route = route.map_or("", |r| &r.name),
            upstream = backend.map_or("", |b| &b.upstream.name),
            status,
            // Whole microseconds: `6.5`, not `6.499752999999999`.
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        );
    }
}

fn error(
    ctx: &Ctx,
    status: StatusCode,
    code: &str,
    message: impl Into<std::borrow::Cow<'static, str>>,
    headers: Option<HeaderMap>,
) -> Response<RespBody> {
    let mut resp = json_error(
        status,
        code,
        &message.into(),
        ctx.request_id.to_str().unwrap_or_default(),
    );
    if let Some(h) = headers {
        resp.headers_mut().extend(h);
    }
    resp.map(Either::Right)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Trace-Hop"),
            ("connection", "upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-trace-hop", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("content-type", "application/json"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }

    #[test]
    fn a_header_named_in_a_later_connection_value_is_stripped_too() {
        let mut h = headers(&[
            ("connection", "close"),
            ("Connection", " , X-Second"),
            ("x-second", "1"),
            ("close", "not an option here, just a header"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["close", "x-end-to-end"]);
    }

    #[test]
    fn the_hop_by_hop_index_matches_the_list() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n), Some(i), "{n}");
        }
        for n in [
            "host",
            "content-length",
            "x-request-id",
            "tea",
            "connections",
        ] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(n)), None, "{n}");
        }
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = headers(&[("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
        let mut h = headers(&[("connection", "close"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-a"], "1");
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer = Peer::new("10.1.2.3:5000".parse().unwrap(), 0);
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = headers(&[("x-forwarded-for", "192.0.2.7")]);
        append_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 10.1.2.3");
        let mut h = headers(&[
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        append_forwarded(&mut h, &peer);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["192.0.2.7, 198.51.100.1, 10.1.2.3"]
        );
        // A chain that is not text cannot be extended: the gateway's own entry replaces it.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        append_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        let v6 = Peer::new("[2001:db8::1]:443".parse().unwrap(), 0);
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, &v6);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }
}
