//! The gateway against real upstream servers and real HTTP clients on loopback.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Mode, client, gateway, json, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn replace(
    cfg: signalbox::gateway::config::GatewayConfig,
) -> signalbox::gateway::state::ChangeRequest {
    signalbox::gateway::state::ChangeRequest {
        actor: "test".into(),
        if_match: None,
        kind: signalbox::gateway::state::ChangeKind::Replace {
            config: Box::new(cfg),
            text: None,
        },
    }
}

fn two_upstreams(blue: &str, green: &str, split: &str, extra_route: &str) -> String {
    format!(
        "
upstreams:
  blue: {{ targets: [{blue}], timeout: 2s }}
  green: {{ targets: [{green}], timeout: 2s }}
routes:
  - name: users
    paths: [/api/users]
    methods: [GET, POST]
    split: {split}
{extra_route}"
    )
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405_both_json() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 100 }",
        "",
    ))
    .await;
    let c = client();

    let r = c.get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = json(r).await;
    assert_eq!(v["error"]["code"], "route_not_found");
    assert_eq!(v["error"]["request_id"], rid.as_str());

    // HEAD goes wherever GET does, upstream as HEAD.
    let r = c.head(gw.url("/api/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.hits(), 1);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c.delete(gw.url("/api/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(json(r).await["error"]["code"], "method_not_allowed");

    // A client's request id is kept and reaches the upstream.
    let r = c
        .get(gw.url("/api/users/1?x=1"))
        .header("x-request-id", "trace-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-abc");
    let v = json(r).await;
    assert_eq!(v["upstream"], "blue");
    assert_eq!(v["path"], "/api/users/1?x=1");
    assert_eq!(v["headers"]["x-request-id"], "trace-abc");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
    gw.stop().await;
}

#[tokio::test]
async fn traversal_and_encoded_paths_never_reach_a_route() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 100 }",
        "",
    ))
    .await;
    for path in [
        "/api/users/../admin",
        "/api/users/%2e%2e/admin",
        "/api/users%2fadmin",
        "/api/users/%2E%2E",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.running().addr)
            .await
            .unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
    }
    assert_eq!(b.hits(), 0);
    gw.stop().await;
}

/// Sends `n` GETs with `conc` concurrent workers and counts answers by upstream name.
async fn spread(
    url: String,
    n: usize,
    conc: usize,
    header: Option<(&'static str, String)>,
) -> std::collections::HashMap<String, usize> {
    let c = client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, next, header) = (c.clone(), url.clone(), next.clone(), header.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = std::collections::HashMap::<String, usize>::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut rb = c.get(&url);
                if let Some((k, v)) = &header {
                    rb = rb.header(*k, v);
                }
                let v: serde_json::Value = rb.send().await.unwrap().json().await.unwrap();
                *seen
                    .entry(v["upstream"].as_str().unwrap_or("error").to_string())
                    .or_default() += 1;
            }
            seen
        }));
    }
    let mut total = std::collections::HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test]
async fn weighted_split_is_within_one_point_over_10k_requests() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 73, green: 27 }",
        "",
    ))
    .await;
    let seen = spread(gw.url("/api/users"), 10_000, 16, None).await;
    let green = seen.get("green").copied().unwrap_or(0) as f64 / 10_000.0;
    assert!(
        (green - 0.27).abs() <= 0.01,
        "green share {green}, {seen:?}"
    );
    assert_eq!(seen.get("error"), None);
    gw.stop().await;
}

