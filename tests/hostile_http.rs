//! Hostile clients on raw sockets: each gets a 4xx or a closed connection, never a crash,
//! a hang or a wrong route.

mod common;

use std::time::{Duration, Instant};

use common::{gateway, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup() -> (common::Upstream, common::Gateway) {
    let up = upstream("up").await;
    let yaml = format!(
        "server: {{ header_read_timeout: 1s }}\nupstreams:\n  up: {{ targets: [{}] }}\nroutes:\n  - {{ name: api, paths: [/api], split: {{ up: 1 }}, plugins: {{ max_body: 64KiB }} }}\n",
        up.target()
    );
    let gw = gateway(&yaml).await;
    (up, gw)
}

/// Sends raw bytes and reads until the server closes or 3 s pass.
async fn exchange(gw: &common::Gateway, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.running().addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(gw: &common::Gateway) {
    let r = reqwest::Client::new()
        .get(gw.url("/api/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn slowloris_is_cut_off_by_the_header_timeout() {
    let (_up, gw) = setup().await;
    let mut s = TcpStream::connect(gw.running().addr).await.unwrap();
    s.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if s.write_all(b"X-Slow: a\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            // Either a 408 or a plain close (0 bytes).
            let head = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
            closed = true;
            break;
        }
    }
    assert!(closed, "a client trickling headers was never cut off");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    still_serving(&gw).await;
}

/// Reads one `Content-Length` response (the test upstream's JSON) off a keep-alive socket.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no whole response: {text}");
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("the response stalled")
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_has_the_header_timeout_between_requests() {
    let (_up, gw) = setup().await;
    let mut s = TcpStream::connect(gw.running().addr).await.unwrap();
    let req = b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Within the timeout, the connection takes its next request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for longer, it is closed: not before the timeout, and not much after.
    let idle = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("an idle connection was kept past the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(2000),
        "closed after {waited:?} idle"
    );
}

#[tokio::test]
async fn a_slow_upload_and_a_slow_download_outlast_the_header_timeout() {
    // An upstream that answers in chunks over 2 s, twice the gateway's header timeout.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut c, _) = slow.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf).await.unwrap();
        c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.write_all(format!("2\r\n{i}\n\r\n").as_bytes())
                .await
                .unwrap();
        }
        c.write_all(b"0\r\n\r\n").await.unwrap();
    });
    let up = upstream("up").await;
    let yaml = format!(
        "server: {{ header_read_timeout: 1s }}\nupstreams:\n  up: {{ targets: [{}] }}\n  slow: {{ targets: [{slow_addr}] }}\nroutes:\n  - {{ name: api, paths: [/api], split: {{ up: 1 }} }}\n  - {{ name: feed, paths: [/feed], split: {{ slow: 1 }} }}\n",
        up.target()
    );
    let gw = gateway(&yaml).await;

    let mut s = TcpStream::connect(gw.running().addr).await.unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"u").await.unwrap();
    }
    let answer = read_response(&mut s).await;
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_len\":20"), "{answer}");

    let started = Instant::now();
    let feed = reqwest::get(gw.url("/feed")).await.unwrap();
    assert_eq!(feed.status(), 200);
    let body = feed.text().await.unwrap();
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(body, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    server.await.unwrap();
}

#[tokio::test]
async fn invalid_methods_and_request_lines_are_400() {
    let (up, gw) = setup().await;
    for raw in [
        &b"G@T /api/x HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /api/x HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let out = exchange(&gw, raw).await;
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 505"),
            "{raw:?} → {out}"
        );
    }
    assert_eq!(up.hits(), 0);
    still_serving(&gw).await;
}

#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream_as_a_second_request() {
    let (up, gw) = setup().await;
    // Content-Length and Transfer-Encoding together, with a request hidden in the body.
    let cl_te = b"POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(&gw, cl_te).await;
    assert!(
        out.starts_with("HTTP/1.1 400") || !out.contains("/api/smuggled"),
        "{out}"
    );
    // Two different Content-Length values.
    let dup = b"POST /api/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(&gw, dup).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // An obfuscated Transfer-Encoding.
    let te = b"POST /api/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n";
    let out = exchange(&gw, te).await;
    assert!(
        out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 501"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let upstream_saw_smuggled = up.hits() > 1;
    assert!(
        !upstream_saw_smuggled,
        "the upstream got {} requests",
        up.hits()
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn a_slow_body_is_still_limited_and_a_huge_one_refused() {
    let (up, gw) = setup().await;
    let mut s = TcpStream::connect(gw.running().addr).await.unwrap();
    s.write_all(b"POST /api/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "z".repeat(16 * 1024));
    let mut answered = String::new();
    for _ in 0..8 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await {
            answered = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    if answered.is_empty() {
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        answered = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    assert!(answered.starts_with("HTTP/1.1 413"), "{answered}");
    let out = exchange(
        &gw,
        b"POST /api/up HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(up.body_bytes.load(std::sync::atomic::Ordering::SeqCst) <= 64 * 1024 + 32 * 1024);
    still_serving(&gw).await;
}