#[tokio::test]
async fn header_canary_and_sticky_cookie() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let extra = "    canary_by_header: { name: X-Canary, value: \"true\", upstream: green }\n    sticky: { cookie: session }\n";
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 50, green: 50 }",
        extra,
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        let v = json(
            c.get(gw.url("/api/users"))
                .header("X-Canary", "true")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(v["upstream"], "green");
    }
    // One session sticks to one side; different sessions land on both.
    let mut sides = std::collections::HashSet::new();
    for s in 0..40 {
        let cookie = format!("theme=dark; session=user-{s}");
        let first = json(
            c.get(gw.url("/api/users"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap(),
        )
        .await["upstream"]
            .clone();
        for _ in 0..5 {
            let again = json(
                c.get(gw.url("/api/users"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap(),
            )
            .await["upstream"]
                .clone();
            assert_eq!(first, again, "session {s} moved");
        }
        sides.insert(first.to_string());
    }
    assert_eq!(sides.len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn dead_upstream_is_502_at_once_and_hung_one_504_at_its_timeout() {
    let dead = common::free_port();
    let hung = upstream("hung").await;
    hung.set_mode(Mode::Hang);
    let yaml = format!(
        "
upstreams:
  dead: {{ targets: [127.0.0.1:{dead}], timeout: 5s }}
  hung: {{ targets: [{}], timeout: 300ms }}
routes:
  - {{ name: dead, paths: [/dead], split: {{ dead: 1 }} }}
  - {{ name: hung, paths: [/hung], split: {{ hung: 1 }} }}
",
        hung.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    let t = Instant::now();
    let r = c.get(gw.url("/dead")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        t.elapsed()
    );
    let v = json(r).await;
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead}"))
    );

    let t = Instant::now();
    let r = c.get(gw.url("/hung")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "504 took {took:?}"
    );
    // The gateway stays responsive while upstream calls hang.
    let t = Instant::now();
    assert_eq!(c.get(gw.url("/nope")).send().await.unwrap().status(), 404);
    assert!(t.elapsed() < Duration::from_millis(200));
    gw.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_across_requests() {
    let up = upstream("kept").await;
    let yaml = format!(
        "
upstreams:
  kept: {{ targets: [{}] }}
routes:
  - {{ name: kept, paths: [/], split: {{ kept: 1 }} }}
",
        up.target()
    );
    let gw = gateway(&yaml).await;
    // One client connection lives on one serving thread, which keeps its own upstream
    // connections: every request without a body rides one (the lean client), every
    // request with a body the other (hyper's).
    let c = client();
    for i in 0..40 {
        let r = if i % 4 == 0 {
            c.post(gw.url("/items")).body(vec![b'x'; 4096]).send().await
        } else {
            c.get(gw.url(&format!("/items/{i}"))).send().await
        }
        .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(up.hits(), 40);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "40 requests should share two upstream connections"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_never_waits_behind_an_upload_the_upstream_answered_early() {
    // An upstream that answers as soon as it has a request head and then only drains what
    // follows: an upload it does not need keeps streaming after its answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let accept = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    // One serving thread, so both clients share its upstream connections.
    let yaml = format!(
        "
server: {{ workers: 1 }}
upstreams:
  early: {{ targets: [{target}], timeout: 2s }}
routes:
  - {{ name: early, paths: [/], split: {{ early: 1 }} }}
"
    );
    let gw = gateway(&yaml).await;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
    let upload = reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let r = client()
        .post(gw.url("/upload"))
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    // The upload is still open (its sender lives); another request must not queue behind
    // it on that upstream connection.
    let t = Instant::now();
    let r = client().get(gw.url("/quick")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the second request waited {:?} behind the upload",
        t.elapsed()
    );
    drop(tx);
    gw.stop().await;
    accept.abort();
}

#[tokio::test]
async fn idempotent_requests_retry_on_another_target_and_posts_do_not() {
    let live = upstream("live").await;
    let dead = common::free_port();
    let yaml = format!(
        "
upstreams:
  pool: {{ targets: [127.0.0.1:{dead}, {}], retries: 1, passive: {{ max_failures: 1000 }} }}
routes:
  - {{ name: r, paths: [/], split: {{ pool: 1 }} }}
",
        live.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    let mut failed = 0;
    for _ in 0..10 {
        if c.post(gw.url("/x"))
            .body("payload")
            .send()
            .await
            .unwrap()
            .status()
            == 502
        {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 5,
        "round robin sends every other POST to the dead target, without retry"
    );
    gw.stop().await;
}

#[tokio::test]
async fn passive_ejection_then_readmission() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let yaml = format!(
        "
upstreams:
  pool: {{ targets: [{}, {}], passive: {{ max_failures: 3, eject_for: 1s }} }}
routes:
  - {{ name: r, paths: [/], split: {{ pool: 1 }} }}
",
        a.target(),
        b.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    a.set_mode(Mode::Status(503));
    let mut errors = 0;
    for _ in 0..40 {
        if c.get(gw.url("/")).send().await.unwrap().status() != 200 {
            errors += 1;
        }
    }
    assert_eq!(
        errors, 3,
        "a failing target is ejected after 3 consecutive failures"
    );
    let metrics = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "signalbox_upstream_healthy{{upstream=\"pool\",target=\"{}\"}} 0",
            a.target()
        )),
        "{metrics}"
    );

    a.set_mode(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(a.hits() - before >= 4, "target re-admitted after eject_for");
    gw.stop().await;
}

#[tokio::test]
async fn active_health_checks_drive_routing_and_readyz() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let yaml = format!(
        "
upstreams:
  pool: {{ targets: [{}, {}], health: {{ path: /readyz, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }} }}
routes:
  - {{ name: r, paths: [/], split: {{ pool: 1 }} }}
",
        a.target(),
        b.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    a.set_mode(Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Only health checks reach a now; user traffic all goes to b.
    let before = b.hits();
    for _ in 0..10 {
        let v = json(c.get(gw.url("/")).send().await.unwrap()).await;
        assert_eq!(v["upstream"], "b");
    }
    assert!(b.hits() - before >= 10);
    b.set_mode(Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        json(r).await["upstreams_without_healthy_targets"][0],
        "pool"
    );
    a.set_mode(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn key_auth_rate_limit_and_headers() {
    let up = upstream("orders").await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("alice.key");
    std::fs::write(&key_file, "alice-secret-key\n").unwrap();
    let yaml = format!(
        "
consumers:
  - name: alice
    keys: [{{ file: {} }}]
upstreams:
  orders: {{ targets: [{}] }}
routes:
  - name: orders
    paths: [/orders]
    split: {{ orders: 1 }}
    plugins:
      key_auth: {{ header: X-API-Key }}
      rate_limit: {{ per_minute: 60, burst: 5, by: consumer }}
      request_headers: {{ add: {{ x-request-source: gateway }}, remove: [x-internal] }}
      response_headers: {{ set: {{ cache-control: no-store }} }}
",
        key_file.display(),
        up.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    let r = c.get(gw.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"]["code"], "missing_api_key");
    let r = c
        .get(gw.url("/orders"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.hits(), 0);

    let r = c
        .get(gw.url("/orders"))
        .header("x-api-key", "alice-secret-key")
        .header("x-internal", "1")
        .header("x-consumer", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["ratelimit-limit"], "5");
    assert_eq!(r.headers()["ratelimit-remaining"], "4");
    // 60 a minute: one unit back within the second, not at the end of a minute's window.
    assert_eq!(r.headers()["ratelimit-reset"], "1");
    let v = json(r).await;
    assert!(
        v["headers"].get("x-api-key").is_none(),
        "the key is hidden from the upstream"
    );
    assert!(v["headers"].get("x-internal").is_none());
    assert_eq!(v["headers"]["x-consumer"], "alice");
    assert_eq!(v["headers"]["x-request-source"], "gateway");

    for _ in 0..4 {
        assert_eq!(
            c.get(gw.url("/orders"))
                .header("x-api-key", "alice-secret-key")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = c
        .get(gw.url("/orders"))
        .header("x-api-key", "alice-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.headers()["ratelimit-reset"], retry.to_string().as_str());
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(json(r).await["error"]["code"], "rate_limited");
    let metrics = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("signalbox_rate_limited_total{route=\"orders\"} 1"));
    gw.stop().await;
}

#[tokio::test]
async fn cors_preflight_for_allowed_and_disallowed_origins() {
    let up = upstream("orders").await;
    let yaml = format!(
        "
upstreams:
  orders: {{ targets: [{}] }}
routes:
  - name: orders
    paths: [/orders]
    methods: [GET, POST]
    split: {{ orders: 1 }}
    plugins:
      cors: {{ origins: [https://app.example.com], methods: [GET, POST], headers: [Content-Type], max_age: 10m, credentials: true }}
",
        up.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    // A listed origin asking for a method the policy does not take: refused, with nothing
    // a browser could read as permission.
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/orders/7"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let h = r.headers();
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    assert!(h.get("access-control-allow-credentials").is_none(), "{h:?}");
    assert_eq!(
        h.get_all("vary").iter().collect::<Vec<_>>(),
        ["Origin, Access-Control-Request-Method, Access-Control-Request-Headers"]
    );
    assert_eq!(json(r).await["error"]["code"], "cors_rejected");

    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/orders"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "Content-Type");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h.get_all("vary").iter().collect::<Vec<_>>(),
        ["Origin, Access-Control-Request-Method, Access-Control-Request-Headers"]
    );

    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/orders"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(up.hits(), 0, "preflights are answered at the gateway");

    let r = c
        .get(gw.url("/orders"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers()["vary"], "Origin");
    let r = c
        .get(gw.url("/orders"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn max_body_413_from_content_length_without_reading_and_while_streaming() {
    let up = upstream("up").await;
    let yaml = format!(
        "
upstreams:
  up: {{ targets: [{}] }}
routes:
  - {{ name: r, paths: [/upload], split: {{ up: 1 }}, plugins: {{ max_body: 1KiB }} }}
",
        up.target()
    );
    let gw = gateway(&yaml).await;
    // Declares 10 MiB, sends 5 bytes, then waits: the answer must come without the body.
    let mut s = tokio::net::TcpStream::connect(gw.running().addr)
        .await
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\nhello")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("413 must not wait for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("body_too_large"));
    assert_eq!(up.hits(), 0);

    // Chunked (no Content-Length): cut off while streaming.
    let c = client();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'x'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = c.post(gw.url("/upload")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'y'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["body_len"], 1000);
    gw.stop().await;
}

#[tokio::test]
async fn metrics_cover_requests_latency_and_revision_and_pass_promtool() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 1, green: 1 }",
        "",
    ))
    .await;
    let c = client();
    for _ in 0..10 {
        c.get(gw.url("/api/users")).send().await.unwrap();
    }
    c.get(gw.url("/missing")).send().await.unwrap();
    let text = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "signalbox_requests_total{route=\"users\",upstream=\"blue\",method=\"GET\",status_class=\"2xx\"} 5",
        "signalbox_requests_total{route=\"users\",upstream=\"green\",method=\"GET\",status_class=\"2xx\"} 5",
        "signalbox_requests_total{route=\"\",upstream=\"\",method=\"GET\",status_class=\"4xx\"} 1",
        "signalbox_request_duration_seconds_count{route=\"users\",upstream=\"blue\"} 5",
        "signalbox_active_connections ",
        "signalbox_config_revision ",
        "# TYPE signalbox_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus); the README's test command does it");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop().await;
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_bad_config_keeps_the_old() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 100, green: 0 }",
        "",
    ))
    .await;
    let state = gw.running().state.clone();
    let url = gw.url("/api/users");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, stop) = (url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut bad) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => bad += 1,
                }
            }
            (ok, bad)
        }));
    }
    let base = state.snapshot().config.as_ref().clone();
    for i in 0..40 {
        let mut cfg = base.clone();
        let (bw, gw_) = if i % 2 == 0 { (0, 100) } else { (100, 0) };
        cfg.routes[0].split = [("blue".to_string(), bw), ("green".to_string(), gw_)].into();
        state.change(replace(cfg)).unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A bad config is refused and the old one keeps serving.
    let mut bad = base.clone();
    bad.routes[0].split = [("purple".to_string(), 100)].into();
    let err = match state.change(replace(bad)) {
        Ok(_) => panic!("a bad config was applied"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("routes[0].split.purple: unknown upstream"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for t in load {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(
        failed, 0,
        "{failed} requests failed during 40 reloads ({ok} ok)"
    );
    assert!(ok > 200, "load too light to prove anything: {ok}");
    assert!(b.hits() > 0 && g.hits() > 0);
    gw.stop().await;
}

#[tokio::test]
async fn h2c_clients_and_strip_prefix() {
    let up = upstream("up").await;
    let yaml = format!(
        "
upstreams:
  up: {{ targets: [{}] }}
routes:
  - {{ name: r, paths: [/svc], strip_prefix: true, split: {{ up: 1 }} }}
",
        up.target()
    );
    let gw = gateway(&yaml).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = c.get(gw.url("/svc/items/7?q=1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["path"], "/items/7?q=1");
    gw.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_gateway_lives_on() {
    let up = upstream("up").await;
    let yaml = format!(
        "
server: {{ max_header_bytes: 16KiB }}
upstreams:
  up: {{ targets: [{}] }}
routes:
  - {{ name: r, paths: [/], split: {{ up: 1 }} }}
",
        up.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    let r = c
        .get(gw.url("/"))
        .header("x-big", "a".repeat(40_000))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let mut req = c.get(gw.url("/"));
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "v");
    }
    if let Ok(r) = req.send().await {
        assert_eq!(r.status(), 431);
    }
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn jwt_routes_accept_valid_tokens_and_reject_the_rest() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let up = upstream("api").await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let dir = tempfile::tempdir().unwrap();
    let secret = "an-hs256-secret-that-is-at-least-32-bytes-long";
    std::fs::write(dir.path().join("hs.secret"), secret).unwrap();
    let yaml = format!(
        "
upstreams:
  api: {{ targets: [{}] }}
routes:
  - name: hs
    paths: [/hs]
    split: {{ api: 1 }}
    plugins: {{ jwt: {{ algorithms: [HS256], issuer: https://id.example.com, audiences: [orders], secret: {{ file: {} }} }} }}
  - name: rs
    paths: [/rs]
    split: {{ api: 1 }}
    plugins: {{ jwt: {{ algorithms: [RS256], jwks_file: {fixtures}/jwks.json }} }}
",
        up.target(),
        dir.path().join("hs.secret").display()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": "svc-checkout", "iss": "https://id.example.com", "aud": "orders", "exp": now + 300});
    let good = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();

    let r = c.get(gw.url("/hs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(json(r).await["error"]["code"], "missing_token");

    let r = c
        .get(gw.url("/hs"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["headers"]["x-consumer"], "svc-checkout");

    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = "billing".into();
    let t = encode(
        &Header::new(Algorithm::HS256),
        &wrong_aud,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let r = c.get(gw.url("/hs")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), json(r).await["error"]["code"].clone()),
        (401, "wrong_audience".into())
    );

    let mut expired = claims.clone();
    expired["exp"] = (now - 3600).into();
    let t = encode(
        &Header::new(Algorithm::HS256),
        &expired,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        c.get(gw.url("/hs"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // RS256 from a JWKS file, picked by kid.
    let pem = std::fs::read(format!("{fixtures}/rsa-1.key.pem")).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let t = encode(
        &h,
        &serde_json::json!({"sub": "batch", "exp": now + 60}),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let r = c.get(gw.url("/rs")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An HS256 token against the RSA route is refused (algorithm confusion).
    let r = c
        .get(gw.url("/rs"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.hits(), 2);
    gw.stop().await;
}

/// An upstream that switches protocols on `GET /ws` with `Upgrade: websocket` or `h2c`
/// (and then echoes every byte), on `GET /other` to h2c whatever was asked, and refuses the
/// switch elsewhere with 426. Returns its address and the `Connection` and
/// `Upgrade` headers of each handshake it saw.
async fn echo_upstream() -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = log.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                log.lock().unwrap().push((h("connection"), h("upgrade")));
                let protocol = h("upgrade");
                let path = req.uri().path().to_string();
                let switch = matches!(path.as_str(), "/ws" | "/other")
                    && matches!(protocol.as_str(), "WebSocket" | "h2c");
                // On /other it switches to a protocol nobody asked for.
                let protocol = if path == "/other" {
                    "h2c".into()
                } else {
                    protocol
                };
                let resp = if switch {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(on.await.unwrap());
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = io.read(&mut buf).await {
                            io.write_all(&buf[..n]).await.unwrap();
                        }
                    });
                    hyper::Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", protocol)
                        .body(Full::new(bytes::Bytes::new()))
                        .unwrap()
                } else {
                    hyper::Response::builder()
                        .status(426)
                        .header("content-length", "2")
                        .body(Full::new(bytes::Bytes::from_static(b"no")))
                        .unwrap()
                };
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .into_owned(),
            );
        }
    });
    (addr, seen)
}

/// Reads one response head (through the blank line) from `s`.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed mid-head: {head:?}"
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// A gateway with one route, `/`, all to one upstream at `addr` (2 s timeout).
fn one_route(route: &str, upstream: &str, addr: impl std::fmt::Display) -> String {
    format!(
        "upstreams:\n  {upstream}: {{ targets: [{addr}], timeout: 2s }}\nroutes:\n  - {{ name: {route}, paths: [/], split: {{ {upstream}: 100 }} }}\n"
    )
}

#[tokio::test]
async fn protocol_switches_are_tunnelled_and_a_refused_one_stays_http() {
    let (up, seen) = echo_upstream().await;
    let gw = gateway(&one_route("ws", "echo", &up)).await;
    let addr = gw
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // A new client connection that asks to switch; the response head.
    let handshake = |path: &'static str, protocol: &'static str| {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let req = format!(
                "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Upgrade\r\nupgrade: {protocol}\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let head = read_head(&mut s).await;
            (s, head)
        }
    };
    let metrics = || async {
        client()
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };

    // The switch: 101 with the protocol, then bytes both ways, several times over.
    let (mut s, head) = handshake("/ws", "WebSocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    for msg in [
        &b"ping"[..],
        b"a longer message, both ways",
        b"\x00\xffbinary",
    ] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("the echo comes back through the tunnel")
            .unwrap();
        assert_eq!(back, msg);
    }
    // The upstream was asked to switch, not told what the client's other options were.
    assert_eq!(
        seen.lock().unwrap()[0],
        ("upgrade".to_string(), "WebSocket".to_string())
    );
    // An open tunnel is an active connection; closing the client ends it.
    let active = || async {
        metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("signalbox_active_connections "))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(active().await, "1");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while active().await != "0" {
        assert!(Instant::now() < deadline, "the tunnel outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A switch the upstream refuses is an ordinary answer, and the connection stays HTTP.
    let (mut s, head) = handshake("/refuse", "websocket").await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(!head.contains("upgrade:"), "{head}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"no");
    s.write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    // A plain request carries no upgrade headers upstream.
    assert_eq!(seen.lock().unwrap()[2], (String::new(), String::new()));

    // A switch to h2c is not passed on (it would reach the upstream past the routes): the
    // upstream, which would have switched, sees a plain request and answers it as one.
    let (_h2c, head) = handshake("/ws", "h2c").await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert_eq!(seen.lock().unwrap()[3], (String::new(), String::new()));

    // An upstream switching to another protocol than the one asked for is a bad gateway.
    let (_other, head) = handshake("/other", "WebSocket").await;
    assert!(head.starts_with("http/1.1 502"), "{head}");

    // The switch counts as a request in the metrics.
    let m = metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("signalbox_requests_total") && l.contains("status_class=\"1xx\"")
        ),
        "{m}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_protocol_switch_nobody_asked_for_is_a_502() {
    // An upstream that answers every request with 101.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let gw = gateway(&one_route("odd", "odd", up)).await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(json(r).await["error"]["code"], "upstream_bad_response");
    gw.stop().await;
}

#[tokio::test]
async fn clients_are_answered_in_their_own_http_version_whatever_the_upstream_speaks() {
    // An HTTP/1.0 upstream: one answer per connection, then it closes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold")
                .await;
        }
    });
    let gw = gateway(&one_route("old", "old", up)).await;
    // An HTTP/1.1 client keeps its connection across requests.
    let mut s = tokio::net::TcpStream::connect(gw.running().addr)
        .await
        .unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"old\r\n0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("the answer stalled")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(!text.contains("connection: close"), "{text}");
    }
    // An HTTP/1.0 client is answered in HTTP/1.0.
    let mut s = tokio::net::TcpStream::connect(gw.running().addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.0 200 OK\r\n") && text.ends_with("old"),
        "{text}"
    );
    gw.stop().await;
    server.abort();
}

/// Sends `request` (raw HTTP/1.1, ending the connection) and returns the response head,
/// lower-cased, and its body as JSON.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> (String, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a whole response");
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    (
        head.to_ascii_lowercase(),
        serde_json::from_str(json).unwrap(),
    )
}

/// The values of header `name` as the upstream received them, every line.
fn upstream_lines(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["header_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l[0] == name)
        .map(|l| l[1].as_str().unwrap().to_string())
        .collect()
}

fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `/orders` behind key_auth (alice's key is `alice-secret-key`) and request_headers that
/// add `x-request-source: gateway` and set `x-tier: gold`.
async fn orders_with_gateway_headers() -> (common::Upstream, common::Gateway, tempfile::TempDir) {
    let up = upstream("orders").await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("alice.key");
    std::fs::write(&key_file, "alice-secret-key\n").unwrap();
    let gw = gateway(&format!(
        "
consumers:
  - name: alice
    keys: [{{ file: {} }}]
upstreams:
  orders: {{ targets: [{}] }}
routes:
  - name: orders
    paths: [/orders]
    split: {{ orders: 1 }}
    plugins:
      key_auth: {{ header: X-API-Key }}
      request_headers: {{ add: {{ x-request-source: gateway }}, set: {{ x-tier: gold }} }}
",
        key_file.display(),
        up.target()
    ))
    .await;
    (up, gw, dir)
}

#[tokio::test]
async fn the_upstream_gets_the_one_request_id_of_several_the_client_sent() {
    let (_up, gw, _dir) = orders_with_gateway_headers().await;
    // Two ids: the first is the request's, and the only one that goes on.
    let (head, v) = raw_exchange(
        gw.running().addr,
        "GET /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: alice-secret-key\r\n\
         X-Request-ID: first-id\r\nX-Request-ID: second-id\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(head_value(&head, "x-request-id"), Some("first-id"));
    assert_eq!(upstream_lines(&v, "x-request-id"), ["first-id"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_connection_header_cannot_remove_the_headers_the_gateway_sets() {
    let (_up, gw, _dir) = orders_with_gateway_headers().await;
    // A `Connection` naming the gateway's own headers cannot take them off the request;
    // what else it names, and the hop-by-hop headers themselves, still go.
    let (head, v) = raw_exchange(
        gw.running().addr,
        "GET /orders HTTP/1.1\r\nHost: x\r\nX-API-Key: alice-secret-key\r\n\
         Connection: close, X-Request-ID, X-Consumer, X-Request-Source, X-Tier, X-Trace-Hop\r\n\
         X-Trace-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let id = head_value(&head, "x-request-id").unwrap();
    assert_eq!(upstream_lines(&v, "x-request-id"), [id]);
    assert_eq!(upstream_lines(&v, "x-consumer"), ["alice"]);
    assert_eq!(upstream_lines(&v, "x-request-source"), ["gateway"]);
    assert_eq!(upstream_lines(&v, "x-tier"), ["gold"]);
    assert_eq!(upstream_lines(&v, "x-end-to-end"), ["kept"]);
    for gone in ["x-trace-hop", "keep-alive", "x-api-key"] {
        assert!(upstream_lines(&v, gone).is_empty(), "{gone}: {v}");
    }
    gw.stop().await;
}

/// A drain answers the requests whose heads had begun to arrive, whichever side serves them
/// (the gateway's own HTTP/1.1 for a `GET`, hyper for a `POST` with a body), each as the
/// connection's last, and closes connections that sat idle between requests.
#[tokio::test]
async fn a_drain_answers_requests_begun_before_it_and_closes_idle_connections() {
    let b = upstream("blue").await;
    let g = upstream("green").await;
    let gw = gateway(&two_upstreams(
        &b.target(),
        &g.target(),
        "{ blue: 100 }",
        "",
    ))
    .await;
    let addr = gw.running().addr;
    let connect = || tokio::net::TcpStream::connect(addr);
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /api/users HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut lean = connect().await.unwrap();
    lean.write_all(b"GET /api/users HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut handed = connect().await.unwrap();
    handed
        .write_all(b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let token = gw.running().shutdown_token();
    token.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    lean.write_all(b"st: x\r\n\r\n").await.unwrap();
    handed.write_all(b"ngth: 5\r\n\r\nhello").await.unwrap();

    async fn to_end(c: &mut tokio::net::TcpStream) -> String {
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut all))
            .await
            .expect("closed in time")
            .unwrap();
        String::from_utf8_lossy(&all).into_owned()
    }
    for (name, c) in [("lean", &mut lean), ("handed over", &mut handed)] {
        let answer = to_end(c).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{name}: {answer}"
        );
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{name}: {answer}"
        );
        assert!(answer.contains("\"upstream\":\"blue\""), "{name}: {answer}");
    }
    let rest = to_end(&mut idle).await;
    assert!(rest.contains("\"upstream\":\"blue\""), "{rest}");
    gw.stop().await;
}
